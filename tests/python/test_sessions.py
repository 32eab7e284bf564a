"""Session receivers, ServiceBusSession state and lock."""

import datetime
import uuid

import pytest

from servicebus import NEXT_AVAILABLE_SESSION, Message
from servicebus.aio import ServiceBusClient, ServiceBusSession, ServiceBusSessionReceiver
from servicebus.exceptions import NoActiveSession, OperationTimeoutError

QUEUE = "session-queue"


async def test_session_receiver_gets_its_session_in_order(connection_string: str) -> None:
    sid = "s-" + uuid.uuid4().hex[:8]
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages([Message("m%d" % i, session_id=sid) for i in range(3)])
        async with client.get_queue_session_receiver(QUEUE, session_id=sid) as receiver:
            assert isinstance(receiver, ServiceBusSessionReceiver)
            session = receiver.session
            assert isinstance(session, ServiceBusSession)
            assert session.session_id == sid
            assert session.locked_until_utc > datetime.datetime.now(datetime.timezone.utc)
            got = []
            while len(got) < 3:
                batch = await receiver.receive_messages(max_message_count=3, max_wait_time=5)
                assert batch
                got += batch
            assert [m.body for m in got] == [b"m0", b"m1", b"m2"]
            assert all(m.session_id == sid for m in got)
            with pytest.raises(TypeError):
                await got[0].renew_lock()
            for m in got:
                await m.complete()

            assert await session.get_state() is None
            await session.set_state("START")
            assert await session.get_state() == "START"
            await session.set_state(b"\x00bytes")
            assert (await receiver.session.get_state()) == "\x00bytes"
            await session.set_state(None)
            before = session.locked_until_utc
            after = await session.renew_lock()
            assert isinstance(after, datetime.datetime) and after >= before


async def test_next_available_session(connection_string: str) -> None:
    sid = "n-" + uuid.uuid4().hex[:8]
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages(Message(b"hi", session_id=sid))
        async with client.get_queue_receiver(QUEUE, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as receiver:
            assert receiver.session.session_id is not None
            got = await receiver.receive_messages(max_wait_time=5)
            for m in got:
                await m.complete()
            assert got and got[0].session_id == receiver.session.session_id


async def test_no_active_session(connection_string: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        # drain every session first
        for _ in range(50):
            try:
                async with client.get_queue_session_receiver(QUEUE, max_wait_time=1) as r:
                    got = await r.receive_messages(max_message_count=100, max_wait_time=0.5)
                    for m in got:
                        await m.complete()
            except OperationTimeoutError as exc:
                assert isinstance(exc, NoActiveSession)
                break


async def test_a_locked_session_cannot_be_taken_by_another_receiver(connection_string: str) -> None:
    from servicebus.exceptions import SessionCannotBeLockedError

    sid = "busy-" + uuid.uuid4().hex[:8]
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages(Message(b"x", session_id=sid))
        async with client.get_queue_session_receiver(QUEUE, session_id=sid) as first:
            with pytest.raises(SessionCannotBeLockedError):
                async with client.get_queue_session_receiver(QUEUE, session_id=sid):
                    pass
            (m,) = await first.receive_messages(max_wait_time=5)
            await m.complete()
