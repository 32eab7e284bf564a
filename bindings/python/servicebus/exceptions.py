"""Exceptions of the servicebus package.

Every failure the engine reports carries a stable symbolic code (the
engine's ``sbus_errname``: ``"lock-lost"``, ``"unauthorized"``, …), the AMQP
condition verbatim when the service sent one, a description, and
retriable/fatal flags. This module maps each engine code to one exception
class (:data:`ERROR_CLASSES`), refined by the operation that failed (a
failed settlement is a :class:`MessageSettleFailed`, a failed send a
:class:`MessageSendFailed`). The AMQP conditions the engine knows come
from the engine's own table (:func:`condition_class`), never from a copy.

The names are those of azure-servicebus 7.0 (``MessageLockExpired``,
``SessionLockExpired``, ``MessageContentTooLarge``, …) with the later 7.x
names as aliases (``MessageLockLostError``, ``SessionLockLostError``,
``MessageSizeExceededError``, ``MessagingEntityNotFoundError``, …).
"""

from typing import Any, Dict, List, Optional, Tuple, Type

from . import _sbus

__all__ = [
    "ServiceBusError",
    "ServiceBusConnectionError",
    "ServiceBusCommunicationError",
    "ServiceBusAuthenticationError",
    "ServiceBusAuthorizationError",
    "ServiceBusResourceNotFound",
    "MessagingEntityNotFoundError",
    "MessagingEntityDisabledError",
    "MessagingEntityAlreadyExistsError",
    "ServiceBusQuotaExceededError",
    "ServiceBusServerBusyError",
    "OperationTimeoutError",
    "NoActiveSession",
    "SessionCannotBeLockedError",
    "InvalidHandlerState",
    "OperationCancelledError",
    "InvalidArgumentError",
    "NotSupportedError",
    "MessageError",
    "MessageContentTooLarge",
    "MessageSizeExceededError",
    "MessageAlreadySettled",
    "MessageSettleFailed",
    "MessageSendFailed",
    "MessageLockExpired",
    "MessageLockLostError",
    "SessionLockExpired",
    "SessionLockLostError",
    "MessageNotFoundError",
    "AutoLockRenewFailed",
    "AutoLockRenewTimeout",
    "ServiceBusConnectionStringError",
    "ERROR_CLASSES",
    "condition_class",
]


class ServiceBusError(Exception):
    """Base of every Service Bus error.

    :ivar str message: The full message.
    :ivar str reason: The engine's (or the service's) description.
    :ivar str code: The engine's symbolic code, e.g. ``"lock-lost"``.
    :ivar int errno: The engine's numeric code (negative).
    :ivar str condition: The AMQP condition verbatim, or None if local.
    :ivar bool retriable: Whether the same call may succeed later.
    :ivar bool fatal: Whether the link or connection is dead.
    """

    def __init__(self, message: Optional[str] = None, *args: Any, **kwargs: Any) -> None:
        self.message = str(message) if message is not None else ""
        self.reason: Optional[str] = kwargs.pop("reason", None) or self.message
        self.code: Optional[str] = kwargs.pop("code", None)
        self.errno: Optional[int] = kwargs.pop("errno", None)
        self.condition: Optional[str] = kwargs.pop("condition", None)
        self.retriable: bool = bool(kwargs.pop("retriable", False))
        self.fatal: bool = bool(kwargs.pop("fatal", False))
        self.operation: Optional[int] = kwargs.pop("operation", None)
        self.inner_exception: Optional[BaseException] = kwargs.pop("error", None)
        super().__init__(self.message, *args)

    @property
    def retryable(self) -> bool:
        """Alias of :attr:`retriable` (azure-servicebus 7.x spelling)."""
        return self.retriable


class ServiceBusConnectionError(ServiceBusError):
    """The connection failed: refused, lost, DNS, or closed by the service."""


class ServiceBusCommunicationError(ServiceBusConnectionError):
    """The service could not be reached: TLS or proxy failure."""


class ServiceBusAuthenticationError(ServiceBusError):
    """The service refused the token: wrong key, expired or wrong audience."""


