"""The servicebus command, run as a user runs it (a subprocess) against the
emulator: every command, --json output parsed back, and the exit codes."""

import json
import os
import pty
import shutil
import signal
import subprocess
import sys

import pytest

ENV = "SERVICEBUS_CONNECTION_STR"


def sb(*args, conn=None, stdin=None, env=None, stderr=subprocess.PIPE, timeout=60):
    """Runs ``python -m servicebus ARGS``; the connection string goes in $SERVICEBUS_CONNECTION_STR."""
    e = dict(os.environ)
    e.pop(ENV, None)
    if conn is not None:
        e[ENV] = conn
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "servicebus", *args], input=stdin, stdout=subprocess.PIPE,
                          stderr=stderr, env=e, timeout=timeout, text=True)


def lines(result):
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def conn(servicebus_connection_string):
    return servicebus_connection_string


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


# -- connection and usage ---------------------------------------------------------


def test_without_a_connection_string_it_says_how_to_set_one():
    r = sb("receive", "q")
    assert r.returncode == 2
    assert "--connection-string" in r.stderr and ENV in r.stderr and "servicebus emulator" in r.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["receive", "a/b"], "TOPIC/Subscriptions/SUB"),
        (["receive", "q", "--peek-lock"], "--complete"),
        (["receive", "q", "--complete"], "--peek-lock"),
        (["send", "q"], "no body"),
        (["send", "q", "--body", "x", "--property", "novalue"], "KEY=VALUE"),
        (["send", "q", "--body", "x", "--property", "n:int=five"], "not a valid int"),
        (["send", "q", "--body", "x", "--schedule", "tomorrow"], "ISO-8601"),
        (["send", "t/Subscriptions/s", "--body", "x"], "send to the topic"),
        (["send", "q", "--body", "x", "--count", "0"], "must be 1 or more"),
        (["bogus"], "invalid choice"),
        ([], "COMMAND"),
    ],
)
def test_usage_errors_exit_2(conn, args, says):
    r = sb(*args, conn=conn)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr


def test_console_script_and_version():
    script = shutil.which("servicebus", path=os.path.dirname(sys.executable))
    assert script, "the servicebus console script is installed next to python"
    r = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("servicebus ")
    assert ok(sb("--version")).stdout == r.stdout


def test_connection_string_option_wins_over_env(servicebus_emulator, servicebus_queue):
    good = servicebus_emulator.connection_string
    bad = servicebus_emulator.connection_string_for("RootManageSharedAccessKey", "wrong")
    ok(sb("send", servicebus_queue, "--body", "x", "--connection-string", good, conn=bad))


def test_wrong_key_exits_3(servicebus_emulator, servicebus_queue):
    bad = servicebus_emulator.connection_string_for("RootManageSharedAccessKey", "wrong")
    r = sb("send", servicebus_queue, "--body", "x", conn=bad)
    assert r.returncode == 3 and "ServiceBusAuthenticationError" in r.stderr


def test_unknown_entity_exits_4(conn):
    for args in (["receive", "no-such-queue", "--wait", "1"], ["send", "no-such-queue", "--body", "x"],
                 ["peek", "no-such-queue"], ["purge", "no-such-queue"]):
        r = sb(*args, conn=conn)
        assert r.returncode == 4, (args, r.stderr)
        assert "no-such-queue" in r.stderr


def test_unreachable_namespace_exits_1(servicebus_emulator):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nobody listens there
    conn = servicebus_emulator.connection_string.replace(":%d;" % servicebus_emulator.amqp_port, ":%d;" % port)
    r = sb("peek", "q", conn=conn, timeout=120)
    assert r.returncode == 1, r.stderr


# -- send and receive -------------------------------------------------------------


