"""Shared machinery of ServiceBusSender and ServiceBusReceiver."""

import asyncio
from typing import Any, Dict, Optional

from .._connection import CONNECTION_KWARGS, _Connection, build_options
from ..exceptions import InvalidHandlerState


def split_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The connection-level keyword arguments in kwargs."""
    return {k: kwargs[k] for k in CONNECTION_KWARGS if k in kwargs}


class BaseHandler:
    """An engine link (sender or receiver) on a connection it may own.

    :ivar str fully_qualified_namespace: The namespace host.
    """

    _kind = "handler"

    def __init__(self, fully_qualified_namespace: str, credential: Any, **kwargs: Any) -> None:
        self.fully_qualified_namespace = fully_qualified_namespace
        self._credential = credential
        connection: Optional[_Connection] = kwargs.pop("_connection", None)
        conn_str: Optional[str] = kwargs.pop("_connection_string", None)
        self._config = kwargs
        if connection is None:
            conn_kwargs = split_kwargs(kwargs)
            options = build_options(
                connection_string=conn_str,
                namespace=fully_qualified_namespace,
                credential=credential,
                kwargs=conn_kwargs,
            )
            connection = _Connection(options, credential, bool(conn_kwargs.get("logging_enable")))
            self._owns_connection = True
        else:
            self._owns_connection = False
        self._connection = connection
        self._handle: Optional[Any] = None
        self._opening: Optional["asyncio.Future[Any]"] = None
        self._running = False
        self._closed = False

    # -- subclass hooks ---------------------------------------------------

    def _create_handle(self, conn: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_open(self, result: Any) -> None:
        """Called with the open operation's result."""

    # -- lifecycle --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidHandlerState("The %s is closed." % self._kind)

    async def _open(self) -> Any:
        """Attach the link once; concurrent callers share the attach."""
        self._check_open()
        if self._running:
            return self._handle
        if self._opening is None:
            if self._handle is None:
                self._handle = self._create_handle(self._connection.handle())
            self._opening = self._handle.open()
        opening = self._opening
        try:
            result = await asyncio.shield(opening)
        except BaseException:
            if opening.done() and (opening.cancelled() or opening.exception() is not None):
                self._opening = None
            raise
        if not self._running:
            self._running = True
            self._on_open(result)
        return self._handle

    async def close(self) -> None:
        """Close down the handler (and its connection if it owns one).

        If the handler has already closed, this does nothing.
        """
        if self._closed:
            return
        self._closed = True
        handle, self._handle = self._handle, None
        self._running = False
        try:
            if handle is not None and not self._connection.closed:
                try:
                    await handle.close()
                except Exception:  # a lost link is closed anyway
                    pass
        finally:
            if handle is not None:
                handle.free()
            if self._owns_connection:
                await self._connection.close()

    async def __aenter__(self) -> Any:
        try:
            await self._open()
        except BaseException:
            # __aexit__ will not run: release the link and any connection we own
            await asyncio.shield(self.close())
            raise
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_owns_connection", False) and not getattr(self, "_closed", True):
            self._connection.warn_unclosed(self)
