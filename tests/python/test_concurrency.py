"""Several tasks share one receiver and one sender: every message is delivered once."""

import asyncio

from servicebus import Message
from servicebus.aio import ServiceBusClient


async def test_concurrent_receives_and_settlements_on_one_receiver(connection_string: str, queue: str) -> None:
    n = 40
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            seen = []

            async def worker() -> None:
                while True:
                    got = await receiver.receive_messages(max_message_count=3, max_wait_time=1)
                    if not got:
                        return
                    for m in got:
                        seen.append(m.message_id)
                        await m.complete()

            workers = [asyncio.ensure_future(worker()) for _ in range(4)]
            await asyncio.gather(*(sender.send_messages(Message(b"c", message_id=str(i))) for i in range(n)))
            await asyncio.gather(*workers)
    assert sorted(seen, key=int) == [str(i) for i in range(n)]
