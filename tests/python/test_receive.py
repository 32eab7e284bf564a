"""Receiving from an empty queue returns [] after max_wait_time, not before."""

import time

from servicebus.aio import ServiceBusClient


async def test_empty_queue_returns_empty_list_after_max_wait_time(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            start = time.monotonic()
            got = await receiver.receive_messages(max_message_count=5, max_wait_time=1.0)
            elapsed = time.monotonic() - start
    assert got == []
    assert 0.9 <= elapsed < 1.8, elapsed
