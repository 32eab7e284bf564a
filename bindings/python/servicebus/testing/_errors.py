"""Errors of servicebus.testing: each says what went wrong and what to do."""

from typing import Optional

__all__ = ["EmulatorError", "EmulatorNotFoundError", "EmulatorConfigError", "EmulatorStartError", "ControlError"]


class EmulatorError(Exception):
    """Base of every servicebus.testing error."""


class EmulatorNotFoundError(EmulatorError, FileNotFoundError):
    """No ``sbus-emulator`` binary was found (the message lists where we looked)."""


class EmulatorConfigError(EmulatorError, ValueError):
    """The emulator refused its configuration (the message is the emulator's:
    file, JSON path and problem)."""


class EmulatorStartError(EmulatorError):
    """The emulator did not start (port in use, certificates, crash, timeout).

    :ivar int returncode: The emulator's exit status, or None if it was still running.
    :ivar str stderr: What the emulator wrote on stderr.
    """

    def __init__(self, message: str, returncode: Optional[int] = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class ControlError(EmulatorError):
    """The control surface refused a request, or could not be reached.

    :ivar int status: The HTTP status (404 unknown entity, 409 exists, 400
        bad request), or 0 when the port could not be reached.
    :ivar str reason: The emulator's explanation.
    """

    def __init__(self, status: int, reason: str, method: str = "", path: str = "") -> None:
        super().__init__("%s %s: %s%s" % (method, path, "%d " % status if status else "", reason))
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path
