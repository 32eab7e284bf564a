"""ServiceBusSender: sends messages to a queue or a topic."""

import datetime
from typing import Any, List, Optional, Union

from .. import _sbus
from .._common import datetime_to_ms
from .._connection import with_timeout
from .._message import BatchMessage, Message
from ._base import BaseHandler

__all__ = ["ServiceBusSender"]

MessageTypes = Union[Message, BatchMessage, List[Message]]


class ServiceBusSender(BaseHandler):
    """The ServiceBusSender class defines a high level interface for sending
    messages to the Azure Service Bus Queue or Topic.

    :ivar str fully_qualified_namespace: The fully qualified host name of the namespace.
    :ivar str entity_name: The name of the entity the sender sends to.
    :param str fully_qualified_namespace: e.g. ``<yournamespace>.servicebus.windows.net``.
    :param credential: A :class:`ServiceBusSharedKeyCredential` or an object with ``get_token(*scopes)``.
    :keyword str queue_name: The queue. Only one of queue_name or topic_name.
    :keyword str topic_name: The topic. Only one of queue_name or topic_name.
    :keyword bool logging_enable: Log AMQP frames. Default False.
    :keyword TransportType transport_type: Default ``TransportType.Amqp``.
    :keyword dict http_proxy: HTTP proxy settings.
    :keyword str user_agent: Added to the built-in user agent.
    """

    _kind = "sender"

    def __init__(self, fully_qualified_namespace: str, credential: Any, **kwargs: Any) -> None:
        queue_name = kwargs.pop("queue_name", None)
        topic_name = kwargs.pop("topic_name", None)
        if (queue_name is None) == (topic_name is None):
            raise ValueError("Exactly one of queue_name or topic_name must be provided.")
        self.entity_name: str = queue_name if queue_name is not None else topic_name
        super().__init__(fully_qualified_namespace, credential, **kwargs)

    @classmethod
    def from_connection_string(cls, conn_str: str, **kwargs: Any) -> "ServiceBusSender":
        """Create a ServiceBusSender from a connection string.

        :param str conn_str: The connection string of a Service Bus.
        :keyword str queue_name: The queue (or the connection string's EntityPath).
        :keyword str topic_name: The topic.
        :rtype: ServiceBusSender
        :raises ServiceBusAuthenticationError: (when used) the token is refused.
        :raises ServiceBusAuthorizationError: (when used) the token lacks the Send right.
        """
        parsed = _sbus.parse_connection_string(conn_str)
        if parsed["entity_path"] and "queue_name" not in kwargs and "topic_name" not in kwargs:
            kwargs["queue_name"] = parsed["entity_path"]
        host = parsed["host"] if not parsed["port"] else "%s:%d" % (parsed["host"], parsed["port"])
        return cls(host, None, _connection_string=conn_str, **kwargs)

    def __repr__(self) -> str:
        return "ServiceBusSender(fully_qualified_namespace=%r, entity_name=%r%s)" % (
            self.fully_qualified_namespace,
            self.entity_name,
            ", closed" if self._closed else "",
        )

    def _create_handle(self, conn: Any) -> Any:
        return conn.sender(self.entity_name)

    async def send_messages(self, message: MessageTypes, **kwargs: Any) -> None:
        """Send a Message, a list of Messages (as one batch) or a BatchMessage;
        returns once the service accepted it.

        :param message: The message(s) to send.
        :keyword float timeout: seconds the whole send may take (azure-servicebus
            7.x); default: the retry policy's own limits.
        :raises OperationTimeoutError: if sending times out.
        :raises MessageContentTooLarge: (a ValueError) if the message, or a list
            that must fit one batch, is over the size limit.
        :raises MessageSendFailed: if the service refused the message.
        :raises ServiceBusError: on other errors (connection, authentication, ...).
        """
        handle = self._handle if self._running else await self._open()
        if isinstance(message, _sbus.Message):
            if not kwargs:  # the common case, without a closure
                await handle.send(message)
            else:
                await with_timeout(lambda: handle.send(message), kwargs)
            return
        if isinstance(message, BatchMessage):
            if len(message) == 0:
                return
            await with_timeout(lambda: handle.send_batch(message), kwargs)
            return
        if isinstance(message, (list, tuple)):
            if not message:
                return
            # The engine encodes the messages during the call (no copy of
            # the list needed); no closure without timeout=.
            if not kwargs:
                await handle.send(message)
            else:
                await with_timeout(lambda: handle.send(message), kwargs)
            return
        raise TypeError("send_messages expects a Message, a list of Messages or a BatchMessage")

    async def create_batch(self, max_size_in_bytes: Optional[int] = None) -> BatchMessage:
        """Create a BatchMessage holding at most ``max_size_in_bytes``.

        :param int max_size_in_bytes: The limit; by default the link's
            max-message-size (set by your Service Bus tier).
        :rtype: BatchMessage
        :raises ValueError: if max_size_in_bytes exceeds the link's limit.
        """
        handle = self._handle if self._running else await self._open()
        limit = handle.max_message_size
        if max_size_in_bytes is not None and limit and max_size_in_bytes > limit:
            raise ValueError(
                "Max message size: {} is too large, acceptable max batch size is: {} bytes.".format(
                    max_size_in_bytes, limit
                )
            )
        return BatchMessage(max_size_in_bytes or limit or None)

    # azure-servicebus 7.x spelling: the same coroutine function, not one
    # more coroutine awaiting it.
    create_message_batch = create_batch

    async def schedule_messages(
        self, messages: Union[Message, List[Message]], schedule_time_utc: datetime.datetime, **kwargs: Any
    ) -> List[int]:
        """Send message(s) to be enqueued by the service at ``schedule_time_utc``.

        :param messages: The message or list of messages to schedule.
        :param datetime schedule_time_utc: When (a naive datetime is taken as UTC).
        :returns: The sequence numbers of the scheduled messages.
        :rtype: list[int]
        """
        handle = self._handle if self._running else await self._open()
        when = datetime_to_ms(schedule_time_utc)
        msgs = list(messages) if isinstance(messages, (list, tuple)) else [messages]
        if not msgs:
            return []
        seqs: List[int] = await with_timeout(lambda: handle.schedule(msgs, when), kwargs)
        return seqs

    async def cancel_scheduled_messages(self, sequence_numbers: Union[int, List[int]], **kwargs: Any) -> None:
        """Cancel scheduled messages that are still pending.

        :param sequence_numbers: The sequence number(s) of the scheduled messages.
        :raises ServiceBusError: if a message was already cancelled or enqueued.
        """
        handle = self._handle if self._running else await self._open()
        seqs = [sequence_numbers] if isinstance(sequence_numbers, int) else list(sequence_numbers)
        if not seqs:
            return
        await with_timeout(lambda: handle.cancel_scheduled(seqs), kwargs)
