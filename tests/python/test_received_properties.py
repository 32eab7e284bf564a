"""Received-message properties not covered by the round trip: via_partition_key,
scheduled_enqueue_time_utc, enqueued_sequence_number (auto-forwarding), state."""

import datetime

from servicebus import Message, ReceiveMode, ServiceBusMessageState
from servicebus.aio import ServiceBusClient

from conftest import drain_queue


async def test_via_partition_key_round_trip(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"v", via_partition_key="via-1"))
        async with client.get_queue_receiver(queue) as receiver:
            (m,) = await receiver.receive_messages(max_wait_time=5)
            assert m.via_partition_key == "via-1"
            assert m.state == ServiceBusMessageState.ACTIVE
            await m.complete()


async def test_scheduled_message_carries_its_scheduled_time(connection_string: str, queue: str) -> None:
    when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)).replace(microsecond=0)
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            msg = Message(b"later")
            msg.scheduled_enqueue_time_utc = when
            await sender.send_messages(msg)  # scheduling through the message property
        async with client.get_queue_receiver(queue) as receiver:
            assert await receiver.receive_messages(max_wait_time=0.3) == []  # >= 1 s ahead still
            (m,) = await receiver.receive_messages(max_wait_time=5)
            assert m.scheduled_enqueue_time_utc == when
            await m.complete()


async def test_auto_forwarded_message_keeps_its_original_sequence_number(connection_string: str) -> None:
    await drain_queue(connection_string, "forward-target")
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender("forward-source") as sender:
            await sender.send_messages(Message(b"fwd"))
        async with client.get_queue_receiver("forward-target", receive_mode=ReceiveMode.ReceiveAndDelete) as r:
            (m,) = await r.receive_messages(max_wait_time=5)
    assert m.body == b"fwd"
    assert isinstance(m.enqueued_sequence_number, int)
    assert m.sequence_number is not None
