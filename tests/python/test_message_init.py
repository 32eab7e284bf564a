"""Message(...) and BatchMessage.add are C (servicebus._sbus): every keyword,
error and subclassing rule of the former Python __init__ still holds."""

import copy
import datetime
import inspect
import pickle
import sys

import pytest

from servicebus import BatchMessage, Message, PeekedMessage, ServiceBusMessage
from servicebus.exceptions import MessageContentTooLarge

UTC = datetime.timezone.utc


def test_every_keyword_round_trips() -> None:
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    m = Message(
        b"body",
        application_properties={"a": 1, b"b": "two"},
        session_id="sess",
        message_id="mid",
        scheduled_enqueue_time_utc=when,
        time_to_live=datetime.timedelta(seconds=90),
        content_type="application/json",
        correlation_id="corr",
        subject="subj",
        partition_key="pk",
        via_partition_key="vpk",
        to="dest",
        reply_to="rto",
        reply_to_session_id="rsess",
    )
    assert m.body == b"body"
    assert m.application_properties == {"a": 1, b"b": "two"}
    assert (m.session_id, m.message_id, m.content_type, m.correlation_id) == ("sess", "mid", "application/json", "corr")
    assert (m.subject, m.label, m.partition_key, m.via_partition_key) == ("subj", "subj", "pk", "vpk")
    assert (m.to, m.reply_to, m.reply_to_session_id) == ("dest", "rto", "rsess")
    assert m.scheduled_enqueue_time_utc == when
    assert m.time_to_live == datetime.timedelta(seconds=90)
    assert ServiceBusMessage is Message


def test_defaults_and_none_keywords_leave_properties_unset() -> None:
    m = Message(b"x", session_id=None, message_id=None, time_to_live=None, application_properties=None)
    assert m.session_id is None and m.message_id is None and m.time_to_live is None
    assert m.scheduled_enqueue_time_utc is None and m.subject is None
    assert m.application_properties == {}
    assert Message().body is None and Message(None).body is None
    assert Message(body=b"kw").body == b"kw"


def test_aliases_and_precedence() -> None:
    m = Message(b"x", label="old", properties={"p": 1})
    assert m.subject == "old" and m.application_properties == {"p": 1}
    m = Message(b"x", label="old", subject="new", properties={"p": 1}, application_properties={"a": 2})
    assert m.subject == "new" and m.application_properties == {"a": 2}


def test_body_kinds_and_encoding() -> None:
    assert Message(b"bytes").body == b"bytes"
    assert Message("text").body == b"text"
    assert Message(bytearray(b"ba")).body == b"ba"
    assert Message(memoryview(b"mv")).body == b"mv"
    assert Message([b"a", "b"]).body == [b"a", b"b"]
    assert Message([]).body == b""
    assert Message("h\u00e9", encoding="latin-1").body == b"h\xe9"
    assert Message("h\u00e9", encoding="utf8").body == "h\u00e9".encode()
    assert Message(b"raw", encoding="latin-1").body == b"raw"  # only a str is encoded
    with pytest.raises(LookupError):
        Message("x", encoding="no-such-codec")
    with pytest.raises(TypeError, match="must be str, bytes or a list of them, not int"):
        Message(3)  # type: ignore[arg-type]


