"""async for and get_streaming_message_iter."""

import time

from servicebus import Message
from servicebus.aio import ServiceBusClient


async def test_async_for_stops_after_max_wait_time(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([Message("s%d" % i) for i in range(4)])
        bodies = []
        async with client.get_queue_receiver(queue, max_wait_time=1) as receiver:
            async for msg in receiver:
                bodies.append(msg.body)
                await msg.complete()
        assert sorted(bodies) == [b"s0", b"s1", b"s2", b"s3"]


async def test_get_streaming_message_iter_with_prefetch(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([Message("t%d" % i) for i in range(6)])
        seen = 0
        async with client.get_queue_receiver(queue, prefetch_count=3) as receiver:
            start = time.monotonic()
            async for msg in receiver.get_streaming_message_iter(max_wait_time=0.5):
                seen += 1
                await msg.complete()
            assert time.monotonic() - start < 5
        assert seen == 6
