"""Create a new instance of the ServiceBusSender.

From azure-servicebus-aio-api.txt (ServiceBusSender). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_FULLY_QUALIFIED_NAMESPACE, SERVICE_BUS_SAS_POLICY, SERVICE_BUS_SAS_KEY, SERVICE_BUS_QUEUE_NAME.
"""
import asyncio
import os

from servicebus import Message

async def main() -> None:

    # --- example (verbatim) ---
    import os
    from servicebus.aio import ServiceBusSender, ServiceBusSharedKeyCredential
    fully_qualified_namespace = os.environ['SERVICE_BUS_FULLY_QUALIFIED_NAMESPACE']
    shared_access_policy = os.environ['SERVICE_BUS_SAS_POLICY']
    shared_access_key = os.environ['SERVICE_BUS_SAS_KEY']
    queue_name = os.environ['SERVICE_BUS_QUEUE_NAME']
    queue_sender = ServiceBusSender(
        fully_qualified_namespace=fully_qualified_namespace,
        credential=ServiceBusSharedKeyCredential(
            shared_access_policy,
            shared_access_key
        ),
        queue_name=queue_name
    )
    # --- end of example ---
    async with queue_sender:
        await queue_sender.send_messages(Message("sent by sender_from_credential.py"))
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
