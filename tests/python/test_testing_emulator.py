"""servicebus.testing.Emulator: start/stop (sync and async), the control
surface, and every way starting can fail, each with its reason."""

import asyncio
import os
import socket
import stat

import pytest

from servicebus import Message, ReceiveMode
from servicebus.aio import ServiceBusClient
from servicebus.testing import (
    ControlError,
    Emulator,
    EmulatorConfigError,
    EmulatorNotFoundError,
    EmulatorStartError,
    find_emulator,
)

BAD_DURATION = {
    "UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "q", "Properties": {"LockDuration": "1 minute"}}]}]}
}


# -- start and stop ---------------------------------------------------------------


def test_sync_context_manager_starts_on_free_ports_and_stops():
    with Emulator() as emu:
        assert emu.running
        assert emu.amqp_port and emu.amqps_port and emu.control_address
        assert os.path.isfile(emu.ca_file)
        assert emu.namespace == "localhost:%d" % emu.amqp_port
        assert "Endpoint=sb://localhost:%d;" % emu.amqp_port in emu.connection_string
        assert emu.control.health() == {"status": "healthy"}
        assert {"queue.1", "topic.1", "topic.1/Subscriptions/subscription.1"} <= set(emu.entities())
        proc_dir = "/proc/%d" % emu.pid
        state_dir = os.path.dirname(emu.ca_file)
    assert not emu.running
    assert not os.path.exists(proc_dir)
    assert not os.path.exists(state_dir), "temporary files are removed at stop"
    assert emu.stop() is None  # stopping twice is harmless


async def test_async_context_manager_and_a_client():
    async with Emulator(amqps_port=None) as emu:
        assert emu.amqps_port is None and emu.ca_file is None
        queue = await emu.aio.create_queue()
        async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
            async with client.get_queue_sender(queue) as sender:
                await sender.send_messages([Message("a"), Message("b")])
            assert (await emu.aio.counts(queue))["active"] == 2
            async with client.get_queue_receiver(queue, receive_mode=ReceiveMode.ReceiveAndDelete) as receiver:
                got = await receiver.receive_messages(max_message_count=2, max_wait_time=5)
        assert sorted(str(m) for m in got) == ["a", "b"]
        pid = emu.pid
    assert not emu.running
    assert not os.path.exists("/proc/%d" % pid)


def test_config_policies_make_the_connection_string(tmp_path):
    """A Config.json file as Microsoft writes it (comments), with its own
    policies: the connection string uses the namespace's Manage policy."""
    path = tmp_path / "Config.json"
    path.write_text(
        """{
          // Microsoft's format, comments allowed
          "UserConfig": {"Namespaces": [{"Name": "ns",
            "SharedAccessPolicies": [
              {"Name": "sender", "Key": "c2VuZGVy", "Rights": ["Send"]},
              {"Name": "admin", "Key": "YWRtaW4=", "Rights": ["Manage"]}],
            "Queues": [{"Name": "orders"}]}]}
        }"""
    )

    async def roundtrip(emu):
        async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
            async with client.get_queue_sender("orders") as sender:
                await sender.send_messages(Message("x"))

    with Emulator(str(path)) as emu:
        assert emu.sas_key_name == "admin" and "SharedAccessKey=YWRtaW4=;" in emu.connection_string
        asyncio.run(roundtrip(emu))
        assert emu.counts("orders")["active"] == 1


