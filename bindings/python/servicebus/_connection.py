"""The AMQP connection shared by a client's senders and receivers.

``_Connection`` turns the azure-style keyword arguments into engine options,
creates the extension's ``Connection`` (the asyncio protocol) on the running
loop the first time it is needed, answers the engine's token requests from
the credential (sync or async ``get_token``), and sends the engine's frame
trace to ``logging.getLogger("servicebus")`` when ``logging_enable=True``.
"""

import asyncio
import inspect
import logging
import time
import warnings
from typing import Any, Awaitable, Callable, Dict, Optional

from . import _sbus
from ._common import TransportType
from ._credentials import JWT_TOKEN_SCOPE, ServiceBusSasCredential, ServiceBusSharedKeyCredential
from .exceptions import InvalidHandlerState

_log = logging.getLogger("servicebus")

#: Keyword arguments every client, sender and receiver accepts.
CONNECTION_KWARGS = (
    "logging_enable",
    "transport_type",
    "http_proxy",
    "user_agent",
    "retry_total",
    "retry_backoff_factor",
    "retry_backoff_max",
    "connection_verify",
    "use_tls",
)


class _OpFuture(asyncio.Future):  # type: ignore[type-arg]
    """The Future of one engine operation: cancelling it cancels the operation.

    With the C asyncio.Future (always, on CPython) the extension replaces
    add_done_callback, remove_done_callback, cancel, set_result and
    set_exception (``_sbus.install_future``): the done callbacks of every
    operation completed in one engine drain then run from ONE loop callback,
    in completion order and each in its context, instead of one
    ``call_soon`` and Handle each. The Python methods below are the
    fallback for a pure-Python asyncio.Future.
    """

    __slots__ = ("_sbus_conn", "_sbus_cb", "_sbus_ctx", "_sbus_more")

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg=msg):
            return False
        conn = getattr(self, "_sbus_conn", None)
        if conn is not None:
            conn._cancel_op(self)
        return True


_sbus.install_future(_OpFuture)


class _Protocol(_sbus.Connection, asyncio.BufferedProtocol):
    """The engine connection as asyncio sees it: a BufferedProtocol.

    Every method is the extension's; this class only adds
    asyncio.BufferedProtocol to the bases so that the event loop (asyncio or
    uvloop) recognises it as a buffered protocol.
    """

    __slots__ = ()


def with_timeout(start: Callable[[], "asyncio.Future[Any]"], kwargs: Dict[str, Any]) -> "asyncio.Future[Any]":
    """Starts an engine operation with ``start()`` and applies the
    azure-servicebus 7.x per-call ``timeout=`` (seconds) to it: it then fails
    with OperationTimeoutError when not done in time. The timeout is checked
    before anything starts, so a bad value sends nothing."""
    timeout = kwargs.get("timeout")
    if timeout is not None and not float(timeout) > 0:
        raise ValueError("timeout must be greater than 0")
    fut = start()
    if timeout is not None:
        conn = getattr(fut, "_sbus_conn", None)
        if conn is not None and not fut.done():
            conn._set_op_timeout(fut, float(timeout))
    return fut


async def _raise(exc: BaseException) -> Any:
    raise exc


def raise_later(exc: BaseException) -> "Awaitable[Any]":
    """An awaitable that raises ``exc`` when awaited: methods that return an
    operation's Future instead of being coroutines report their errors the
    way a coroutine would, on ``await`` (and a never-awaited one warns)."""
    return _raise(exc)


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    """Done callback that marks a background Future's exception as seen."""
    if not fut.cancelled():
        fut.exception()


