"""Cancelling messages scheduled to be sent in future

From azure-servicebus-aio-api.txt (ServiceBusSender.cancel_scheduled_messages). The block between the
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

    async with ServiceBusSender.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    ) as scheduler:
        sequence_nums = await scheduler.schedule_messages(
            [Message("to cancel")], datetime.datetime.utcnow() + datetime.timedelta(hours=1)
        )
    # --- example (verbatim) ---
    async with servicebus_sender:
        await servicebus_sender.cancel_scheduled_messages(sequence_nums)
    # --- end of example ---
    print("ok", sequence_nums)

if __name__ == "__main__":
    asyncio.run(main())
