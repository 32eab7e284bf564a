"""servicebus.testing: a local Service Bus for integration tests.

:class:`Emulator` runs ``sbus-emulator`` (the project's C emulator) on free
ports as a sync or async context manager and drives its control surface
(create and delete entities at run time, move the clock, inject faults, read
counters). The pytest plugin (:mod:`servicebus.testing.pytest_plugin`,
registered as the ``servicebus`` pytest11 entry point) turns it into
fixtures: ``servicebus_emulator``, ``servicebus_queue``, ``servicebus_topic``,
``servicebus_client``. docs/testing.md is the guide.
"""

from ._control import AsyncControl, Control, unique_name
from ._emulator import DEFAULT_CONFIG, Emulator, find_emulator, load_config
from ._errors import ControlError, EmulatorConfigError, EmulatorError, EmulatorNotFoundError, EmulatorStartError

__all__ = [
    "Emulator",
    "Control",
    "AsyncControl",
    "find_emulator",
    "load_config",
    "unique_name",
    "DEFAULT_CONFIG",
    "EmulatorError",
    "EmulatorNotFoundError",
    "EmulatorConfigError",
    "EmulatorStartError",
    "ControlError",
]
