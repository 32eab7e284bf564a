"""Cancelling an awaitable (also through asyncio.wait_for) leaves nothing behind."""

import asyncio
import gc

import pytest

from servicebus import Message
from servicebus.aio import ServiceBusClient

from conftest import drain_queue


def _pending(client: ServiceBusClient) -> int:
    handle = client._connection._handle
    return handle.pending_count if handle is not None else 0


async def test_wait_for_cancels_the_engine_receive(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(receiver.receive_messages(max_wait_time=None), 0.3)
            assert _pending(client) == 0
            # the cancelled receive left no credit behind: a message sent now
            # is not locked for nobody, the next receive gets it
            async with client.get_queue_sender(queue) as sender:
                await sender.send_messages(Message(b"after-cancel"))
            got = await receiver.receive_messages(max_wait_time=5)
            assert [m.body for m in got] == [b"after-cancel"]
            await got[0].complete()


async def test_cancel_task_mid_receive_then_keep_using_the_receiver(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            for _ in range(5):
                task = asyncio.ensure_future(receiver.receive_messages(max_wait_time=30))
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert _pending(client) == 0
            assert await receiver.receive_messages(max_wait_time=0.2) == []


async def test_cancelled_send_leaves_no_pending_operation(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            task = asyncio.ensure_future(sender.send_messages(Message(b"maybe")))
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(0.1)
            assert _pending(client) == 0


async def test_objects_dropped_in_odd_orders(connection_string: str) -> None:
    queue = "queue.1"  # leaves a locked message behind: not the shared test queue
    await drain_queue(connection_string, queue)
    client = ServiceBusClient.from_connection_string(connection_string)
    sender = client.get_queue_sender(queue)
    receiver = client.get_queue_receiver(queue)
    await sender.send_messages(Message(b"gc"))
    got = await receiver.receive_messages(max_wait_time=5)
    await client.close()  # closes children and the connection
    del client
    gc.collect()
    # children outlive the client: using them fails cleanly
    with pytest.raises(Exception):
        await sender.send_messages(Message(b"late"))
    del sender
    gc.collect()
    # a message outlives its receiver and connection: settling fails, never crashes
    with pytest.raises(Exception):
        await got[0].complete()
    del receiver
    gc.collect()
    del got
    gc.collect()
    await asyncio.sleep(0)


async def test_closing_the_client_ends_a_pending_receive(connection_string: str, queue: str) -> None:
    from servicebus.exceptions import ServiceBusError

    client = ServiceBusClient.from_connection_string(connection_string)
    receiver = client.get_queue_receiver(queue)
    await receiver.receive_messages(max_wait_time=0.05)
    task = asyncio.ensure_future(receiver.receive_messages(max_wait_time=None))
    await asyncio.sleep(0.1)
    await client.close()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, "a pending receive must end when its client closes"
    exc = task.exception()
    assert exc is None or isinstance(exc, ServiceBusError)
    assert _pending(client) == 0


async def test_receiver_closed_then_used_raises(connection_string: str, queue: str) -> None:
    from servicebus.exceptions import InvalidHandlerState

    async with ServiceBusClient.from_connection_string(connection_string) as client:
        receiver = client.get_queue_receiver(queue)
        async with receiver:
            pass
        await receiver.close()  # twice is fine
        with pytest.raises(InvalidHandlerState):
            await receiver.receive_messages(max_wait_time=0.1)
