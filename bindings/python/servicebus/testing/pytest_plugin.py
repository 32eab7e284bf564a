"""pytest plugin: a Service Bus emulator and fresh entities as fixtures.

Registered as the ``servicebus`` pytest11 entry point, so installing
servicebus is enough. Fixtures:

- ``servicebus_emulator`` (session): a running :class:`~servicebus.testing.Emulator`;
- ``servicebus_connection_string`` (session): its connection string;
- ``servicebus_queue``: a queue made for this test and deleted after it, so
  tests never see each other's messages; properties from
  ``@pytest.mark.servicebus_queue(requires_session=True, lock_duration=5, ...)``;
- ``servicebus_topic``: the same for a topic, with one subscription
  (``servicebus_topic.subscription``) unless the mark names others;
- ``servicebus_entities``: ``.queue(**props)`` and ``.topic(subscriptions, **props)``
  make as many entities as a test needs, all deleted after it;
- ``servicebus_client``: a :class:`servicebus.aio.ServiceBusClient` on the
  emulator, closed after the test (async fixture).

Options: ``--servicebus-config FILE`` and ``--servicebus-emulator PATH``, or
the ini keys ``servicebus_config`` and ``servicebus_emulator`` (a relative
path is taken from the ini file's directory). The entity fixtures are sync
fixtures (they run before the test's event loop does, so their control
requests block nothing); the client fixture is async and works with
pytest-asyncio in auto or strict mode.
"""

import os
import re
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from ._control import unique_name
from ._emulator import Emulator

try:  # strict mode needs pytest_asyncio.fixture; auto mode accepts either
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio the client fixture cannot run anyway
    _async_fixture = pytest.fixture

__all__ = ["EntityName", "TopicName", "Entities"]


class EntityName(str):
    """An entity's name (a ``str``) that the fixture made for one test."""


class TopicName(EntityName):
    """A topic's name with its subscriptions.

    :ivar tuple subscriptions: The subscription names.
    :ivar str subscription: The first one (``"sub"`` by default).
    """

    subscriptions: Tuple[str, ...] = ()

    @property
    def subscription(self) -> str:
        return self.subscriptions[0]

    def subscription_path(self, name: Optional[str] = None) -> str:
        """``<topic>/Subscriptions/<name or the first subscription>``."""
        return "%s/Subscriptions/%s" % (self, name or self.subscription)


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("servicebus", "Service Bus emulator (servicebus.testing)")
    group.addoption("--servicebus-config", dest="servicebus_config", default=None, metavar="FILE",
                    help="emulator Config.json for the servicebus_emulator fixture (default: a built-in one)")
    group.addoption("--servicebus-emulator", dest="servicebus_emulator", default=None, metavar="PATH",
                    help="sbus-emulator binary (default: $SBUS_EMULATOR, the packaged one, build/, PATH)")
    parser.addini("servicebus_config", "emulator Config.json for the servicebus_emulator fixture", default=None)
    parser.addini("servicebus_emulator", "sbus-emulator binary for the servicebus_emulator fixture", default=None)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "servicebus_queue(**properties): properties of the servicebus_queue fixture's "
                            "queue, e.g. requires_session=True, lock_duration=5, max_delivery_count=2")
    config.addinivalue_line("markers", "servicebus_topic(subscriptions=('sub',), **properties): subscriptions "
                            "(names or Microsoft's objects) and properties of the servicebus_topic fixture's topic")


def pytest_report_header(config: Any) -> str:
    """Which emulator the fixtures would run, for CI logs."""
    from ._emulator import find_emulator
    from ._errors import EmulatorNotFoundError

    try:
        binary = find_emulator(_setting(config, "servicebus_emulator"))
    except EmulatorNotFoundError as exc:
        binary = "not found (%s)" % str(exc).split(" (", 1)[0]
    return "servicebus: sbus-emulator %s, config %s" % (
        binary, _setting(config, "servicebus_config") or "built-in")


def _setting(config: Any, name: str) -> Optional[str]:
    """The command-line option, else the ini key (relative to the ini file)."""
    option = config.getoption(name)
    if option:
        return str(option)
    ini = config.getini(name)
    if not ini:
        return None
    value = str(ini)
    if not os.path.isabs(value) and getattr(config, "inipath", None):
        value = os.path.join(os.path.dirname(str(config.inipath)), value)
    return value