def test_send_then_receive_json_round_trip(conn, servicebus_emulator, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "héllo", "--property", "color=red", "--property", "n:int=5",
          "--property", "f:float=1.5", "--property", "b:bool=true", "--message-id", "m-1",
          "--correlation-id", "c-1", "--content-type", "text/plain", "--subject", "greeting", "--ttl", "3600",
          conn=conn))
    assert servicebus_emulator.counts(servicebus_queue)["active"] == 1
    (m,) = lines(ok(sb("receive", servicebus_queue, "--json", conn=conn)))
    assert m["body"] == "héllo"
    assert m["application_properties"] == {"color": "red", "n": 5, "f": 1.5, "b": True}
    assert (m["message_id"], m["correlation_id"], m["content_type"], m["subject"]) == ("m-1", "c-1", "text/plain",
                                                                                       "greeting")
    assert m["time_to_live"] == 3600 and m["entity"] == servicebus_queue and m["sequence_number"] >= 1
    assert servicebus_emulator.counts(servicebus_queue)["active"] == 0, "receive-and-delete by default"


def test_send_count_json_summary_and_receive_count(conn, servicebus_emulator, servicebus_queue):
    (summary,) = lines(ok(sb("send", servicebus_queue, "--body", "bulk", "--count", "1500", "--json", conn=conn)))
    assert summary == {"entity": servicebus_queue, "sent": 1500}
    assert servicebus_emulator.counts(servicebus_queue)["active"] == 1500
    got = lines(ok(sb("receive", servicebus_queue, "--count", "1200", "--json", conn=conn)))
    assert len(got) == 1200 and {m["body"] for m in got} == {"bulk"}
    seqs = [m["sequence_number"] for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 1200
    assert servicebus_emulator.counts(servicebus_queue)["active"] == 300


def test_send_from_stdin_and_file(conn, servicebus_queue, tmp_path):
    ok(sb("send", servicebus_queue, "-", stdin="from stdin\n", conn=conn))
    data = tmp_path / "body.bin"
    data.write_bytes(b"\x00\xffbinary")
    ok(sb("send", servicebus_queue, "--file", str(data), conn=conn))
    first, second = lines(ok(sb("receive", servicebus_queue, "--count", "2", "--json", conn=conn)))
    assert first["body"] == "from stdin\n"
    import base64

    assert base64.b64decode(second["body_base64"]) == b"\x00\xffbinary" and "body" not in second


def test_large_bodies_split_into_batches_and_too_large_fails(conn, servicebus_emulator, servicebus_queue, tmp_path):
    body = tmp_path / "100k"
    body.write_bytes(b"x" * 100_000)  # two fit in a 256 KiB batch, not three
    (summary,) = lines(ok(sb("send", servicebus_queue, "--file", str(body), "--count", "5", "--json", conn=conn)))
    assert summary["sent"] == 5 and servicebus_emulator.counts(servicebus_queue)["active"] == 5
    body.write_bytes(b"x" * 300_000)
    r = sb("send", servicebus_queue, "--file", str(body), conn=conn)
    assert r.returncode == 1 and "MessageContentTooLarge" in r.stderr


def test_plain_output_is_sequence_number_and_body(conn, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "plain", conn=conn))
    r = ok(sb("receive", servicebus_queue, conn=conn))
    assert r.stdout.startswith("#") and r.stdout.rstrip().endswith(" plain")


def test_receive_on_an_empty_queue_is_ok_and_says_so(conn, servicebus_queue):
    r = ok(sb("receive", servicebus_queue, "--wait", "0.5", conn=conn))
    assert r.stdout == "" and "no message" in r.stderr
    assert lines(ok(sb("receive", servicebus_queue, "--wait", "0.5", "--json", conn=conn))) == []


def test_schedule(conn, servicebus_emulator, servicebus_queue):
    (summary,) = lines(ok(sb("send", servicebus_queue, "--body", "later", "--count", "3",
                             "--schedule", "2100-01-01T00:00:00Z", "--json", conn=conn)))
    assert summary["sent"] == 3 and len(summary["sequence_numbers"]) == 3
    assert summary["scheduled_enqueue_time_utc"].startswith("2100-01-01T00:00:00")
    counts = servicebus_emulator.counts(servicebus_queue)
    assert counts["scheduled"] == 3 and counts["active"] == 0
    peeked = lines(ok(sb("peek", servicebus_queue, "--json", conn=conn)))
    assert [p["state"] for p in peeked] == ["scheduled"] * 3


