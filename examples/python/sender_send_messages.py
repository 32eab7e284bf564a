"""Send message.

From azure-servicebus-aio-api.txt (ServiceBusSender.send_messages). The block between the
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
        message = Message("Hello World")
        await servicebus_sender.send_messages(message)
    # --- end of example ---
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
