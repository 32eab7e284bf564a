"""Microsoft's JS SDK (@azure/service-bus 7.9.5, from bench/js) over plain AMQP.

Skipped when node or the package is missing (bench/run.sh installs it with npm ci).
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

MODULES = os.environ.get("SBUS_JS_MODULES", os.path.join(ROOT, "bench", "js", "node_modules"))

pytestmark = pytest.mark.skipif(
    not shutil.which("node") or not os.path.isdir(os.path.join(MODULES, "@azure", "service-bus")),
    reason="node or @azure/service-bus not installed")


def run_js(emulator, script, *args):
    """Runs js/<script> against the emulator's plain AMQP port; returns its JSON line, which
    must say ok."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js", script)
    p = subprocess.run(["node", path, MODULES, emulator.amqp, *args], capture_output=True, text=True, timeout=120)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, p.stdout + p.stderr
    out = json.loads(lines[-1])
    assert out["ok"], (emulator.amqp, out)
    return out


def test_js_sdk_round_trip(emulator):
    queue = emulator.create_queue(LockDuration="PT30S", MaxDeliveryCount=5)
    squeue = emulator.create_queue(RequiresSession=True)
    out = run_js(emulator, "smoke.mjs", queue, squeue)
    assert out["first"] == {"body": "j1", "seq": 1, "count": 0, "id": "id-1", "props": {"k": "v"}}
    assert out["again"] == {"body": "j1", "count": 1}
    assert out["rest"] == ["j2", "j3"]
    assert out["empty"] == 0
    assert out["dlq"] == {"body": "j2", "reason": "js", "desc": "why"}
    assert out["peek"] == [["later", "scheduled"]]
    assert out["session"] == {"id": "JS", "bodies": ["s1", "s2"], "state": "state-1"}
    assert emulator.wait_count(queue, "total", 0) == 0


def test_js_sdk_rule_manager(emulator):
    """add-rule, enumerate-rules and remove-rule (protocol.md §8.11), which Python 7.8.2 lacks."""
    topic = emulator.create_topic(subscriptions=[{"Name": "s"}])
    out = run_js(emulator, "rules.mjs", topic, "s")
    assert out["before"] == ["$Default"]
    after = {r["name"]: r for r in out["after"]}
    assert sorted(after) == ["corr", "red"]
    assert after["red"]["filter"]["sqlExpression"] == "color = 'red'"
    assert after["red"]["action"] == "SET routed = 'yes'"
    assert after["corr"]["filter"]["correlationId"] == "c-1"
    assert after["corr"]["filter"]["applicationProperties"] == {"k": "v"}
    assert sorted(out["received"]) == [["c", None], ["r", "yes"]]


def test_js_sdk_settles_with_property_changes(emulator):
    """abandon/defer with propertiesToModify (a modified outcome's annotations), dead-letter with
    extra properties (a rejected outcome's info) and the management path for a deferred message:
    each change lands as its own application property; the oversized refusal names the size."""
    queue = emulator.create_queue(LockDuration="PT30S", MaxDeliveryCount=5)
    out = run_js(emulator, "settle.mjs", queue)
    # rhea hands an AMQP timestamp in application properties back as milliseconds
    first = {"keep": "k", "n": 2, "added": "yes", "when": 86400000}
    assert out["abandoned"] == {"body": "a", "count": 1, "props": first}
    assert out["deferred"] == dict(first, deferred=True)
    assert out["deferredAbandoned"] == dict(first, deferred=True, again=3.5)
    assert out["deadLettered"] == {"body": "b", "reason": "why", "desc": "because",
                                   "props": {"extra": "x", "DeadLetterReason": "why",
                                             "DeadLetterErrorDescription": "because"}}
    assert out["oversized"]["code"] == "MessageSizeExceeded"
    size = int(out["oversized"]["message"].split("size:")[1].split(" ")[0])
    assert 300 * 1024 < size < 300 * 1024 + 512, out["oversized"]
    assert emulator.wait_count(queue, "total", 0) == 0


def test_js_sdk_features(emulator):
    """Scheduling with cancel and peek, streaming with auto-complete, deferral, sessions with
    state, a sized batch drained in ReceiveAndDelete and the dead-letter queue (features.mjs)."""
    queue = emulator.create_queue(LockDuration="PT30S", MaxDeliveryCount=5)
    squeue = emulator.create_queue(RequiresSession=True)
    out = run_js(emulator, "features.mjs", queue, squeue)
    assert out["seqs"] == [1, 2]
    assert out["peekedState"] == ["scheduled", "scheduled"]
    assert out["peekedAfterCancel"] == ["sch2"]
    assert sorted(out["streamed"]) == ["a", "b", "c"]
    assert out["deferred"] == {"body": "d1", "state": "deferred"}
    assert out["firstSession"] == "A" and out["state"] == "st-1" and out["renewed"] is True
    assert out["sessionBodies"] == ["s1", "s2"] and out["bBodies"] == ["t1"]
    # no session free: the accept waits, then the SDK's 5 s operation timeout ends it
    assert out["empty"] == "ServiceTimeout" and out["emptyMs"] < 20000
    # the batch holds what fits in 5,000 bytes, and nothing else was left active
    assert 30 <= out["batchCount"] < 50
    assert out["drained"] == out["batchCount"] and out["drainedBodies"] == []
    assert out["dlq"] == {"body": "dl", "reason": "R", "desc": "D"}
    counts = emulator.entities()[queue]
    assert counts["scheduled"] == 1 and counts["active"] == 0 and counts["dead_lettered"] == 0
