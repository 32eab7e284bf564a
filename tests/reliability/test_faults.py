"""Broker hiccups: forced detaches, dropped connections, throttling, errors
that must not be retried, lost locks, and lock renewal while user code is
slow. Each test drives the emulator's control surface (docs/emulator.md,
"Control surface") and checks what reaches the user: nothing for what the
engine must absorb, the documented exception for the rest.
"""

import asyncio

import pytest

from conftest import relayed

from servicebus import Message
from servicebus.aio import AutoLockRenew, ServiceBusClient
from servicebus.exceptions import (
    MessageLockExpired,
    MessageSizeExceededError,
    MessagingEntityDisabledError,
    ServiceBusError,
    ServiceBusServerBusyError,
    SessionLockExpired,
)

FAST_RETRY = {"retry_total": 3, "retry_backoff_factor": 0.05, "retry_backoff_max": 0.2}


@pytest.fixture(autouse=True)
async def _reset_faults(emu):  # type: ignore[no-untyped-def]
    await emu.aio.reset_faults()
    yield
    await emu.aio.reset_faults()


def body_bytes(m) -> bytes:  # type: ignore[no-untyped-def]
    b = m.body
    return bytes(b) if isinstance(b, (bytes, bytearray, memoryview)) else b"".join(b)


async def _receive_one(receiver, timeout: float = 10):  # type: ignore[no-untyped-def]
    got = []
    for _ in range(int(timeout)):
        got = await receiver.receive_messages(max_message_count=1, max_wait_time=1)
        if got:
            return got[0]
    raise AssertionError("no message arrived in %ss" % timeout)


@pytest.mark.parametrize("condition", ["amqp:link:detach-forced", "com.microsoft:timeout"])
async def test_forced_detach_of_idle_links_is_invisible(emu, queue, condition) -> None:  # type: ignore[no-untyped-def]
    """The service detaches idle links (after 10 minutes); the next send and receive just work."""
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"warm-up"))
            await (await _receive_one(receiver)).complete()
            await emu.aio.detach(queue, condition)  # both links of the queue
            await asyncio.sleep(0.2)  # the detach arrives while both are idle
            await sender.send_messages(Message(b"after detach"))
            m = await _receive_one(receiver)
            assert body_bytes(m) == b"after detach"
            await m.complete()


async def test_detach_of_the_management_link_is_invisible(emu, queue) -> None:  # type: ignore[no-untyped-def]
    """Regression: a $management pair detached with a retriable condition waited in BACKOFF until
    the request's 60 s timeout (core/src/conn.c: its retry_at was not part of the next deadline)."""
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages([Message(b"p1"), Message(b"p2")])
            assert len(await receiver.peek_messages(1)) == 1  # peeks continue where the last ended
            await emu.aio.detach(queue + "/$management")
            await asyncio.sleep(0.2)
            # bounded well below the 60 s operation timeout: a request sent on
            # the detached link and left to time out would be a hang to the user
            assert len(await asyncio.wait_for(receiver.peek_messages(1), 15)) == 1


async def test_dropped_connection_is_invisible_to_the_next_operations(emu, queue) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"1"))
            await (await _receive_one(receiver)).complete()
            await emu.aio.drop_connections()
            await asyncio.sleep(0.2)
            await sender.send_messages(Message(b"2"))
            await (await _receive_one(receiver)).complete()


async def _remaining(emu) -> int:  # type: ignore[no-untyped-def]
    state = await emu.aio.faults()
    return int(state["fail_next"])


async def test_server_busy_send_is_retried_within_retry_total(emu, queue) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emu.connection_string, **FAST_RETRY) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"warm-up"))
            await emu.aio.fail_next(2, "send", "com.microsoft:server-busy")
            await sender.send_messages(Message(b"busy twice"))  # 2 refusals, then accepted
            assert await _remaining(emu) == 0
    counts = await emu.aio.counts(queue)
    assert counts["active"] == 2  # warm-up + one copy, not three


async def test_server_busy_beyond_retry_total_surfaces_as_server_busy(emu, queue) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emu.connection_string, **FAST_RETRY) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"warm-up"))
            await emu.aio.fail_next(10, "send", "com.microsoft:server-busy")
            with pytest.raises(ServiceBusServerBusyError) as info:
                await sender.send_messages(Message(b"never"))
            assert info.value.retriable
            assert info.value.condition == "com.microsoft:server-busy"
            # one attempt plus retry_total retries, no more
            assert await _remaining(emu) == 10 - (1 + FAST_RETRY["retry_total"])


@pytest.mark.parametrize("op", ["receive", "mgmt"])
async def test_server_busy_on_attach_and_management_is_retried(emu, queue, op) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emu.connection_string, **FAST_RETRY) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"x"))
        await emu.aio.fail_next(2, op, "com.microsoft:server-busy")
        async with client.get_queue_receiver(queue) as receiver:
            if op == "mgmt":
                assert len(await receiver.peek_messages(1)) == 1
            else:
                await (await _receive_one(receiver)).complete()
        assert await _remaining(emu) == 0


