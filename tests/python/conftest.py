"""Fixtures for the Python tests: an emulator on free ports, clean queues.

The emulator binary is $SBUS_EMULATOR, else build/emulator/sbus-emulator
under the repository root. SBUS_TEST_LOOP=uvloop runs every test on uvloop.
"""

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "examples", "emulator-config.json")
SAS_KEY = "SAS_KEY_VALUE"


@dataclass
class Emulator:
    """A running emulator."""

    host: str
    port: int
    control_addr: Optional[str]
    amqps_port: Optional[int]
    ca_file: Optional[str]
    process: Any  # the emulator process (servicebus.testing owns it)

    @property
    def connection_string(self) -> str:
        return (
            "Endpoint=sb://localhost:%d;SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=%s;UseDevelopmentEmulator=true;" % (self.port, SAS_KEY)
        )

    def connection_string_with_key(self, key: str) -> str:
        return self.connection_string.replace(SAS_KEY, key)

    async def control(self, method: str, path: str, body: Optional[dict] = None) -> Tuple[int, Any]:
        """One request to the emulator's HTTP control surface (asyncio streams)."""
        assert self.control_addr, "the emulator has no control port"
        host, port = self.control_addr.rsplit(":", 1)
        data = json.dumps(body).encode() if body is not None else b""
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (method.encode(), path.encode(), len(data), data)
        )
        raw = await reader.read()
        writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        try:
            return status, json.loads(payload) if payload.strip() else None
        except ValueError:
            return status, payload.decode("utf-8", "replace")


def _emulator_binary() -> str:
    """The emulator binary, found the way the public toolkit finds it."""
    from servicebus.testing import find_emulator

    return find_emulator()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """Starts sbus-emulator on free ports for the whole session.

    Dogfooding: the process is run by the public test toolkit,
    servicebus.testing.Emulator (which finds $SBUS_EMULATOR or the build's
    binary, reads the ready line, and kills the emulator with this process);
    this fixture only adapts it to the small interface the tests use.
    """
    from servicebus.testing import Emulator as ToolkitEmulator

    tool = ToolkitEmulator(config=CONFIG, host="127.0.0.1", amqp_port=0, amqps_port=0, control_port=0)
    tool.start()
    try:
        assert tool.amqp_port and tool.control_address, tool.ready_line
        yield Emulator(
            tool.host, tool.amqp_port, tool.control_address, tool.amqps_port, tool.ca_file, tool._proc
        )
    finally:
        tool.stop()


@pytest.fixture(scope="session")
def connection_string(emulator: Emulator) -> str:
    """The emulator's connection string (Microsoft's emulator form, our port)."""
    return emulator.connection_string


async def drain_queue(conn_str: str, queue: str, wait: float = 0.2) -> int:
    """Removes every message from `queue` (receive-and-delete)."""
    from servicebus import ReceiveMode
    from servicebus.aio import ServiceBusClient

    n = 0
    async with ServiceBusClient.from_connection_string(conn_str) as client:
        async with client.get_queue_receiver(queue, receive_mode=ReceiveMode.ReceiveAndDelete) as r:
            while True:
                got = await r.receive_messages(max_message_count=100, max_wait_time=wait)
                if not got:
                    return n
                n += len(got)


@pytest.fixture
async def queue(connection_string: str) -> str:
    """A queue emptied before the test."""
    await drain_queue(connection_string, "test-queue")
    return "test-queue"


@pytest.fixture
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The default loop, or uvloop when SBUS_TEST_LOOP=uvloop."""
    if os.environ.get("SBUS_TEST_LOOP") == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    yield loop
    loop.close()