class ServiceBusAuthorizationError(ServiceBusError):
    """The token lacks the right (Send, Listen, Manage) the operation needs."""


class ServiceBusResourceNotFound(ServiceBusError):
    """The entity (queue, topic, subscription, rule) does not exist."""


MessagingEntityNotFoundError = ServiceBusResourceNotFound


class MessagingEntityDisabledError(ServiceBusError):
    """The entity is disabled."""


class MessagingEntityAlreadyExistsError(ServiceBusError):
    """The entity already exists."""


class ServiceBusQuotaExceededError(ServiceBusError):
    """A quota was exceeded (entity full, too many connections)."""


class ServiceBusServerBusyError(ServiceBusError):
    """The service is throttling requests."""


class OperationTimeoutError(ServiceBusError):
    """The operation did not complete in time."""


class NoActiveSession(OperationTimeoutError):
    """No session was available to a next-available session receiver."""


class SessionCannotBeLockedError(ServiceBusError):
    """The session is locked by another receiver."""


class InvalidHandlerState(ServiceBusError):
    """The sender, receiver or client was closed (or is in the wrong state)."""


class OperationCancelledError(ServiceBusError):
    """The operation was cancelled."""


class InvalidArgumentError(ServiceBusError, ValueError):
    """An argument was refused (by this client or by the service)."""


class NotSupportedError(ServiceBusError, NotImplementedError):
    """The operation is not supported here."""


class ServiceBusConnectionStringError(ServiceBusError, ValueError):
    """The connection string is malformed; the message says which part."""


class MessageError(ServiceBusError):
    """A message-level failure."""


class MessageContentTooLarge(MessageError, ValueError):
    """The message (or the list of messages) exceeds the size limit."""


MessageSizeExceededError = MessageContentTooLarge


