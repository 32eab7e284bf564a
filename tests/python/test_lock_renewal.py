"""Message and session locks: renew_lock, expiry, AutoLockRenew / AutoLockRenewer.

Uses queues with a 3-second lock, created through the emulator's control
surface, so that expiry and renewal happen within seconds of real time.
"""

import asyncio
import datetime
import uuid

import pytest

from servicebus import Message
from servicebus.aio import AutoLockRenew, AutoLockRenewer, ServiceBusClient
from servicebus.exceptions import MessageLockExpired, SessionLockExpired

LOCK_S = 3


@pytest.fixture
async def short_lock_queue(emulator) -> str:  # type: ignore[no-untyped-def]
    name = "short-lock"
    status, _ = await emulator.control(
        "POST", "/entities", {"Queue": {"Name": name, "Properties": {"LockDuration": "PT%dS" % LOCK_S}}}
    )
    assert status in (201, 409), status
    from conftest import drain_queue

    await drain_queue(emulator.connection_string, name)
    return name


@pytest.fixture
async def short_lock_session_queue(emulator) -> str:  # type: ignore[no-untyped-def]
    name = "short-lock-sessions"
    status, _ = await emulator.control(
        "POST",
        "/entities",
        {"Queue": {"Name": name, "Properties": {"LockDuration": "PT%dS" % LOCK_S, "RequiresSession": True}}},
    )
    assert status in (201, 409), status
    return name


async def _one(client: ServiceBusClient, queue: str, body: bytes = b"lock"):  # type: ignore[no-untyped-def]
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(Message(body))