@pytest.mark.parametrize(
    "condition,exc",
    [
        ("amqp:link:message-size-exceeded", MessageSizeExceededError),
        ("com.microsoft:entity-disabled", MessagingEntityDisabledError),
    ],
)
async def test_non_retriable_send_errors_surface_at_once(emu, queue, condition, exc) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emu.connection_string, **FAST_RETRY) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"warm-up"))
            await emu.aio.fail_next(5, "send", condition)
            with pytest.raises(exc) as info:
                await sender.send_messages(Message(b"refused"))
            assert not info.value.retriable
            assert info.value.condition == condition
            assert await _remaining(emu) == 4  # exactly one attempt


async def test_lock_expired_by_the_clock_fails_settlement(emu, make_queue) -> None:  # type: ignore[no-untyped-def]
    queue = make_queue(lock_duration=30)
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"x"))
            m = await _receive_one(receiver)
            await emu.aio.advance(31)
            with pytest.raises(MessageLockExpired):
                await m.complete()
            again = await _receive_one(receiver)  # it is back, delivery count + 1
            assert again.delivery_count == 1
            await again.complete()


async def test_lock_on_a_cut_link_fails_settlement_and_the_message_comes_back(emu, relay, make_queue) -> None:  # type: ignore[no-untyped-def]
    queue = make_queue(lock_duration=30)
    conn = relayed(emu.connection_string, relay.port)
    async with ServiceBusClient.from_connection_string(conn) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"x"))
            m = await _receive_one(receiver)
            assert relay.cut() >= 1
            with pytest.raises(MessageLockExpired):
                await m.complete()
            await emu.aio.advance(31)  # the lock held by the dead link expires
            again = await _receive_one(receiver)  # same receiver object, reconnected by itself
            assert again.message_id == m.message_id and again.delivery_count == 1
            await again.complete()


async def test_session_lock_lost_raises_session_lock_expired(emu, make_queue) -> None:  # type: ignore[no-untyped-def]
    queue = make_queue(requires_session=True, lock_duration=30)
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([Message(b"a", session_id="s1"), Message(b"b", session_id="s1")])
        async with client.get_queue_session_receiver(queue, session_id="s1") as receiver:
            m = await _receive_one(receiver)
            await m.complete()
            await emu.aio.advance(31)
            await asyncio.sleep(0.3)
            with pytest.raises(SessionLockExpired):
                for _ in range(5):
                    m = await _receive_one(receiver, timeout=2)
                    await m.complete()


async def test_auto_lock_renew_holds_the_lock_while_user_code_is_slow(fresh_emu) -> None:  # type: ignore[no-untyped-def]
    # a fresh emulator: the shared one's clock was moved forward by other
    # tests, and renewal is scheduled from locked-until against local time
    emu = fresh_emu
    queue = await emu.aio.create_queue(lock_duration=2)
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"slow"))
            m = await _receive_one(receiver)
            async with AutoLockRenew() as renewer:
                renewer.register(m, timeout=30)
                # the user's slow work: 1.75 lock durations, so that the lock
                # survives only if it is renewed at least twice (~1 s, ~2 s)
                await asyncio.sleep(3.5)
                await m.complete()  # still ours
                assert m.auto_renew_error is None
            counts = await emu.aio.counts(queue)
            assert counts["total"] == 0


async def test_without_auto_lock_renew_slow_user_code_loses_the_lock(emu, make_queue) -> None:  # type: ignore[no-untyped-def]
    queue = make_queue(lock_duration=2)
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"slow"))
            m = await _receive_one(receiver)
            # the user's slow work, as the broker sees it: 3 s pass on its
            # clock (POST /clock) and nobody renews
            await emu.aio.advance(3)
            with pytest.raises(MessageLockExpired):
                await m.complete()


async def test_settle_refused_with_lock_lost_is_message_lock_expired(emu, queue) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emu.connection_string, **FAST_RETRY) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"x"))
            m = await _receive_one(receiver)
            await emu.aio.fail_next(1, "settle", "com.microsoft:message-lock-lost")
            with pytest.raises(MessageLockExpired):
                await m.complete()
            assert await _remaining(emu) == 0


async def test_errors_carry_their_condition(emu, queue) -> None:  # type: ignore[no-untyped-def]
    """Whatever surfaces is a ServiceBusError with the AMQP condition verbatim."""
    async with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"warm-up"))
            await emu.aio.fail_next(1, "send", "com.microsoft:server-busy")
            with pytest.raises(ServiceBusError) as info:
                await sender.send_messages(Message(b"x"))
            assert info.value.condition == "com.microsoft:server-busy"
