"""Create a new instance of the ServiceBusReceiver.

From azure-servicebus-aio-api.txt (ServiceBusReceiver). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_FULLY_QUALIFIED_NAMESPACE, SERVICE_BUS_SAS_POLICY, SERVICE_BUS_SAS_KEY, SERVICE_BUS_QUEUE_NAME.
"""
import asyncio
import os



async def main() -> None:

    # --- example (verbatim) ---
    import os
    from servicebus.aio import ServiceBusReceiver, ServiceBusSharedKeyCredential
    fully_qualified_namespace = os.environ['SERVICE_BUS_FULLY_QUALIFIED_NAMESPACE']
    shared_access_policy = os.environ['SERVICE_BUS_SAS_POLICY']
    shared_access_key = os.environ['SERVICE_BUS_SAS_KEY']
    queue_name = os.environ['SERVICE_BUS_QUEUE_NAME']
    queue_receiver = ServiceBusReceiver(
        fully_qualified_namespace=fully_qualified_namespace,
        credential=ServiceBusSharedKeyCredential(
            shared_access_policy,
            shared_access_key
        ),
        queue_name=queue_name
    )
    # --- end of example ---
    async with queue_receiver:
        await queue_receiver.peek_messages()
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
