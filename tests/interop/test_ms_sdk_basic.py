"""Send, receive, batches, ReceiveAndDelete, peek: Microsoft's SDK against sbus-emulator."""
import datetime
import uuid

from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode


async def test_round_trip_keeps_every_property(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage(
                "hello", message_id="m-1", correlation_id="c-1", subject="subj", content_type="text/plain",
                to="dest", reply_to="rq", time_to_live=datetime.timedelta(minutes=5),
                application_properties={"color": "red", "n": 7, "ok": True}))
        async with client.get_queue_receiver(queue) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(msgs) == 1
            m = msgs[0]
            assert str(m) == "hello"
            assert m.message_id == "m-1"
            assert m.correlation_id == "c-1"
            assert m.subject == "subj"
            assert m.content_type == "text/plain"
            assert m.to == "dest"
            assert m.reply_to == "rq"
            assert m.time_to_live == datetime.timedelta(minutes=5)
            assert m.application_properties == {b"color": b"red", b"n": 7, b"ok": True}
            assert m.sequence_number == 1
            assert m.delivery_count == 0
            assert isinstance(m.lock_token, uuid.UUID)
            now = emulator.now()
            assert abs((m.enqueued_time_utc - now).total_seconds()) < 30
            assert 20 < (m.locked_until_utc - now).total_seconds() <= 31
            await r.complete_message(m)
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []


async def test_batch_is_split_into_messages_with_own_sequence_numbers(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            batch = await s.create_message_batch()
            for i in range(5):
                batch.add_message(ServiceBusMessage("b%d" % i))
            await s.send_messages(batch)
            await s.send_messages([ServiceBusMessage("l%d" % i) for i in range(3)])
        assert emulator.entities()[queue]["active"] == 8
        async with client.get_queue_receiver(queue) as r:
            got = []
            while len(got) < 8:
                msgs = await r.receive_messages(max_message_count=8, max_wait_time=5)
                assert msgs
                for m in msgs:
                    got.append((m.sequence_number, str(m)))
                    await r.complete_message(m)
        assert [b for _, b in got] == ["b0", "b1", "b2", "b3", "b4", "l0", "l1", "l2"]
        assert [s for s, _ in got] == list(range(1, 9))
        assert emulator.wait_count(queue, "total", 0) == 0


async def test_message_whose_data_sections_look_like_messages_stays_one(client, queue, emulator):
    """Only the transfer's message-format (0x80013700) makes a batch: a plain message whose
    body is data sections that each hold an encoded AMQP message is one message."""
    from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
    inner = [b"\x00\x53\x75\xa0\x03abc", b"\x00\x53\x75\xa0\x03def"]  # complete messages
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(AmqpAnnotatedMessage(data_body=inner))
        assert emulator.entities()[queue]["active"] == 1
        async with client.get_queue_receiver(queue) as r:
            msgs = await r.receive_messages(max_message_count=2, max_wait_time=5)
            assert len(msgs) == 1
            assert msgs[0].raw_amqp_message.body_type == AmqpMessageBodyType.DATA
            assert list(msgs[0].body) == inner
            await r.complete_message(msgs[0])


async def test_receive_and_delete_removes_on_delivery(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages([ServiceBusMessage("x%d" % i) for i in range(3)])
        async with client.get_queue_receiver(queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
            got = []
            while len(got) < 3:
                msgs = await r.receive_messages(max_message_count=3, max_wait_time=5)
                assert msgs
                got += [str(m) for m in msgs]
                assert all(m.lock_token is None for m in msgs)
        assert got == ["x0", "x1", "x2"]
        assert emulator.wait_count(queue, "total", 0) == 0


async def test_peek_returns_messages_without_locking(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages([ServiceBusMessage("p%d" % i) for i in range(4)])
        async with client.get_queue_receiver(queue) as r:
            peeked = await r.peek_messages(max_message_count=10)
            assert [str(m) for m in peeked] == ["p0", "p1", "p2", "p3"]
            assert [m.sequence_number for m in peeked] == [1, 2, 3, 4]
            assert emulator.entities()[queue]["locked"] == 0
            second = await r.peek_messages(max_message_count=2, sequence_number=3)
            assert [str(m) for m in second] == ["p2", "p3"]
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(msgs[0]) == "p0"


async def test_empty_queue_returns_nothing_after_wait(client, queue):
    async with client:
        async with client.get_queue_receiver(queue) as r:
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []
            assert await r.peek_messages(max_message_count=5) == []
