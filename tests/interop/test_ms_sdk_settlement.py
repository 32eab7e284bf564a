"""Peek-lock settlement: abandon, defer, dead-letter, delivery counts, lock expiry and renewal."""
import asyncio
import datetime

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import MessageLockLostError, MessageNotFoundError


async def send(client, queue, *bodies, **kw):
    async with client.get_queue_sender(queue) as s:
        await s.send_messages([ServiceBusMessage(b, **kw) for b in bodies])


async def receive_one(r, wait=5):
    msgs = await r.receive_messages(max_message_count=1, max_wait_time=wait)
    assert len(msgs) == 1, "expected one message"
    return msgs[0]


async def test_abandon_redelivers_with_delivery_count_plus_one(client, queue):
    async with client:
        await send(client, queue, "a")
        async with client.get_queue_receiver(queue) as r:
            m = await receive_one(r)
            assert m.delivery_count == 0
            await r.abandon_message(m)
            m2 = await receive_one(r)
            assert str(m2) == "a"
            assert m2.delivery_count == 1
            assert m2.sequence_number == m.sequence_number
            assert m2.lock_token != m.lock_token
            await r.complete_message(m2)


async def test_defer_then_receive_by_sequence_number(client, queue, emulator):
    async with client:
        await send(client, queue, "d1", "d2")
        async with client.get_queue_receiver(queue) as r:
            m = await receive_one(r)
            seq = m.sequence_number
            await r.defer_message(m)
            assert emulator.wait_count(queue, "deferred", 1) == 1
            nxt = await receive_one(r)
            assert str(nxt) == "d2"
            await r.complete_message(nxt)
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []
            # Python 7.8.2 peeks from the last received sequence number unless told otherwise
            peeked = await r.peek_messages(max_message_count=5, sequence_number=1)
            assert [(p.sequence_number, p.state.value) for p in peeked] == [(seq, 1)]
            deferred = await r.receive_deferred_messages([seq])
            assert [str(d) for d in deferred] == ["d1"]
            assert deferred[0].lock_token is not None
            await r.complete_message(deferred[0])
        assert emulator.wait_count(queue, "total", 0) == 0


async def test_receive_deferred_of_a_non_deferred_message_fails(emulator, queue):
    from azure.servicebus.aio import ServiceBusClient
    client = ServiceBusClient.from_connection_string(emulator.conn_str, connection_verify=emulator.ca, retry_total=0)
    async with client:
        await send(client, queue, "x")
        async with client.get_queue_receiver(queue) as r:
            with pytest.raises(MessageNotFoundError):
                await r.receive_deferred_messages([1])


async def test_dead_letter_with_reason_and_description(client, queue, emulator):
    async with client:
        await send(client, queue, "bad")
        async with client.get_queue_receiver(queue) as r:
            m = await receive_one(r)
            await r.dead_letter_message(m, reason="Poison", error_description="cannot parse")
        assert emulator.wait_count(queue, "dead_lettered", 1) == 1
        async with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            d = await receive_one(dlq)
            assert str(d) == "bad"
            assert d.dead_letter_reason == "Poison"
            assert d.dead_letter_error_description == "cannot parse"
            assert d.sequence_number == m.sequence_number
            await dlq.complete_message(d)
        assert emulator.wait_count(queue, "dead_lettered", 0) == 0


async def test_max_delivery_count_moves_to_dead_letter_queue(client, emulator):
    queue = emulator.create_queue(MaxDeliveryCount=2, LockDuration="PT30S")
    async with client:
        await send(client, queue, "poison")
        async with client.get_queue_receiver(queue) as r:
            for expected in (0, 1):
                m = await receive_one(r)
                assert m.delivery_count == expected
                await r.abandon_message(m)
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []
        async with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            d = await receive_one(dlq)
            assert d.dead_letter_reason == "MaxDeliveryCountExceeded"
            assert "2 delivery attempts" in d.dead_letter_error_description
            assert d.delivery_count == 2


async def test_lock_expiry_redelivers_and_old_lock_is_lost(client, queue, emulator):
    async with client:
        await send(client, queue, "slow")
        async with client.get_queue_receiver(queue) as r:
            m = await receive_one(r)
            assert emulator.entities()[queue]["locked"] == 1
            emulator.advance(31)
            assert emulator.entities()[queue]["locked"] == 0
            m2 = await receive_one(r)
            assert str(m2) == "slow"
            assert m2.delivery_count == 1
            # uamqp settles without waiting for the broker's answer, so the lost lock is
            # observed through the management node (410 message-lock-lost).
            with pytest.raises(MessageLockLostError):
                await r.renew_message_lock(m)
            await r.complete_message(m2)
        assert emulator.wait_count(queue, "total", 0) == 0


async def test_renew_lock_extends_the_lock(client, queue, emulator):
    async with client:
        await send(client, queue, "renew")
        async with client.get_queue_receiver(queue) as r:
            m = await receive_one(r)
            first = m.locked_until_utc
            emulator.advance(20)
            new = await r.renew_message_lock(m)
            # a whole LockDuration (30 s) from now on the client's clock (wire times leave out
            # the skew of POST /clock), so not earlier than the first lock
            now = datetime.datetime.now(datetime.timezone.utc)
            assert new >= first and 25 < (new - now).total_seconds() <= 30
            emulator.advance(20)
            assert emulator.entities()[queue]["locked"] == 1
            await r.complete_message(m)
            assert emulator.wait_count(queue, "total", 0) == 0


async def test_release_from_prefetch_does_not_count(client, queue, emulator):
    async with client:
        await send(client, queue, "r1", "r2", "r3")
        async with client.get_queue_receiver(queue) as r:
            m = await receive_one(r)
            await r.complete_message(m)
            await asyncio.sleep(0.5)
        async with client.get_queue_receiver(queue) as r:
            got = []
            while len(got) < 2:
                msgs = await r.receive_messages(max_message_count=2, max_wait_time=5)
                assert msgs
                for x in msgs:
                    got.append((str(x), x.delivery_count))
                    await r.complete_message(x)
            assert got == [("r2", 0), ("r3", 0)]
