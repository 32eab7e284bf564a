"""Create BatchMessage object within limited size

From azure-servicebus-aio-api.txt (ServiceBusSender.create_batch). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR, SERVICE_BUS_QUEUE_NAME.
"""
import asyncio
import os

from servicebus import Message
from servicebus.aio import ServiceBusSender

async def main() -> None:
    servicebus_sender = ServiceBusSender.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    )
    # --- example (verbatim) ---
    async with servicebus_sender:
        batch_message = await servicebus_sender.create_batch()
        batch_message.add(Message("Single message inside batch"))
    # --- end of example ---
    async with ServiceBusSender.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    ) as sender:
        await sender.send_messages(batch_message)
    print("ok", len(batch_message), batch_message.size_in_bytes)

if __name__ == "__main__":
    asyncio.run(main())
