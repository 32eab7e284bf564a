"""Emulator: one ``sbus-emulator`` process on free ports, for tests and scripts.

The emulator is a separate C binary (emulator/ in the source tree). This
module finds it (:func:`find_emulator`), writes its configuration, starts it
on free ports with ``--exit-on-stdin-eof`` so that it dies with the Python
process that started it, reads its one ready line, and stops it. The same
object is a sync (``with``) and an async (``async with``) context manager:
the async path never blocks the event loop (the ready line is read with
``loop.add_reader`` and the exit awaited on a pidfd).

Everything after start-up goes through the emulator's HTTP control surface
(:mod:`servicebus.testing._control`).
"""

import asyncio
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._control import AsyncControl, Control
from ._errors import EmulatorConfigError, EmulatorNotFoundError, EmulatorStartError

__all__ = ["Emulator", "find_emulator", "DEFAULT_CONFIG", "load_config"]

BINARY_NAME = "sbus-emulator"
DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_KEY = "SAS_KEY_VALUE"

#: Used when no config is given: Microsoft's emulator sample entities, so
#: that ``queue.1`` and ``topic.1/Subscriptions/subscription.1`` exist; tests
#: create their own entities at run time.
DEFAULT_CONFIG: Dict[str, Any] = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [{"Name": "queue.1", "Properties": {}}],
                "Topics": [{"Name": "topic.1", "Properties": {}, "Subscriptions": [{"Name": "subscription.1"}]}],
            }
        ],
        "Logging": {"Type": "Console"},
    }
}

PathLike = Union[str, "os.PathLike[str]"]


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _source_tree_candidates() -> List[str]:
    """build/emulator/sbus-emulator under every ancestor of this package
    (a source checkout or an editable install) and of the working directory."""
    seen: List[str] = []
    for start in (os.path.dirname(os.path.abspath(__file__)), os.getcwd()):
        d = start
        while True:
            cand = os.path.join(d, "build", "emulator", BINARY_NAME)
            if cand not in seen:
                seen.append(cand)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return seen


def find_emulator(binary: Optional[PathLike] = None) -> str:
    """The path of the ``sbus-emulator`` binary.

    Looked for, in order: ``binary``; ``$SBUS_EMULATOR``; the copy installed
    with this package (``servicebus/_bin/sbus-emulator``);
    ``build/emulator/sbus-emulator`` in the source tree (above this package or
    the working directory); ``PATH``.

    :raises EmulatorNotFoundError: with every place tried and how to get one.
    """
    if binary is not None:
        path = os.fspath(binary)
        if not _executable(path):
            raise EmulatorNotFoundError("sbus-emulator: %r (given as binary=) is not an executable file" % path)
        return path
    env = os.environ.get("SBUS_EMULATOR")
    if env:
        if not _executable(env):
            raise EmulatorNotFoundError("sbus-emulator: $SBUS_EMULATOR=%r is not an executable file" % env)
        return env
    tried = []
    packaged = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bin", BINARY_NAME)
    tried.append(packaged)
    if _executable(packaged):
        return packaged
    for cand in _source_tree_candidates():
        if _executable(cand):
            return cand
    tried.append("build/emulator/%s above %s and above the working directory" % (BINARY_NAME, os.path.dirname(__file__)))
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return on_path
    tried.append("PATH")
    raise EmulatorNotFoundError(
        "sbus-emulator not found (looked in: %s). Install servicebus with its emulator, build it "
        "(cmake -S . -B build && cmake --build build --target sbus-emulator), or point to it with "
        "SBUS_EMULATOR=/path/to/sbus-emulator or binary=..." % "; ".join(tried)
    )


def _strip_json_comments(text: str) -> str:
    """Removes ``//`` and ``/* */`` comments outside strings (Microsoft's
    Config.json has them)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def load_config(path: PathLike) -> Dict[str, Any]:
    """Reads a Config.json (comments allowed) into a dict.

    :raises EmulatorConfigError: if the file is missing or is not JSON.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise EmulatorConfigError("emulator config %s: %s" % (path, exc.strerror or exc)) from exc
    try:
        return json.loads(_strip_json_comments(text))
    except ValueError as exc:
        raise EmulatorConfigError("emulator config %s: not JSON: %s" % (path, exc)) from exc