class MessageAlreadySettled(MessageError, ValueError):
    """The message was settled already: it cannot be settled again."""

    def __init__(self, message: Optional[str] = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(message or "Unable to settle message; the message has already been settled.", *args, **kwargs)


class MessageSettleFailed(MessageError):
    """Settling the message (complete, abandon, defer, dead-letter) failed."""


class MessageSendFailed(MessageError):
    """Sending failed."""


class MessageLockExpired(MessageError):
    """The message lock expired (or is unknown): settle or renew failed."""


MessageLockLostError = MessageLockExpired


class SessionLockExpired(ServiceBusError):
    """The session lock expired: the session receiver must be reopened."""


SessionLockLostError = SessionLockExpired


class MessageNotFoundError(ServiceBusError):
    """The message (by sequence number) does not exist."""


class AutoLockRenewFailed(ServiceBusError):
    """Automatic lock renewal failed."""


class AutoLockRenewTimeout(ServiceBusError):
    """Automatic lock renewal reached its time limit."""


#: Engine code name -> exception class. Every name the engine defines must
#: be here (a test checks it against the engine's table).
ERROR_CLASSES: Dict[str, Type[ServiceBusError]] = {
    "invalid-argument": InvalidArgumentError,
    "no-memory": ServiceBusError,
    "invalid-state": InvalidHandlerState,
    "not-supported": NotSupportedError,
    "absent": ServiceBusError,
    "too-large": MessageContentTooLarge,
    "bad-connection-string": ServiceBusConnectionStringError,
    "already-settled": MessageAlreadySettled,
    "connection": ServiceBusConnectionError,
    "unauthorized": ServiceBusAuthenticationError,
    "forbidden": ServiceBusAuthorizationError,
    "not-found": ServiceBusResourceNotFound,
    "timeout": OperationTimeoutError,
    "server-busy": ServiceBusServerBusyError,
    "lock-lost": MessageLockExpired,
    "session-lock-lost": SessionLockExpired,
    "session-cannot-be-locked": SessionCannotBeLockedError,
    "message-not-found": MessageNotFoundError,
    "message-size-exceeded": MessageContentTooLarge,
    "quota-exceeded": ServiceBusQuotaExceededError,
    "entity-disabled": MessagingEntityDisabledError,
    "entity-already-exists": MessagingEntityAlreadyExistsError,
    "cancelled": OperationCancelledError,
    "closed": InvalidHandlerState,
    "not-allowed": ServiceBusError,
    "argument-error": InvalidArgumentError,
    "tls": ServiceBusCommunicationError,
    "proxy": ServiceBusCommunicationError,
    "service-error": ServiceBusError,
}

# Classes that keep their identity whatever the operation.
_SPECIFIC = (
    ServiceBusConnectionError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusResourceNotFound,
    MessagingEntityDisabledError,
    OperationTimeoutError,
    ServiceBusServerBusyError,
    ServiceBusQuotaExceededError,
    MessageContentTooLarge,
    MessageAlreadySettled,
    MessageLockExpired,
    SessionLockExpired,
    InvalidHandlerState,
    OperationCancelledError,
)

_OP_NAMES = {
    _sbus.OP_CONN_OPEN: "Opening the connection",
    _sbus.OP_CONN_CLOSE: "Closing the connection",
    _sbus.OP_SENDER_OPEN: "Opening the sender",
    _sbus.OP_SENDER_CLOSE: "Closing the sender",
    _sbus.OP_SEND: "Sending",
    _sbus.OP_SCHEDULE: "Scheduling messages",
    _sbus.OP_CANCEL_SCHEDULED: "Cancelling scheduled messages",
    _sbus.OP_RECEIVER_OPEN: "Opening the receiver",
    _sbus.OP_RECEIVER_CLOSE: "Closing the receiver",
    _sbus.OP_RECEIVE: "Receiving",
    _sbus.OP_SETTLE: "Settling the message",
    _sbus.OP_RENEW_LOCK: "Renewing the message lock",
    _sbus.OP_PEEK: "Peeking",
    _sbus.OP_RECEIVE_DEFERRED: "Receiving deferred messages",
    _sbus.OP_SESSION_GET_STATE: "Getting the session state",
    _sbus.OP_SESSION_SET_STATE: "Setting the session state",
    _sbus.OP_SESSION_RENEW_LOCK: "Renewing the session lock",
}


def _class_for(op: int, name: str) -> Type[ServiceBusError]:
    cls = ERROR_CLASSES.get(name, ServiceBusError)
    if op == _sbus.OP_SETTLE and not issubclass(cls, _SPECIFIC):
        return MessageSettleFailed
    if op == _sbus.OP_SETTLE and cls in (InvalidHandlerState, OperationTimeoutError, ServiceBusConnectionError):
        return MessageSettleFailed
    if op in (_sbus.OP_SEND, _sbus.OP_SCHEDULE) and not issubclass(cls, _SPECIFIC):
        return MessageSendFailed
    return cls


def _make_error(
    op: int,
    code: int,
    name: str,
    condition: Optional[str],
    description: Optional[str],
    retriable: int,
    fatal: int,
) -> ServiceBusError:
    """The engine's error factory: builds the exception for one failure."""
    cls = _class_for(op, name)
    what = _OP_NAMES.get(op)
    text = description or _sbus.strerror(code)
    msg = "%s failed: %s" % (what, text) if what else text
    msg += " (%s)" % (condition if condition else name)
    return cls(
        msg,
        reason=text,
        code=name,
        errno=code,
        condition=condition,
        retriable=bool(retriable),
        fatal=bool(fatal),
        operation=op,
    )


_sbus.set_error_factory(_make_error)


def engine_error_codes() -> Dict[str, int]:
    """Every error code the engine defines, ``{name: code}``."""
    return _sbus.error_codes()


def engine_conditions() -> List[Tuple[str, int, bool]]:
    """The engine's condition table: ``[(condition, code, retriable)]``."""
    return _sbus.conditions()


def condition_class(condition: str) -> Type[ServiceBusError]:
    """The exception class an AMQP condition maps to (via the engine table)."""
    code, _retriable, _fatal = _sbus.condition_code(condition)
    return ERROR_CLASSES.get(_sbus.errname(code), ServiceBusError)