@pytest.mark.servicebus_queue(requires_session=True)
def test_sessions(conn, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "in-a", "--session-id", "a", conn=conn))
    ok(sb("send", servicebus_queue, "--body", "in-b", "--session-id", "b", conn=conn))
    (m,) = lines(ok(sb("receive", servicebus_queue, "--session-id", "b", "--json", conn=conn)))
    assert (m["session_id"], m["body"]) == ("b", "in-b")
    (p,) = lines(ok(sb("peek", servicebus_queue, "--session-id", "a", "--json", conn=conn)))
    assert p["body"] == "in-a"
    (r,) = lines(ok(sb("purge", servicebus_queue, "--session-id", "a", "--wait", "0.5", "--json", conn=conn)))
    assert r["purged"] == 1


@pytest.mark.servicebus_queue(requires_session=True)
def test_next_available_session_and_the_sessions_hint(conn, servicebus_emulator, servicebus_queue):
    r = sb("receive", servicebus_queue, "--wait", "1", conn=conn)
    assert r.returncode == 1 and "hint: the entity requires sessions" in r.stderr
    r = sb("send", servicebus_queue, "--body", "x", "--session-id", "*", conn=conn)
    assert r.returncode == 2
    r = ok(sb("receive", servicebus_queue, "--session-id", "*", "--wait", "1", conn=conn))
    assert r.stdout == "" and "no message" in r.stderr, "no session: nothing to receive, not an error"
    for session in ("s1", "s2", "s3"):
        ok(sb("send", servicebus_queue, "--body", session, "--count", "2", "--session-id", session, conn=conn))
    (m,) = lines(ok(sb("receive", servicebus_queue, "--session-id", "*", "--json", conn=conn)))
    assert m["session_id"] in ("s1", "s2", "s3") and m["body"] == m["session_id"]
    peeked = lines(ok(sb("peek", servicebus_queue, "--session-id", "*", "--json", conn=conn)))
    assert peeked and len({p["session_id"] for p in peeked}) == 1
    (r,) = lines(ok(sb("purge", servicebus_queue, "--session-id", "*", "--wait", "1", "--json", conn=conn)))
    assert r["purged"] == 5
    assert servicebus_emulator.counts(servicebus_queue)["total"] == 0


def test_peek_lock_abandon_then_complete(conn, servicebus_emulator, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "x", conn=conn))
    (m,) = lines(ok(sb("receive", servicebus_queue, "--peek-lock", "--abandon", "--json", conn=conn)))
    assert m["settlement"] == "abandon" and m["delivery_count"] == 0
    assert servicebus_emulator.counts(servicebus_queue)["active"] == 1
    (m,) = lines(ok(sb("receive", servicebus_queue, "--peek-lock", "--complete", "--json", conn=conn)))
    assert m["delivery_count"] == 1, "the abandon counted"
    assert servicebus_emulator.counts(servicebus_queue)["total"] == 0