async def test_renew_lock_moves_locked_until(connection_string: str, short_lock_queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _one(client, short_lock_queue)
        async with client.get_queue_receiver(short_lock_queue) as receiver:
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            first = msg.locked_until_utc
            await asyncio.sleep(1)
            renewed = await msg.renew_lock()
            assert isinstance(renewed, datetime.datetime)
            assert renewed > first
            assert msg.locked_until_utc == renewed
            again = await receiver.renew_message_lock(msg)
            assert again >= renewed
            await msg.complete()


async def test_settling_after_the_lock_expired_raises_message_lock_expired(
    connection_string: str, short_lock_queue: str
) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _one(client, short_lock_queue)
        async with client.get_queue_receiver(short_lock_queue) as receiver:
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            await asyncio.sleep(LOCK_S + 1)
            with pytest.raises(MessageLockExpired):
                await msg.renew_lock()
            with pytest.raises(MessageLockExpired):
                await msg.complete()
            (again,) = await receiver.receive_messages(max_wait_time=5)
            assert again.delivery_count == msg.delivery_count + 1
            await again.complete()


async def test_auto_lock_renew_keeps_the_message_locked(connection_string: str, short_lock_queue: str) -> None:
    failures = []

    async def on_failure(renewable, error) -> None:  # type: ignore[no-untyped-def]
        failures.append(error)

    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _one(client, short_lock_queue)
        async with client.get_queue_receiver(short_lock_queue) as receiver:
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            async with AutoLockRenew() as renewer:
                renewer.register(msg, timeout=30, on_lock_renew_failure=on_failure)
                await asyncio.sleep(2 * LOCK_S + 1)  # user code awaits something else
                await msg.complete()
    assert failures == []
    assert msg.auto_renew_error is None


async def test_auto_lock_renewer_7x_spelling(connection_string: str, short_lock_queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _one(client, short_lock_queue)
        async with client.get_queue_receiver(short_lock_queue) as receiver:
            renewer = AutoLockRenewer(max_lock_renewal_duration=30)
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            renewer.register(receiver, msg)
            await asyncio.sleep(LOCK_S + 1.5)
            await receiver.complete_message(msg)
            await renewer.close()


async def test_auto_lock_renew_failure_calls_back(connection_string: str, short_lock_queue: str) -> None:
    called = asyncio.Event()
    seen = []

    async def on_failure(renewable, error) -> None:  # type: ignore[no-untyped-def]
        seen.append((renewable, error))
        called.set()

    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _one(client, short_lock_queue)
        async with client.get_queue_receiver(short_lock_queue) as receiver:
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            # another receiver takes the message once our lock lapses: renewals then fail
            await asyncio.sleep(LOCK_S + 0.5)
            async with client.get_queue_receiver(short_lock_queue) as thief:
                (stolen,) = await thief.receive_messages(max_wait_time=5)
                renewer = AutoLockRenew()
                renewer.register(msg, timeout=30, on_lock_renew_failure=on_failure)
                await asyncio.wait_for(called.wait(), 10)
                await stolen.complete()
                await renewer.close()
    assert seen[0][0] is msg
    assert isinstance(seen[0][1], MessageLockExpired)
    assert msg.auto_renew_error is seen[0][1]


async def test_auto_lock_renew_session(connection_string: str, short_lock_session_queue: str) -> None:
    sid = "lock-" + uuid.uuid4().hex[:6]
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(short_lock_session_queue) as sender:
            await sender.send_messages(Message(b"s", session_id=sid))
        async with client.get_queue_session_receiver(short_lock_session_queue, session_id=sid) as receiver:
            renewer = AutoLockRenew()
            renewer.register(receiver.session, timeout=30)
            await asyncio.sleep(2 * LOCK_S + 1)
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            await msg.complete()  # the session lock is still ours
            assert receiver.session.locked_until_utc > datetime.datetime.now(datetime.timezone.utc)
            await renewer.close()


async def test_session_lock_expiry(connection_string: str, short_lock_session_queue: str) -> None:
    sid = "exp-" + uuid.uuid4().hex[:6]
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(short_lock_session_queue) as sender:
            await sender.send_messages(Message(b"e", session_id=sid))
        async with client.get_queue_session_receiver(short_lock_session_queue, session_id=sid) as receiver:
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            await asyncio.sleep(LOCK_S + 1)
            with pytest.raises((SessionLockExpired, MessageLockExpired)):
                await msg.complete()


async def test_receiver_auto_lock_renewer_keyword(connection_string: str, short_lock_queue: str) -> None:
    """7.x: get_queue_receiver(..., auto_lock_renewer=AutoLockRenewer()) registers each message."""
    renewer = AutoLockRenewer(max_lock_renewal_duration=30)
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _one(client, short_lock_queue)
        async with client.get_queue_receiver(short_lock_queue, auto_lock_renewer=renewer) as receiver:
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            await asyncio.sleep(LOCK_S + 1.5)
            await msg.complete()  # still locked: renewed in the background
    await renewer.close()


async def test_session_receiver_auto_lock_renewer_keyword(
    connection_string: str, short_lock_session_queue: str
) -> None:
    sid = "kw-" + uuid.uuid4().hex[:6]
    renewer = AutoLockRenewer(max_lock_renewal_duration=30)
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(short_lock_session_queue) as sender:
            await sender.send_messages(Message(b"k", session_id=sid))
        async with client.get_queue_receiver(
            short_lock_session_queue, session_id=sid, auto_lock_renewer=renewer
        ) as receiver:
            await asyncio.sleep(LOCK_S + 1.5)
            (msg,) = await receiver.receive_messages(max_wait_time=5)
            await msg.complete()
    await renewer.close()


async def test_a_long_running_renewer_does_not_grow(connection_string: str, queue: str) -> None:
    renewer = AutoLockRenewer(max_lock_renewal_duration=30)
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([Message(b"r%d" % i) for i in range(300)])
        async with client.get_queue_receiver(queue, auto_lock_renewer=renewer, prefetch_count=50) as receiver:
            done = 0
            while done < 300:
                got = await receiver.receive_messages(max_message_count=50, max_wait_time=5)
                assert got
                for m in got:
                    await m.complete()
                done += len(got)
            assert len(renewer._registered) < 200
            assert client._connection._handle.renewal_count == 0
    await renewer.close()
