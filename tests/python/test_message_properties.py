"""Every Message property survives the trip; received-only properties are set."""

import datetime
import uuid

import pytest

from servicebus import Message, ServiceBusMessage
from servicebus.aio import ServiceBusClient


def test_message_setters_and_aliases() -> None:
    m = Message("body", label="lbl", properties={"a": 1})
    assert m.subject == "lbl" and m.label == "lbl"
    assert m.application_properties == {"a": 1} and m.properties == {"a": 1}
    m.subject = "subj"
    assert m.label == "subj"
    m.time_to_live = datetime.timedelta(seconds=90)
    assert m.time_to_live == datetime.timedelta(seconds=90)
    m.message_id = None
    assert m.message_id is None
    assert ServiceBusMessage is Message
    with pytest.raises(ValueError):
        m.message_id = "x" * 129
    with pytest.raises(TypeError):
        Message(b"x", no_such_keyword=1)
    assert "body" in repr(m) and "key" not in repr(m).lower()


def test_body_forms() -> None:
    assert Message(b"bytes").body == b"bytes"
    assert Message("text").body == b"text"
    assert Message([b"a", b"b"]).body == [b"a", b"b"]
    assert Message(None).body is None
    assert str(Message("héllo")) == "héllo"


async def test_all_properties_round_trip(connection_string: str, queue: str) -> None:
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
    uid = uuid.uuid4()
    props = {
        "str": "v",
        "int": 42,
        "big": 2**40,
        "neg": -7,
        "float": 1.5,
        "bool": True,
        "none": None,
        "bytes": b"\x00\x01",
        "uuid": uid,
        "time": when,
    }
    sent = Message(
        b"payload",
        application_properties=props,
        message_id="mid-1",
        correlation_id="cid-1",
        content_type="application/json",
        subject="subj",
        to="to-addr",
        reply_to="reply-q",
        reply_to_session_id="rsid",
        partition_key="pk",
        time_to_live=datetime.timedelta(minutes=5),
    )
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(sent)
        async with client.get_queue_receiver(queue) as receiver:
            (got,) = await receiver.receive_messages(max_wait_time=5)
            for name in (
                "message_id",
                "correlation_id",
                "content_type",
                "subject",
                "label",
                "to",
                "reply_to",
                "reply_to_session_id",
                "partition_key",
                "time_to_live",
                "body",
            ):
                assert getattr(got, name) == getattr(sent, name), name
            assert got.application_properties == props
            now = datetime.datetime.now(datetime.timezone.utc)
            assert abs((got.enqueued_time_utc - now).total_seconds()) < 30
            assert got.locked_until_utc > now
            assert got.expires_at_utc == got.enqueued_time_utc + datetime.timedelta(minutes=5)
            assert isinstance(got.lock_token, uuid.UUID)
            assert got.delivery_count in (0, 1)
            assert isinstance(got.sequence_number, int)
            assert got.dead_letter_reason is None
            assert got.scheduled_enqueue_time_utc is None
            assert "payload" in repr(got)
            await got.complete()
