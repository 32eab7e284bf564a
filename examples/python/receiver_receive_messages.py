"""Receive messages from ServiceBus.

From azure-servicebus-aio-api.txt (ServiceBusReceiver.receive_messages). The block between the
"example" markers is the documented example verbatim, with only the import
changed from azure.servicebus to servicebus; the rest is scaffolding that
gives it the variables it uses. Environment: SERVICE_BUS_CONNECTION_STR, SERVICE_BUS_QUEUE_NAME.
"""
import asyncio
import os

from servicebus import Message
from servicebus.aio import ServiceBusReceiver, ServiceBusSender

async def main() -> None:
    servicebus_receiver = ServiceBusReceiver.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    )
    async with ServiceBusSender.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    ) as sender:
        await sender.send_messages([Message("example message %d" % i) for i in range(3)])
    # --- example (verbatim) ---
    async with servicebus_receiver:
        messages = await servicebus_receiver.receive_messages(max_wait_time=5)
        for message in messages:
            print(str(message))
            await message.complete()
    # --- end of example ---
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
