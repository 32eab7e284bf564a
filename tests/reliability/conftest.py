"""Fixtures of the reliability and security tests (docs/reliability.md).

One emulator per session (servicebus.testing.Emulator on free ports, with
tests/reliability/config.json), a fresh queue per test, and a TCP relay
(relay.py) that a test can cut. ``--full`` runs the long scenarios at the
scale the issue asks for (20,000 messages); the default is a test-scale run
that fits in ``make test``.
"""

import os
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from relay import Relay
from servicebus.testing import Emulator

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "config.json")
ROOT = os.path.dirname(os.path.dirname(HERE))

SENDER_KEY = "c2VuZGVyLWtleQ=="
LISTENER_KEY = "bGlzdGVuZXIta2V5"
QUEUE_SENDER_KEY = "cXVldWUtc2VuZGVy"
ROOT_KEY = "SAS_KEY_VALUE"


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="run the reliability scenarios at full scale (20,000 messages)")


@pytest.fixture(scope="session")
def full(request: Any) -> bool:
    return bool(request.config.getoption("--full"))


def emulator_binary() -> str:
    return os.environ.get("SBUS_EMULATOR") or os.path.join(
        os.environ.get("SBUS_BUILD_DIR") or os.path.join(ROOT, "build"), "emulator", "sbus-emulator")


@pytest.fixture(scope="session")
def emu() -> Iterator[Emulator]:
    with Emulator(CONFIG, binary=emulator_binary(), amqps_port=0) as e:
        yield e


@pytest.fixture
def fresh_emu() -> Iterator[Emulator]:
    """An emulator of this test's own (its clock never moved)."""
    with Emulator(CONFIG, binary=emulator_binary(), amqps_port=None) as e:
        yield e


@pytest.fixture
def make_queue(emu: Emulator) -> Iterator[Callable[..., str]]:
    made = []

    def make(**props: Any) -> str:
        name = emu.create_queue(**props)
        made.append(name)
        return name

    yield make
    for q in made:
        emu.delete(q, missing_ok=True)


@pytest.fixture
def queue(make_queue: Callable[..., str]) -> str:
    return make_queue()


def relayed(conn_str: str, port: int) -> str:
    """The connection string with its endpoint port replaced by ``port``."""
    import re

    return re.sub(r"Endpoint=sb://[^:;/]+:\d+", "Endpoint=sb://127.0.0.1:%d" % port, conn_str)


@pytest.fixture
async def relay(emu: Emulator) -> AsyncIterator[Relay]:
    r = Relay(("127.0.0.1", emu.amqp_port))
    await r.start()
    try:
        yield r
    finally:
        await r.stop()