def build_options(
    *,
    connection_string: Optional[str] = None,
    namespace: Optional[str] = None,
    credential: Any = None,
    kwargs: Dict[str, Any],
) -> Dict[str, Any]:
    """Engine connection options from azure-style keyword arguments."""
    o: Dict[str, Any] = {}
    if connection_string is not None:
        o["connection_string"] = connection_string
    else:
        if not namespace:
            raise ValueError("fully_qualified_namespace is required")
        o["namespace"] = namespace
        named_key = getattr(credential, "named_key", None)  # azure.core AzureNamedKeyCredential
        if isinstance(credential, ServiceBusSharedKeyCredential):
            o["sas_key_name"] = credential.policy
            o["sas_key"] = credential.key
        elif named_key is not None and not hasattr(credential, "get_token"):
            o["sas_key_name"], o["sas_key"] = named_key
        elif isinstance(credential, ServiceBusSasCredential) or (
            hasattr(credential, "signature") and not hasattr(credential, "get_token")
        ):
            o["sas_token"] = credential.signature
        elif hasattr(credential, "get_token"):
            o["host_tokens"] = 1
        else:
            raise TypeError("credential must be a ServiceBusSharedKeyCredential or have get_token(*scopes)")
    transport = kwargs.get("transport_type")
    if transport is not None:
        o["transport"] = TransportType(transport).value
    proxy = kwargs.get("http_proxy")
    if proxy:
        o["proxy_host"] = proxy["proxy_hostname"]
        o["proxy_port"] = int(proxy["proxy_port"])
        if proxy.get("username") is not None:
            o["proxy_user"] = proxy["username"]
        if proxy.get("password") is not None:
            o["proxy_password"] = proxy["password"]
    if kwargs.get("user_agent") is not None:
        o["user_agent"] = kwargs["user_agent"]
    if kwargs.get("retry_total") is not None:
        o["retry_total"] = int(kwargs["retry_total"])
    if kwargs.get("retry_backoff_factor") is not None:
        o["retry_backoff_ms"] = int(float(kwargs["retry_backoff_factor"]) * 1000)
    if kwargs.get("retry_backoff_max") is not None:
        o["retry_backoff_max_ms"] = int(float(kwargs["retry_backoff_max"]) * 1000)
    verify = kwargs.get("connection_verify")
    if isinstance(verify, str):
        o["ca_file"] = verify
    elif verify is False:
        o["verify"] = 0
    if kwargs.get("use_tls") is not None:
        o["use_tls"] = 1 if kwargs["use_tls"] else 0
    if kwargs.get("logging_enable"):
        o["trace"] = 1
    return o


class _Connection:
    """One engine connection, created lazily on the running loop."""

    def __init__(self, options: Dict[str, Any], credential: Any = None, logging_enable: bool = False) -> None:
        self._options = options
        self._credential = credential
        self._logging = bool(logging_enable)
        self._handle: Optional[Any] = None
        self._closed = False
        self._tasks: "set[asyncio.Task[Any]]" = set()

    @property
    def closed(self) -> bool:
        return self._closed

    def handle(self) -> Any:
        """The extension Connection, created and opened on first use."""
        if self._closed:
            raise InvalidHandlerState("The client is closed.")
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._handle = _Protocol(
                loop,
                _OpFuture,
                self._options,
                token_callback=self._on_token if self._options.get("host_tokens") else None,
                log_callback=self._on_log,
            )
            fut = self._handle.open()
            fut.add_done_callback(_retrieve)
        return self._handle

    # -- engine callbacks -----------------------------------------------

    def _on_log(self, text: str, level: int = 0) -> None:
        # level 1: the engine's warnings (always shown); level 0: frame
        # traces, which the engine only emits with logging_enable=True.
        if level:
            _log.warning("%s", text)
        else:
            _log.info("%s", text)

    def _on_token(self, audience: str) -> None:
        task = asyncio.ensure_future(self._get_token(audience))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _get_token(self, audience: str) -> None:
        handle = self._handle
        try:
            token = self._credential.get_token(JWT_TOKEN_SCOPE)
            if inspect.isawaitable(token):
                token = await token
            if hasattr(token, "token"):
                text, expires = token.token, token.expires_on
            else:  # a plain (token, expires_on) tuple
                text, expires = token
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            expires = int(expires)
        except Exception as exc:  # reported to the engine, which fails the operation
            _log.warning("get_token failed: %s", exc)
            if handle is not None and not self._closed:
                handle.set_token(audience, None, 0, "get_token failed: %s" % (exc,))
            return
        if handle is not None and not self._closed:
            handle.set_token(audience, text, expires)

    # -- lifecycle --------------------------------------------------------

    async def close(self) -> None:
        """Close gracefully (AMQP close), then release the transport."""
        if self._closed:
            return
        self._closed = True
        handle = self._handle
        for task in list(self._tasks):
            task.cancel()
        if handle is None:
            return
        try:
            await handle.close()
        except Exception as exc:  # closing never raises for a lost connection
            _log.debug("close: %s", exc)
        finally:
            handle.abort("closed")

    def abort(self) -> None:
        """Drop everything at once, without I/O (for destructors)."""
        self._closed = True
        if self._handle is not None:
            try:
                self._handle.abort("not closed")
            except Exception:  # pragma: no cover - loop already gone
                pass

    def warn_unclosed(self, owner: Any) -> None:
        """ResourceWarning for an owner dropped while still open."""
        if not self._closed and self._handle is not None:
            warnings.warn("unclosed %r" % (owner,), ResourceWarning, source=owner)
            self.abort()


def now_ms() -> int:
    """Wall clock, Unix ms."""
    return int(time.time() * 1000)
