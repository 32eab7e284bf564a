"""schedule_messages / cancel_scheduled_messages."""

import asyncio
import datetime

from servicebus import Message, ServiceBusMessageState
from servicebus.aio import ServiceBusClient


async def test_schedule_then_cancel_one(connection_string: str, queue: str) -> None:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            seqs = await sender.schedule_messages([Message(b"keep"), Message(b"drop")], when)
            assert len(seqs) == 2 and all(isinstance(s, int) for s in seqs)
            single = await sender.schedule_messages(Message(b"single"), when.replace(tzinfo=None))
            assert len(single) == 1
            await sender.cancel_scheduled_messages(seqs[1])
            await sender.cancel_scheduled_messages(single)
        async with client.get_queue_receiver(queue) as receiver:
            peeked = await receiver.peek_messages(10, sequence_number=seqs[0])
            assert [m.body for m in peeked] == [b"keep"]
            assert peeked[0].state == ServiceBusMessageState.SCHEDULED
            assert await receiver.receive_messages(max_wait_time=0.5) == []
            await asyncio.sleep(1.7)
            got = await receiver.receive_messages(max_message_count=5, max_wait_time=5)
            assert [m.body for m in got] == [b"keep"]
            await got[0].complete()
