"""Topic senders and subscription receivers (plain and by constructor)."""

import uuid

from servicebus import Message, ReceiveMode
from servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender

from conftest import drain_queue

TOPIC = "topic.1"


async def test_topic_fan_out_and_filters(connection_string: str) -> None:
    for sub in ("all", "json-only", "red"):
        await drain_queue(connection_string, "%s/Subscriptions/%s" % (TOPIC, sub))
    tag = uuid.uuid4().hex
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_topic_sender(TOPIC) as sender:
            await sender.send_messages(
                [
                    Message(b"json", content_type="application/json", message_id=tag + "-1"),
                    Message(b"red", application_properties={"color": "red"}, message_id=tag + "-2"),
                ]
            )
        got = {}
        for sub in ("all", "json-only", "red"):
            async with client.get_subscription_receiver(TOPIC, sub, receive_mode=ReceiveMode.ReceiveAndDelete) as r:
                assert r.entity_path == "%s/Subscriptions/%s" % (TOPIC, sub)
                bodies = []
                while True:
                    batch = await r.receive_messages(max_message_count=10, max_wait_time=1)
                    if not batch:
                        break
                    bodies += [m.body for m in batch]
                got[sub] = sorted(bodies)
    assert got["all"] == [b"json", b"red"]
    assert got["json-only"] == [b"json"]
    assert got["red"] == [b"red"]


async def test_constructors_with_connection_string_entities(connection_string: str) -> None:
    await drain_queue(connection_string, "%s/Subscriptions/all" % TOPIC)
    async with ServiceBusSender.from_connection_string(connection_string, topic_name=TOPIC) as sender:
        assert sender.entity_name == TOPIC
        await sender.send_messages(Message(b"ctor"))
    async with ServiceBusReceiver.from_connection_string(
        connection_string, topic_name=TOPIC, subscription_name="all", max_wait_time=2
    ) as receiver:
        got = [m async for m in receiver]
        for m in got:
            await m.complete()
    assert [m.body for m in got] == [b"ctor"]


async def test_entity_path_in_connection_string(connection_string: str) -> None:
    await drain_queue(connection_string, "test-queue-2")
    cs = connection_string.rstrip(";") + ";EntityPath=test-queue-2"
    async with ServiceBusSender.from_connection_string(cs) as sender:
        assert sender.entity_name == "test-queue-2"
        await sender.send_messages(Message(b"ep"))
    async with ServiceBusReceiver.from_connection_string(cs, receive_mode=ReceiveMode.ReceiveAndDelete) as receiver:
        got = await receiver.receive_messages(max_wait_time=5)
    assert [m.body for m in got] == [b"ep"]
