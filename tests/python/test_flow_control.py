"""Large concurrent sends exceed the transport's write buffer: the protocol
pauses flushing (pause_writing) and resumes (resume_writing) without losing or
reordering bytes."""

import asyncio

from servicebus import Message, ReceiveMode
from servicebus.aio import ServiceBusClient

# printable bodies: bodies of zero bytes crash the emulator (bindings/python/STATUS.md)
PAYLOADS = [bytes([65 + i]) * 200_000 for i in range(30)]


async def _send_all(client: ServiceBusClient, queue: str) -> None:
    async with client.get_queue_sender(queue) as sender:
        await asyncio.gather(*(sender.send_messages(Message(p, message_id=str(i))) for i, p in enumerate(PAYLOADS)))


async def _send_and_check(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _send_all(client, queue)
        async with client.get_queue_receiver(queue) as receiver:
            got = {}
            while len(got) < len(PAYLOADS):
                batch = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
                assert batch, "missing %d messages" % (len(PAYLOADS) - len(got))
                for m in batch:
                    got[int(m.message_id)] = m.body
                    await m.complete()
    assert [got[i] for i in range(len(PAYLOADS))] == PAYLOADS


async def test_many_large_sends_complete_and_arrive_intact(connection_string: str, queue: str) -> None:
    await _send_and_check(connection_string, queue)


async def test_receive_and_delete_returns_messages_that_arrived_late(connection_string: str, queue: str) -> None:
    """Regression: presettled messages that arrive after a receive ended (in answer to the
    credit drain) must come out of the next receive: the broker has deleted them already."""
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _send_all(client, queue)
        async with client.get_queue_receiver(queue, receive_mode=ReceiveMode.ReceiveAndDelete) as receiver:
            got = 0
            while got < len(PAYLOADS):
                batch = await receiver.receive_messages(max_message_count=10, max_wait_time=2)
                assert batch, "lost %d receive-and-delete messages" % (len(PAYLOADS) - got)
                got += len(batch)


def _on_uvloop(coro_fn, *args):  # type: ignore[no-untyped-def]
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn(*args))
    finally:
        loop.close()


async def _limits(connection_string: str, queue: str):  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"x"))
            transport = client._connection._handle._transport
            return type(transport).__module__, transport.get_write_buffer_limits()


async def test_asyncio_transport_keeps_its_write_limits(connection_string: str, queue: str) -> None:
    module, limits = await _limits(connection_string, queue)
    if module.startswith("asyncio."):
        assert limits != (0, 0)


def test_uvloop_transport_writes_at_once(connection_string: str, queue: str) -> None:
    """uvloop holds transport.write() data until the end of the loop iteration unless its
    high-water mark is passed; the connection sets it to 0 so that the credit and the first
    settlement of an iteration go out at once, as on asyncio (connection.c write_at_once)."""
    module, limits = _on_uvloop(_limits, connection_string, queue)
    assert module.startswith("uvloop")
    assert limits == (0, 0)


def test_many_large_sends_on_uvloop(connection_string: str, queue: str) -> None:
    """With a high-water mark of 0 uvloop pauses us whenever anything is left unwritten:
    30 concurrent 200 KB sends still arrive whole and in order."""
    _on_uvloop(_send_and_check, connection_string, queue)
