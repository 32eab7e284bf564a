"""Scheduled messages, time to live, duplicate detection and auto-forwarding."""
import datetime

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue


async def test_schedule_then_cancel_and_activate(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            when = emulator.now() + datetime.timedelta(minutes=10)
            seqs = await s.schedule_messages([ServiceBusMessage("later"), ServiceBusMessage("never")], when)
            assert len(seqs) == 2 and seqs[0] < seqs[1]
            assert emulator.entities()[queue]["scheduled"] == 2
            await s.cancel_scheduled_messages(seqs[1])
            assert emulator.entities()[queue]["scheduled"] == 1
        async with client.get_queue_receiver(queue) as r:
            peeked = await r.peek_messages(max_message_count=5, sequence_number=1)
            assert [(str(p), p.state.value) for p in peeked] == [("later", 2)]
            assert peeked[0].scheduled_enqueue_time_utc is not None
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []
            emulator.advance(601)
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert [str(m) for m in msgs] == ["later"]
            assert msgs[0].sequence_number > seqs[1]
            await r.complete_message(msgs[0])


async def test_scheduled_enqueue_time_on_send(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            m = ServiceBusMessage("timed", scheduled_enqueue_time_utc=emulator.now() + datetime.timedelta(seconds=90))
            await s.send_messages(m)
        assert emulator.entities()[queue]["scheduled"] == 1
        emulator.advance(91)
        assert emulator.entities()[queue]["active"] == 1


async def test_expired_message_is_dead_lettered_when_the_entity_says_so(client, emulator):
    queue = emulator.create_queue(DefaultMessageTimeToLive="PT1M", DeadLetteringOnMessageExpiration=True)
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("short", time_to_live=datetime.timedelta(seconds=30)))
            await s.send_messages(ServiceBusMessage("default"))
        emulator.advance(31)
        counts = emulator.entities()[queue]
        assert (counts["active"], counts["dead_lettered"]) == (1, 1)
        emulator.advance(30)
        async with client.get_queue_receiver(queue) as r:
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []
        async with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            got = await dlq.receive_messages(max_message_count=5, max_wait_time=5)
            assert sorted(str(g) for g in got) == ["default", "short"]
            assert {g.dead_letter_reason for g in got} == {"TTLExpiredException"}


async def test_expired_message_is_dropped_without_dead_lettering(client, emulator):
    queue = emulator.create_queue(DefaultMessageTimeToLive="PT10S")
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("gone"))
        emulator.advance(11)
        counts = emulator.entities()[queue]
        assert (counts["total"], counts["dead_lettered"]) == (0, 0)


async def test_duplicates_are_accepted_and_dropped(client, emulator):
    queue = emulator.create_queue(RequiresDuplicateDetection=True, DuplicateDetectionHistoryTimeWindow="PT1M")
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("one", message_id="same"))
            await s.send_messages(ServiceBusMessage("two", message_id="same"))
            await s.send_messages(ServiceBusMessage("three", message_id="other"))
        assert emulator.entities()[queue]["active"] == 2
        emulator.advance(61)
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("four", message_id="same"))
        assert emulator.entities()[queue]["active"] == 3


async def test_auto_forward_keeps_the_original_sequence_number(client, emulator):
    target = emulator.create_queue()
    source = emulator.create_queue(ForwardTo=target)
    async with client:
        async with client.get_queue_sender(source) as s:
            await s.send_messages([ServiceBusMessage("f1"), ServiceBusMessage("f2")])
        assert emulator.entities()[source]["total"] == 0
        async with client.get_queue_receiver(target) as r:
            got = await r.receive_messages(max_message_count=2, max_wait_time=5)
            assert [str(g) for g in got] == ["f1", "f2"]
            assert [g.enqueued_sequence_number for g in got] == [1, 2]


async def test_fifth_forward_goes_to_the_transfer_dead_letter_queue(client, emulator):
    """A message may pass through four chained entities; the one that would forward it a fifth
    time keeps it in its transfer dead-letter queue (DOC-DLQ), which clients reach as
    `<queue>/$Transfer/$DeadLetterQueue`."""
    chain = [emulator.create_queue()]
    for _ in range(5):
        chain.insert(0, emulator.create_queue(ForwardTo=chain[0]))
    async with client:
        async with client.get_queue_sender(chain[0]) as s:
            await s.send_messages(ServiceBusMessage("hop"))
        ents = emulator.entities()
        assert [ents[q]["transfer_dead_lettered"] for q in chain] == [0, 0, 0, 0, 1, 0]
        assert ents[chain[5]]["total"] == 0
        async with client.get_queue_receiver(chain[4], sub_queue=ServiceBusSubQueue.TRANSFER_DEAD_LETTER) as r:
            got = await r.receive_messages(max_message_count=2, max_wait_time=5)
            assert [str(g) for g in got] == ["hop"]
            assert got[0].dead_letter_reason == "MaxTransferHopCountExceeded"
            await r.complete_message(got[0])
        # an empty transfer dead-letter queue is there to receive from, like the service's
        async with client.get_queue_receiver(chain[5], sub_queue=ServiceBusSubQueue.TRANSFER_DEAD_LETTER) as r:
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []
    assert emulator.entities()[chain[4]]["transfer_dead_lettered"] == 0


async def test_forward_to_a_deleted_queue_goes_to_the_transfer_dead_letter_queue(client, emulator):
    target = emulator.create_queue()
    source = emulator.create_queue(ForwardTo=target)
    assert emulator.call("DELETE", "/entities/" + target)[0] in (200, 204)
    async with client:
        async with client.get_queue_sender(source) as s:
            await s.send_messages(ServiceBusMessage("lost?"))
        async with client.get_queue_receiver(source, sub_queue=ServiceBusSubQueue.TRANSFER_DEAD_LETTER) as r:
            got = await r.receive_messages(max_message_count=2, max_wait_time=5)
            assert [str(g) for g in got] == ["lost?"]
            assert got[0].dead_letter_reason == "MessagingEntityNotFound"
            assert target in got[0].dead_letter_error_description
            await r.complete_message(got[0])


async def test_topic_schedule_and_cancel_reach_every_subscription(client, emulator):
    topic = emulator.create_topic(subscriptions=[{"Name": "a"}, {"Name": "b"}])
    async with client:
        async with client.get_topic_sender(topic) as s:
            when = emulator.now() + datetime.timedelta(minutes=5)
            seqs = await s.schedule_messages([ServiceBusMessage("keep"), ServiceBusMessage("drop")], when)
            ents = emulator.entities()
            assert ents[topic + "/Subscriptions/a"]["scheduled"] == 2
            assert ents[topic + "/Subscriptions/b"]["scheduled"] == 2
            await s.cancel_scheduled_messages(seqs[1])
        ents = emulator.entities()
        assert ents[topic + "/Subscriptions/a"]["scheduled"] == 1
        assert ents[topic + "/Subscriptions/b"]["scheduled"] == 1
        emulator.advance(301)
        ents = emulator.entities()
        assert ents[topic + "/Subscriptions/a"]["active"] == 1
        assert ents[topic + "/Subscriptions/b"]["active"] == 1
