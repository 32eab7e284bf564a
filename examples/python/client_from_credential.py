"""Create a new instance of the ServiceBusClient.

From azure-servicebus-aio-api.txt (ServiceBusClient). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_FULLY_QUALIFIED_NAMESPACE, SERVICE_BUS_SAS_POLICY, SERVICE_BUS_SAS_KEY.
"""
import asyncio
import os



async def main() -> None:

    # --- example (verbatim) ---
    import os
    from servicebus.aio import ServiceBusClient, ServiceBusSharedKeyCredential
    fully_qualified_namespace = os.environ['SERVICE_BUS_FULLY_QUALIFIED_NAMESPACE']
    shared_access_policy = os.environ['SERVICE_BUS_SAS_POLICY']
    shared_access_key = os.environ['SERVICE_BUS_SAS_KEY']
    servicebus_client = ServiceBusClient(
        fully_qualified_namespace=fully_qualified_namespace,
        credential=ServiceBusSharedKeyCredential(
            shared_access_policy,
            shared_access_key
        )
    )
    # --- end of example ---
    async with servicebus_client:
        async with servicebus_client.get_queue_sender(os.environ["SERVICE_BUS_QUEUE_NAME"]) as sender:
            from servicebus import Message
            await sender.send_messages(Message("sent by client_from_credential.py"))
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
