"""BatchMessage size accounting and batched sends."""

import pytest

from servicebus import BatchMessage, Message
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import MessageContentTooLarge


async def test_create_batch_fills_up_and_sends_once(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            batch = await sender.create_batch(max_size_in_bytes=4096)
            assert isinstance(batch, BatchMessage)
            assert batch.max_size_in_bytes == 4096
            sizes = []
            with pytest.raises(MessageContentTooLarge):
                for i in range(1000):
                    batch.add(Message(b"x" * 100, message_id="b%d" % i))
                    sizes.append(batch.size_in_bytes)
            assert sizes == sorted(sizes) and sizes[-1] <= 4096
            count = len(batch)
            assert 10 < count < 41
            with pytest.raises(ValueError):
                batch.add(Message(b"y" * 5000))
            assert len(batch) == count
            await sender.send_messages(batch)
        async with client.get_queue_receiver(queue, receive_mode=1) as receiver:
            n = 0
            while n < count:
                got = await receiver.receive_messages(max_message_count=100, max_wait_time=5)
                assert got
                n += len(got)
            assert n == count


async def test_create_batch_larger_than_link_limit_is_refused(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            with pytest.raises(ValueError):
                await sender.create_batch(max_size_in_bytes=1024 * 1024 * 1024)
            batch = await sender.create_message_batch()
            assert batch.max_size_in_bytes > 0


async def test_list_that_does_not_fit_one_batch_raises_value_error(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            with pytest.raises(ValueError):
                await sender.send_messages([Message(b"z" * 100_000) for _ in range(5)])
