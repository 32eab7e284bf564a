"""Soak: memory stays flat over long uptimes (issue 9; not part of make test).

    .venv/bin/python tests/reliability/soak.py [--cycles 10000] [--messages 1000000]

Phase 1 opens and closes --cycles senders, receivers and session receivers
(each one attached, then detached) on one client. Phase 2 passes --messages
messages through one PeekLock receiver (completed in batches) while one
sender sends them in batches of 100. The resident set size of this process
(and of the emulator) is sampled along the way; after a warm-up (the first
10 %), RSS must not grow by more than --max-growth-mb. Prints one FIGURES line
per phase for docs/reliability.md; exit status 1 if memory grew.
"""

import argparse
import asyncio
import os
import sys
import time
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import CONFIG, emulator_binary  # noqa: E402

from servicebus import Message  # noqa: E402
from servicebus.aio import ServiceBusClient  # noqa: E402
from servicebus.testing import Emulator  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int = 0) -> float:
    with open("/proc/%s/statm" % (pid or "self")) as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def verdict(name: str, samples: List[Tuple[int, float, float]], max_growth: float, elapsed: float, unit: str) -> bool:
    warm = samples[max(1, len(samples) // 10)]
    last = samples[-1]
    growth = last[1] - warm[1]
    emu_growth = last[2] - warm[2]
    ok = growth <= max_growth
    print("FIGURES soak-%s: %d %s in %.0fs; client RSS %.1f MB after warm-up (%d), %.1f MB at the end: %+.1f MB; "
          "emulator RSS %.1f -> %.1f MB (%+.1f MB); client %s, emulator %s"
          % (name, last[0], unit, elapsed, warm[1], warm[0], last[1], growth, warm[2], last[2], emu_growth,
             "FLAT" if ok else "GROWS", "flat" if emu_growth <= max_growth else "grows"), flush=True)
    return ok


async def open_close(emu: Emulator, cycles: int, max_growth: float) -> bool:
    q = await emu.aio.create_queue()
    sq = await emu.aio.create_queue(requires_session=True)
    samples = []
    t0 = time.monotonic()
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(q) as s:
            await s.send_messages(Message(b"keep the connection busy"))
        for i in range(cycles):
            async with client.get_queue_sender(q) as s:
                if i % 100 == 0:
                    await s.send_messages(Message(b"x"))
            async with client.get_queue_receiver(q) as r:
                if i % 100 == 0:
                    for m in await r.receive_messages(max_message_count=10, max_wait_time=0.2):
                        await m.complete()
            async with client.get_queue_session_receiver(sq, session_id="s%d" % (i % 50)) as sr:
                if i % 100 == 0:
                    await sr.session.get_state()
            if i % max(1, cycles // 20) == 0 or i == cycles - 1:
                samples.append((i + 1, rss_mb(), rss_mb(emu.pid)))
    return verdict("open-close", samples, max_growth, time.monotonic() - t0, "open/close cycles (x3 links)")


async def throughput(emu: Emulator, n: int, max_growth: float) -> bool:
    q = await emu.aio.create_queue()
    samples = []
    t0 = time.monotonic()
    async with ServiceBusClient.from_connection_string(emu.connection_string) as sclient, \
            ServiceBusClient.from_connection_string(emu.connection_string) as rclient:
        async with sclient.get_queue_sender(q) as sender, rclient.get_queue_receiver(q, prefetch_count=500) as rx:
            window = asyncio.Semaphore(20000)  # keep the queue short: memory is the point, not depth

            async def send() -> None:
                for start in range(0, n, 100):
                    for _ in range(100):
                        await window.acquire()
                    await sender.send_messages([Message(b"m%d" % i) for i in range(start, min(n, start + 100))])

            got = 0
            task = asyncio.ensure_future(send())
            next_sample = 0
            while got < n:
                msgs = await rx.receive_messages(max_message_count=500, max_wait_time=5)
                if not msgs and task.done():
                    task.result()
                    break
                await asyncio.gather(*(m.complete() for m in msgs))
                got += len(msgs)
                for _ in msgs:
                    window.release()
                if got >= next_sample:
                    samples.append((got, rss_mb(), rss_mb(emu.pid)))
                    next_sample += max(1, n // 20)
            await task
            samples.append((got, rss_mb(), rss_mb(emu.pid)))
    elapsed = time.monotonic() - t0
    print("FIGURES soak-throughput-rate: %.0f msg/s (PeekLock + complete, one receiver)" % (got / elapsed))
    return verdict("messages", samples, max_growth, elapsed, "messages") and got == n


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--max-growth-mb", type=float, default=8.0)
    args = ap.parse_args()
    async with Emulator(CONFIG, binary=emulator_binary(), amqps_port=None) as emu:
        ok = await open_close(emu, args.cycles, args.max_growth_mb)
        ok = await throughput(emu, args.messages, args.max_growth_mb) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
