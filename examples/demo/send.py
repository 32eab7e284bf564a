"""Sends COUNT messages with TEXT to QUEUE. Usage: send.py QUEUE TEXT COUNT"""
import asyncio
import os
import sys

from servicebus import Message
from servicebus.aio import ServiceBusClient


async def main(queue: str, text: str, count: int) -> None:
    conn_str = os.environ["SERVICEBUS_CONNECTION_STR"]
    async with ServiceBusClient.from_connection_string(conn_str) as client:
        async with client.get_queue_sender(queue) as sender:
            for i in range(1, count + 1):
                msg = Message(f"{text} #{i}", message_id=f"py-{i}")
                msg.properties = {"origin": "python", "n": i}
                await sender.send_messages(msg)
                print(f"python sent    {msg.message_id}: {text} #{i}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
