"""AMQP bodies and values beyond data sections and scalars (azure-servicebus 7.x):
amqp-sequence and amqp-value bodies (AmqpAnnotatedMessage, body_type), and
application properties holding lists, maps, chars, decimals, arrays and
described values, through the emulator."""

import datetime
import decimal
import uuid

import pytest

from servicebus import Message
from servicebus._sbus import _decode_amqp, _encode_amqp
from servicebus.aio import ServiceBusClient
from servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType


async def _round_trip(connection_string: str, queue: str, *messages: Message) -> list:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(list(messages))
        got: list = []
        async with client.get_queue_receiver(queue) as receiver:
            while len(got) < len(messages):
                batch = await receiver.receive_messages(max_message_count=len(messages), max_wait_time=5)
                assert batch, "only %d of %d arrived" % (len(got), len(messages))
                for m in batch:
                    await receiver.complete_message(m)
                got += batch
    return got


async def test_sequence_and_value_bodies_round_trip(connection_string: str, queue: str) -> None:
    sent = [
        AmqpAnnotatedMessage(sequence_body=[[1, "two", b"3"], [4.5, None]]),
        AmqpAnnotatedMessage(sequence_body=[1, 2, 3]),  # one list: one section
        AmqpAnnotatedMessage(value_body={"a": [1, 2], "b": {"c": True}}),
        AmqpAnnotatedMessage(value_body=42),
        AmqpAnnotatedMessage(value_body=[uuid.UUID(int=7), "x"]),
        AmqpAnnotatedMessage(data_body=["x", b"y"]),
    ]
    got = await _round_trip(connection_string, queue, *sent)
    assert [m.body_type for m in got] == [
        AmqpMessageBodyType.SEQUENCE,
        AmqpMessageBodyType.SEQUENCE,
        AmqpMessageBodyType.VALUE,
        AmqpMessageBodyType.VALUE,
        AmqpMessageBodyType.VALUE,
        AmqpMessageBodyType.DATA,
    ]
    assert got[0].body == [[1, "two", b"3"], [4.5, None]]
    assert got[1].body == [[1, 2, 3]]
    assert got[2].body == {"a": [1, 2], "b": {"c": True}}
    assert got[3].body == 42
    assert got[4].body == [uuid.UUID(int=7), "x"]
    assert got[5].body == [b"x", b"y"]
    assert [m.body_type for m in sent] == [m.body_type for m in got]


async def test_compound_application_properties_round_trip(connection_string: str, queue: str) -> None:
    props = {
        "list": [1, "a", None, b"b", 2.5, [True]],
        "dict": {"k": 1, "n": [2], "m": {"x": "y"}},
        "tuple": (1, 2),
        "scalar": "s",
        "dec": decimal.Decimal("123.45"),  # sent as decimal128
        "decs": [decimal.Decimal("-1E+10"), decimal.Decimal("Infinity")],
        "when": datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
    }
    (got,) = await _round_trip(connection_string, queue, Message(b"p", application_properties=props))
    assert got.application_properties == dict(props, tuple=[1, 2])
    assert got.body_type is AmqpMessageBodyType.DATA and got.body == b"p"


def test_annotated_message_takes_exactly_one_body() -> None:
    with pytest.raises(ValueError):
        AmqpAnnotatedMessage()
    with pytest.raises(ValueError):
        AmqpAnnotatedMessage(data_body=b"x", value_body=1)
    with pytest.raises(TypeError):
        AmqpAnnotatedMessage(sequence_body="not a list")
    with pytest.raises(TypeError):
        AmqpAnnotatedMessage(value_body=1, annotations={"x-opt-a": 1})  # not carried: refused, not dropped
    assert AmqpAnnotatedMessage(value_body=None).body is None


def test_unsupported_values_are_refused_when_sent() -> None:
    with pytest.raises(TypeError):
        Message(b"x", application_properties={"o": [object()]})._encoded_size()
    with pytest.raises(TypeError):
        AmqpAnnotatedMessage(value_body=[object()])
    with pytest.raises(ValueError):  # beyond decimal128
        AmqpAnnotatedMessage(value_body=decimal.Decimal("1E+6112"))


def test_decimals_encode_as_decimal128() -> None:
    for text in ("123.45", "-1E+10", "0", "1234567890123456789012345678901234", "1E-6176", "9E+6111", "-Infinity"):
        encoded = _encode_amqp(decimal.Decimal(text))
        assert encoded[0] == 0x94 and len(encoded) == 17
        assert _decode_amqp(encoded) == decimal.Decimal(text)
    assert _encode_amqp(decimal.Decimal("123.45")).hex() == "94303c0000000000000000000000003039"
    assert _decode_amqp(_encode_amqp(decimal.Decimal("NaN"))).is_nan()


def test_received_encodings_convert_as_azure_does() -> None:
    assert _decode_amqp(b"\x73\x00\x00\x00\x41") == "A"  # char
    assert _decode_amqp(b"\x73\x00\x01\xf6\x00") == "\U0001f600"
    # decimal32 +12345E-2, decimal64 -1E+0, decimal128 7E-3 (IEEE 754-2008 BID)
    assert _decode_amqp(b"\x74\x31\x80\x30\x39") == decimal.Decimal("123.45")
    assert _decode_amqp(b"\x84\xb1\xc0\x00\x00\x00\x00\x00\x01") == decimal.Decimal("-1")
    d128 = b"\x94\x30\x3a" + b"\x00" * 13 + b"\x07"
    assert _decode_amqp(d128) == decimal.Decimal("7E-3")
    # array of ints -> list; described -> (descriptor, value); symbol -> str
    assert _decode_amqp(b"\xe0\x0e\x03\x71" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x03") == [
        1,
        2,
        3,
    ]
    assert _decode_amqp(b"\x00\xa3\x03abc\xa1\x01x") == ("abc", "x")
    # a map whose keys are a list and a map: hashable tuple / frozenset
    key_list = _encode_amqp([1, 2])
    key_map = _encode_amqp({"a": 1})
    body = key_list + b"\x54\x01" + key_map + b"\x54\x02"
    encoded = b"\xc1" + bytes([len(body) + 1, 4]) + body
    assert _decode_amqp(encoded) == {(1, 2): 1, frozenset({("a", 1)}): 2}
    with pytest.raises(ValueError):
        _decode_amqp(b"\xc0\x05\x02\x54")  # truncated list
