"""SIGTERM ends the emulator at once, even mid-stream.

Once (CI, loaded machine) the emulator outlived SIGTERM by more than 10 s: a signal that
arrived after the loop checked its flag but before it entered poll() left poll() sleeping
until its next deadline (up to a minute, or for ever when nothing was due). The signal
handler now also writes to a pipe that poll() watches. Here: Microsoft's SDK sends and
receives continuously over TLS, other peers sit half-connected, and SIGTERM must end the
process with status 0 within 2 s; then many quick start/SIGTERM rounds.
"""
import os
import random
import signal
import socket
import subprocess
import sys
import time

from conftest import ROOT, Emulator, find_emulator, start_emulator

CONFIG = os.path.join(ROOT, "examples", "emulator-config.json")


# The SDK runs in a child process: its connections die under it, and uamqp objects left to
# the garbage collector after that can crash the interpreter that holds them (seen here).
TRAFFIC = r"""
import asyncio, sys
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
conn_str, ca, queue = sys.argv[1:4]
async def main():
    client = ServiceBusClient.from_connection_string(conn_str, connection_verify=ca)
    async def produce():
        async with client.get_queue_sender(queue) as s:
            while True:
                await s.send_messages([ServiceBusMessage("x" * 1000) for _ in range(20)])
                print("sent 20", flush=True)
    async def consume():
        async with client.get_queue_receiver(queue, prefetch_count=200) as r:
            while True:
                msgs = await r.receive_messages(max_message_count=50, max_wait_time=1)
                for m in msgs:
                    await r.complete_message(m)
                print("received %d" % len(msgs), flush=True)
    await asyncio.gather(produce(), consume())
asyncio.run(main())
"""


def test_sigterm_mid_stream_exits_0_within_2_s(tmp_path):
    for _ in range(8):
        host = "127.%d.%d.%d" % (random.randint(1, 250), random.randint(1, 250), random.randint(2, 250))
        proc, line = start_emulator(find_emulator(), CONFIG, str(tmp_path), host)
        if proc:
            break
    assert proc, line
    emu = Emulator(proc, line)
    child = None
    idle = []
    try:
        queue = emu.create_queue()
        child = subprocess.Popen([sys.executable, "-c", TRAFFIC, emu.conn_str, emu.ca, queue],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # peers that never finish: a bare TCP connection, a protocol header only, half a TLS hello
        amqp_host, amqp_port = emu.amqp.rsplit(":", 1)
        for addr, payload in (((amqp_host, int(amqp_port)), b""),
                              ((amqp_host, int(amqp_port)), b"AMQP\x03\x01\x00\x00"),
                              ((amqp_host, 5671), b"\x16\x03\x01\x00\xa5\x01\x00")):
            sk = socket.create_connection(addr)
            sk.sendall(payload)
            idle.append(sk)
        sent = received = 0
        deadline = time.monotonic() + 60
        while (sent < 200 or received < 100) and time.monotonic() < deadline:
            out = child.stdout.readline()
            assert out, "the SDK process ended"
            if out.startswith("sent"):
                sent += 20
            elif out.startswith("received"):
                received += int(out.split()[1])
        assert sent >= 200 and received >= 100  # mid-stream now
        print("mid-stream: sent %d received %d" % (sent, received))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child:
            child.kill()
            child.wait()
            child.stdout.close()
        for sk in idle:
            sk.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
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
