"""Create a new instance of the ServiceBusClient from connection string.

From azure-servicebus-aio-api.txt (ServiceBusClient.from_connection_string). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR.
"""
import asyncio
import os



async def main() -> None:

    # --- example (verbatim) ---
    import os
    from servicebus.aio import ServiceBusClient
    servicebus_connection_str = os.environ['SERVICE_BUS_CONNECTION_STR']
    servicebus_client = ServiceBusClient.from_connection_string(conn_str=servicebus_connection_str)
    # --- end of example ---
    async with servicebus_client:
        pass
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
