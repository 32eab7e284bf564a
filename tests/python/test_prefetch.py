"""prefetch_count keeps messages ahead; receive_messages returns what is there."""

import time

from servicebus import Message
from servicebus.aio import ServiceBusClient


async def test_prefetch_returns_batches_quickly(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([Message("p%d" % i) for i in range(50)])
        async with client.get_queue_receiver(queue, prefetch_count=20) as receiver:
            seen = []
            start = time.monotonic()
            while len(seen) < 50:
                got = await receiver.receive_messages(max_message_count=20, max_wait_time=5)
                assert got and len(got) <= 20
                seen += got
                for m in got:
                    await m.complete()
            assert time.monotonic() - start < 5
            assert len({m.sequence_number for m in seen}) == 50


async def test_max_message_count_validation(connection_string: str, queue: str) -> None:
    import pytest

    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            with pytest.raises(ValueError):
                await receiver.receive_messages(max_message_count=0)
            with pytest.raises(ValueError):
                await receiver.receive_messages(max_wait_time=-1)
            with pytest.raises(ValueError):
                await receiver.peek_messages(max_message_count=0)
