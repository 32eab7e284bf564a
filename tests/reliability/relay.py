"""A TCP relay on loopback that a test can cut.

The client connects to the relay; the relay connects to ``target`` (the
emulator) and copies bytes both ways. ``cut()`` aborts every relayed
connection at once (both sockets, no FIN handshake: what a dead NAT or a
pulled cable looks like to both ends), so the client sees its transport go
away in the middle of whatever it was doing. ``target`` may be changed at
any time (a restarted emulator on another port); ``refuse`` makes new
connections fail at once (a broker that is down).

Only asyncio streams; nothing here knows AMQP.
"""

import asyncio
from typing import List, Optional, Set, Tuple


class Relay:
    """One listening socket on 127.0.0.1 forwarding to ``target``."""

    def __init__(self, target: Tuple[str, int]) -> None:
        self.target = target
        self.refuse = False
        self.cuts = 0            # how many times cut() found connections to cut
        self.accepted = 0        # connections accepted so far
        self._server: Optional[asyncio.AbstractServer] = None
        self._pairs: Set[Tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: Set["asyncio.Task[None]"] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> "Relay":
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> "Relay":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def live(self) -> int:
        """Connections currently relayed."""
        return len(self._pairs)

    def cut(self) -> int:
        """Abort every relayed connection; returns how many were cut."""
        pairs, self._pairs = list(self._pairs), set()
        for a, b in pairs:
            for w in (a, b):
                w.transport.abort()
        if pairs:
            self.cuts += 1
        return len(pairs)

    async def _on_client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            cw.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        pair = (cw, uw)
        self._pairs.add(pair)
        tasks: List["asyncio.Task[None]"] = [
            asyncio.ensure_future(self._pipe(cr, uw, pair)),
            asyncio.ensure_future(self._pipe(ur, cw, pair)),
        ]
        for t in tasks:
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, pair: Tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            # one side ended: end both (a relayed connection lives or dies whole)
            self._pairs.discard(pair)
            for x in pair:
                x.transport.abort()


def main() -> None:
    """``python3 relay.py --target HOST:PORT [--cut-every S]``: a relay as a
    process, for the Lua specs (plain Lua blocks, so the relay must run
    elsewhere). Prints ``relay pid=N port=N`` once listening; cuts every
    connection every S seconds when asked, and at once on SIGUSR1; on SIGUSR2
    takes a new target from --target-file (a restarted broker); exits on
    SIGTERM or when its stdin reaches end of file."""
    import argparse
    import os
    import signal
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--cut-every", type=float, default=0.0)
    ap.add_argument("--target-file", help="on SIGUSR2, read a new HOST:PORT target from this file")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            loop.add_reader(sys.stdin.fileno(), lambda: (os.read(sys.stdin.fileno(), 4096) or stop.set()))
        except (OSError, ValueError):
            pass
        relay = await Relay((host, int(port))).start()
        loop.add_signal_handler(signal.SIGUSR1, relay.cut)  # cut now

        def retarget() -> None:
            with open(args.target_file) as f:
                h, p = f.read().strip().rsplit(":", 1)
            relay.target = (h, int(p))

        if args.target_file:
            loop.add_signal_handler(signal.SIGUSR2, retarget)
        print("relay pid=%d port=%d" % (os.getpid(), relay.port), flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), args.cut_every or 3600)
            except asyncio.TimeoutError:
                relay.cut()
        await relay.stop()

    asyncio.run(run())


if __name__ == "__main__":
    main()