def test_a_closed_pipe_stops_quietly_and_peek_lock_loses_nothing(conn, servicebus_emulator, servicebus_queue):
    # 50 x 4 KiB of output is more than a pipe holds (64 KiB), so the CLI
    # cannot have written everything before the reader goes away
    ok(sb("send", servicebus_queue, "--body", "x" * 4096, "--count", "50", conn=conn))
    env = dict(os.environ, **{ENV: conn})
    proc = subprocess.Popen([sys.executable, "-m", "servicebus", "receive", servicebus_queue, "--count", "50",
                             "--peek-lock", "--complete"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    assert proc.wait(60) == 141
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert first.startswith(b"#") and stderr == ""
    counts = servicebus_emulator.counts(servicebus_queue)
    assert counts["total"] >= 1, "the messages that were not written out stay"
    assert counts["locked"] == 0, "and are unlocked at once, not when their locks expire"


def test_subscription_path(conn, servicebus_topic):
    ok(sb("send", servicebus_topic, "--body", "to-topic", conn=conn))
    path = "%s/subscriptions/%s" % (servicebus_topic, servicebus_topic.subscription)
    (m,) = lines(ok(sb("receive", path, "--json", conn=conn)))
    assert m["body"] == "to-topic" and m["entity"] == path


# -- peek, dead letters, purge -----------------------------------------------------


def test_peek_from_and_count_leaves_messages(conn, servicebus_emulator, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "p", "--count", "30", conn=conn))
    everything = lines(ok(sb("peek", servicebus_queue, "--count", "100", "--json", conn=conn)))
    assert len(everything) == 30
    seqs = [m["sequence_number"] for m in everything]
    some = lines(ok(sb("peek", servicebus_queue, "--from", str(seqs[10]), "--count", "5", "--json", conn=conn)))
    assert [m["sequence_number"] for m in some] == seqs[10:15]
    assert len(lines(ok(sb("peek", servicebus_queue, "--json", conn=conn)))) == 10, "default count is 10"
    assert servicebus_emulator.counts(servicebus_queue)["active"] == 30


def test_dead_letter_then_resubmit_keeps_properties(conn, servicebus_emulator, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "poison", "--count", "3", "--property", "tenant=t1",
          "--message-id", "same-id", conn=conn))
    dead = lines(ok(sb("receive", servicebus_queue, "--count", "3", "--peek-lock", "--dead-letter", "--json",
                       conn=conn)))
    assert len(dead) == 3
    assert servicebus_emulator.counts(servicebus_queue)["dead_lettered"] == 3
    (in_dlq, *_) = lines(ok(sb("peek", servicebus_queue, "--dlq", "--json", conn=conn)))
    assert in_dlq["entity"] == servicebus_queue + "/$DeadLetterQueue"
    assert in_dlq["application_properties"]["tenant"] == "t1"

    moved = lines(ok(sb("dlq", "resubmit", servicebus_queue, "--count", "2", "--json", conn=conn)))
    assert len(moved) == 2 and all(m["to"] == servicebus_queue for m in moved)
    counts = servicebus_emulator.counts(servicebus_queue)
    assert (counts["active"], counts["dead_lettered"]) == (2, 1)
    r = ok(sb("dlq", "resubmit", servicebus_queue, "--wait", "0.5", conn=conn))
    assert "resubmitted 1 message(s)" in r.stdout

    back = lines(ok(sb("receive", servicebus_queue, "--count", "3", "--json", conn=conn)))
    assert len(back) == 3
    for m in back:
        assert m["body"] == "poison" and m["message_id"] == "same-id"
        assert m["application_properties"] == {"tenant": "t1"}, "dead-letter properties are dropped, others kept"
        assert m["dead_letter_reason"] is None


def test_receive_from_the_dlq(conn, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "d", conn=conn))
    ok(sb("receive", servicebus_queue, "--peek-lock", "--dead-letter", conn=conn))
    (m,) = lines(ok(sb("receive", servicebus_queue, "--dlq", "--json", conn=conn)))
    assert m["dead_letter_reason"] == "servicebus-cli"


def test_resubmit_a_subscription_to_its_topic(conn, servicebus_emulator, servicebus_topic):
    sub_path = servicebus_topic.subscription_path()
    ok(sb("send", servicebus_topic, "--body", "t", conn=conn))
    ok(sb("receive", sub_path, "--peek-lock", "--dead-letter", conn=conn))
    r = ok(sb("dlq", "resubmit", sub_path, "--wait", "0.5", conn=conn))
    assert "to %s" % servicebus_topic in r.stdout
    assert servicebus_emulator.counts(sub_path)["active"] == 1


