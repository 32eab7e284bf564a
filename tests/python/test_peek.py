"""peek_messages browses without locking or removing."""

from servicebus import Message, PeekedMessage
from servicebus.aio import ServiceBusClient


async def test_peek_browses_in_order_and_leaves_messages(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([Message("p%d" % i) for i in range(3)])
        async with client.get_queue_receiver(queue) as receiver:
            one = await receiver.peek_messages()
            assert len(one) == 1 and isinstance(one[0], PeekedMessage)
            assert not hasattr(one[0], "complete")
            peeked = await receiver.peek_messages(max_message_count=10, sequence_number=one[0].sequence_number)
            assert [m.body for m in peeked] == [b"p0", b"p1", b"p2"]
            seqs = [m.sequence_number for m in peeked]
            assert seqs == sorted(seqs)
            assert all(m.enqueued_time_utc is not None for m in peeked)
            later = await receiver.peek_messages(max_message_count=10, sequence_number=seqs[1])
            assert [m.body for m in later] == [b"p1", b"p2"]
            got = await receiver.receive_messages(max_message_count=3, max_wait_time=5)
            assert got, "peek must not remove or lock"
            for m in got:
                await m.complete()
