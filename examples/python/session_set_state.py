"""Set the session state

From azure-servicebus-aio-api.txt (ServiceBusSession.set_state). The block between the
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
    # --- example (verbatim) ---
    async with servicebus_client.get_queue_session_receiver(queue_name=queue_name, session_id=session_id) as receiver:
        session = receiver.session
        session_state = await session.set_state("START")
    # --- end of example ---
    async with servicebus_client.get_queue_session_receiver(queue_name=queue_name, session_id=session_id) as receiver:
        assert await receiver.session.get_state() == "START"
        await receiver.session.set_state(None)
        async for message in receiver:
            await message.complete()
    await servicebus_client.close()
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
