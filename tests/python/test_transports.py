"""Transports from Python: AMQP over WebSocket (ws and wss) and through an
HTTP CONNECT proxy with basic auth (a real tinyproxy), against an emulator of
this module's own with its WebSocket listeners on. Mirrors
tests/lua/transports_spec.lua and tests/c/test_websocket.c / test_tunnel.c."""
import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from servicebus import Message, TransportType
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import ServiceBusConnectionError, ServiceBusError

ROOT = Path(__file__).resolve().parents[2]
KEY = "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;"


def _emulator_binary() -> str:
    from servicebus.testing import find_emulator

    return find_emulator()


@pytest.fixture(scope="module")
def emu():
    proc = subprocess.Popen(
        [_emulator_binary(), "--config", str(ROOT / "examples" / "emulator-config.json"),
         "--host", "127.0.0.1", "--amqp-port", "0", "--amqps-port", "0",
         "--ws-port", "0", "--wss-port", "0", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("sbus-emulator ready"), line
    info = dict(kv.split("=", 1) for kv in line.split()[2:])
    yield {k: (int(v.rsplit(":", 1)[1]) if k != "ca" else v) for k, v in info.items()}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cs(port: int, emulator: bool) -> str:
    return f"Endpoint=sb://localhost:{port};{KEY}" + ("UseDevelopmentEmulator=true;" if emulator else "")


def _body(msg) -> bytes:
    b = msg.body
    return b if isinstance(b, (bytes, bytearray)) else b"".join(b)


async def _round_trip(client: ServiceBusClient, body: bytes) -> None:
    async with client:
        async with client.get_queue_sender("test-queue-2") as sender:
            await sender.send_messages(Message(body, message_id="t-" + body.decode()))
        async with client.get_queue_receiver("test-queue-2") as receiver:
            msgs = await receiver.receive_messages(max_message_count=5, max_wait_time=5)
            assert [_body(m) for m in msgs] == [body]
            assert msgs[0].message_id == "t-" + body.decode()
            await msgs[0].complete()


async def test_amqp_over_websocket_plain(emu):
    client = ServiceBusClient.from_connection_string(
        _cs(emu["ws"], True), transport_type=TransportType.AmqpOverWebsocket)
    await _round_trip(client, b"ws")


async def test_amqp_over_secure_websocket_verifies_the_ca(emu):
    client = ServiceBusClient.from_connection_string(
        _cs(emu["wss"], False), transport_type=TransportType.AmqpOverWebsocket,
        connection_verify=emu["ca"])
    await _round_trip(client, b"wss")


async def test_secure_websocket_with_an_unknown_ca_is_refused(emu, tmp_path):
    other = tmp_path / "other-ca.pem"
    # A CA that did not sign the emulator's certificate: this file's own
    # directory holds none, so make one with openssl.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=not-the-emulator", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(other)], check=True, capture_output=True)
    client = ServiceBusClient.from_connection_string(
        _cs(emu["wss"], False), transport_type=TransportType.AmqpOverWebsocket,
        connection_verify=str(other), retry_total=0)
    with pytest.raises(ServiceBusError) as info:
        await _round_trip(client, b"never")
    assert "certificate" in str(info.value).lower()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy():
    exe = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    assert os.path.exists(exe), "tinyproxy is not installed (apt-get install tinyproxy)"
    work = Path(tempfile.mkdtemp())
    port = _free_port()
    (work / "tp.conf").write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{work}/tp.log"\nLogLevel Info\n'
        f'PidFile "{work}/tp.pid"\nMaxClients 8\nAllow 127.0.0.1\nBasicAuth pyuser s3cret\n')
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    proc = subprocess.Popen([exe, "-d", "-c", str(work / "tp.conf")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "tinyproxy did not start"
            time.sleep(0.05)
    yield {"port": port, "log": work / "tp.log"}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # tinyproxy 1.11 once ignored SIGTERM under load
        proc.kill()
        proc.wait()
    shutil.rmtree(work, ignore_errors=True)


async def test_through_an_http_proxy_with_basic_auth(emu, proxy):
    client = ServiceBusClient.from_connection_string(
        _cs(emu["amqps"], False), connection_verify=emu["ca"],
        http_proxy={"proxy_hostname": "127.0.0.1", "proxy_port": proxy["port"],
                    "username": "pyuser", "password": "s3cret"})
    await _round_trip(client, b"proxied")
    assert re.search(r"CONNECT", proxy["log"].read_text()), "the proxy never saw the CONNECT"


async def test_a_wrong_proxy_password_is_a_clear_connection_error(emu, proxy):
    client = ServiceBusClient.from_connection_string(
        _cs(emu["amqps"], False), connection_verify=emu["ca"], retry_total=0,
        http_proxy={"proxy_hostname": "127.0.0.1", "proxy_port": proxy["port"],
                    "username": "pyuser", "password": "wrong"})
    with pytest.raises(ServiceBusConnectionError) as info:
        await asyncio.wait_for(_round_trip(client, b"never"), 30)
    # The error names the proxy's status line. tinyproxy (1.11) answers a wrong password with
    # "401 Unauthorized", not the standard "407 Proxy Authentication Required": either way the
    # text carries the status and the credentials hint (docs/transports.md).
    text = str(info.value)
    assert re.search(r"proxy refused CONNECT: HTTP/1\.[01] (401 Unauthorized|407 Proxy "
                     r"Authentication Required) \(check the proxy user name and password\)",
                     text), text
    assert "wrong" not in text