@pytest.fixture(scope="session")
def servicebus_emulator(pytestconfig: Any) -> Iterator[Emulator]:
    """A running sbus-emulator on free ports, for the whole session."""
    emulator = Emulator(_setting(pytestconfig, "servicebus_config"),
                        binary=_setting(pytestconfig, "servicebus_emulator"))
    with emulator:
        yield emulator


@pytest.fixture(scope="session")
def servicebus_connection_string(servicebus_emulator: Emulator) -> str:
    """The emulator's connection string."""
    return servicebus_emulator.connection_string


def _entity_prefix(request: Any, kind: str) -> str:
    """``<kind>-<test name>`` squeezed into a valid, short entity name."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()
    return ("%s-%s" % (kind, name))[:40].rstrip("-")


def _mark_kwargs(request: Any, name: str) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers(name))):  # closest mark wins
        kwargs.update(mark.kwargs)
    return kwargs


@pytest.fixture
def servicebus_queue(request: Any, servicebus_emulator: Emulator) -> Iterator[EntityName]:
    """A queue of its own for this test (deleted after it); its name."""
    properties = _mark_kwargs(request, "servicebus_queue")
    name = servicebus_emulator.create_queue(unique_name(_entity_prefix(request, "q")), **properties)
    try:
        yield EntityName(name)
    finally:
        if servicebus_emulator.running:
            servicebus_emulator.delete(name, missing_ok=True)


@pytest.fixture
def servicebus_topic(request: Any, servicebus_emulator: Emulator) -> Iterator[TopicName]:
    """A topic of its own for this test, with subscription ``sub`` (or the
    mark's ``subscriptions``), deleted after it; its name."""
    properties = _mark_kwargs(request, "servicebus_topic")
    subscriptions = tuple(properties.pop("subscriptions", ("sub",)))
    if not subscriptions:
        raise pytest.UsageError("servicebus_topic needs at least one subscription")
    name = servicebus_emulator.create_topic(unique_name(_entity_prefix(request, "t")), subscriptions, **properties)
    topic = TopicName(name)
    topic.subscriptions = tuple(s if isinstance(s, str) else s["Name"] for s in subscriptions)
    try:
        yield topic
    finally:
        if servicebus_emulator.running:
            servicebus_emulator.delete(name, missing_ok=True)


class Entities:
    """Makes entities for one test and deletes them after it (the
    ``servicebus_entities`` fixture): for tests that need more than one, such
    as a queue that forwards to another."""

    def __init__(self, emulator: Emulator, prefix: str) -> None:
        self._emulator = emulator
        self._prefix = prefix
        self._made: List[str] = []

    def queue(self, **properties: Any) -> EntityName:
        """A fresh queue; its name."""
        name = self._emulator.create_queue(unique_name(self._prefix + "-q"), **properties)
        self._made.append(name)
        return EntityName(name)

    def topic(self, subscriptions: Sequence[Any] = ("sub",), **properties: Any) -> TopicName:
        """A fresh topic with ``subscriptions``; its name."""
        name = self._emulator.create_topic(unique_name(self._prefix + "-t"), subscriptions, **properties)
        self._made.append(name)
        topic = TopicName(name)
        topic.subscriptions = tuple(s if isinstance(s, str) else s["Name"] for s in subscriptions)
        return topic

    def delete_all(self) -> None:
        made, self._made = self._made, []
        if self._emulator.running:
            for name in reversed(made):
                self._emulator.delete(name, missing_ok=True)


@pytest.fixture
def servicebus_entities(request: Any, servicebus_emulator: Emulator) -> Iterator[Entities]:
    """``servicebus_entities.queue(**props)`` / ``.topic(subscriptions, **props)``:
    as many fresh entities as the test needs, all deleted after it."""
    entities = Entities(servicebus_emulator, _entity_prefix(request, "e")[:30])
    try:
        yield entities
    finally:
        entities.delete_all()


@_async_fixture  # type: ignore[misc]  # pytest_asyncio has no type information
async def servicebus_client(servicebus_emulator: Emulator) -> AsyncIterator[Any]:
    """A ServiceBusClient on the emulator, closed after the test."""
    client = servicebus_emulator.client()
    try:
        yield client
    finally:
        await client.close()
