"""The benchmark driver: runs every client over every workload against one emulator.

bench/run.sh builds the tools, starts ONE sbus-emulator and Proton's example
broker, then calls `bench.py run`; `bench.py config FILE` writes the emulator
configuration (a pool of queues, one fresh queue per run).

Plan of a run (see bench/README.md for what each figure means):
  1. probe each client once (send one message); a client that is missing or
     fails its probe is reported "n/a" with the reason, never silently dropped;
  2. for each repetition: the broker comparison (loadgen through Proton's
     example broker and through ours), then each workload with every client
     in turn (client order rotated per repetition) -- our plain-AMQP clients
     run the target workloads in extra interleaved rounds -- then all idle
     receivers at once (they only wait, so they do not disturb each other);
  3. medians over the repetitions -> bench/results/latest.json, then
     report.py renders latest.md, latest.png and the README figures.

Receive workloads get their queue filled by the C load generator first (not
timed); send workloads get theirs drained and counted afterwards, so a
client that loses messages fails its run instead of looking fast.
Environment: BENCH_QUICK=1 (smoke run), BENCH_N (base N, default 20000),
BENCH_REPS, BENCH_OURS_ROUNDS, BENCH_CLIENTS (comma list), BENCH_BUDGET_S (wall-time guard).
"""
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")
RESULTS = os.path.join(HERE, "results")
QUEUE_POOL = 800
SAS_NAME, SAS_KEY = "RootManageSharedAccessKey", "SAS_KEY_VALUE"

WORKLOADS = ["send_batch", "send_single", "recv_peeklock", "recv_rad", "latency", "idle"]
# Our clients over plain AMQP: the ones the C-engine ratios compare (more rounds per repetition).
OURS_FAST = ("c", "py", "py-uvloop", "lua54", "luajit")
WORKLOAD_TITLES = {
    "send_batch": "send, batches of 100",
    "send_single": "send, one at a time",
    "recv_peeklock": "receive PeekLock + complete (prefetch 300)",
    "recv_rad": "receive ReceiveAndDelete (prefetch 300)",
    "latency": "send->receive latency at a fixed rate",
    "idle": "receiver waiting on an empty queue",
}


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------

def settings():
    quick = os.environ.get("BENCH_QUICK") == "1"
    base = int(os.environ.get("BENCH_N", "2000" if quick else "20000"))
    s = {
        "quick": quick,
        "reps": int(os.environ.get("BENCH_REPS", "1" if quick else "3")),
        "n": {
            "send_batch": base,
            "send_single": max(1, base // 10),
            "recv_peeklock": base,
            "recv_rad": base,
            "latency": 100 if quick else 600,
        },
        "latency_rate": 200,
        "idle_s": 2 if quick else 10,
        "broker_n": 20000 if quick else 100000,
        "broker_rounds": 1 if quick else 2,   # broker runs are short: two rounds per repetition
        "run_timeout_s": 20 if quick else 60,
        "stall_s": 4 if quick else 8,        # a run whose queue does not move this long is stopped
        "drain_idle_ms": 400 if quick else 1000,
        "budget_s": float(os.environ.get("BENCH_BUDGET_S", "80" if quick else "660")),
        # The transports phase (issue 7): longer runs than the main tables, so that a ratio of
        # two runs of the same client is not a ratio of two 60 ms samples of a busy machine.
        # Extra interleaved rounds of our plain-AMQP clients per repetition on the workloads
        # whose client-vs-client ratios are targets (BENCH_OURS_ROUNDS=1: one run each).
        "ours_rounds": int(os.environ.get("BENCH_OURS_ROUNDS", "1" if quick else "3")),
        "ours_round_workloads": ["send_batch", "recv_peeklock"],
        "transport_n": int(os.environ.get("BENCH_TRANSPORT_N", str(base * 3))),
        # the two workloads the targets are stated on (BENCH_TRANSPORT_WORKLOADS to change)
        "transport_workloads": os.environ.get("BENCH_TRANSPORT_WORKLOADS",
                                              "send_batch,recv_peeklock").split(","),
    }
    return s


# --------------------------------------------------------------------------
# The emulator configuration
# --------------------------------------------------------------------------

def write_config(path):
    props = {
        "DeadLetteringOnMessageExpiration": False,
        "DefaultMessageTimeToLive": "PT1H",
        "DuplicateDetectionHistoryTimeWindow": "PT20S",
        "ForwardDeadLetteredMessagesTo": "",
        "ForwardTo": "",
        "LockDuration": "PT1M",
        "MaxDeliveryCount": 10,
        "RequiresDuplicateDetection": False,
        "RequiresSession": False,
    }
    queues = [{"Name": f"bq-{i:04d}", "Properties": props} for i in range(QUEUE_POOL)]
    cfg = {"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": queues, "Topics": []}],
                          "Logging": {"Type": "File"}}}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)


