"""servicebus: an Azure Service Bus client on one C engine, asyncio-native.

``from servicebus.aio import ServiceBusClient`` mirrors
``azure.servicebus.aio``; messages, enums and credentials are here, errors
in :mod:`servicebus.exceptions`.
"""

from . import _sbus as _sbus
from . import exceptions  # noqa: F401  (registers the engine's error factory)
from ._common import (
    NEXT_AVAILABLE_SESSION,
    ReceiveMode,
    ServiceBusMessageState,
    ServiceBusReceiveMode,
    ServiceBusSessionFilter,
    ServiceBusSubQueue,
    SubQueue,
    TransportType,
)
from ._credentials import AccessToken, ServiceBusSasCredential, ServiceBusSharedKeyCredential
from ._message import (
    BatchMessage,
    Message,
    PeekedMessage,
    ReceivedMessage,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusReceivedMessage,
)

__version__ = _sbus.VERSION

__all__ = [
    "Message",
    "ServiceBusMessage",
    "BatchMessage",
    "ServiceBusMessageBatch",
    "PeekedMessage",
    "ReceivedMessage",
    "ServiceBusReceivedMessage",
    "ReceiveMode",
    "ServiceBusReceiveMode",
    "SubQueue",
    "ServiceBusSubQueue",
    "TransportType",
    "ServiceBusSessionFilter",
    "NEXT_AVAILABLE_SESSION",
    "ServiceBusMessageState",
    "ServiceBusSharedKeyCredential",
    "ServiceBusSasCredential",
    "AccessToken",
    "exceptions",
]
