"""AutoLockRenew (7.0) and AutoLockRenewer (7.x): keep locks renewed.

Renewal runs on the engine's timers (driven by the connection's deadline
timer), so it goes on while user code awaits anything else, and costs no
task per message. A failure is reported once: the renewable's
``auto_renew_error`` is set and ``on_lock_renew_failure(renewable, error)``
is awaited.
"""

import asyncio
from typing import Any, Awaitable, Callable, List, Optional, Tuple, Union

from .. import _sbus
from .._message import ReceivedMessage
from ..exceptions import AutoLockRenewFailed
from ._session import ServiceBusSession

__all__ = ["AutoLockRenew", "AutoLockRenewer"]

Renewable = Union[ReceivedMessage, ServiceBusSession]
FailureCallback = Callable[[Renewable, Optional[Exception]], Awaitable[None]]


class AutoLockRenew:
    """Renews the locks of messages and sessions in the background.

    :param loop: Ignored (kept for compatibility; the running loop is used).
    """

    def __init__(self, loop: Optional[asyncio.AbstractEventLoop] = None, **kwargs: Any) -> None:
        self._registered: List[Tuple[Renewable, Any]] = []
        self._prune_at = 64  # prune settled messages when the list reaches this
        self._tasks: "set[asyncio.Task[Any]]" = set()
        self._closed = False
        self._max_duration: float = float(kwargs.get("max_lock_renewal_duration", 300))
        self._on_failure: Optional[FailureCallback] = kwargs.get("on_lock_renew_failure")

    def __repr__(self) -> str:
        return "%s(registered=%d%s)" % (type(self).__name__, len(self._registered), ", closed" if self._closed else "")

    async def __aenter__(self) -> "AutoLockRenew":
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.close()

    def register(
        self,
        renewable: Renewable,
        timeout: float = 300,
        on_lock_renew_failure: Optional[FailureCallback] = None,
    ) -> None:
        """Register a message or session for automatic lock renewal.

        :param renewable: A ReceivedMessage (peek-locked) or a ServiceBusSession.
        :param float timeout: Seconds the lock should be maintained for. Default 300.
        :param on_lock_renew_failure: Awaited with (renewable, error) if renewal fails.
        """
        if self._closed:
            raise ValueError("The AutoLockRenew has already been shut down.")
        callback = on_lock_renew_failure or self._on_failure
        max_ms = int(timeout * 1000)

        def failed(_target: Any, error: Optional[Exception]) -> None:
            if error is not None and not isinstance(error, Exception):
                error = AutoLockRenewFailed(str(error))
            renewable.auto_renew_error = error
            if callback is not None:
                task = asyncio.ensure_future(callback(renewable, error))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        if isinstance(renewable, ReceivedMessage):
            handle = renewable._receiver_handle
            if handle is None:
                raise ValueError("Only received messages can be registered.")
            if handle.session_id is not None:
                raise TypeError("Session messages cannot be registered: register the session instead.")
            handle.auto_renew(renewable, max_ms, failed)
            self._remember(renewable, handle)
        elif isinstance(renewable, ServiceBusSession):
            handle = renewable._handle()
            if handle is None:
                raise ValueError("The session receiver is not open.")
            handle.auto_renew_session(max_ms, failed)
            self._remember(renewable, handle)
        else:
            raise TypeError("AutoLockRenew registers ReceivedMessage or ServiceBusSession objects.")

    def _remember(self, renewable: Renewable, handle: Any) -> None:
        """Keeps what close() must stop; settled messages (the engine stopped renewing
        them) are pruned, amortised, so a long-running consumer does not grow."""
        self._registered.append((renewable, handle))
        if len(self._registered) >= self._prune_at:
            self._registered = [
                (r, h)
                for r, h in self._registered
                if not isinstance(r, ReceivedMessage) or r._settle_state == _sbus.MSG_UNSETTLED
            ]
            self._prune_at = max(64, 2 * len(self._registered))

    async def close(self) -> None:
        """Cease autorenewal of everything registered."""
        self._closed = True
        registered, self._registered = self._registered, []
        for renewable, handle in registered:
            if isinstance(renewable, ReceivedMessage):
                handle.auto_renew_stop(renewable)
            else:
                try:
                    handle.auto_renew_session(0)
                except Exception:  # the receiver may be closed already
                    pass
        for task in list(self._tasks):
            if not task.done():
                await asyncio.wait([task])


class AutoLockRenewer(AutoLockRenew):
    """azure-servicebus 7.x spelling: ``register(receiver, renewable, max_lock_renewal_duration=...)``.

    :param float max_lock_renewal_duration: Default seconds to keep renewing. Default 300.
    :param on_lock_renew_failure: Default failure callback.
    """

    def __init__(
        self,
        max_lock_renewal_duration: float = 300,
        on_lock_renew_failure: Optional[FailureCallback] = None,
        loop: Optional[asyncio.AbstractEventLoop] = None,
        **kwargs: Any
    ) -> None:
        super().__init__(
            loop, max_lock_renewal_duration=max_lock_renewal_duration, on_lock_renew_failure=on_lock_renew_failure
        )

    def register(  # type: ignore[override]
        self,
        receiver: Any,
        renewable: Renewable,
        max_lock_renewal_duration: Optional[float] = None,
        on_lock_renew_failure: Optional[FailureCallback] = None,
    ) -> None:
        """Register a message or session (received by ``receiver``) for renewal.

        :param receiver: The receiver the renewable belongs to.
        :param renewable: A ServiceBusReceivedMessage or ServiceBusSession.
        :param float max_lock_renewal_duration: Seconds; default the renewer's.
        :param on_lock_renew_failure: Awaited with (renewable, error) on failure.
        """
        duration = self._max_duration if max_lock_renewal_duration is None else max_lock_renewal_duration
        super().register(renewable, timeout=duration, on_lock_renew_failure=on_lock_renew_failure)
