"""Properties and application-property types as Microsoft's SDK sends and reads them.

What test_ms_sdk_basic.py leaves out: session and partition keys with reply-to sessions,
every scalar type an application property can carry, a scheduled message's enqueue time and
the dead-letter reason and description as the SDK reads them back from the DLQ.
"""
import datetime
import uuid

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue

import servicebus
import servicebus.aio
from conftest import CONN_STR


async def _one(client, queue, **kw):
    async with client.get_queue_receiver(queue, **kw) as r:
        msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
        assert len(msgs) == 1
        await r.complete_message(msgs[0])
        return msgs[0]


async def test_session_partition_and_reply_to_session_round_trip(client, emulator):
    queue = emulator.create_queue(RequiresSession=True)
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage(
                b"x", session_id="s-1", partition_key="s-1", reply_to_session_id="back-7",
                reply_to="replies"))
        m = await _one(client, queue, session_id="s-1")
        assert m.session_id == "s-1"
        assert m.partition_key == "s-1"
        assert m.reply_to_session_id == "back-7"
        assert m.reply_to == "replies"


async def test_application_property_types_survive(client, queue):
    when = datetime.datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    # (no bytes: uamqp sends a bytes value as a string cut at its first NUL)
    props = {"s": "text", "i": -7, "big": 2 ** 40, "f": 2.5, "t": True, "no": False,
             "u": ident, "when": when}
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("p", application_properties=props))
        m = await _one(client, queue)
    got = m.application_properties
    assert got[b"s"] == b"text"
    assert got[b"i"] == -7
    assert got[b"big"] == 2 ** 40
    assert got[b"f"] == 2.5
    assert got[b"t"] is True and got[b"no"] is False
    assert got[b"u"] == ident
    # uamqp hands AMQP timestamps back as milliseconds since the epoch
    stamp = got[b"when"]
    if isinstance(stamp, datetime.datetime):
        assert stamp == when
    else:
        assert stamp == int(when.timestamp() * 1000)


async def test_scheduled_message_keeps_its_enqueue_time(client, queue, emulator):
    at = emulator.now().replace(microsecond=0) + datetime.timedelta(hours=1)
    async with client:
        async with client.get_queue_sender(queue) as s:
            (seq,) = await s.schedule_messages(ServiceBusMessage("later"), at)
        async with client.get_queue_receiver(queue) as r:
            peeked = await r.peek_messages(max_message_count=1)
            assert [p.sequence_number for p in peeked] == [seq]
            assert peeked[0].scheduled_enqueue_time_utc == at
        emulator.advance(3601)  # the emulator's clock only: its schedule falls due
        m = await _one(client, queue)
    # on activation the message is enqueued anew, with a new sequence number
    assert m.sequence_number > seq
    assert m.scheduled_enqueue_time_utc == at
    # times cross the wire without the clock's skew (docs/emulator.md "Time"): the client
    # sees it enqueued now on its own clock
    assert abs((m.enqueued_time_utc - emulator.now()).total_seconds()) < 30


async def test_dead_letter_reason_and_description_read_back(client, queue):
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("bad", application_properties={"k": 1}))
        async with client.get_queue_receiver(queue) as r:
            (m,) = await r.receive_messages(max_message_count=1, max_wait_time=5)
            await r.dead_letter_message(m, reason="Broken", error_description="field x missing")
        async with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
            (dl,) = await d.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(dl) == "bad"
            assert dl.dead_letter_reason == "Broken"
            assert dl.dead_letter_error_description == "field x missing"
            assert dl.dead_letter_source is None  # dead-lettered on its own queue
            assert dl.application_properties[b"k"] == 1
            assert dl.delivery_count >= 0
            await d.complete_message(dl)


async def test_our_binary_and_typed_properties_reach_microsofts_sdk(client, queue, emulator):
    conn = CONN_STR.format(host=emulator.amqp)  # Microsoft's string, on the plain AMQP port
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    props = {"b": b"\x00\x01\xff", "i": -7, "f": 2.5, "u": ident, "s": "t"}
    async with servicebus.aio.ServiceBusClient.from_connection_string(conn) as ours:
        async with ours.get_queue_sender(queue) as s:
            await s.send_messages(servicebus.ServiceBusMessage(
                b"\x00raw", application_properties=props, session_id=None,
                correlation_id="c", reply_to_session_id="r-s"))
    async with client:
        m = await _one(client, queue)
    assert b"".join(m.body) == b"\x00raw"
    got = m.application_properties
    assert got[b"b"] == b"\x00\x01\xff"
    assert got[b"i"] == -7 and got[b"f"] == 2.5 and got[b"u"] == ident and got[b"s"] == b"t"
    assert m.correlation_id == "c"
    assert m.reply_to_session_id == "r-s"
