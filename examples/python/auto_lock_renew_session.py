"""Automatically renew a session lock

From azure-servicebus-aio-api.txt (AutoLockRenew). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR, SERVICE_BUS_SESSION_QUEUE_NAME.
"""
import asyncio
import os

from servicebus import Message
from servicebus.aio import ServiceBusClient

async def main() -> None:
    queue_name = os.environ["SERVICE_BUS_SESSION_QUEUE_NAME"]
    session_id = os.environ.get("SERVICE_BUS_SESSION_ID", "example-session")
    servicebus_client = ServiceBusClient.from_connection_string(os.environ["SERVICE_BUS_CONNECTION_STR"], max_wait_time=3)
    async with ServiceBusClient.from_connection_string(os.environ["SERVICE_BUS_CONNECTION_STR"]) as c:
        async with c.get_queue_sender(queue_name) as sender:
            await sender.send_messages(Message("session message", session_id=session_id))


    async def process_message(message):
        print(str(message))
    # --- example (verbatim) ---
    from servicebus.aio import AutoLockRenew

    lock_renewal = AutoLockRenew()
    async with servicebus_client.get_queue_session_receiver(queue_name=queue_name, session_id=session_id) as receiver:
        session = receiver.session
        # Auto renew session lock for 2 minutes
        lock_renewal.register(session, timeout=120)
        async for message in receiver:
            await process_message(message)
            await message.complete()
    # --- end of example ---
    await lock_renewal.close()
    await servicebus_client.close()
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
