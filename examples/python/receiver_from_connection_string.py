"""Create a new instance of the ServiceBusReceiver from connection string.

From azure-servicebus-aio-api.txt (ServiceBusReceiver.from_connection_string). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR, SERVICE_BUS_QUEUE_NAME.
"""
import asyncio
import os



async def main() -> None:

    # --- example (verbatim) ---
    import os
    from servicebus.aio import ServiceBusReceiver
    servicebus_connection_str = os.environ['SERVICE_BUS_CONNECTION_STR']
    queue_name = os.environ['SERVICE_BUS_QUEUE_NAME']
    queue_receiver = ServiceBusReceiver.from_connection_string(
        conn_str=servicebus_connection_str,
        queue_name=queue_name
    )
    # --- end of example ---
    async with queue_receiver:
        pass
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