def test_purge(conn, servicebus_emulator, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "x", "--count", "2500", conn=conn))
    (r,) = lines(ok(sb("purge", servicebus_queue, "--json", conn=conn)))
    assert r == {"entity": servicebus_queue, "purged": 2500}
    assert servicebus_emulator.counts(servicebus_queue)["total"] == 0
    r = ok(sb("purge", servicebus_queue, "--wait", "0.5", conn=conn))
    assert r.stdout.strip() == "purged 0 message(s) from %s" % servicebus_queue


def test_purge_the_dlq(conn, servicebus_emulator, servicebus_queue):
    ok(sb("send", servicebus_queue, "--body", "x", "--count", "2", conn=conn))
    ok(sb("receive", servicebus_queue, "--count", "2", "--peek-lock", "--dead-letter", conn=conn))
    (r,) = lines(ok(sb("purge", servicebus_queue, "--dlq", "--json", conn=conn)))
    assert r["purged"] == 2 and servicebus_emulator.counts(servicebus_queue)["dead_lettered"] == 0


# -- progress ---------------------------------------------------------------------


def test_progress_bar_on_a_terminal_only(conn, servicebus_queue):
    plain = ok(sb("send", servicebus_queue, "--body", "x", "--count", "500", conn=conn))
    assert "\r" not in plain.stderr and plain.stdout.strip() == "sent 500 message(s) to %s" % servicebus_queue
    master, slave = pty.openpty()
    env = dict(os.environ, **{ENV: conn})
    proc = subprocess.Popen([sys.executable, "-m", "servicebus", "purge", servicebus_queue],
                            stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
    os.close(slave)
    out = b""
    try:
        while True:  # read while it writes: a full pty would block it
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            out += chunk
        stdout = proc.stdout.read()
        r = subprocess.CompletedProcess(proc.args, proc.wait(60), stdout, None)
    finally:
        os.close(master)
        proc.stdout.close()
    assert r.returncode == 0
    assert b"\rpurge " in out and b"500" in out and b"msg/s" in out
    assert r.stdout.strip() == "purged 500 message(s) from %s" % servicebus_queue


# -- the emulator command -----------------------------------------------------------


def test_emulator_command_runs_until_sigterm(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "cli-q"}]}]}}')
    proc = subprocess.Popen([sys.executable, "-m", "servicebus", "emulator", "--config", str(config),
                             "--amqp-port", "0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["ready"] and info["control"] and "UseDevelopmentEmulator=true" in info["connection_string"]
        ok(sb("send", "cli-q", "--body", "via the cli emulator", conn=info["connection_string"]))
        (m,) = lines(ok(sb("receive", "cli-q", "--json", conn=info["connection_string"])))
        assert m["body"] == "via the cli emulator"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_emulator_command_default_config_and_plain_output():
    proc = subprocess.Popen([sys.executable, "-m", "servicebus", "emulator", "--amqp-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert "running" in first and ENV in second
        conn = second.split("=", 1)[1].strip().strip("'")
        ok(sb("send", "queue.1", "--body", "x", conn=conn))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_emulator_command_killed_takes_the_emulator_with_it():
    from test_testing_emulator import _gone_within

    proc = subprocess.Popen([sys.executable, "-m", "servicebus", "emulator", "--amqp-port", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["ready"]
        try:
            with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
                (child,) = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pytest.skip("the kernel does not list children in /proc")
        proc.kill()  # SIGKILL: no chance to stop the emulator itself
        proc.wait(10)
        assert _gone_within(child, 10), "the emulator outlived the killed command"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_emulator_command_bad_config_exits_2_with_the_reason(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text('{"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "q", '
                      '"Properties": {"MaxDeliveryCount": "many"}}]}]}}')
    r = sb("emulator", "--config", str(config), "--amqp-port", "0")
    assert r.returncode == 2 and "MaxDeliveryCount" in r.stderr


def test_emulator_command_without_a_binary_exits_1():
    r = sb("emulator", "--binary", "/no/such/sbus-emulator")
    assert r.returncode == 1 and "/no/such/sbus-emulator" in r.stderr
