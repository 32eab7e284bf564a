"""Schedule a message to be sent in future

From azure-servicebus-aio-api.txt (ServiceBusSender.schedule_messages). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR, SERVICE_BUS_QUEUE_NAME.
"""
import asyncio
import os

import datetime

from servicebus import Message
from servicebus.aio import ServiceBusSender

async def main() -> None:
    servicebus_sender = ServiceBusSender.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    )
    # --- example (verbatim) ---
    async with servicebus_sender:
        scheduled_time_utc = datetime.datetime.utcnow() + datetime.timedelta(seconds=30)
        scheduled_messages = [Message("Scheduled message") for _ in range(10)]
        sequence_nums = await servicebus_sender.schedule_messages(scheduled_messages, scheduled_time_utc)
    # --- end of example ---
    async with ServiceBusSender.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    ) as sender:
        await sender.cancel_scheduled_messages(sequence_nums)  # tidy up
    print("ok", len(sequence_nums))

if __name__ == "__main__":
    asyncio.run(main())
