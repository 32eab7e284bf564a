"""Enums and constants shared by the servicebus package.

Each enum offers the azure-servicebus 7.0 spelling (``ReceiveMode.PeekLock``)
and the later 7.x spelling (``ServiceBusReceiveMode.PEEK_LOCK``) as aliases
of the same members, so code written for either SDK runs unchanged.
"""

import datetime
import enum
from typing import Optional, Union

from . import _sbus

__all__ = [
    "ReceiveMode",
    "ServiceBusReceiveMode",
    "SubQueue",
    "ServiceBusSubQueue",
    "TransportType",
    "ServiceBusSessionFilter",
    "NEXT_AVAILABLE_SESSION",
    "ServiceBusMessageState",
]


class ReceiveMode(enum.Enum):
    """How messages are retrieved: PeekLock (settle them) or ReceiveAndDelete."""

    PeekLock = _sbus.PEEK_LOCK
    ReceiveAndDelete = _sbus.RECEIVE_AND_DELETE
    PEEK_LOCK = _sbus.PEEK_LOCK
    RECEIVE_AND_DELETE = _sbus.RECEIVE_AND_DELETE


ServiceBusReceiveMode = ReceiveMode


class SubQueue(enum.Enum):
    """The sub-queue a receiver may connect to."""

    DeadLetter = _sbus.SUBQ_DEAD_LETTER
    TransferDeadLetter = _sbus.SUBQ_TRANSFER_DEAD_LETTER
    DEAD_LETTER = _sbus.SUBQ_DEAD_LETTER
    TRANSFER_DEAD_LETTER = _sbus.SUBQ_TRANSFER_DEAD_LETTER


ServiceBusSubQueue = SubQueue


class TransportType(enum.Enum):
    """Transport protocol: AMQP over TCP (5671/5672) or over WebSocket (443)."""

    Amqp = _sbus.TRANSPORT_AMQP
    AmqpOverWebsocket = _sbus.TRANSPORT_WEBSOCKET


class ServiceBusSessionFilter(enum.Enum):
    """Session selection: the next available session."""

    NEXT_AVAILABLE = 0


NEXT_AVAILABLE_SESSION = ServiceBusSessionFilter.NEXT_AVAILABLE


class ServiceBusMessageState(enum.IntEnum):
    """State of a received message (x-opt-message-state)."""

    ACTIVE = 0
    DEFERRED = 1
    SCHEDULED = 2


_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)


def ms_to_datetime(ms: Optional[int]) -> Optional[datetime.datetime]:
    """Unix milliseconds -> aware UTC datetime (None stays None)."""
    if ms is None:
        return None
    try:
        return _EPOCH + datetime.timedelta(milliseconds=ms)
    except OverflowError:
        return datetime.datetime.max.replace(tzinfo=_UTC)


def datetime_to_ms(dt: datetime.datetime) -> int:
    """Datetime -> Unix milliseconds; a naive datetime is taken as UTC."""
    if not isinstance(dt, datetime.datetime):
        raise TypeError("expected a datetime.datetime, got %s" % type(dt).__name__)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    return int(round((dt - _EPOCH) / datetime.timedelta(milliseconds=1)))


def seconds_to_ms(seconds: Union[int, float, None], default: int = -1) -> int:
    """Seconds (None or 0 = default) -> milliseconds."""
    if seconds is None or seconds == 0:
        return default
    if seconds < 0:
        raise ValueError("a wait time must be positive")
    return int(seconds * 1000)
