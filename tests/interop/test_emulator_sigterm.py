"""SIGTERM ends the emulator at once, even mid-stream.

Once (CI, loaded machine) the emulator outlived SIGTERM by more than 10 s: a signal that
arrived after the loop checked its flag but before it entered poll() left poll() sleeping
until its next deadline (up to a minute, or for ever when nothing was due). The signal
handler now also writes to a pipe that poll() watches. Here: Microsoft's SDK sends and
receives continuously over TLS, other peers sit half-connected, and SIGTERM must end the
process with status 0 within 2 s; then many quick start/SIGTERM rounds.
"""
import asyncio
import os
import random
import signal
import socket
import subprocess
import time

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from conftest import ROOT, Emulator, find_emulator, start_emulator

CONFIG = os.path.join(ROOT, "examples", "emulator-config.json")


async def test_sigterm_mid_stream_exits_0_within_2_s(tmp_path):
    for _ in range(8):
        host = "127.%d.%d.%d" % (random.randint(1, 250), random.randint(1, 250), random.randint(2, 250))
        proc, line = start_emulator(find_emulator(), CONFIG, str(tmp_path), host)
        if proc:
            break
    assert proc, line
    emu = Emulator(proc, line)
    queue = emu.create_queue()
    client = ServiceBusClient.from_connection_string(emu.conn_str, connection_verify=emu.ca)
    sent = [0]
    received = [0]

    async def produce():
        async with client.get_queue_sender(queue) as s:
            while True:
                await s.send_messages([ServiceBusMessage("x" * 1000) for _ in range(20)])
                sent[0] += 20

    async def consume():
        async with client.get_queue_receiver(queue, prefetch_count=200) as r:
            while True:
                for m in await r.receive_messages(max_message_count=50, max_wait_time=1):
                    await r.complete_message(m)
                    received[0] += 1

    tasks = [asyncio.ensure_future(produce()), asyncio.ensure_future(consume())]
    # peers that never finish: a bare TCP connection, a protocol header only, half a TLS hello
    amqp_host, amqp_port = emu.amqp.rsplit(":", 1)
    idle = []
    for payload in (b"", b"AMQP\x03\x01\x00\x00", b"\x16\x03\x01\x00\xa5\x01\x00"):
        sk = socket.create_connection((amqp_host if payload != b"\x16\x03\x01\x00\xa5\x01\x00" else emu.host,
                                       int(amqp_port) if payload != b"\x16\x03\x01\x00\xa5\x01\x00" else 5671))
        sk.sendall(payload)
        idle.append(sk)
    try:
        deadline = time.monotonic() + 30
        while (sent[0] < 200 or received[0] < 100) and time.monotonic() < deadline:
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.05)
        assert sent[0] >= 200 and received[0] >= 100
    except BaseException:
        proc.kill()
        raise
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = await asyncio.get_event_loop().run_in_executor(None, lambda: proc.wait(timeout=10))
    elapsed = time.monotonic() - t0
    proc.stdin.close()  # only now: --exit-on-stdin-eof must not be what ended it
    for f in (proc.stdout, proc.stderr):
        f.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await asyncio.wait_for(client.close(), 5)
    except (Exception, asyncio.CancelledError):  # the peer is gone; uamqp may complain on close
        pass
    for sk in idle:
        sk.close()
    assert rc == 0
    assert elapsed < 2, elapsed


def test_sigterm_right_after_start_exits_0_within_2_s():
    """Signals at arbitrary moments of the loop (ready line, first accept, idle poll)."""
    for i in range(30):
        proc = subprocess.Popen([find_emulator(), "--config", CONFIG, "--amqp-port", "0", "--control-port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("sbus-emulator ready"), line
            if i % 3 == 1:
                port = int(line.split("amqp=")[1].split()[0].rsplit(":", 1)[1])
                socket.create_connection(("127.0.0.1", port)).close()
            time.sleep(random.random() * 0.02)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - t0 < 2
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
