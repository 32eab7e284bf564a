"""ServiceBusReceiver and ServiceBusSessionReceiver."""

import datetime
from typing import Any, AsyncIterator, Awaitable, List, Optional, Union

from .. import _sbus
from .._common import ReceiveMode, ServiceBusSessionFilter, SubQueue, ms_to_datetime, seconds_to_ms
from .._connection import raise_later
from .._message import PeekedMessage, ReceivedMessage, settle_message
from ..exceptions import NoActiveSession, OperationTimeoutError
from ._autolock import AutoLockRenewer
from ._base import BaseHandler
from ._session import ServiceBusSession

__all__ = ["ServiceBusReceiver", "ServiceBusSessionReceiver"]


class ServiceBusReceiver(BaseHandler):
    """The ServiceBusReceiver class defines a high level interface for
    receiving messages from the Azure Service Bus Queue or Topic Subscription.

    Receive with :meth:`receive_messages`, or continuously with
    ``async for message in receiver``.

    :ivar str fully_qualified_namespace: The fully qualified host name of the namespace.
    :ivar str entity_path: The path of the entity the receiver reads.
    :param str fully_qualified_namespace: e.g. ``<yournamespace>.servicebus.windows.net``.
    :param credential: A :class:`ServiceBusSharedKeyCredential` or an object with ``get_token(*scopes)``.
    :keyword str queue_name: The queue.
    :keyword str topic_name: The topic holding the subscription.
    :keyword str subscription_name: The subscription.
    :keyword SubQueue sub_queue: DeadLetter or TransferDeadLetter; default None.
    :keyword ReceiveMode receive_mode: PeekLock (default) or ReceiveAndDelete.
    :keyword float max_wait_time: Seconds between messages after which iteration
        stops; default 0, no timeout.
    :keyword int prefetch_count: Messages cached ahead; default 0.
    :keyword auto_lock_renewer: (7.x) an AutoLockRenewer: every message received
        (and the session of a session receiver) is registered with it.
    :keyword bool logging_enable: Log AMQP frames. Default False.
    :keyword TransportType transport_type: Default ``TransportType.Amqp``.
    :keyword dict http_proxy: HTTP proxy settings.
    :keyword str user_agent: Added to the built-in user agent.
    """

    _kind = "receiver"
    _is_session = False

    def __init__(self, fully_qualified_namespace: str, credential: Any, **kwargs: Any) -> None:
        self._queue_name: Optional[str] = kwargs.pop("queue_name", None)
        self._topic_name: Optional[str] = kwargs.pop("topic_name", None)
        self._subscription_name: Optional[str] = kwargs.pop("subscription_name", None)
        if self._queue_name is None and (self._topic_name is None or self._subscription_name is None):
            raise ValueError("Provide queue_name, or topic_name and subscription_name.")
        if self._queue_name is not None and self._topic_name is not None:
            raise ValueError("Provide queue_name or topic_name, not both.")
        mode = kwargs.pop("receive_mode", ReceiveMode.PeekLock)
        self._receive_mode = ReceiveMode(mode)
        sub_queue = kwargs.pop("sub_queue", None)
        self._sub_queue: Optional[SubQueue] = SubQueue(sub_queue) if sub_queue is not None else None
        self._max_wait_time: Optional[float] = kwargs.pop("max_wait_time", None)
        if self._max_wait_time is not None and self._max_wait_time < 0:
            raise ValueError("max_wait_time must be greater than 0.")
        prefetch = kwargs.pop("prefetch_count", 0) or 0
        if prefetch < 0:
            raise ValueError("prefetch_count must be 0 or more.")
        self._prefetch_count = int(prefetch)
        session_id = kwargs.pop("session_id", None)
        if isinstance(session_id, ServiceBusSessionFilter):
            session_id = None
        self._session_id: Optional[str] = session_id
        self._buffer: List[ReceivedMessage] = []
        self._auto_lock_renewer: Any = kwargs.pop("auto_lock_renewer", None)
        super().__init__(fully_qualified_namespace, credential, **kwargs)
        if self._queue_name is not None:
            self.entity_path = self._queue_name
        else:
            self.entity_path = "%s/Subscriptions/%s" % (self._topic_name, self._subscription_name)
        if self._sub_queue is SubQueue.DeadLetter:
            self.entity_path += "/$DeadLetterQueue"
        elif self._sub_queue is SubQueue.TransferDeadLetter:
            self.entity_path += "/$Transfer/$DeadLetterQueue"

    @classmethod
    def from_connection_string(cls, conn_str: str, **kwargs: Any) -> Any:
        """Create a receiver from a connection string.

        :param str conn_str: The connection string of a Service Bus.
        :keyword: as the constructor (queue_name, or topic_name and subscription_name, ...).
        :raises ServiceBusAuthenticationError: (when used) the token is refused.
        :raises ServiceBusAuthorizationError: (when used) the token lacks the Listen right.
        """
        parsed = _sbus.parse_connection_string(conn_str)
        if parsed["entity_path"] and "queue_name" not in kwargs and "topic_name" not in kwargs:
            kwargs["queue_name"] = parsed["entity_path"]
        host = parsed["host"] if not parsed["port"] else "%s:%d" % (parsed["host"], parsed["port"])
        return cls(host, None, _connection_string=conn_str, **kwargs)

    def __repr__(self) -> str:
        return "%s(fully_qualified_namespace=%r, entity_path=%r, receive_mode=%s%s)" % (
            type(self).__name__,
            self.fully_qualified_namespace,
            self.entity_path,
            self._receive_mode.name,
            ", closed" if self._closed else "",
        )

    def _create_handle(self, conn: Any) -> Any:
        entity = self._queue_name if self._queue_name is not None else self._topic_name
        return conn.receiver(
            entity,
            subscription=self._subscription_name,
            sub_queue=self._sub_queue.value if self._sub_queue is not None else _sbus.SUBQ_NONE,
            mode=self._receive_mode.value,
            prefetch=self._prefetch_count,
            session=self._is_session,
            session_id=self._session_id,
            session_wait_ms=seconds_to_ms(self._max_wait_time, 0),
            msg_type=ReceivedMessage,
            peek_type=PeekedMessage,
        )

    async def _open(self) -> Any:
        try:
            return await super()._open()
        except OperationTimeoutError as exc:
            if self._is_session and self._session_id is None and not isinstance(exc, NoActiveSession):
                raise NoActiveSession(
                    "There are no active sessions available: %s" % exc.reason,
                    reason=exc.reason,
                    code=exc.code,
                    errno=exc.errno,
                    condition=exc.condition,
                    retriable=True,
                ) from exc
            raise

    # -- receiving --------------------------------------------------------

    def _wait_ms(self, max_wait_time: Optional[float]) -> int:
        if max_wait_time is None:
            max_wait_time = self._max_wait_time
        if max_wait_time is not None and max_wait_time < 0:
            raise ValueError("max_wait_time must be greater than 0.")
        return seconds_to_ms(max_wait_time, -1)

    async def receive_messages(
        self, max_message_count: Optional[int] = None, max_wait_time: Optional[float] = None
    ) -> List[ReceivedMessage]:
        """Receive a batch of messages at once.

        Returns as soon as at least one message arrived and no more follow at
        once, or an empty list after ``max_wait_time``.

        :param int max_message_count: Maximum number of messages in the batch.
        :param float max_wait_time: Seconds to wait for the first message;
            None waits forever (or the receiver's max_wait_time).
        :rtype: list[ReceivedMessage]
        """
        if max_message_count is not None and max_message_count < 1:
            raise ValueError("max_message_count must be 1 or greater.")
        count = max_message_count or max(1, self._prefetch_count)
        wait = self._wait_ms(max_wait_time)
        handle = self._handle if self._running else await self._open()
        if self._buffer:
            out, self._buffer = self._buffer[:count], self._buffer[count:]
            return out
        got: List[ReceivedMessage] = await handle.receive(count, wait)
        self._register(got)
        return got

    def _register(self, messages: List[ReceivedMessage]) -> None:
        """Hands received messages to the auto_lock_renewer, if any (peek-lock only)."""
        renewer = self._auto_lock_renewer
        if renewer is None or self._receive_mode is not ReceiveMode.PeekLock or self._is_session:
            return
        for m in messages:
            if isinstance(renewer, AutoLockRenewer):
                renewer.register(self, m)
            else:  # a 7.0 AutoLockRenew
                renewer.register(m)

    def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        return self._iterate(self._max_wait_time)

    def get_streaming_message_iter(self, max_wait_time: Optional[float] = None) -> AsyncIterator[ReceivedMessage]:
        """Receive messages from an iterator indefinitely, or until no message
        arrives for ``max_wait_time`` seconds.

        :param float max_wait_time: Seconds to wait for the next message; None waits forever.
        :rtype: AsyncIterator[ReceivedMessage]
        """
        return self._iterate(max_wait_time)

    async def _iterate(self, max_wait_time: Optional[float]) -> AsyncIterator[ReceivedMessage]:
        wait = seconds_to_ms(max_wait_time, -1)
        count = max(1, self._prefetch_count)
        while True:
            if not self._buffer:
                handle = self._handle if self._running else await self._open()
                batch = await handle.receive(count, wait)
                if not batch:
                    return
                self._register(batch)
                self._buffer = batch
            yield self._buffer.pop(0)

    async def peek_messages(self, max_message_count: int = 1, sequence_number: int = 0) -> List[PeekedMessage]:
        """Browse messages pending in the entity, without locking or removing them.

        :param int max_message_count: The maximum number of messages to peek. Default 1.
        :param int sequence_number: The sequence number to start from (0: after the last peeked).
        :rtype: list[PeekedMessage]
        """
        if max_message_count < 1:
            raise ValueError("max_message_count must be 1 or greater.")
        handle = self._handle if self._running else await self._open()
        peeked: List[PeekedMessage] = await handle.peek(max_message_count, sequence_number or 0)
        return peeked

    async def receive_deferred_messages(self, sequence_numbers: Union[int, List[int]]) -> List[ReceivedMessage]:
        """Receive messages that were deferred, by sequence number.

        :param sequence_numbers: The sequence number(s) of the deferred messages.
        :rtype: list[ReceivedMessage]
        """
        seqs = [sequence_numbers] if isinstance(sequence_numbers, int) else list(sequence_numbers)
        if not seqs:
            return []
        handle = self._handle if self._running else await self._open()
        deferred: List[ReceivedMessage] = await handle.receive_deferred(seqs)
        self._register(deferred)
        return deferred

    # -- azure-servicebus 7.x settlement on the receiver ------------------

    # Settlement methods are plain methods that start the engine operation
    # (settle_message: ``ReceivedMessage._start_settle``, in C) and return its Future:
    # ``await receiver.complete_message(m)`` is unchanged, and
    # ``asyncio.gather`` of many of them wraps nothing in a Task (a Task per
    # call cost three loop callbacks per message). Errors are still raised
    # when the result is awaited, as from a coroutine.

    def complete_message(self, message: ReceivedMessage) -> "Awaitable[None]":
        """Complete ``message`` (7.x spelling of ``message.complete()``).

        Returns an awaitable: ``await receiver.complete_message(message)``.
        """
        # The usual case inline (one Python frame per message); anything
        # else goes through settle_message.
        if type(message) is ReceivedMessage:
            try:
                fut: "Optional[Awaitable[None]]" = message._start_settle(_COMPLETE)
            except Exception as exc:  # raised on await, as from a coroutine
                return raise_later(exc)
            if fut is not None:
                return fut
        return settle_message(message, _COMPLETE, (), self)

    def abandon_message(self, message: ReceivedMessage) -> "Awaitable[None]":
        """Abandon ``message`` (7.x spelling of ``message.abandon()``).

        Returns an awaitable: ``await receiver.abandon_message(message)``.
        """
        return settle_message(message, _ABANDON, (), self)

    def defer_message(self, message: ReceivedMessage) -> "Awaitable[None]":
        """Defer ``message`` (7.x spelling of ``message.defer()``).

        Returns an awaitable: ``await receiver.defer_message(message)``.
        """
        return settle_message(message, _DEFER, (), self)

    def dead_letter_message(
        self, message: ReceivedMessage, reason: Optional[str] = None, error_description: Optional[str] = None
    ) -> "Awaitable[None]":
        """Dead-letter ``message`` (7.x spelling of ``message.dead_letter()``).

        Returns an awaitable: ``await receiver.dead_letter_message(message, reason)``.
        """
        return settle_message(message, _DEAD_LETTER, (reason, error_description), self)

    async def renew_message_lock(self, message: ReceivedMessage) -> datetime.datetime:
        """Renew the lock of ``message`` (7.x spelling of ``message.renew_lock()``)."""
        return await message.renew_lock()

    async def _settle_opening(self, message: ReceivedMessage, outcome: int, *args: Optional[str]) -> None:
        """Settles a message that came from no receiver through this one."""
        if not isinstance(message, ReceivedMessage):
            raise TypeError("expected a ServiceBusReceivedMessage")
        handle = self._handle if self._running else await self._open()
        await handle.settle(message, outcome, *args)


