"""Messages keep flowing while the connection is cut every 2 seconds.

A sender and a PeekLock receiver, each on its own client, talk to the
emulator through a relay (relay.py) that aborts every connection every two
seconds. The test's code never reconnects, re-creates or retries anything:
sends and receives must not raise; a settlement may fail only because the
message's lock was on a link that was cut (MessageLockExpired), and such a
message comes back once its lock expires. At the end:

- every message sent was received at least once and the queue is empty
  (none lost, none left behind);
- every duplicate is explained: either the same delivery again after its
  settlement failed on a cut link (a redelivery: same sequence number,
  delivery count + 1), or a send retried by the engine after its
  acknowledgement was lost in a cut (two sequence numbers for one message
  id, only in batches during which a cut happened).

Test scale: 3,000 messages (``make test``); ``--full``: 20,000, with the
figures printed for docs/reliability.md.
"""

import asyncio
import collections
import time
from typing import Any, Dict, List, Set, Tuple

import pytest

from conftest import relayed
from relay import Relay

from servicebus import Message
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import MessageLockExpired

CUT_EVERY = 2.0
LOCK = 5  # seconds: messages locked on a cut link come back this soon


async def _scenario(emu, full: bool) -> Dict[str, Any]:  # type: ignore[no-untyped-def]
    n = 20000 if full else 3000
    queue = await emu.aio.create_queue(lock_duration=LOCK, max_delivery_count=100)
    relay = await Relay(("127.0.0.1", emu.amqp_port)).start()
    conn_str = relayed(emu.connection_string, relay.port)
    send_span = max(14.0, n / 500.0)  # spread the sends over 7+ cuts
    batch = 10
    done = asyncio.Event()
    sender_done = asyncio.Event()
    t0 = time.monotonic()

    # message id -> (cut counter before, after) of the send that carried it
    send_windows: Dict[str, Tuple[int, int]] = {}
    send_errors: List[BaseException] = []
    receive_errors: List[BaseException] = []
    # every delivery the user saw: (message id, sequence number, delivery count)
    deliveries: List[Tuple[str, int, int]] = []
    completed: Set[str] = set()
    # sequence number -> settle failures: (exception, cuts when received, cuts when it failed)
    settle_failures: Dict[int, List[Tuple[BaseException, int, int]]] = collections.defaultdict(list)

    async def cutter() -> None:
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), CUT_EVERY)
            except asyncio.TimeoutError:
                relay.cut()

    async def send_all() -> None:
        async with ServiceBusClient.from_connection_string(conn_str) as client:
            async with client.get_queue_sender(queue) as sender:
                for start in range(0, n, batch):
                    ids = [str(i) for i in range(start, min(n, start + batch))]
                    before = relay.cuts
                    try:
                        await sender.send_messages([Message(i, message_id=i) for i in ids])
                    except Exception as exc:  # must not happen: the engine recovers
                        send_errors.append(exc)
                        continue
                    for i in ids:
                        send_windows[i] = (before, relay.cuts)
                    # pace: the sends span send_span seconds
                    ahead = t0 + send_span * (start + batch) / n - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        sender_done.set()

    async def settle(m: Any, cuts_at_receive: int) -> None:
        mid = str(m.message_id)
        try:
            await m.complete()
            completed.add(mid)
        except Exception as exc:
            settle_failures[m.sequence_number].append((exc, cuts_at_receive, relay.cuts))

    async def receive_all() -> None:
        async with ServiceBusClient.from_connection_string(conn_str) as client:
            async with client.get_queue_receiver(queue) as receiver:
                deadline = time.monotonic() + send_span + 120 + (120 if full else 0)
                while time.monotonic() < deadline:
                    # cuts before the receive: a link that dies under these
                    # messages dies in a cut counted after this point
                    cuts = relay.cuts
                    try:
                        msgs = await receiver.receive_messages(max_message_count=50, max_wait_time=1)
                    except Exception as exc:  # must not happen
                        receive_errors.append(exc)
                        await asyncio.sleep(0.2)
                        continue
                    for m in msgs:
                        deliveries.append((str(m.message_id), m.sequence_number, m.delivery_count or 0))
                    await asyncio.gather(*(settle(m, cuts) for m in msgs))
                    if not msgs and sender_done.is_set() and set(send_windows) <= {d[0] for d in deliveries}:
                        counts = await emu.aio.counts(queue)
                        if counts["total"] == 0:
                            return

    cut_task = asyncio.ensure_future(cutter())
    try:
        await asyncio.gather(send_all(), receive_all())
    finally:
        done.set()
        await cut_task
        await relay.stop()
    elapsed = time.monotonic() - t0
    counts = await emu.aio.counts(queue)
    await emu.aio.delete(queue)
    return dict(n=n, elapsed=elapsed, cuts=relay.cuts, send_errors=send_errors, receive_errors=receive_errors,
                deliveries=deliveries, settle_failures=settle_failures, send_windows=send_windows, counts=counts)


