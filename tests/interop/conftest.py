"""Interop tests: Microsoft's azure-servicebus 7.8.2 (uamqp) against sbus-emulator.

One emulator per test session, started with TLS on port 5671 (the only port the
Python SDK 7.8.2 can reach for `Endpoint=sb://localhost`), a plain AMQP port and
a control port chosen by the emulator. Tests create their own entities through
the control surface (POST /entities) so that they never share state.

Binary: $SBUS_EMULATOR, else build/emulator/sbus-emulator, else build-emu/...
Run: /usr/bin/python3 -m pytest tests/interop
"""
import json
import os
import random
import subprocess
import time
import urllib.request
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Microsoft's emulator connection string, unchanged. When 127.0.0.1:5671 is taken by
# another process, the fixture moves to another loopback address (127.0.0.N, which
# the generated certificate also names) and the Endpoint host follows it.
CONN_STR = ("Endpoint=sb://{host};SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")


def find_emulator():
    env = os.environ.get("SBUS_EMULATOR")
    if env:
        return env
    for d in ("build", "build-emu", "build-asan"):
        p = os.path.join(ROOT, d, "emulator", "sbus-emulator")
        if os.path.exists(p):
            return p
    pytest.skip("sbus-emulator binary not found (set SBUS_EMULATOR or build it)")


class Emulator:
    """A running emulator: ports, CA file and control-surface helpers."""

    def __init__(self, proc, line):
        self.proc = proc
        fields = dict(kv.split("=", 1) for kv in line.split()[2:])
        self.amqp = fields.get("amqp")
        self.amqps = fields.get("amqps")
        self.ws = fields.get("ws")
        self.wss = fields.get("wss")
        self.control = "http://" + fields["control"]
        self.ca = fields.get("ca")
        host = self.amqps.rsplit(":", 1)[0]
        self.host = "localhost" if host == "127.0.0.1" else host
        self.conn_str = CONN_STR.format(host=self.host)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.control + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def entities(self):
        return self.call("GET", "/entities")[1]

    def wait_count(self, entity, key, value, timeout=5.0):
        """Poll /entities until entity[key] == value (settlements are asynchronous in uamqp)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.entities()[entity][key]
            if got == value or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def now(self):
        """The emulator clock as clients see it on the wire: the skew of POST /clock is taken
        off every time sent or received (docs/emulator.md "Time"), so this is real time."""
        import datetime
        c = self.call("GET", "/clock")[1]
        return datetime.datetime.fromtimestamp((c["now_ms"] - c["skew_ms"]) / 1000, datetime.timezone.utc)

    def advance(self, seconds):
        status, body = self.call("POST", "/clock", {"advance_ms": int(seconds * 1000)})
        assert status == 200, body
        return body

    def faults(self, **kw):
        status, body = self.call("POST", "/faults", kw)
        assert status == 200, body
        return body

    def create_queue(self, name=None, **props):
        name = name or "q-" + uuid.uuid4().hex[:10]
        status, body = self.call("POST", "/entities", {"Queue": {"Name": name, "Properties": props}})
        assert status == 201, body
        return name

    def create_topic(self, name=None, subscriptions=(), **props):
        name = name or "t-" + uuid.uuid4().hex[:10]
        status, body = self.call("POST", "/entities", {"Topic": {"Name": name, "Properties": props,
                                                                 "Subscriptions": list(subscriptions)}})
        assert status == 201, body
        return name


def start_emulator(binary, config, state, host):
    proc = subprocess.Popen([binary, "--config", config, "--host", host, "--amqps-port", "5671",
                             "--amqp-port", "0", "--ws-port", "0", "--wss-port", "0",
                             "--control-port", "0", "--state-dir", state,
                             "--exit-on-stdin-eof"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line.startswith("sbus-emulator ready"):
        return proc, line
    err = proc.stderr.read()
    proc.wait()
    if "Address already in use" in err:
        return None, err
    raise RuntimeError("emulator did not start: %r %s" % (line, err))


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    binary = find_emulator()
    state = str(tmp_path_factory.mktemp("emu-state"))
    config = os.path.join(ROOT, "examples", "emulator-config.json")
    hosts = ["127.0.0.1"] + ["127.0.%d.%d" % (random.randint(1, 250), random.randint(2, 250)) for _ in range(5)]
    for host in hosts:
        proc, line = start_emulator(binary, config, state, host)
        if proc:
            break
    else:
        raise RuntimeError("no loopback address with a free port 5671: " + line)
    emu = Emulator(proc, line)
    yield emu
    proc.stdin.close()
    proc.terminate()
    assert proc.wait(timeout=10) == 0


@pytest.fixture
def client(emulator):
    from azure.servicebus.aio import ServiceBusClient
    return ServiceBusClient.from_connection_string(emulator.conn_str, connection_verify=emulator.ca)


@pytest.fixture
def queue(emulator):
    return emulator.create_queue(LockDuration="PT30S", MaxDeliveryCount=5)