FILL = {"inflight": 2000, "note": ""}  # how queues are prefilled (see client_run)


class QueuePool:
    def __init__(self):
        self.next = 0

    def take(self):
        if self.next >= QUEUE_POOL:
            raise RuntimeError("queue pool exhausted")
        name = f"bq-{self.next:04d}"
        self.next += 1
        return name


# --------------------------------------------------------------------------
# Processes: CPU of a pid, running a client with a timeout
# --------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    """CPU seconds of pid (all threads): the sum of its threads' /proc/<pid>/task/*/schedstat
    (nanoseconds on a CPU), else user + sys from /proc/<pid>/stat, which counts in 10 ms
    ticks: a fifth of a 0.2 s run's emulator CPU would be rounding."""
    if not pid:
        return None
    try:
        total = 0
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def run_json(cmd, env=None, timeout=60, cwd=None, progress=None, stall_s=8.0):
    """Runs cmd in its own process group; returns (dict from its last JSON line, stderr tail).

    progress, when given, is polled twice a second and returns a value that changes while
    the run moves messages (a queue's count); a run whose value stays the same for stall_s
    is stopped as stalled, so that a hung client costs seconds, not the whole timeout.
    """
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, cwd=cwd, start_new_session=True)
    t0 = time.monotonic()
    last, last_change, why = None, t0, None
    while True:
        try:
            out, err = p.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - t0 > timeout:
            why = f"timeout after {timeout} s"
        elif progress is not None:
            value = progress()
            if value != last:
                last, last_change = value, now
            elif now - last_change > stall_s:
                why = f"stalled: no message moved for {stall_s:.0f} s (queue count stuck at {value})"
        if why:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            return {"ok": False, "error": why}, (err or "")[-600:]
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line), (err or "")[-600:]
            except ValueError:
                break
    tail = (err or out or "").strip().splitlines()[-3:]
    return {"ok": False, "error": f"exit {p.returncode}, no result: {' | '.join(tail)[:300]}"}, err


# --------------------------------------------------------------------------
# The environment handed over by run.sh
# --------------------------------------------------------------------------

class Env:
    def __init__(self):
        g = os.environ.get
        self.build = g("BENCH_BUILD", os.path.join(TOP, "build"))
        self.emu_pid = int(g("EMU_PID", "0") or 0)
        self.emu_reason = g("EMU_REASON", "")
        self.amqp_port = g("EMU_AMQP_PORT", "")
        self.amqps_port = g("EMU_AMQPS_PORT", "")
        self.ws_port = g("EMU_WS_PORT", "")
        self.wss_port = g("EMU_WSS_PORT", "")
        self.control_port = g("EMU_CONTROL_PORT", "")
        self.ca = g("EMU_CA", "")
        self.proton_pid = int(g("PROTON_PID", "0") or 0)
        self.proton_port = g("PROTON_PORT", "")
        self.proton_reason = g("PROTON_REASON", "")
        self.loadgen = os.path.join(WORK, "bin", "loadgen")
        venv = os.path.join(TOP, ".venv", "bin", "python")
        # The project's .venv (made by `make python`) has servicebus; without it Debian's
        # python3 still has Microsoft's SDK.
        self.python = g("BENCH_PYTHON", venv if os.path.exists(venv) else "/usr/bin/python3")

    def conn_plain(self):
        return (f"Endpoint=sb://localhost:{self.amqp_port};SharedAccessKeyName={SAS_NAME};"
                f"SharedAccessKey={SAS_KEY};UseDevelopmentEmulator=true;")

    def conn_tls(self):
        # Microsoft's Python SDK 7.8.2 always uses TLS on 5671 to the Endpoint host.
        return f"Endpoint=sb://localhost/;SharedAccessKeyName={SAS_NAME};SharedAccessKey={SAS_KEY}"

    def conn_port(self, port, tls):
        """Ours on a given listener: TLS unless UseDevelopmentEmulator=true says plain."""
        return (f"Endpoint=sb://localhost:{port};SharedAccessKeyName={SAS_NAME};"
                f"SharedAccessKey={SAS_KEY};" + ("" if tls else "UseDevelopmentEmulator=true;"))

    def entity_counts(self, queue):
        """Counts of one queue from the emulator's control surface, or None."""
        if not self.control_port:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.control_port}/entities",
                                        timeout=5) as r:
                data = json.load(r)
        except (OSError, ValueError):
            return None
        items = data.get("entities", data) if isinstance(data, dict) else data
        if isinstance(items, dict):
            items = [dict(v, name=k) if isinstance(v, dict) else {"name": k} for k, v in items.items()]
        for e in items or []:
            if isinstance(e, dict) and str(e.get("name", "")).lower() == queue:
                return e
        return None


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

