"""Interop checklist items (protocol.md §12, §14) not covered elsewhere, with Microsoft's SDK."""
import datetime

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue


async def test_sender_learns_max_message_size_from_the_attach(client, queue):
    """§14.4: the sender sizes batches by the attach reply's max-message-size (Standard: 256 KB)."""
    async with client:
        async with client.get_queue_sender(queue) as s:
            batch = await s.create_message_batch()
            assert batch.max_size_in_bytes == 262144


async def test_entity_names_are_case_insensitive(client, emulator):
    """§12.6, §14.13: `amqps://host/QUEUE` and `queue` name the same entity (links and tokens)."""
    queue = emulator.create_queue()
    async with client:
        async with client.get_queue_sender(queue.upper()) as s:
            await s.send_messages(ServiceBusMessage("any case"))
        async with client.get_queue_receiver(queue) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert [str(m) for m in msgs] == ["any case"]
            await r.complete_message(msgs[0])


async def test_deferred_message_lock_is_renewed_and_dead_lettered_by_its_token(client, emulator):
    """§14.12: receive-by-sequence-number returns the lock token (Python reads the delivery
    annotation x-opt-lock-token); renew-lock and update-disposition work with it."""
    queue = emulator.create_queue(LockDuration="PT30S")
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("later"))
        async with client.get_queue_receiver(queue) as r:
            m = (await r.receive_messages(max_message_count=1, max_wait_time=5))[0]
            await r.defer_message(m)
            assert emulator.wait_count(queue, "deferred", 1) == 1
            deferred = (await r.receive_deferred_messages([m.sequence_number]))[0]
            assert deferred.lock_token is not None
            now = datetime.datetime.now(datetime.timezone.utc)
            assert 20 < (deferred.locked_until_utc - now).total_seconds() <= 31
            emulator.advance(20)
            renewed = await r.renew_message_lock(deferred)
            assert 20 < (renewed - datetime.datetime.now(datetime.timezone.utc)).total_seconds() <= 31
            emulator.advance(20)  # the renewal kept it: 40 s after the first lock
            await r.dead_letter_message(deferred, reason="why", error_description="because")
        async with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            got = await dlq.receive_messages(max_message_count=1, max_wait_time=5)
            assert [(str(g), g.dead_letter_reason, g.dead_letter_error_description) for g in got] == \
                [("later", "why", "because")]
            await dlq.complete_message(got[0])
    assert emulator.wait_count(queue, "total", 0) == 0
