"""servicebus.aio: the asyncio API, a drop-in for ``azure.servicebus.aio``."""

from .._credentials import ServiceBusSharedKeyCredential
from .._message import ReceivedMessage, ServiceBusReceivedMessage
from ._autolock import AutoLockRenew, AutoLockRenewer
from ._client import ServiceBusClient
from ._receiver import ServiceBusReceiver, ServiceBusSessionReceiver
from ._sender import ServiceBusSender
from ._session import ServiceBusSession

__all__ = [
    "ServiceBusClient",
    "ServiceBusSender",
    "ServiceBusReceiver",
    "ServiceBusSessionReceiver",
    "ServiceBusSession",
    "AutoLockRenew",
    "AutoLockRenewer",
    "ReceivedMessage",
    "ServiceBusReceivedMessage",
    "ServiceBusSharedKeyCredential",
]