@pytest.fixture(scope="module")
def run(emu, request) -> Dict[str, Any]:  # type: ignore[no-untyped-def]
    """The scenario runs once; each test below checks one promise of it."""
    return asyncio.run(_scenario(emu, bool(request.config.getoption("--full"))))


def test_the_connection_was_cut_often(run) -> None:  # type: ignore[no-untyped-def]
    # more consecutive cuts than retry_total + 1: a client that counts each one
    # as a failed attempt gives up during the run
    assert run["cuts"] >= 6, "the test did not cut the connection often enough (%d cuts)" % run["cuts"]


def test_no_message_lost(run) -> None:  # type: ignore[no-untyped-def]
    # every message whose send returned (a send that raised may or may not
    # have been enqueued; test_no_error_reaches_the_user counts those)
    seen = {mid for mid, _, _ in run["deliveries"]}
    assert len(run["send_windows"]) + 10 * len(run["send_errors"]) >= run["n"]
    missing = sorted(set(run["send_windows"]) - seen, key=int)
    assert not missing, "%d messages never received, e.g. %s" % (len(missing), missing[:10])
    counts = run["counts"]
    assert counts["total"] == 0 and counts["dead_lettered"] == 0, counts


def test_every_duplicate_is_explained_by_a_cut(run) -> None:  # type: ignore[no-untyped-def]
    deliveries, settle_failures, send_windows = run["deliveries"], run["settle_failures"], run["send_windows"]

    # Explain every duplicate.
    seqs_of: Dict[str, Set[int]] = collections.defaultdict(set)
    per_seq = collections.Counter()
    for mid, seq, _ in deliveries:
        seqs_of[mid].add(seq)
        per_seq[seq] += 1
    redelivered = [seq for seq, k in per_seq.items() if k > 1]
    for seq in redelivered:
        fails = settle_failures.get(seq, [])
        # each earlier delivery of this sequence number failed to settle ...
        assert len(fails) >= per_seq[seq] - 1, "sequence %d delivered %d times, %d settle failures" % (
            seq, per_seq[seq], len(fails))
        for exc, cuts_rx, cuts_fail in fails:
            # ... because its lock was lost with a cut link
            assert isinstance(exc, MessageLockExpired), repr(exc)
            assert cuts_fail > cuts_rx, "settle failed without a cut: %r" % exc
    double_sends = [mid for mid, s in seqs_of.items() if len(s) > 1]
    for mid in double_sends:
        if mid not in send_windows:
            continue  # its send raised (test_no_error_reaches_the_user); a resend may have landed
        before, after = send_windows[mid]
        assert after > before, "message %s enqueued %d times without a cut during its send" % (mid, len(seqs_of[mid]))
    unexplained_failures = [
        (seq, f) for seq, fs in settle_failures.items() for f in fs if not isinstance(f[0], MessageLockExpired)
    ]
    assert not unexplained_failures, unexplained_failures[:3]

    print(
        "\nFIGURES cut-every-2s: n=%d elapsed=%.1fs cuts=%d deliveries=%d redelivered_after_lock_loss=%d "
        "enqueued_twice=%d settle_failures=%d send_errors=%d receive_errors=%d msg/s=%.0f"
        % (run["n"], run["elapsed"], run["cuts"], len(deliveries), sum(per_seq[s] - 1 for s in redelivered),
           len(double_sends), sum(len(v) for v in settle_failures.values()), len(run["send_errors"]),
           len(run["receive_errors"]), run["n"] / run["elapsed"])
    )


def test_no_error_reaches_the_user(run) -> None:  # type: ignore[no-untyped-def]
    assert not run["send_errors"], "a send raised (the engine should have recovered): %r" % run["send_errors"][:3]
    assert not run["receive_errors"], "a receive raised (the engine should have recovered): %r" % run["receive_errors"][:3]
