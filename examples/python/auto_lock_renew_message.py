"""Automatically renew a message lock

From azure-servicebus-aio-api.txt (AutoLockRenew). The block between the
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
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"], max_wait_time=3
    )
    async with ServiceBusSender.from_connection_string(
        conn_str=os.environ["SERVICE_BUS_CONNECTION_STR"], queue_name=os.environ["SERVICE_BUS_QUEUE_NAME"]
    ) as sender:
        await sender.send_messages([Message("renewed message %d" % i) for i in range(2)])

    async def process_message(message):
        print(str(message))
    # --- example (verbatim) ---
    from servicebus.aio import AutoLockRenew

    lock_renewal = AutoLockRenew()
    async with servicebus_receiver:
        async for message in servicebus_receiver:
            lock_renewal.register(message, timeout=60)
            await process_message(message)
            await message.complete()
    # --- end of example ---
    await lock_renewal.close()
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
