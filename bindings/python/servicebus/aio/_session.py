"""ServiceBusSession: the state and lock of a session receiver's session."""

import datetime
from typing import TYPE_CHECKING, Any, Optional, Union

from .._common import ms_to_datetime

if TYPE_CHECKING:  # pragma: no cover
    from ._receiver import ServiceBusSessionReceiver

__all__ = ["ServiceBusSession"]


class ServiceBusSession:
    """Session state and lock renewal for a session receiver.

    Use ``receiver.session`` rather than creating one directly.

    :param str session_id: The session id.
    :param receiver: The ServiceBusSessionReceiver that holds the session.
    :param str encoding: Encoding of str states. Default UTF-8.
    """

    def __init__(self, session_id: Optional[str], receiver: "ServiceBusSessionReceiver", encoding: str = "UTF-8") -> None:
        self._session_id = session_id
        self._receiver = receiver
        self._encoding = encoding
        self.auto_renew_error: Optional[BaseException] = None

    def __repr__(self) -> str:
        return "ServiceBusSession(session_id=%r)" % (self.session_id,)

    @property
    def session_id(self) -> Optional[str]:
        """Session id of the current session.

        :rtype: str
        """
        return self._receiver.session_id or self._session_id

    @property
    def locked_until_utc(self) -> Optional[datetime.datetime]:
        """The time at which this session's lock will expire.

        :rtype: datetime.datetime
        """
        return self._receiver._locked_until()

    async def get_state(self) -> Optional[str]:
        """Get the session state; None if no state has been set.

        :rtype: str
        """
        handle = await self._receiver._open()
        state = await handle.get_state()
        if state is None:
            return None
        text: str = state.decode(self._encoding)
        return text

    async def set_state(self, state: Union[str, bytes, bytearray, None]) -> None:
        """Set the session state (None clears it).

        :param state: The state value.
        """
        handle = await self._receiver._open()
        if isinstance(state, str):
            state = state.encode(self._encoding)
        await handle.set_state(bytes(state) if state is not None else None)

    async def renew_lock(self) -> datetime.datetime:
        """Renew the session lock; returns the UTC time it now expires at.

        Once the lock is lost the session receiver must be reopened; an
        expired lock cannot be renewed.

        :rtype: datetime.datetime
        """
        handle = await self._receiver._open()
        until = await handle.renew_session_lock()
        result = ms_to_datetime(until)
        assert result is not None
        return result

    def _handle(self) -> Any:
        return self._receiver._handle