_COMPLETE, _ABANDON, _DEFER, _DEAD_LETTER = _sbus.COMPLETE, _sbus.ABANDON, _sbus.DEFER, _sbus.DEAD_LETTER


class ServiceBusSessionReceiver(ServiceBusReceiver):
    """A receiver locked to one session of a sessionful queue or subscription,
    for FIFO processing and ownership.

    :keyword str session_id: The session; None means the next available one.
    :keyword: otherwise as :class:`ServiceBusReceiver`.
    """

    _is_session = True

    def __init__(self, fully_qualified_namespace: str, credential: Any, **kwargs: Any) -> None:
        kwargs.setdefault("session_id", None)
        super().__init__(fully_qualified_namespace, credential, **kwargs)
        self._session: Optional[ServiceBusSession] = None

    def _on_open(self, result: Any) -> None:
        session_id, _locked_until = result if result else (None, 0)
        if session_id is not None:
            self._session_id = session_id
        renewer = self._auto_lock_renewer
        if renewer is not None:
            if isinstance(renewer, AutoLockRenewer):
                renewer.register(self, self.session)
            else:
                renewer.register(self.session)

    @property
    def session(self) -> ServiceBusSession:
        """The ServiceBusSession of this receiver (state, lock renewal).

        :rtype: ServiceBusSession
        """
        if self._session is None:
            self._session = ServiceBusSession(self._session_id, self)
        return self._session

    @property
    def session_id(self) -> Optional[str]:
        """The id of the locked session (None before a next-available receiver opened)."""
        handle = self._handle
        if handle is not None and handle.session_id is not None:
            sid: str = handle.session_id
            return sid
        return self._session_id

    def _locked_until(self) -> Optional[datetime.datetime]:
        handle = self._handle
        if handle is None:
            return None
        return ms_to_datetime(handle.session_locked_until or None)
