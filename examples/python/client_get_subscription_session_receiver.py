"""Create a new instance of the ServiceBusReceiver from ServiceBusClient (subscription).

From azure-servicebus-aio-api.txt (ServiceBusClient.get_subscription_session_receiver). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR, SERVICE_BUS_TOPIC_NAME, SERVICE_BUS_SUBSCRIPTION_NAME.
"""
import asyncio
import os



async def main() -> None:

    # --- example (verbatim) ---
    import os
    from servicebus.aio import ServiceBusClient
    servicebus_connection_str = os.environ['SERVICE_BUS_CONNECTION_STR']
    topic_name = os.environ["SERVICE_BUS_TOPIC_NAME"]
    subscription_name = os.environ["SERVICE_BUS_SUBSCRIPTION_NAME"]
    servicebus_client = ServiceBusClient.from_connection_string(conn_str=servicebus_connection_str)
    async with servicebus_client:
        subscription_receiver = servicebus_client.get_subscription_receiver(
            topic_name=topic_name,
            subscription_name=subscription_name,
        )
    # --- end of example ---
    print("ok", subscription_receiver.entity_path)

if __name__ == "__main__":
    asyncio.run(main())