def _root_policy(config: Dict[str, Any]) -> Tuple[str, str]:
    """The namespace policy a test client should use: the first with Manage
    rights (else the first), or the emulator's default one."""
    try:
        ns = config["UserConfig"]["Namespaces"][0]
        policies = ns.get("SharedAccessPolicies") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        return DEFAULT_KEY_NAME, DEFAULT_KEY
    if not policies:
        return DEFAULT_KEY_NAME, DEFAULT_KEY
    best = next((p for p in policies if "Manage" in (p.get("Rights") or [])), policies[0])
    return str(best.get("Name", DEFAULT_KEY_NAME)), str(best.get("Key", DEFAULT_KEY))


def _cleanup(proc: "subprocess.Popen[bytes]", tmpdir: Optional[str]) -> None:
    """Last resort (garbage collection, interpreter exit): kill and tidy up."""
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)


class Emulator:
    """A running ``sbus-emulator``, on free ports unless told otherwise.

    ::

        with Emulator() as emu:                      # or: async with Emulator() as emu
            queue = emu.create_queue(lock_duration=5)
            client = ServiceBusClient.from_connection_string(emu.connection_string)
            ...
            emu.advance(10)                           # the lock has expired

    :param config: Microsoft's emulator ``Config.json``: a path, or the same
        as a dict. Default: :data:`DEFAULT_CONFIG` (``queue.1``, ``topic.1``
        with ``subscription.1``).
    :keyword binary: The ``sbus-emulator`` to run (see :func:`find_emulator`).
    :keyword str host: The address every listener binds to. Default 127.0.0.1.
    :keyword int amqp_port: Plain AMQP port; 0 (default) picks a free one.
    :keyword int amqps_port: AMQP over TLS port; 0 (default) picks a free one, None switches TLS off.
    :keyword int control_port: HTTP control port; 0 (default) picks a free one.
    :keyword str tls_cert, tls_key: The TLS certificate and key (default: generated, see :attr:`ca_file`).
    :keyword str state_dir: Where generated certificates go (default: a temporary directory, removed at stop).
    :keyword int max_message_size: The advertised max-message-size.
    :keyword int cbs_timeout_ms: Close connections that put no valid token in time.
    :keyword int verbose: Emulator log level (its logs go to :attr:`log_file`).
    :keyword float start_timeout: Seconds to wait for the ready line. Default 20.
    :keyword extra_args: More command-line arguments.
    :raises EmulatorNotFoundError: no binary.
    :raises EmulatorConfigError: the emulator refused the config (its message, with the JSON path).
    :raises EmulatorStartError: it did not start (port in use, crash, timeout).
    """

    def __init__(
        self,
        config: Union[None, PathLike, Dict[str, Any]] = None,
        *,
        binary: Optional[PathLike] = None,
        host: str = "127.0.0.1",
        amqp_port: int = 0,
        amqps_port: Optional[int] = 0,
        control_port: int = 0,
        tls_cert: Optional[PathLike] = None,
        tls_key: Optional[PathLike] = None,
        state_dir: Optional[PathLike] = None,
        max_message_size: Optional[int] = None,
        cbs_timeout_ms: Optional[int] = None,
        verbose: int = 0,
        start_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self._config_arg = config
        self._binary_arg = binary
        self.host = host
        self._ports = (amqp_port, amqps_port, control_port)
        self._tls = (tls_cert, tls_key)
        self._state_dir_arg = state_dir
        self._max_message_size = max_message_size
        self._cbs_timeout_ms = cbs_timeout_ms
        self._verbose = verbose
        self.start_timeout = start_timeout
        self._extra_args = list(extra_args)
        self._proc: "Optional[subprocess.Popen[bytes]]" = None
        self._tmpdir: Optional[str] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._reset()

    def _reset(self) -> None:
        self.binary: Optional[str] = None
        self.config_path: Optional[str] = None
        self.log_file: Optional[str] = None
        self.ready_line: Optional[str] = None
        self.amqp_port: Optional[int] = None
        self.amqps_port: Optional[int] = None
        self.control_address: Optional[str] = None
        self.ca_file: Optional[str] = None
        self.sas_key_name = DEFAULT_KEY_NAME
        self.sas_key = DEFAULT_KEY
        self._control: Optional[Control] = None
        self._aio: Optional[AsyncControl] = None

    def __repr__(self) -> str:
        if self.running:
            return "Emulator(amqp=%s:%s, control=%s, pid=%d)" % (
                self.host, self.amqp_port, self.control_address, self.pid)
        return "Emulator(stopped)"

    # -- start ------------------------------------------------------------

    def _prepare(self) -> List[str]:
        """Finds the binary, writes the config, builds the command line."""
        if self._proc is not None:
            raise RuntimeError("this Emulator is already running")
        self._reset()
        self.binary = find_emulator(self._binary_arg)
        self._tmpdir = tempfile.mkdtemp(prefix="servicebus-testing-")
        config = self._config_arg if self._config_arg is not None else DEFAULT_CONFIG
        if isinstance(config, dict):
            self.config_path = os.path.join(self._tmpdir, "config.json")
            with open(self.config_path, "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2)
            parsed: Optional[Dict[str, Any]] = config
        else:
            self.config_path = os.path.abspath(os.fspath(config))
            if not os.path.isfile(self.config_path):
                self._remove_tmpdir()
                raise EmulatorConfigError("emulator config %s: no such file" % self.config_path)
            try:
                parsed = load_config(self.config_path)
            except EmulatorConfigError:
                parsed = None  # the emulator says what is wrong, better than we can
        if parsed is not None:
            self.sas_key_name, self.sas_key = _root_policy(parsed)
        self.log_file = os.path.join(self._tmpdir, "emulator.log")
        amqp, amqps, control = self._ports
        argv = [self.binary, "--config", self.config_path, "--host", self.host,
                "--amqp-port", str(amqp), "--control-port", str(control), "--exit-on-stdin-eof"]
        if amqps is not None:
            argv += ["--amqps-port", str(amqps)]
        if self._tls[0] is not None:
            argv += ["--tls-cert", os.fspath(self._tls[0]), "--tls-key", os.fspath(self._tls[1])]  # type: ignore[arg-type]
        argv += ["--state-dir", os.fspath(self._state_dir_arg) if self._state_dir_arg else self._tmpdir]
        if self._max_message_size is not None:
            argv += ["--max-message-size", str(self._max_message_size)]
        if self._cbs_timeout_ms is not None:
            argv += ["--cbs-timeout-ms", str(self._cbs_timeout_ms)]
        argv += ["--verbose"] * int(self._verbose)
        return argv + self._extra_args

    def _spawn(self, argv: List[str]) -> "subprocess.Popen[bytes]":
        assert self.log_file is not None
        with open(self.log_file, "wb") as log:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
            except OSError as exc:
                self._remove_tmpdir()
                raise EmulatorStartError("cannot run %s: %s" % (argv[0], exc)) from exc
        self._proc = proc
        self._finalizer = weakref.finalize(self, _cleanup, proc, self._tmpdir)
        return proc

    def _stderr(self) -> str:
        try:
            with open(self.log_file or "", encoding="utf-8", errors="replace") as f:
                return f.read().strip()
        except OSError:
            return ""

    def _failed(self, line: str, timed_out: bool) -> Exception:
        """The error for a start that did not print the ready line; the
        process is stopped and the temporary files removed."""
        proc = self._proc
        assert proc is not None
        if timed_out:
            proc.kill()
        try:
            rc: Optional[int] = proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - printed something else and hangs
            proc.kill()
            rc = proc.wait()
        err = self._stderr()
        self._drop()
        if timed_out:
            return EmulatorStartError(
                "sbus-emulator printed no ready line within %.0f s (got %r)%s"
                % (self.start_timeout, line, ": " + err if err else ""), rc, err)
        if rc == 2:
            reason = err.splitlines()[-1] if err else "exit status 2"
            return EmulatorConfigError(reason.replace("sbus-emulator: ", "", 1))
        return EmulatorStartError(
            "sbus-emulator exited with status %s before it was ready%s" % (rc, ": " + err if err else ""), rc, err)

    def _on_ready(self, line: str) -> None:
        self.ready_line = line
        m = re.search(r"\bamqp=(\S+):(\d+)", line)
        self.amqp_port = int(m.group(2)) if m else None
        m = re.search(r"\bamqps=(\S+):(\d+)", line)
        self.amqps_port = int(m.group(2)) if m else None
        m = re.search(r"\bcontrol=(\S+)", line)
        self.control_address = m.group(1) if m else None
        m = re.search(r"\bca=(\S+)", line)
        self.ca_file = m.group(1) if m else None

    def start(self) -> "Emulator":
        """Starts the emulator and waits (blocking) for its ready line."""
        proc = self._spawn(self._prepare())
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = b""
        timed_out = True
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(proc.stdout.fileno(), 4096)
                line += chunk
                if not chunk or b"\n" in line:
                    timed_out = False
                    break
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith("sbus-emulator ready"):
            raise self._failed(text, timed_out=timed_out)
        self._on_ready(text)
        return self

    async def astart(self) -> "Emulator":
        """Starts the emulator without blocking the event loop.

        Spawning is one fork/exec (what asyncio's own subprocess support
        does); the ready line is read with ``loop.add_reader``."""
        proc = self._spawn(self._prepare())
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        done: "asyncio.Future[bytes]" = loop.create_future()
        buf = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            buf.extend(chunk)
            if (not chunk or b"\n" in buf) and not done.done():
                done.set_result(bytes(buf))

        loop.add_reader(fd, readable)
        timed_out = False
        try:
            line = await asyncio.wait_for(done, self.start_timeout)
        except asyncio.TimeoutError:
            line, timed_out = bytes(buf), True
        finally:
            loop.remove_reader(fd)
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith("sbus-emulator ready"):
            if timed_out:
                proc.kill()
            try:
                await asyncio.wait_for(_exited(proc), 5)
            except asyncio.TimeoutError:  # pragma: no cover
                pass
            raise self._failed(text, timed_out=timed_out)
        self._on_ready(text)
        return self

    # -- stop -------------------------------------------------------------

    def _remove_tmpdir(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _drop(self) -> None:
        """Forgets the (exited) process: closes pipes, removes temporary files."""
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        self._remove_tmpdir()

    def _signal_stop(self) -> "Optional[subprocess.Popen[bytes]]":
        proc = self._proc
        if proc is None:
            return None
        if proc.stdin is not None:
            try:
                proc.stdin.close()  # --exit-on-stdin-eof
            except OSError:
                pass
        if proc.poll() is None:
            proc.terminate()
        return proc

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """Stops the emulator (SIGTERM, then SIGKILL after ``timeout``);
        returns its exit status. Does nothing if it is not running."""
        proc = self._signal_stop()
        if proc is None:
            return None
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        self._drop()
        return rc

    async def astop(self, timeout: float = 10.0) -> Optional[int]:
        """Stops the emulator without blocking the event loop (the exit is
        awaited on a pidfd where the kernel has them)."""
        proc = self._signal_stop()
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                await asyncio.wait_for(_exited(proc), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await _exited(proc)
        rc = proc.wait()  # reaped already: does not block
        self._drop()
        return rc

    close = stop
    aclose = astop

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "Emulator":
        return await self.astart()

    async def __aexit__(self, *exc: Any) -> None:
        await self.astop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            warnings.warn("unclosed %r: use `with`/`async with` or stop()" % self, ResourceWarning, stacklevel=2)

    # -- what a client needs ----------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the emulator process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The emulator's process id."""
        return self._require().pid

    def _require(self) -> "subprocess.Popen[bytes]":
        if self._proc is None:
            raise RuntimeError("the emulator is not running: use `with Emulator() as emu` or start()")
        return self._proc

    @property
    def namespace(self) -> str:
        """The fully qualified namespace, ``localhost:<amqp port>``."""
        self._require()
        host = "localhost" if self.host in ("127.0.0.1", "localhost", "::1") else self.host
        return "%s:%d" % (host, self.amqp_port or 0)

    @property
    def connection_string(self) -> str:
        """The connection string of the namespace's first Manage policy
        (``RootManageSharedAccessKey`` by default), Microsoft's emulator form."""
        return self.connection_string_for(self.sas_key_name, self.sas_key)

    def connection_string_for(self, key_name: str, key: str, entity_path: Optional[str] = None) -> str:
        """A connection string with another policy (or a wrong key, for auth tests)."""
        s = "Endpoint=sb://%s;SharedAccessKeyName=%s;SharedAccessKey=%s;" % (self.namespace, key_name, key)
        if entity_path:
            s += "EntityPath=%s;" % entity_path
        return s + "UseDevelopmentEmulator=true;"

    @property
    def credential(self) -> Any:
        """A :class:`servicebus.ServiceBusSharedKeyCredential` for :attr:`namespace`."""
        from .._credentials import ServiceBusSharedKeyCredential

        return ServiceBusSharedKeyCredential(self.sas_key_name, self.sas_key)

    def client(self, **kwargs: Any) -> Any:
        """A new :class:`servicebus.aio.ServiceBusClient` on this emulator
        (use it with ``async with``); keyword arguments go to the client."""
        from ..aio import ServiceBusClient

        return ServiceBusClient.from_connection_string(self.connection_string, **kwargs)

    @property
    def control_url(self) -> str:
        """``http://127.0.0.1:<control port>``."""
        return "http://%s" % self._control_address()

    def _control_address(self) -> str:
        self._require()
        if not self.control_address:
            raise RuntimeError("this emulator has no control port (control_port=None?)")
        return self.control_address

    @property
    def control(self) -> Control:
        """The control surface, for sync code (see :class:`Control`)."""
        if self._control is None:
            self._control = Control(self._control_address())
        return self._control

    @property
    def aio(self) -> AsyncControl:
        """The control surface, for coroutines: ``await emu.aio.create_queue()``."""
        if self._aio is None:
            self._aio = AsyncControl(self._control_address())
        return self._aio

    # Shortcuts to the sync control surface (the API: emu.create_queue(...)).

    def create_queue(self, name: Optional[str] = None, **properties: Any) -> str:
        """Creates a queue at run time; returns its name. See :meth:`Control.create_queue`."""
        return self.control.create_queue(name, **properties)

    def create_topic(self, name: Optional[str] = None, subscriptions: Sequence[Any] = (), **properties: Any) -> str:
        """Creates a topic (and subscriptions); returns its name. See :meth:`Control.create_topic`."""
        return self.control.create_topic(name, subscriptions, **properties)

    def create_subscription(self, topic: str, name: Optional[str] = None, **kwargs: Any) -> str:
        """Adds a subscription to a topic; returns its name. See :meth:`Control.create_subscription`."""
        return self.control.create_subscription(topic, name, **kwargs)

    def delete(self, path: str, missing_ok: bool = False) -> bool:
        """Deletes a queue, topic or subscription. See :meth:`Control.delete`."""
        return self.control.delete(path, missing_ok=missing_ok)

    def advance(self, seconds: float) -> Dict[str, int]:
        """Moves the emulator clock forward by ``seconds``."""
        return self.control.advance(seconds)

    def entities(self) -> Dict[str, Dict[str, Any]]:
        """Counters of every entity (``GET /entities``)."""
        return self.control.entities()

    def counts(self, path: str) -> Dict[str, Any]:
        """Counters of one entity: active, scheduled, deferred, dead_lettered, locked, total."""
        return self.control.counts(path)


async def _exited(proc: "subprocess.Popen[bytes]") -> None:
    """Waits for ``proc`` to exit without reaping it and without blocking:
    on a pidfd (Linux 5.3+), else by checking every 20 ms."""
    if proc.poll() is not None:
        return
    pidfd = -1
    if hasattr(os, "pidfd_open") and sys.platform.startswith("linux"):
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            pidfd = -1
    if pidfd < 0:
        while proc.poll() is None:
            await asyncio.sleep(0.02)
        return
    loop = asyncio.get_running_loop()
    gone: "asyncio.Future[None]" = loop.create_future()

    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        await gone
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
