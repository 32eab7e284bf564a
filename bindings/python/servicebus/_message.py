"""Messages: Message (to send), ReceivedMessage, PeekedMessage, BatchMessage.

Every message class subclasses the extension's ``_sbus.Message``, which
wraps one engine message: a received message is a single Python object,
and its properties are decoded only when read. Settlement is the engine's;
the methods here only pass the call on.
"""

import datetime
import inspect
import uuid
from typing import Any, Awaitable, Dict, List, Optional, Tuple, Union

from . import _sbus
from ._common import ServiceBusMessageState, datetime_to_ms, ms_to_datetime
from ._connection import raise_later
from .amqp import BODY_TYPES, AmqpMessageBodyType
from .exceptions import MessageSettleFailed

__all__ = [
    "Message",
    "ServiceBusMessage",
    "ReceivedMessage",
    "ServiceBusReceivedMessage",
    "PeekedMessage",
    "BatchMessage",
    "ServiceBusMessageBatch",
]

BodyType = Union[str, bytes, bytearray, memoryview, None, List[Union[str, bytes]]]


def _init_signature(
    body: BodyType = None,
    *,
    encoding: str = "UTF-8",
    application_properties: Optional[Dict[Union[str, bytes], Any]] = None,
    properties: Optional[Dict[Union[str, bytes], Any]] = None,
    session_id: Optional[str] = None,
    message_id: Optional[str] = None,
    scheduled_enqueue_time_utc: Optional[datetime.datetime] = None,
    time_to_live: Optional[datetime.timedelta] = None,
    content_type: Optional[str] = None,
    correlation_id: Optional[str] = None,
    subject: Optional[str] = None,
    label: Optional[str] = None,
    partition_key: Optional[str] = None,
    via_partition_key: Optional[str] = None,
    to: Optional[str] = None,
    reply_to: Optional[str] = None,
    reply_to_session_id: Optional[str] = None,
    **kwargs: Any
) -> None:
    """The signature of Message(...) (its __init__ is in C)."""


class _InitSignature:
    """``Message.__signature__``: the C __init__'s signature for a class that
    keeps it, None (inspect then looks at __init__) for one that defines its
    own."""

    def __get__(self, obj: Any, cls: Any) -> Optional[inspect.Signature]:
        if obj is None and cls.__init__ is _sbus.Message.__init__:
            return inspect.signature(_init_signature)
        return None


class Message(_sbus.Message):
    """A Service Bus message.

    :param body: The message body: ``str`` (encoded with ``encoding``),
        ``bytes``, a list of them (one data section each), or None.
    :keyword str encoding: Encoding of a ``str`` body. Default UTF-8.
    :keyword dict application_properties: User properties (alias: ``properties``).
    :keyword str session_id: The session of a sessionful entity.
    :keyword str message_id: The message id (at most 128 characters).
    :keyword datetime scheduled_enqueue_time_utc: When the service should enqueue it.
    :keyword timedelta time_to_live: How long the message lives.
    :keyword str content_type: e.g. ``application/json``.
    :keyword str correlation_id: The correlation id.
    :keyword str subject: The subject (alias: ``label``).
    :keyword str partition_key: The partition key.
    :keyword str via_partition_key: The via-partition key.
    :keyword str to: The to address.
    :keyword str reply_to: The reply-to address.
    :keyword str reply_to_session_id: The reply-to session id.
    """

    __slots__ = ()

    # __init__ is _sbus.Message's, in C (one call per message sent, no
    # Python frame); _init_signature below carries its signature for
    # inspect and the docs, _sbus.pyi for type checkers.
    __signature__ = _InitSignature()

    # -- azure-servicebus 7.0 spellings ------------------------------------

    @property
    def label(self) -> Optional[str]:
        """The application specific label (the AMQP subject)."""
        return self.subject

    @label.setter
    def label(self, value: Optional[str]) -> None:
        self.subject = value

    @property
    def properties(self) -> Dict[Any, Any]:
        """The user defined properties on the message (alias of application_properties)."""
        return self.application_properties

    @properties.setter
    def properties(self, value: Optional[Dict[Any, Any]]) -> None:
        self.application_properties = value if value is not None else {}

    @property
    def time_to_live(self) -> Optional[datetime.timedelta]:
        """The life duration of a message."""
        ms = self._ttl_ms
        return None if ms is None else datetime.timedelta(milliseconds=ms)

    @time_to_live.setter
    def time_to_live(self, value: Union[datetime.timedelta, int, float, None]) -> None:
        if value is None:
            self._ttl_ms = None
        elif isinstance(value, datetime.timedelta):
            self._ttl_ms = int(value / datetime.timedelta(milliseconds=1))
        else:
            self._ttl_ms = int(value * 1000)

    @property
    def scheduled_enqueue_time_utc(self) -> Optional[datetime.datetime]:
        """The UTC time at which the service enqueues the message, or None."""
        return ms_to_datetime(self._scheduled_ms)

    @scheduled_enqueue_time_utc.setter
    def scheduled_enqueue_time_utc(self, value: Optional[datetime.datetime]) -> None:
        self._scheduled_ms = None if value is None else datetime_to_ms(value)

    def schedule(self, schedule_time_utc: datetime.datetime) -> None:
        """Set the scheduled enqueue time (azure-servicebus 7.0 helper)."""
        self.scheduled_enqueue_time_utc = schedule_time_utc

    @property
    def body_type(self) -> AmqpMessageBodyType:
        """The body type (7.x): DATA (bytes, or a list of bytes for several
        sections), SEQUENCE (a list with one list per amqp-sequence section)
        or VALUE (the amqp-value itself)."""
        return BODY_TYPES[self._body_kind]

    @property
    def size_in_bytes(self) -> int:
        """The size of the message once encoded, in bytes."""
        return self._encoded_size()

    def __str__(self) -> str:
        body = self.body
        if isinstance(body, (bytes, bytearray)):
            return bytes(body).decode("utf-8", "replace")
        if isinstance(body, list):
            return "".join(b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b) for b in body)
        return str(body)

    def __repr__(self) -> str:
        body = self.body
        if isinstance(body, (bytes, bytearray)) and len(body) > 40:
            body = bytes(body[:40]) + b"..."
        return "%s(message_id=%r, session_id=%r, body=%r)" % (
            type(self).__name__,
            self.message_id,
            self.session_id,
            body,
        )


