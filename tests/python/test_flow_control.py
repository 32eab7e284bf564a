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


async def test_many_large_sends_complete_and_arrive_intact(connection_string: str, queue: str) -> None:
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
