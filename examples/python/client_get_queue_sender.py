"""Create a new instance of the ServiceBusSender from ServiceBusClient.

From azure-servicebus-aio-api.txt (ServiceBusClient.get_queue_sender). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR, SERVICE_BUS_QUEUE_NAME.
"""
import asyncio
import os



async def main() -> None:

    # --- example (verbatim) ---
    import os
    from servicebus.aio import ServiceBusClient
    servicebus_connection_str = os.environ['SERVICE_BUS_CONNECTION_STR']
    queue_name = os.environ['SERVICE_BUS_QUEUE_NAME']
    servicebus_client = ServiceBusClient.from_connection_string(conn_str=servicebus_connection_str)
    async with servicebus_client:
        queue_sender = servicebus_client.get_queue_sender(queue_name=queue_name)
    # --- end of example ---
    print("ok", queue_sender.entity_name)

if __name__ == "__main__":
    asyncio.run(main())
