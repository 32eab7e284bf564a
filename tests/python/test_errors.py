"""The exception classes are built from the engine's error table."""

import pytest

from servicebus import _sbus, exceptions
from servicebus.exceptions import (
    ERROR_CLASSES,
    MessageAlreadySettled,
    MessageContentTooLarge,
    MessageLockExpired,
    MessageLockLostError,
    MessageSizeExceededError,
    ServiceBusAuthenticationError,
    ServiceBusError,
    SessionLockExpired,
    SessionLockLostError,
    condition_class,
)

DOCUMENTED = [
    "MessageAlreadySettled",
    "MessageLockExpired",
    "SessionLockExpired",
    "MessageSettleFailed",
    "MessageSendFailed",
    "MessageContentTooLarge",
    "OperationTimeoutError",
    "ServiceBusError",
    "ServiceBusConnectionError",
    "ServiceBusAuthenticationError",
    "ServiceBusAuthorizationError",
    "ServiceBusResourceNotFound",
    "NoActiveSession",
    "AutoLockRenewFailed",
    "AutoLockRenewTimeout",
    "MessageLockLostError",
    "SessionLockLostError",
    "MessageSizeExceededError",
    "MessageNotFoundError",
    "MessagingEntityNotFoundError",
    "MessagingEntityDisabledError",
    "MessagingEntityAlreadyExistsError",
    "ServiceBusQuotaExceededError",
    "ServiceBusServerBusyError",
    "ServiceBusCommunicationError",
    "SessionCannotBeLockedError",
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_exception_exists(name: str) -> None:
    cls = getattr(exceptions, name)
    assert issubclass(cls, ServiceBusError)


def test_every_engine_code_has_a_class() -> None:
    names = exceptions.engine_error_codes()
    assert "lock-lost" in names and "unauthorized" in names
    missing = [n for n in names if n not in ERROR_CLASSES and n != "ok"]
    assert missing == []


def test_engine_conditions_map_to_classes() -> None:
    table = exceptions.engine_conditions()
    assert len(table) > 10
    assert condition_class("com.microsoft:message-lock-lost") is MessageLockExpired
    assert condition_class("com.microsoft:session-lock-lost") is SessionLockExpired
    assert condition_class("amqp:unauthorized-access") is ServiceBusAuthenticationError
    assert condition_class("amqp:link:message-size-exceeded") is MessageContentTooLarge
    for cond, code, _retriable in table:
        assert issubclass(condition_class(cond), ServiceBusError), cond


def test_aliases() -> None:
    assert MessageLockLostError is MessageLockExpired
    assert SessionLockLostError is SessionLockExpired
    assert MessageSizeExceededError is MessageContentTooLarge
    assert issubclass(MessageAlreadySettled, ValueError)


def test_settle_errors_keep_their_class() -> None:
    exc = exceptions._make_error(_sbus.OP_SETTLE, -26, "lock-lost", "com.microsoft:message-lock-lost", "expired", 0, 0)
    assert isinstance(exc, MessageLockExpired)
    assert exc.condition == "com.microsoft:message-lock-lost"
    exc = exceptions._make_error(_sbus.OP_SETTLE, -40, "service-error", "amqp:internal-error", "boom", 1, 0)
    assert isinstance(exc, exceptions.MessageSettleFailed) and exc.retriable
    exc = exceptions._make_error(_sbus.OP_SEND, -36, "not-allowed", "amqp:not-allowed", "no", 0, 0)
    assert isinstance(exc, exceptions.MessageSendFailed)


def test_bad_connection_string_is_a_value_error() -> None:
    from servicebus.aio import ServiceBusClient

    with pytest.raises(ValueError) as info:
        ServiceBusClient.from_connection_string("Endpoint=nonsense;SharedAccessKey=secret-key-text")
    assert "secret-key-text" not in str(info.value)