class Client:
    """One measured client: how to start it, and why it may be unavailable."""

    def __init__(self, name, label, kind, transport, cmd, env=None, reason=None, base=None):
        self.name, self.label, self.kind, self.transport = name, label, kind, transport
        self.cmd, self.env, self.reason = cmd, env or {}, reason
        self.base = base  # the plain-AMQP client this one is a transport variant of

    def command(self, workload, queue, n):
        return self.cmd + [workload, queue, str(n)]


def status_ready(path):
    try:
        with open(os.path.join(TOP, path)) as f:
            return "FOUNDATION READY" in f.read()
    except OSError:
        return False


def python_import_error(env, module):
    try:
        r = subprocess.run([env.python, "-c", f"import {module}"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode == 0:
        return None
    return (r.stderr.strip().splitlines() or ["import failed"])[-1][:200]


def make_clients(env):
    py_client = os.path.join(HERE, "clients", "py_client.py")
    lua_client = os.path.join(HERE, "clients", "lua_client.lua")
    no_emu = f"no emulator: {env.emu_reason}" if not env.amqp_port else None
    no_tls = None if env.amqps_port else "the emulator has no TLS listener on 5671 (needed by this SDK)"
    plain = {"SB_CONN": env.conn_plain()}
    tls = {"SB_CONN": env.conn_tls(), "SB_CA": env.ca}
    ours_py = python_import_error(env, "servicebus.aio")
    ours_py = f"servicebus not importable ({ours_py})" if ours_py else None
    uvl = python_import_error(env, "uvloop")
    ms_py = python_import_error(env, "azure.servicebus.aio")
    ms_py = f"azure-servicebus not importable ({ms_py})" if ms_py else None
    sbbench = os.path.join(WORK, "bin", "sbbench")
    c_reason = None if os.path.exists(sbbench) else (
        open(os.path.join(WORK, "sbbench.reason")).read().strip()
        if os.path.exists(os.path.join(WORK, "sbbench.reason")) else "bench/c/sbbench not built")
    lua_mod = {
        "lua54": os.path.join(env.build, "lua54", "servicebus.so"),
        "luajit": os.path.join(env.build, "luajit", "servicebus.so"),
    }
    node_ok = os.path.exists(os.path.join(HERE, "js", "node_modules", "@azure", "service-bus"))
    clients = [
        Client("c", "ours: C engine", "ours", "amqp", [sbbench], plain, no_emu or c_reason),
        Client("py", "ours: Python (asyncio)", "ours", "amqp",
               [env.python, py_client, "ours", "asyncio"], plain, no_emu or ours_py),
        Client("py-uvloop", "ours: Python (uvloop)", "ours", "amqp",
               [env.python, py_client, "ours", "uvloop"], plain,
               no_emu or ours_py or (f"uvloop missing ({uvl})" if uvl else None)),
        Client("py-tls", "ours: Python (asyncio, TLS)", "ours", "amqps",
               [env.python, py_client, "ours", "asyncio"], tls, no_emu or no_tls or ours_py),
    ]
    for name, exe, label in (("lua54", "lua5.4", "ours: Lua 5.4"), ("luajit", "luajit", "ours: LuaJIT")):
        mod = lua_mod[name]
        reason = no_emu or (None if os.path.exists(mod) else f"{os.path.relpath(mod, TOP)} not built")
        lua_env = dict(plain, LUA_CPATH=os.path.join(os.path.dirname(mod), "?.so") + ";;")
        clients.append(Client(name, label, "ours", "amqp", [exe, lua_client], lua_env, reason))
    clients += [
        Client("ms-py", "Microsoft Python SDK 7.8.2", "ms", "amqps",
               [env.python, py_client, "ms", "asyncio"], tls, no_emu or no_tls or ms_py),
        Client("ms-js", "Microsoft JS SDK 7.9.5", "ms", "amqp",
               ["node", os.path.join(HERE, "clients", "ms_js.mjs")], plain,
               no_emu or (None if node_ok else "bench/js/node_modules missing (npm ci failed)")),
    ]
    select(clients)
    return clients


def select(clients):
    wanted = os.environ.get("BENCH_CLIENTS")
    if wanted:
        keep = set(wanted.split(","))
        for c in clients:
            if c.name not in keep and not c.reason:
                c.reason = "not selected (BENCH_CLIENTS)"


# Issue 7: our clients over plain AMQP, TLS, WebSocket and secure WebSocket, side by side.
TRANSPORT_BASES = ["c", "py", "luajit"]
TRANSPORTS = ["amqp", "tls", "ws", "wss"]


def make_transport_variants(env, clients):
    """{base: {transport: Client}}: the same client programs on the emulator's amqp, amqps,
    ws and wss listeners. "amqp" is the base client itself."""
    by_name = {c.name: c for c in clients}
    listeners = {"tls": (env.amqps_port, True, "amqp", "amqps", "TLS"),
                 "ws": (env.ws_port, False, "websocket", "ws", "WebSocket"),
                 "wss": (env.wss_port, True, "websocket", "wss", "secure WebSocket")}
    out = {}
    for base in TRANSPORT_BASES:
        b = by_name.get(base)
        if b is None:
            continue
        out[base] = {"amqp": b}
        for tr, (port, tls, transport, wire, what) in listeners.items():
            name = f"{base}-{tr}"
            reason = b.reason if b.reason and "BENCH_CLIENTS" not in b.reason else None
            reason = reason or (None if port else f"the emulator has no {wire} listener")
            cenv = dict(b.env, SB_CONN=env.conn_port(port, tls), SB_TRANSPORT=transport)
            if tls:
                cenv["SB_CA"] = env.ca
            label = f"{b.label.split(' (')[0]} ({what})"
            out[base][tr] = Client(name, label, "ours", wire, b.cmd, cenv, reason, base=base)
    variants = [v for t in out.values() for k, v in t.items() if k != "amqp"]
    select(variants)
    return out


# --------------------------------------------------------------------------
# The loadgen: fill, drain, and the broker comparison
# --------------------------------------------------------------------------

def loadgen(env, port, queue, mode, n, settle="rad", cbs=True, timeout=120, idle_ms=1500,
            max_inflight=2000, stall_ms=5000, links=1):
    cmd = [env.loadgen, "--host", "127.0.0.1", "--port", str(port), "--queue", queue,
           "--mode", mode, "--settle", settle, "--n", str(n), "--idle-ms", str(idle_ms),
           "--timeout", str(timeout), "--max-inflight", str(max_inflight),
           "--stall-ms", str(stall_ms), "--links", str(links)]
    if cbs:
        cmd += ["--sas-key-name", SAS_NAME, "--sas-key", SAS_KEY]
    res, _ = run_json(cmd, timeout=timeout + 15)
    return res


# Two shapes of sender traffic through a broker: one link with up to 2,000 transfers in
# flight (pipelined, the usual shape), and 64 links with one transfer in flight each (as 64
# awaiting clients would send; it also measures an emulator that mishandles pipelined
# transfers, README Findings F1). Receiving is one link with 1,000 credits in both.
BROKER_SHAPES = {"pipelined": {"links": 1, "max_inflight": 2000},
                 "64x1": {"links": 64, "max_inflight": 1}}


def broker_run(env, s, pool, broker, settle, shape="pipelined"):
    if broker == "proton":
        pid, port, cbs = env.proton_pid, env.proton_port, False
        queue = f"pq-{pool.take()}"
    else:
        pid, port, cbs = env.emu_pid, env.amqp_port, True
        queue = pool.take()
    c0 = proc_cpu_s(pid)
    res = loadgen(env, port, queue, "both", s["broker_n"], settle=settle, cbs=cbs,
                  timeout=s["run_timeout_s"], stall_ms=int(s["stall_s"] * 500),
                  **BROKER_SHAPES[shape])
    c1 = proc_cpu_s(pid)
    rec = {"broker": broker, "settle": settle, "shape": shape, "ok": bool(res.get("ok")),
           "error": res.get("error", ""),
           "n": res.get("received", 0), "seconds": res.get("seconds", 0)}
    if rec["ok"] and rec["seconds"] > 0:
        rec["msgs_per_s"] = rec["n"] / rec["seconds"]
        if c0 is not None and c1 is not None:
            rec["broker_cpu_us_per_msg"] = (c1 - c0) / rec["n"] * 1e6
            rec["broker_cpu_cores"] = (c1 - c0) / rec["seconds"]
        rec["loadgen_cpu_us_per_msg"] = res.get("cpu_s", 0) / rec["n"] * 1e6
    return rec


# --------------------------------------------------------------------------
# One client run
# --------------------------------------------------------------------------

def client_run(env, s, pool, client, workload, n=None):
    queue = pool.take()
    n = s["n"].get(workload, 0) if n is None else n
    rec = {"client": client.name, "workload": workload, "queue": queue, "n_requested": n}
    if workload in ("recv_peeklock", "recv_rad"):
        fill = loadgen(env, env.amqp_port, queue, "send", n, timeout=s["run_timeout_s"],
                       max_inflight=FILL["inflight"])
        if not fill.get("ok") and FILL["inflight"] > 1:
            # An emulator that loses pipelined transfers (see README, Findings) still takes
            # them one at a time: fill a fresh queue that way, and say so in the results.
            FILL["inflight"] = 1
            FILL["note"] = ("pipelined prefill refused by the emulator "
                            f"({fill.get('error')}); queues filled one message at a time")
            log("  " + FILL["note"])
            queue = rec["queue"] = pool.take()
            fill = loadgen(env, env.amqp_port, queue, "send", n, timeout=s["run_timeout_s"],
                           max_inflight=1)
        if not fill.get("ok"):
            rec.update(ok=False, error=f"prefill failed: {fill.get('error')}")
            return rec
    cmd_env = dict(os.environ, **client.env, SB_LAT_RATE=str(s["latency_rate"]),
                   SB_IDLE_S=str(s["idle_s"]))
    e0 = proc_cpu_s(env.emu_pid)
    t0 = time.monotonic()
    progress = None
    if workload != "latency" and env.control_port:
        def progress():
            c = env.entity_counts(queue)
            return None if c is None else c.get("total", c.get("active"))
    res, err = run_json(client.command(workload, queue, n), env=cmd_env, timeout=s["run_timeout_s"],
                        progress=progress, stall_s=s["stall_s"])
    rec["wall_s"] = time.monotonic() - t0
    e1 = proc_cpu_s(env.emu_pid)
    rec.update(res)
    if not res.get("ok") and err and "error" in res and len(res["error"]) < 40:
        rec["stderr"] = err.strip().splitlines()[-1][:300] if err.strip() else ""
    if not rec.get("ok"):
        return rec
    if workload in ("send_batch", "send_single"):
        expect = n + int(res.get("extra_sent", 0))
        drain = loadgen(env, env.amqp_port, queue, "recv", expect + 10, idle_ms=s["drain_idle_ms"],
                        timeout=s["run_timeout_s"])
        got = drain.get("received", 0)
        rec["verified"] = got == expect
        if got != expect:
            rec.update(ok=False, error=f"queue holds {got} messages after the run, expected {expect}")
    elif workload in ("recv_peeklock", "recv_rad"):
        counts = env.entity_counts(queue)
        if counts is not None:
            left = sum(int(counts.get(k, 0) or 0) for k in ("active", "locked", "active_count"))
            rec["verified"] = left == 0
            if left:
                rec.update(ok=False, error=f"{left} messages left on the queue after the run")
    n_done = rec.get("n", 0)
    if n_done and rec.get("seconds"):
        rec["msgs_per_s"] = n_done / rec["seconds"]
        rec["cpu_s_per_1k"] = rec.get("cpu_s", 0) / n_done * 1000
        if e0 is not None and e1 is not None and workload != "latency":
            rec["emu_cpu_us_per_msg"] = (e1 - e0) / n_done * 1e6
    return rec


def idle_runs(env, s, pool, clients):
    """All idle receivers at once: each waits idle_s on its own empty queue."""
    procs = []
    for c in clients:
        queue = pool.take()
        cmd_env = dict(os.environ, **c.env, SB_IDLE_S=str(s["idle_s"]))
        p = subprocess.Popen(c.command("idle", queue, 0), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=cmd_env, start_new_session=True)
        procs.append((c, queue, p))
    recs = []
    deadline = time.monotonic() + s["idle_s"] + 60
    for c, queue, p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
            line = next((l for l in reversed(out.strip().splitlines()) if l.startswith("{")), None)
            res = json.loads(line) if line else {"ok": False, "error": f"exit {p.returncode}: "
                                                  f"{(err or '').strip()[-200:]}"}
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            res = {"ok": False, "error": "timeout"}
        except ValueError:
            res = {"ok": False, "error": "unreadable result"}
        recs.append(dict(res, client=c.name, workload="idle", queue=queue))
    return recs


# --------------------------------------------------------------------------
# Medians and the machine
# --------------------------------------------------------------------------

def transport_round(env, s, pool, variants, rep, truns, over_budget):
    """One repetition of the transports phase: for each base client and workload, the four
    transports back to back (order rotated per repetition), so that each ratio compares runs
    made seconds apart. Returns the number of runs skipped for the time budget."""
    skipped = 0
    order = TRANSPORTS[rep % len(TRANSPORTS):] + TRANSPORTS[:rep % len(TRANSPORTS)]
    for base, trs in variants.items():
        for w in s["transport_workloads"]:
            for tr in order:
                c = trs[tr]
                if c.reason:
                    continue
                if over_budget():
                    skipped += 1
                    continue
                prior = [r for r in truns if r["client"] == c.name and r["workload"] == w]
                if any(("timeout" in (r.get("error") or "") or "stalled" in (r.get("error") or ""))
                       for r in prior):
                    continue
                rec = client_run(env, s, pool, c, w, n=s["transport_n"])
                rec.update(base=base, transport=tr, rep=rep)
                truns.append(rec)
                log(f"  {w:14s} {c.name if tr != 'amqp' else base + ' (amqp)':14s} {describe(rec)}")
    return skipped


def summarize_transports(s, variants, truns):
    """{base: {label, workloads: {w: {transport: figures}}}}; "ratio" is the median over
    repetitions of (this transport / plain AMQP), both runs of the same repetition."""
    out = {}
    for base, trs in variants.items():
        per_w = {}
        for w in s["transport_workloads"]:
            per_tr = {}
            for tr, c in trs.items():
                rs = [r for r in truns if r["base"] == base and r["transport"] == tr
                      and r["workload"] == w]
                ok = [r for r in rs if r.get("ok")]
                e = {"client": c.name, "label": c.label, "wire": c.transport,
                     "runs": len(rs), "ok_runs": len(ok)}
                if c.reason:
                    e["na"] = c.reason
                elif not rs:
                    e["na"] = "not run (time budget)"
                elif not ok:
                    e["na"] = "failed: " + (rs[-1].get("error") or "unknown")[:200]
                else:
                    for key in ("msgs_per_s", "cpu_s_per_1k", "emu_cpu_us_per_msg"):
                        v = med([r.get(key) for r in ok])
                        if v is not None:
                            e[key] = v
                    if len(ok) < len(rs):
                        e["failures"] = [r.get("error", "")[:200] for r in rs if not r.get("ok")]
                    if tr != "amqp":
                        plain = {r["rep"]: r for r in truns if r["base"] == base
                                 and r["transport"] == "amqp" and r["workload"] == w and r.get("ok")}
                        ratios = [r["msgs_per_s"] / plain[r["rep"]]["msgs_per_s"] for r in ok
                                  if r["rep"] in plain and r.get("msgs_per_s")
                                  and plain[r["rep"]].get("msgs_per_s")]
                        if ratios:
                            e["ratio"] = med(ratios)
                            e["ratios"] = ratios

                        def cost(r):  # client + emulator CPU per message, µs
                            if r.get("cpu_s_per_1k") is None or r.get("emu_cpu_us_per_msg") is None:
                                return None
                            return r["cpu_s_per_1k"] * 1000 + r["emu_cpu_us_per_msg"]
                        costs = [cost(plain[r["rep"]]) / cost(r) for r in ok
                                 if r["rep"] in plain and cost(r) and cost(plain[r["rep"]])]
                        if costs:
                            # what the throughput ratio would be if client and emulator each
                            # had a core to themselves: steadier than msg/s on a busy machine
                            e["cpu_ratio"] = med(costs)
                per_tr[tr] = e
            per_w[w] = per_tr
        out[base] = {"label": trs["amqp"].label, "workloads": per_w}
    return out


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rep_key(r):
    """"2" for repetition 2's first (or only) run of a client, "2.1" for its second round."""
    return str(r["rep"]) + (f".{r['round']}" if r.get("round") else "")


def summarize(clients, runs, brokers):
    summary = {}
    for c in clients:
        per = {}
        for w in WORKLOADS:
            rs = [r for r in runs if r["client"] == c.name and r["workload"] == w]
            ok = [r for r in rs if r.get("ok")]
            entry = {"runs": len(rs), "ok_runs": len(ok)}
            if c.reason:
                entry["na"] = c.reason
            elif not rs:
                entry["na"] = "not run (time budget)"
            elif not ok:
                entry["na"] = "failed: " + (rs[-1].get("error") or "unknown")[:200]
            else:
                for key in ("msgs_per_s", "cpu_s_per_1k", "p50_ms", "p99_ms", "idle_cpu_pct",
                            "emu_cpu_us_per_msg", "clock_resolution_ms"):
                    v = med([r.get(key) for r in ok])
                    if v is not None:
                        entry[key] = v
                entry["rss_mb"] = med([r.get("rss_kb", 0) / 1024 for r in ok])
                # msg/s per repetition, for ratios of two clients paired within a repetition
                entry["by_rep"] = {rep_key(r): r["msgs_per_s"] for r in ok
                                   if r.get("rep") is not None and r.get("msgs_per_s")}
                if len(ok) < len(rs):
                    entry["failures"] = [r.get("error", "")[:200] for r in rs if not r.get("ok")]
            per[w] = entry
        summary[c.name] = per
    bsum = {}
    for key in sorted({(b["broker"], b["settle"], b.get("shape", "pipelined")) for b in brokers}):
        rs = [b for b in brokers if (b["broker"], b["settle"], b.get("shape", "pipelined")) == key]
        ok = [b for b in rs if b["ok"]]
        e = {"runs": len(rs), "ok_runs": len(ok)}
        if ok:
            for k in ("msgs_per_s", "broker_cpu_us_per_msg", "broker_cpu_cores",
                      "loadgen_cpu_us_per_msg"):
                v = med([b.get(k) for b in ok])
                if v is not None:
                    e[k] = v
        else:
            e["na"] = (rs[-1]["error"] if rs else "not run")[:200]
        bsum[f"{key[0]}/{key[1]}/{key[2]}"] = e
    return summary, bsum


def source_commit():
    """The commit the measured build was made from (short hash, "+changes" when the tree was
    not clean), or "unknown"."""
    try:
        head = subprocess.run(["git", "-C", TOP, "rev-parse", "--short=8", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", TOP, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = "?"
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "memory": mem,
            "loadavg": load,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version()}


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def log(msg):
    print(f"bench: {msg}", flush=True)


def describe(rec):
    if not rec.get("ok"):
        return f"FAILED {rec.get('error', '')[:160]}"
    if rec["workload"] == "idle":
        return f"idle CPU {rec.get('idle_cpu_pct', 0):.3f}% of a core"
    if rec["workload"] == "latency":
        return f"p50 {rec.get('p50_ms', 0):.2f} ms, p99 {rec.get('p99_ms', 0):.2f} ms"
    return (f"{rec.get('msgs_per_s', 0):,.0f} msg/s, {rec.get('cpu_s_per_1k', 0) * 1000:.1f} µs CPU/msg,"
            f" RSS {rec.get('rss_kb', 0) / 1024:.0f} MB")


def main_run():
    s = settings()
    env = Env()
    started = time.monotonic()
    machine_before = machine()
    commit = source_commit()  # before the run writes bench/results
    clients = make_clients(env)
    pool = QueuePool()
    runs, brokers = [], []

    log(f"{'quick' if s['quick'] else 'full'} run: {s['reps']} repetition(s), N={s['n']}, "
        f"broker N={s['broker_n']}")
    if env.amqp_port:
        # Can the emulator take pipelined transfers? If not, queues are filled one message
        # at a time (slower set-up) and the results say why.
        probe = loadgen(env, env.amqp_port, pool.take(), "send", 200, timeout=10, stall_ms=3000)
        if not probe.get("ok"):
            FILL["inflight"] = 1
            FILL["note"] = (f"the emulator does not take pipelined transfers ({probe.get('error')});"
                            " queues were filled one message at a time (README, Findings F1)")
            log(FILL["note"])
    for c in clients:
        if c.reason:
            continue
        # The probe: one message sent, then drained and counted like any send run.
        rec = client_run(env, s, pool, c, "send_single", n=1)
        if not rec.get("ok"):
            c.reason = f"probe failed: {rec.get('error', '')[:200]}"
    variants = make_transport_variants(env, clients)
    for base, trs in variants.items():
        for tr, c in trs.items():
            if tr != "amqp" and not c.reason:
                rec = client_run(env, s, pool, c, "send_single", n=1)
                if not rec.get("ok"):
                    c.reason = f"probe failed: {rec.get('error', '')[:200]}"
    for c in clients:
        log(f"client {c.name:10s} {'n/a: ' + c.reason if c.reason else 'ready'}")
    for base, trs in variants.items():
        for tr, c in trs.items():
            if tr != "amqp":
                log(f"client {c.name:10s} {'n/a: ' + c.reason if c.reason else 'ready'} (transports)")
    active = [c for c in clients if not c.reason]
    truns = []

    def over_budget():
        return time.monotonic() - started > s["budget_s"]

    skipped = 0
    for rep in range(s["reps"]):
        log(f"repetition {rep + 1}/{s['reps']}")
        for _, shape, broker, settle in [(r, sh, b, st) for r in range(s["broker_rounds"])
                                         for sh in BROKER_SHAPES
                                         for b, st in (("proton", "rad"), ("ours", "rad"), ("ours", "peek"))]:
            if broker == "proton" and not env.proton_port:
                brokers.append({"broker": broker, "settle": settle, "shape": shape, "ok": False,
                                "error": f"Proton example broker unavailable: {env.proton_reason}"})
                continue
            if broker == "ours" and not env.amqp_port:
                brokers.append({"broker": broker, "settle": settle, "shape": shape, "ok": False,
                                "error": f"no emulator: {env.emu_reason}"})
                continue
            if over_budget():
                skipped += 1
                continue
            if any(b["broker"] == broker and b["settle"] == settle and b.get("shape") == shape
                   and "stalled" in b.get("error", "") for b in brokers):
                continue  # it hung once; the reason is recorded
            b = broker_run(env, s, pool, broker, settle, shape)
            brokers.append(b)
            log(f"  broker {broker}/{settle}/{shape}: " + (
                f"{b.get('msgs_per_s', 0):,.0f} msg/s, broker CPU "
                f"{b.get('broker_cpu_us_per_msg', float('nan')):.2f} µs/msg" if b["ok"]
                else f"FAILED {b['error'][:160]}"))
        order = active[rep % len(active):] + active[:rep % len(active)] if active else []
        for w in WORKLOADS:
            if w == "idle":
                continue
            for c in order:
                if over_budget():
                    skipped += 1
                    continue
                # a client that hung on this workload is not given the time again
                prior = [r for r in runs if r["client"] == c.name and r["workload"] == w]
                if any(("timeout" in (r.get("error") or "") or "stalled" in (r.get("error") or ""))
                       for r in prior):
                    continue
                rec = client_run(env, s, pool, c, w)
                rec["rep"] = rep
                runs.append(rec)
                log(f"  {w:14s} {c.name:10s} {describe(rec)}")
            # Our own clients over plain AMQP take 60-150 ms per run on the target workloads,
            # so one burst of load can decide a repetition: they run again, interleaved, and
            # their ratios are medians over every (repetition, round) pair.
            fast = [c for c in order if c.name in OURS_FAST]
            for rnd in range(1, s["ours_rounds"] if w in s["ours_round_workloads"] else 1):
                for c in fast[rnd % len(fast):] + fast[:rnd % len(fast)]:
                    if over_budget():
                        skipped += 1
                        continue
                    if any(r["client"] == c.name and r["workload"] == w and not r.get("ok")
                           for r in runs):
                        continue  # it failed this workload once; the reason is recorded
                    rec = client_run(env, s, pool, c, w)
                    rec["rep"], rec["round"] = rep, rnd
                    runs.append(rec)
                    log(f"  {w:14s} {c.name:10s} {describe(rec)} (round {rnd + 1})")
        if active and not over_budget():
            for rec in idle_runs(env, s, pool, active):
                runs.append(rec)
                log(f"  {'idle':14s} {rec['client']:10s} {describe(rec)}")
        log(f"  transports (N = {s['transport_n']:,})")
        skipped += transport_round(env, s, pool, variants, rep, truns, over_budget)
    if skipped:
        log(f"{skipped} run(s) skipped: the time budget of {s['budget_s']:.0f} s was spent")

    summary, bsum = summarize(clients, runs, brokers)
    tsum = summarize_transports(s, variants, truns)
    m = machine()
    m["loadavg_before"] = machine_before["loadavg"]
    m["commit"] = commit
    result = {
        "machine": m,
        "settings": {k: v for k, v in s.items()},
        "emulator": {"amqp_port": env.amqp_port, "amqps_port": env.amqps_port,
                     "ws_port": env.ws_port, "wss_port": env.wss_port, "reason": env.emu_reason},
        "clients": {c.name: {"label": c.label, "kind": c.kind, "transport": c.transport,
                             "available": not c.reason, "reason": c.reason} for c in clients},
        "client_order": [c.name for c in clients],
        "summary": summary,
        "brokers": bsum,
        "runs": runs,
        "broker_runs": brokers,
        "transports": tsum,
        "transport_runs": truns,
        "wall_s": time.monotonic() - started,
        "skipped_runs": skipped,
        "notes": [n for n in (FILL["note"],) if n],
    }
    sys.path.insert(0, HERE)
    import report  # the verdicts live in one place; the JSON carries them too
    result["targets"] = report.targets(result)
    os.makedirs(RESULTS, exist_ok=True)
    # Only a full run of every client is "latest" (committed); smoke runs and runs of some
    # clients go beside it so that they never overwrite the reference figures.
    name = "quick" if s["quick"] else ("partial" if os.environ.get("BENCH_CLIENTS") else "latest")
    result["name"] = name
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    with open(os.path.join(WORK, "result-name"), "w") as f:
        f.write(name)
    log(f"wrote {os.path.relpath(path, TOP)} after {result['wall_s']:.0f} s")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "config":
        write_config(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "run":
        main_run()
    else:
        sys.exit("usage: bench.py config FILE | run")


if __name__ == "__main__":
    main()
