"""Credit and prefetch, competing receivers, dead-letter forwarding, large messages."""
import asyncio

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue


async def test_prefetch_receives_everything_exactly_once(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            for start in range(0, 300, 100):
                await s.send_messages([ServiceBusMessage(str(i)) for i in range(start, start + 100)])
        seen = []
        async with client.get_queue_receiver(queue, prefetch_count=50) as r:
            while len(seen) < 300:
                msgs = await r.receive_messages(max_message_count=100, max_wait_time=5)
                assert msgs
                for m in msgs:
                    seen.append(int(str(m)))
                    await r.complete_message(m)
        assert seen == list(range(300))
    assert emulator.wait_count(queue, "total", 0) == 0


async def test_competing_receivers_share_the_queue(client, queue, emulator):
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages([ServiceBusMessage(str(i)) for i in range(40)])

        async def consume(out):
            async with client.get_queue_receiver(queue) as r:
                while True:
                    msgs = await r.receive_messages(max_message_count=5, max_wait_time=2)
                    if not msgs:
                        return
                    for m in msgs:
                        out.append(int(str(m)))
                        await r.complete_message(m)

        a, b = [], []
        await asyncio.gather(consume(a), consume(b))
        assert sorted(a + b) == list(range(40))
        assert not set(a) & set(b)
    assert emulator.wait_count(queue, "total", 0) == 0


async def test_dead_letters_are_forwarded_with_their_source(client, emulator):
    target = emulator.create_queue()
    source = emulator.create_queue(ForwardDeadLetteredMessagesTo=target)
    async with client:
        async with client.get_queue_sender(source) as s:
            await s.send_messages(ServiceBusMessage("dl"))
        async with client.get_queue_receiver(source) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            await r.dead_letter_message(msgs[0], reason="r", error_description="d")
        assert emulator.wait_count(target, "active", 1) == 1
        async with client.get_queue_receiver(target) as r:
            got = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(got[0]) == "dl"
            assert got[0].dead_letter_source == source
            assert got[0].dead_letter_reason == "r"
            await r.complete_message(got[0])
        assert emulator.entities()[source]["dead_lettered"] == 0


async def test_large_messages_cross_many_frames(client, queue):
    body = bytes(range(256)) * 800  # 204800 bytes, above uamqp's 64 KB frame size
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage(body))
        async with client.get_queue_receiver(queue) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert b"".join(msgs[0].body) == body
            await r.complete_message(msgs[0])


async def test_dead_letter_queue_of_a_subscription(client, emulator):
    topic = emulator.create_topic(subscriptions=[{"Name": "s"}])
    async with client:
        async with client.get_topic_sender(topic) as s:
            await s.send_messages(ServiceBusMessage("x"))
        async with client.get_subscription_receiver(topic, "s") as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            await r.dead_letter_message(msgs[0], reason="sub-dlq")
        async with client.get_subscription_receiver(topic, "s", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
            got = await d.receive_messages(max_message_count=1, max_wait_time=5)
            assert [g.dead_letter_reason for g in got] == ["sub-dlq"]
