"""POST /clock and the times on the wire, with Microsoft's SDK.

Moving the emulator clock must look to a client like the broker's timers jumping, while every
timestamp it receives (locked-until, enqueued time, renewals, session locks) and sends
(scheduled enqueue times) stays on its own wall clock. Otherwise the SDK's AutoLockRenewer
plans its renewals against a "now" an hour away and lets locks expire.
"""
import asyncio
import datetime

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import AutoLockRenewer


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


async def test_times_stay_on_the_wall_clock_after_the_clock_moves(client, emulator):
    queue = emulator.create_queue(LockDuration="PT30S")
    emulator.advance(3600)
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("late"))
        async with client.get_queue_receiver(queue) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(msgs) == 1
            m = msgs[0]
            now = utcnow()
            assert abs((m.enqueued_time_utc - now).total_seconds()) < 10
            assert 20 < (m.locked_until_utc - now).total_seconds() <= 31
            emulator.advance(20)  # the broker's lock timer jumps; the client's clock does not
            renewed = await r.renew_message_lock(m)
            assert 20 < (renewed - utcnow()).total_seconds() <= 31
            # to the client the broker's time jumped 20 s: the message now looks 20 s older
            peeked = await r.peek_messages(max_message_count=1, sequence_number=m.sequence_number)
            age = m.enqueued_time_utc - peeked[0].enqueued_time_utc
            assert abs(age.total_seconds() - 20) < 1
            await r.complete_message(m)


async def test_session_lock_times_stay_on_the_wall_clock(client, emulator):
    queue = emulator.create_queue(RequiresSession=True, LockDuration="PT30S")
    emulator.advance(3600)
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("s", session_id="S1"))
        async with client.get_queue_receiver(queue, session_id="S1") as r:
            assert 20 < (r.session.locked_until_utc - utcnow()).total_seconds() <= 31
            await r.session.renew_lock()
            assert 20 < (r.session.locked_until_utc - utcnow()).total_seconds() <= 31
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert abs((msgs[0].enqueued_time_utc - utcnow()).total_seconds()) < 10
            await r.complete_message(msgs[0])


async def test_scheduled_times_from_the_client_are_wall_clock_times(client, emulator):
    queue = emulator.create_queue()
    emulator.advance(3600)
    async with client:
        async with client.get_queue_sender(queue) as s:
            when = utcnow() + datetime.timedelta(seconds=90)
            await s.send_messages(ServiceBusMessage("on send", scheduled_enqueue_time_utc=when))
            await s.schedule_messages(ServiceBusMessage("by operation"), when)
        assert emulator.entities()[queue]["scheduled"] == 2  # not due: 90 s ahead of the client
        emulator.advance(91)
        assert emulator.entities()[queue]["active"] == 2


async def test_auto_lock_renewer_keeps_the_lock_after_the_clock_moved(client, emulator):
    # PT5S: the shortest lock the SDK's renewer handles (it renews at 3/4 of whole seconds left)
    queue = emulator.create_queue(LockDuration="PT5S")
    emulator.advance(3600)
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("held"))
        renewer = AutoLockRenewer(max_lock_renewal_duration=30)
        async with client.get_queue_receiver(queue, auto_lock_renewer=renewer) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(msgs) == 1
            await asyncio.sleep(6)  # longer than the lock: only renewals keep it
            await r.complete_message(msgs[0])
        await renewer.close()
    assert emulator.wait_count(queue, "total", 0) == 0