# Message(body) without type.__call__'s argument tuple (its own class only;
# subclasses are called the usual way).
_sbus.Message._install_vectorcall(Message)

ServiceBusMessage = Message


class PeekedMessage(Message):
    """A message browsed with peek_messages: read-only, cannot be settled."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - made by the engine
        raise TypeError("PeekedMessage objects come from peek_messages()")

    @property
    def enqueued_time_utc(self) -> Optional[datetime.datetime]:
        """The UTC datetime at which the message was accepted and stored."""
        return ms_to_datetime(self._enqueued_ms)

    @property
    def expires_at_utc(self) -> Optional[datetime.datetime]:
        """The UTC datetime at which the message expires (enqueued + TTL)."""
        return ms_to_datetime(self._expires_ms)

    @property
    def locked_until_utc(self) -> Optional[datetime.datetime]:
        """The UTC datetime until which the message is locked, or None."""
        return ms_to_datetime(self._locked_until_ms)

    @property
    def state(self) -> ServiceBusMessageState:
        """Active, deferred or scheduled."""
        return ServiceBusMessageState(self._state or 0)

    @property
    def lock_token(self) -> Optional[uuid.UUID]:
        """The lock token of a peek-locked message (None otherwise)."""
        raw = self._lock_token_bytes
        return None if raw is None else uuid.UUID(bytes=raw)

    def _outgoing(self) -> Message:
        """A new Message with the same content, to send again."""
        out: Message = self._copy(Message)
        return out


class ReceivedMessage(PeekedMessage):
    """A Service Bus message received from the service side.

    In PeekLock mode, settle it with :meth:`complete`, :meth:`abandon`,
    :meth:`defer` or :meth:`dead_letter` before its lock expires.
    """

    __slots__ = ("_auto_renew_error",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - made by the engine
        raise TypeError("ReceivedMessage objects come from a receiver")

    @property
    def auto_renew_error(self) -> Optional[BaseException]:
        """The error that stopped automatic lock renewal, if any."""
        return getattr(self, "_auto_renew_error", None)

    @auto_renew_error.setter
    def auto_renew_error(self, value: Optional[BaseException]) -> None:
        self._auto_renew_error = value

    def _handle(self) -> Any:
        handle = self._receiver_handle
        if handle is None:
            raise _not_received()
        return handle

    # The settlement methods start the engine operation (``_start_settle``,
    # in C) and return its Future: no coroutine or Task per message when
    # many are gathered. Errors are raised on await, as from a coroutine.

    def complete(self) -> "Awaitable[None]":
        """Complete the message: this removes the message from the queue.

        Returns an awaitable: ``await message.complete()``.

        :raises MessageAlreadySettled: if the message has been settled.
        :raises MessageLockExpired: if the message lock has already expired.
        :raises SessionLockExpired: if the session lock has already expired.
        :raises MessageSettleFailed: if the settle operation fails.
        """
        if type(self) is ReceivedMessage:  # the usual case inline, as complete_message
            try:
                fut: "Optional[Awaitable[None]]" = self._start_settle(_sbus.COMPLETE)
            except Exception as exc:
                return raise_later(exc)
            if fut is not None:
                return fut
        return settle_message(self, _sbus.COMPLETE)

    def abandon(self) -> "Awaitable[None]":
        """Abandon the message: it returns to the queue, available again.

        Returns an awaitable: ``await message.abandon()``.

        :raises MessageAlreadySettled: if the message has been settled.
        :raises MessageLockExpired: if the message lock has already expired.
        :raises MessageSettleFailed: if the settle operation fails.
        """
        return settle_message(self, _sbus.ABANDON)

    def defer(self) -> "Awaitable[None]":
        """Defer the message: it stays in the queue, received only by sequence number.

        Returns an awaitable: ``await message.defer()``.

        :raises MessageAlreadySettled: if the message has been settled.
        :raises MessageLockExpired: if the message lock has already expired.
        :raises MessageSettleFailed: if the settle operation fails.
        """
        return settle_message(self, _sbus.DEFER)

    def dead_letter(
        self, reason: Optional[str] = None, error_description: Optional[str] = None
    ) -> "Awaitable[None]":
        """Move the message to the dead-letter sub-queue.

        Returns an awaitable: ``await message.dead_letter(reason, error_description)``.

        :param str reason: The reason for dead-lettering the message.
        :param str error_description: The detailed error description.
        :raises MessageAlreadySettled: if the message has been settled.
        :raises MessageLockExpired: if the message lock has already expired.
        :raises MessageSettleFailed: if the settle operation fails.
        """
        return settle_message(self, _sbus.DEAD_LETTER, (reason, error_description))

    async def renew_lock(self) -> datetime.datetime:
        """Renew the message lock; returns the UTC time it now expires at.

        :raises TypeError: if the message is sessionful (renew the session instead).
        :raises MessageLockExpired: if the message lock has already expired.
        :raises MessageAlreadySettled: if the message has already been settled.
        """
        handle = self._handle()
        if handle.session_id is not None:
            raise TypeError(
                "Session messages cannot be renewed. Please renew the session lock instead "
                "(receiver.session.renew_lock())."
            )
        until = await handle.renew_lock(self)
        result = ms_to_datetime(until)
        assert result is not None
        return result


ServiceBusReceivedMessage = ReceivedMessage


def _not_received() -> MessageSettleFailed:
    return MessageSettleFailed("This message was not received from a receiver: it cannot be settled.")


def settle_message(
    message: Any, outcome: int, args: Tuple[Optional[str], ...] = (), receiver: Any = None
) -> "Awaitable[None]":
    """Starts settling ``message`` on the receiver it came from and returns
    the operation's Future; what goes wrong is raised when the result is
    awaited, as from a coroutine. A message that came from no receiver is
    settled through ``receiver`` (a ServiceBusReceiver) when given."""
    try:
        fut: "Optional[Awaitable[None]]" = message._start_settle(outcome, *args)
    except Exception as exc:
        if not isinstance(message, ReceivedMessage):
            exc = TypeError("expected a ServiceBusReceivedMessage")
        return raise_later(exc)
    if fut is not None:
        return fut
    if receiver is not None:
        opening: "Awaitable[None]" = receiver._settle_opening(message, outcome, *args)
        return opening
    return raise_later(_not_received())


class BatchMessage(_sbus.Batch):
    """Messages sent together as one transfer, up to ``max_size_in_bytes``.

    Size accounting is the engine's (each message's encoded size plus the
    batch envelope). Create one with ``await sender.create_batch()``.

    :param int max_size_in_bytes: The maximum size; None means the link's
        limit (256 KiB until the sender knows better).
    """

    __slots__ = ()

    def __init__(self, max_size_in_bytes: Optional[int] = None) -> None:
        pass  # the size is taken by _sbus.Batch.__new__

    # add(message) and add_message(message) are _sbus.Batch's, in C (one
    # call per message, no Python frame).

    def __repr__(self) -> str:
        return "BatchMessage(count=%d, size_in_bytes=%d, max_size_in_bytes=%d)" % (
            len(self),
            self.size_in_bytes,
            self.max_size_in_bytes,
        )


ServiceBusMessageBatch = BatchMessage