def test_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"^unexpected keyword argument\(s\): aa, zz$"):
        Message(b"x", zz=1, aa=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes from 1 to 2 positional arguments but 3 were given"):
        Message(b"x", b"y")  # type: ignore[misc]
    with pytest.raises(TypeError, match="multiple values for argument 'body'"):
        Message(b"x", body=b"y")  # type: ignore[misc]
    with pytest.raises(ValueError, match="128"):
        Message(b"x", message_id="m" * 129)
    with pytest.raises(AttributeError):
        Message(b"x", application_properties=3)  # type: ignore[arg-type]
    assert Message(b"x", message_id=5).message_id == "5"  # type: ignore[arg-type]


def test_signature_is_documented() -> None:
    params = inspect.signature(Message).parameters
    assert list(params)[:3] == ["body", "encoding", "application_properties"]
    assert params["body"].default is None and params["encoding"].default == "UTF-8"
    assert "kwargs" in params
    # a class with its own __init__ gets its own signature, not Message's
    assert list(inspect.signature(PeekedMessage).parameters) == ["args", "kwargs"]


class Tagged(Message):
    """A user's subclass with its own __init__ and instance attributes."""

    def __init__(self, body: bytes, tag: str, **kwargs: object) -> None:
        super().__init__(body, message_id=tag, **kwargs)  # type: ignore[arg-type]
        self.tag = tag


class Plain(Message):
    __slots__ = ()


class Upper(Message):
    """Overrides a property: Message(...) must assign through it."""

    @property  # type: ignore[override]
    def subject(self) -> "str | None":
        return Message.subject.__get__(self)  # type: ignore[attr-defined,no-any-return]

    @subject.setter
    def subject(self, value: str) -> None:
        Message.subject.__set__(self, value.upper())  # type: ignore[attr-defined]


class Body(Message):
    """Overrides the body: Message(body) must assign through it too."""

    @property  # type: ignore[override]
    def body(self) -> object:
        return Message.body.__get__(self)  # type: ignore[attr-defined]

    @body.setter
    def body(self, value: bytes) -> None:
        Message.body.__set__(self, b"<" + value + b">")  # type: ignore[attr-defined]


def test_subclassing() -> None:
    t = Tagged(b"t", "id-1", subject="s")
    assert (t.body, t.message_id, t.subject, t.tag) == (b"t", "id-1", "s", "id-1")
    assert isinstance(t, Message) and "Tagged(message_id='id-1'" in repr(t)
    assert list(inspect.signature(Tagged).parameters) == ["body", "tag", "kwargs"]
    p = Plain(b"p", message_id="q")
    assert (type(p), p.body, p.message_id) == (Plain, b"p", "q")
    assert Upper(b"u", label="low").subject == "LOW"
    assert Body(b"b").body == b"<b>"
    with pytest.raises(TypeError):
        PeekedMessage(b"x")


def test_pickle_and_copy_still_refused() -> None:
    # Not supported before the C __init__ either: an engine message has no
    # Python state to copy; say so rather than make an empty message.
    m = Message(b"x")
    with pytest.raises(TypeError):
        pickle.dumps(m)
    with pytest.raises(TypeError):
        copy.copy(m)


def test_batch_add_in_c() -> None:
    batch = BatchMessage(2000)
    batch.add(Message(b"a" * 100))
    batch.add_message(Message(b"b" * 100, message_id="x"))
    assert len(batch) == 2
    size = batch.size_in_bytes
    with pytest.raises(MessageContentTooLarge):
        batch.add_message(Message(b"c" * 5000))
    assert len(batch) == 2 and batch.size_in_bytes == size
    with pytest.raises(TypeError, match="BatchMessage.add expects a Message, got bytes"):
        batch.add(b"raw")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got int"):
        batch.add_message(1)  # type: ignore[arg-type]
    m = Message(b"p")
    m.application_properties["k"] = "v"  # a changed dict is written back when batched
    batch2 = BatchMessage(None)
    batch2.add(m)
    assert batch2.size_in_bytes > BatchMessage(None).size_in_bytes


def test_a_bytes_body_is_referenced_not_copied() -> None:
    # The engine message refers to the bytes object (sbus_message_set_body_ref);
    # the Message holds it exactly as long as it needs it.
    body = bytes(range(256)) * 4
    base = sys.getrefcount(body)
    m = Message(body)
    assert sys.getrefcount(body) == base + 1
    assert m.body == body and m.size_in_bytes > len(body)
    m.body = b"other"  # replaced: released
    assert sys.getrefcount(body) == base and m.body == b"other"
    m.body = body
    m.body = "text"  # replaced by a copy: kept until the message goes
    assert m.body == b"text"
    del m
    assert sys.getrefcount(body) == base
    m = Message([body, b"tail"])  # the first section refers, the others copy
    assert m.body == [body, b"tail"]
    c = m._copy()  # a copy owns its bytes
    del m
    assert sys.getrefcount(body) == base and c.body == [body, b"tail"]
    b = bytearray(b"mutable")  # not bytes: copied, later changes do not leak in
    m = Message(b)
    b[:] = b"changed"
    assert m.body == b"mutable"


def test_calling_the_message_class_directly_keeps_type_call_semantics() -> None:
    # Message(...) of the package's own class skips type.__call__'s argument
    # tuple (_install_vectorcall); everything type.__call__ did still holds.
    assert Message().body is None and Message(b"v").body == b"v"
    assert Message(body=b"k", message_id="i").message_id == "i"
    with pytest.raises(TypeError, match="positional"):
        Message(b"a", b"b", b"c")  # type: ignore[misc]
    seen = []

    def init(self: Message, *args: object, **kwargs: object) -> None:
        seen.append((args, kwargs))
        _C_INIT(self, b"patched")

    _C_INIT = Message.__init__
    Message.__init__ = init  # type: ignore[method-assign]
    try:
        m = Message(b"x")  # a replaced __init__ is called, as by type.__call__
        assert seen == [((b"x",), {})] and m.body == b"patched"
    finally:
        del Message.__init__  # type: ignore[misc]
    assert Message(b"y").body == b"y" and len(seen) == 1
    assert type(Plain(b"p")) is Plain and type(Message(b"m")) is Message


def test_a_dropped_message_leaves_nothing_to_the_next() -> None:
    # Engine messages of dropped Messages are reset and reused (a pool in
    # _sbus/message.c): a new Message must not see anything of an old one.
    when = datetime.datetime(2031, 1, 1, tzinfo=UTC)
    for _ in range(3):
        old = [
            Message(
                [b"a" * 300, b"b"],
                application_properties={"k": [1, 2], "s": "x" * 300},
                session_id="s",
                message_id="m",
                subject="subj",
                to="t",
                time_to_live=datetime.timedelta(seconds=5),
                scheduled_enqueue_time_utc=when,
            )
            for _ in range(300)
        ]
        for m in old:
            m._encoded_size()  # the properties dict written into the engine message
        del old, m
        fresh = [Message(b"new") for _ in range(300)]
        for m in fresh:
            assert m.body == b"new" and m.application_properties == {}
            assert (m.session_id, m.message_id, m.subject, m.to) == (None, None, None, None)
            assert m.time_to_live is None and m.scheduled_enqueue_time_utc is None
        assert len({m._encoded_size() for m in fresh}) == 1
        assert Message()._encoded_size() < fresh[0]._encoded_size()
