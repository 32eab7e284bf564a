"""Fixtures for the Python tests: an emulator on free ports, clean queues.

The emulator binary is $SBUS_EMULATOR, else build/emulator/sbus-emulator
under the repository root. SBUS_TEST_LOOP=uvloop runs every test on uvloop.
"""

import asyncio
import json
import os
import re
import selectors
import subprocess
import time
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
    process: "subprocess.Popen[str]"

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
    path = os.environ.get("SBUS_EMULATOR") or os.path.join(ROOT, "build", "emulator", "sbus-emulator")
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            "sbus-emulator not found at %s: build it (cmake -S . -B build && cmake --build build) "
            "or set SBUS_EMULATOR" % path
        )
    return path


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """Starts sbus-emulator on free ports for the whole session."""
    proc = subprocess.Popen(
        [
            _emulator_binary(),
            "--config",
            CONFIG,
            "--host",
            "127.0.0.1",
            "--amqp-port",
            "0",
            "--control-port",
            "0",
            "--amqps-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line or line.startswith("sbus-emulator ready"):
            break
    sel.close()
    m = re.search(r"amqp=([^\s:]+):(\d+)", line)
    if not m:
        proc.kill()
        proc.wait()
        raise RuntimeError("sbus-emulator did not print its ready line (got %r)" % line)
    c = re.search(r"control=(\S+)", line)
    s = re.search(r"amqps=[^\s:]+:(\d+)", line)
    ca = re.search(r"ca=(\S+)", line)
    emu = Emulator(
        m.group(1),
        int(m.group(2)),
        c.group(1) if c else None,
        int(s.group(1)) if s else None,
        ca.group(1) if ca else None,
        proc,
    )
    try:
        yield emu
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


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
