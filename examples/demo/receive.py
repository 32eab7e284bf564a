"""Receives COUNT messages from QUEUE and completes them. Usage: receive.py QUEUE COUNT"""
import asyncio
import os
import sys

from servicebus.aio import ServiceBusClient


async def main(queue: str, count: int) -> None:
    conn_str = os.environ["SERVICEBUS_CONNECTION_STR"]
    got = 0
    async with ServiceBusClient.from_connection_string(conn_str) as client:
        async with client.get_queue_receiver(queue) as receiver:
            while got < count:
                batch = await receiver.receive_messages(max_message_count=count - got, max_wait_time=5)
                if not batch:
                    raise SystemExit(f"python: only {got} of {count} messages arrived")
                for msg in batch:
                    props = {k.decode() if isinstance(k, bytes) else k: v for k, v in (msg.properties or {}).items()}
                    print(f"python received {msg.message_id}: {str(msg)}  (seq {msg.sequence_number}, props {props})")
                    await msg.complete()
                    got += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