def _gone_within(pid, seconds):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True  # exited, waiting to be reaped by init
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_the_emulator_dies_with_a_killed_parent():
    """Started with --exit-on-stdin-eof on a pipe only its parent holds: a
    test run killed with SIGKILL leaves no emulator behind."""
    import signal
    import subprocess
    import sys

    parent = subprocess.Popen(
        [sys.executable, "-c", "from servicebus.testing import Emulator; import time; e = Emulator().start(); "
                               "print(e.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert os.path.exists("/proc/%d" % pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _gone_within(pid, 10), "the emulator outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


# -- the control surface ----------------------------------------------------------


def test_runtime_entities(servicebus_emulator):
    emu = servicebus_emulator
    q = emu.create_queue(lock_duration=5, max_delivery_count=2, requires_session=False)
    assert emu.counts(q)["kind"] == "queue"
    assert emu.counts(q.upper())["kind"] == "queue", "names are case-insensitive"
    t = emu.create_topic(subscriptions=["all"])
    s = emu.create_subscription(t, "red", sql_filter="color = 'red'")
    assert emu.counts("%s/Subscriptions/%s" % (t, s))["kind"] == "subscription"
    with pytest.raises(ControlError) as err:
        emu.create_queue(q)
    assert err.value.status == 409
    with pytest.raises(ControlError) as err:
        emu.create_subscription("no-such-topic", "x")
    assert err.value.status == 404
    with pytest.raises(ControlError) as err:
        emu.create_queue(LockDuration="soon")
    assert err.value.status == 400 and "LockDuration" in err.value.reason
    with pytest.raises(TypeError, match="lock_duraton"):
        emu.create_queue(lock_duraton=5)
    assert emu.delete("%s/Subscriptions/red" % t) is True
    assert emu.delete(t) is True
    assert emu.delete(q) is True
    assert emu.delete(q, missing_ok=True) is False
    with pytest.raises(ControlError) as err:
        emu.delete(q)
    assert err.value.status == 404
    with pytest.raises(ControlError):
        emu.counts(q)


async def test_advance_expires_a_lock(servicebus_emulator, servicebus_client):
    emu = servicebus_emulator
    queue = await emu.aio.create_queue(lock_duration=30)
    try:
        async with servicebus_client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message("locked"))
        async with servicebus_client.get_queue_receiver(queue) as receiver:
            (m,) = await receiver.receive_messages(max_wait_time=5)
            assert (await emu.aio.counts(queue))["locked"] == 1
            before = (await emu.aio.clock())["now_ms"]
            after = await emu.aio.advance(31)
            assert after["now_ms"] >= before + 31000
            assert (await emu.aio.counts(queue))["locked"] == 0
            (again,) = await receiver.receive_messages(max_wait_time=5)
            assert again.delivery_count == 1
            await again.complete()
    finally:
        await emu.aio.delete(queue)


async def test_faults(servicebus_emulator, servicebus_client, servicebus_queue):
    from servicebus.exceptions import ServiceBusError

    emu = servicebus_emulator
    await emu.aio.fail_next(1, "send", "amqp:not-allowed")  # not retriable: the engine gives up at once
    try:
        async with servicebus_client.get_queue_sender(servicebus_queue) as sender:
            with pytest.raises(ServiceBusError):
                await sender.send_messages(Message("refused"))
    finally:
        await emu.aio.reset_faults()
    assert (await emu.aio.counts(servicebus_queue))["active"] == 0


# -- failures, each with its reason -----------------------------------------------


def test_missing_binary_option():
    with pytest.raises(EmulatorNotFoundError, match="/no/such/sbus-emulator"):
        Emulator(binary="/no/such/sbus-emulator").start()


def test_missing_binary_env(monkeypatch):
    monkeypatch.setenv("SBUS_EMULATOR", "/no/such/binary")
    with pytest.raises(EmulatorNotFoundError, match=r"\$SBUS_EMULATOR=.*/no/such/binary"):
        find_emulator()


def test_no_binary_anywhere_says_how_to_get_one(monkeypatch, tmp_path):
    import servicebus.testing._emulator as mod

    monkeypatch.delenv("SBUS_EMULATOR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mod, "_executable", lambda path: False)
    with pytest.raises(EmulatorNotFoundError) as err:
        find_emulator()
    text = str(err.value)
    assert "_bin/sbus-emulator" in text and "PATH" in text and "SBUS_EMULATOR" in text and "cmake" in text


def test_binary_that_is_not_executable(tmp_path):
    fake = tmp_path / "sbus-emulator"
    fake.write_text("not a program")
    fake.chmod(stat.S_IRUSR)
    with pytest.raises(EmulatorNotFoundError, match="not an executable"):
        Emulator(binary=fake).start()


def test_find_order_prefers_option_then_env(monkeypatch, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    for f in (a, b):
        f.write_text("#!/bin/sh\n")
        f.chmod(0o755)
    monkeypatch.setenv("SBUS_EMULATOR", str(b))
    assert find_emulator(a) == str(a)
    assert find_emulator() == str(b)


def test_invalid_config_raises_the_emulators_reason():
    with pytest.raises(EmulatorConfigError) as err:
        Emulator(BAD_DURATION).start()
    assert "LockDuration" in str(err.value) and "1 minute" in str(err.value)


async def test_invalid_config_async():
    with pytest.raises(EmulatorConfigError, match="LockDuration"):
        async with Emulator(BAD_DURATION):
            pass


def test_missing_config_file(tmp_path):
    with pytest.raises(EmulatorConfigError, match="no such file"):
        Emulator(str(tmp_path / "nope.json")).start()


def test_config_that_is_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{ this is not json")
    with pytest.raises(EmulatorConfigError) as err:
        Emulator(path).start()
    assert "broken.json" in str(err.value)


def test_port_in_use_is_a_start_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmulatorStartError) as err:
            Emulator(amqp_port=port).start()
    assert err.value.returncode not in (None, 0)
    assert str(port) in str(err.value) or "use" in str(err.value).lower()


def test_binary_that_prints_no_ready_line(tmp_path):
    fake = tmp_path / "sbus-emulator"
    fake.write_text("#!/bin/sh\necho 'starting' >&2\nsleep 30\n")
    fake.chmod(0o755)
    with pytest.raises(EmulatorStartError, match="no ready line within 1 s.*starting"):
        Emulator(binary=fake, start_timeout=1).start()


def test_binary_that_crashes(tmp_path):
    fake = tmp_path / "sbus-emulator"
    fake.write_text("#!/bin/sh\necho 'boom' >&2\nexit 7\n")
    fake.chmod(0o755)
    with pytest.raises(EmulatorStartError) as err:
        Emulator(binary=fake).start()
    assert err.value.returncode == 7 and "boom" in str(err.value)


def test_not_running_yet():
    emu = Emulator()
    with pytest.raises(RuntimeError, match="not running"):
        emu.connection_string
    with pytest.raises(ValueError):
        Emulator(tls_cert="x.pem")


def test_recipe_microsofts_sdk_over_tls():
    """docs/testing.md: Microsoft's azure-servicebus (TLS, always port 5671)
    against an Emulator on another loopback address."""
    azure = pytest.importorskip("azure.servicebus")
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.9", 5671))
        except OSError:
            pytest.skip("127.0.0.9:5671 is taken")
    with Emulator(host="127.0.0.9", amqps_port=5671) as emu:
        conn = "Endpoint=sb://127.0.0.9;SharedAccessKeyName=%s;SharedAccessKey=%s;" % (emu.sas_key_name, emu.sas_key)
        with azure.ServiceBusClient.from_connection_string(conn, connection_verify=emu.ca_file) as client:
            with client.get_queue_sender("queue.1") as sender:
                sender.send_messages(azure.ServiceBusMessage("from Microsoft's SDK"))
        assert emu.counts("queue.1")["active"] == 1
