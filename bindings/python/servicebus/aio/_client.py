"""ServiceBusClient: one AMQP connection, shared by its senders and receivers."""

from typing import Any, List, Optional, Type, TypeVar, Union

from .._common import ServiceBusSessionFilter
from .._connection import _Connection, build_options
from .._sbus import parse_connection_string
from ._base import BaseHandler, split_kwargs
from ._receiver import ServiceBusReceiver, ServiceBusSessionReceiver
from ._sender import ServiceBusSender

__all__ = ["ServiceBusClient"]

H = TypeVar("H", bound=BaseHandler)


class ServiceBusClient:
    """The ServiceBusClient class defines a high level interface for getting
    ServiceBusSender and ServiceBusReceiver.

    All senders and receivers it makes share its one AMQP connection.

    :ivar str fully_qualified_namespace: The fully qualified host name of the namespace.
    :param str fully_qualified_namespace: e.g. ``<yournamespace>.servicebus.windows.net``.
    :param credential: A :class:`ServiceBusSharedKeyCredential`, or any object
        with ``get_token(*scopes)`` (sync or async) returning ``(token, expires_on)``.
    :keyword bool logging_enable: Log the AMQP frames to ``logging.getLogger("servicebus")``. Default False.
    :keyword TransportType transport_type: Default ``TransportType.Amqp``.
    :keyword dict http_proxy: ``proxy_hostname``, ``proxy_port``, optional ``username``, ``password``.
    :keyword str user_agent: Added to the built-in user agent.
    :keyword int retry_total: Attempts to redo a failed operation. Default 3.
    :keyword float retry_backoff_factor: Back-off delta in seconds. Default 0.8.
    :keyword float retry_backoff_max: Maximum back-off in seconds. Default 120.
    """

    def __init__(self, fully_qualified_namespace: str, credential: Any, **kwargs: Any) -> None:
        self.fully_qualified_namespace = fully_qualified_namespace
        self._credential = credential
        conn_str = kwargs.pop("_connection_string", None)
        self._config = kwargs
        conn_kwargs = split_kwargs(kwargs)
        options = build_options(
            connection_string=conn_str,
            namespace=fully_qualified_namespace,
            credential=credential,
            kwargs=conn_kwargs,
        )
        self._connection = _Connection(options, credential, bool(conn_kwargs.get("logging_enable")))
        self._entity_path: Optional[str] = kwargs.pop("_entity_path", None)
        self._handlers: List[BaseHandler] = []
        self._closed = False

    @classmethod
    def from_connection_string(cls, conn_str: str, **kwargs: Any) -> "ServiceBusClient":
        """Create a ServiceBusClient from a connection string.

        :param str conn_str: The connection string of a Service Bus.
        :keyword: as the constructor.
        :rtype: ServiceBusClient
        """
        parsed = parse_connection_string(conn_str)
        host = parsed["host"]
        if parsed["port"]:
            host = "%s:%d" % (host, parsed["port"])
        return cls(host, None, _connection_string=conn_str, _entity_path=parsed["entity_path"], **kwargs)

    def __repr__(self) -> str:
        return "ServiceBusClient(fully_qualified_namespace=%r%s)" % (
            self.fully_qualified_namespace,
            ", closed" if self._closed else "",
        )

    async def __aenter__(self) -> "ServiceBusClient":
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close down the client: every sender, receiver and the connection."""
        if self._closed:
            return
        self._closed = True
        handlers, self._handlers = self._handlers, []
        for h in handlers:
            try:
                await h.close()
            except Exception:
                pass
        await self._connection.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._connection.warn_unclosed(self)

    def _child(self, cls: Type[H], **kwargs: Any) -> H:
        for k, v in self._config.items():
            kwargs.setdefault(k, v)
        h = cls(self.fully_qualified_namespace, self._credential, _connection=self._connection, **kwargs)
        self._handlers = [x for x in self._handlers if not x._closed]
        self._handlers.append(h)
        return h

    def get_queue_sender(self, queue_name: str, **kwargs: Any) -> ServiceBusSender:
        """Get a ServiceBusSender for the queue.

        :param str queue_name: The path of the queue.
        :rtype: ServiceBusSender
        """
        return self._child(ServiceBusSender, queue_name=queue_name, **kwargs)

    def get_topic_sender(self, topic_name: str, **kwargs: Any) -> ServiceBusSender:
        """Get a ServiceBusSender for the topic.

        :param str topic_name: The path of the topic.
        :rtype: ServiceBusSender
        """
        return self._child(ServiceBusSender, topic_name=topic_name, **kwargs)

    def get_queue_receiver(self, queue_name: str, **kwargs: Any) -> Union[ServiceBusReceiver, ServiceBusSessionReceiver]:
        """Get a ServiceBusReceiver for the queue.

        :param str queue_name: The path of the queue.
        :keyword SubQueue sub_queue: DeadLetter or TransferDeadLetter; default None (the queue).
        :keyword ReceiveMode receive_mode: PeekLock (default) or ReceiveAndDelete.
        :keyword float max_wait_time: Seconds between messages after which
            iteration stops; default 0 (no timeout).
        :keyword int prefetch_count: Messages cached ahead; default 0.
        :keyword session_id: (7.x) a session id or NEXT_AVAILABLE_SESSION makes
            this a session receiver.
        :rtype: ServiceBusReceiver
        """
        if "session_id" in kwargs:
            return self.get_queue_session_receiver(queue_name, **kwargs)
        return self._child(ServiceBusReceiver, queue_name=queue_name, **kwargs)

    def get_queue_session_receiver(
        self, queue_name: str, session_id: Union[str, ServiceBusSessionFilter, None] = None, **kwargs: Any
    ) -> ServiceBusSessionReceiver:
        """Get a ServiceBusSessionReceiver for the queue.

        :param str queue_name: The path of the queue.
        :param str session_id: The session; None (default) means the next available one.
        :rtype: ServiceBusSessionReceiver
        """
        return self._child(ServiceBusSessionReceiver, queue_name=queue_name, session_id=session_id, **kwargs)

    def get_subscription_receiver(
        self, topic_name: str, subscription_name: str, **kwargs: Any
    ) -> Union[ServiceBusReceiver, ServiceBusSessionReceiver]:
        """Get a ServiceBusReceiver for the subscription under the topic.

        :param str topic_name: The topic.
        :param str subscription_name: The subscription.
        :rtype: ServiceBusReceiver
        """
        if "session_id" in kwargs:
            return self.get_subscription_session_receiver(topic_name, subscription_name, **kwargs)
        return self._child(ServiceBusReceiver, topic_name=topic_name, subscription_name=subscription_name, **kwargs)

    def get_subscription_session_receiver(
        self,
        topic_name: str,
        subscription_name: str,
        session_id: Union[str, ServiceBusSessionFilter, None] = None,
        **kwargs: Any
    ) -> ServiceBusSessionReceiver:
        """Get a ServiceBusSessionReceiver for the subscription under the topic.

        :param str topic_name: The topic.
        :param str subscription_name: The subscription.
        :param str session_id: The session; None (default) means the next available one.
        :rtype: ServiceBusSessionReceiver
        """
        return self._child(
            ServiceBusSessionReceiver,
            topic_name=topic_name,
            subscription_name=subscription_name,
            session_id=session_id,
            **kwargs
        )

