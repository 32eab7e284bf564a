"""A message crosses the emulator with its body and message_id intact."""

import asyncio
import gc
import uuid

from servicebus import Message
from servicebus.aio import ServiceBusClient


async def test_body_and_message_id_round_trip(connection_string: str, queue: str) -> None:
    mid = str(uuid.uuid4())
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"hello servicebus", message_id=mid))
        async with client.get_queue_receiver(queue) as receiver:
            got = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
            assert len(got) == 1
            msg = got[0]
            assert msg.body == b"hello servicebus"
            assert msg.message_id == mid
            assert str(msg) == "hello servicebus"
            assert msg.sequence_number is not None
            await msg.complete()
        async with client.get_queue_receiver(queue) as receiver:
            assert await receiver.receive_messages(max_wait_time=0.3) == []


async def test_str_body_and_list_send(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([Message("m%d" % i) for i in range(5)])
        async with client.get_queue_receiver(queue) as receiver:
            bodies = []
            while len(bodies) < 5:
                got = await receiver.receive_messages(max_message_count=5, max_wait_time=5)
                assert got, "messages missing: %r" % bodies
                for m in got:
                    bodies.append(m.body)
                    await m.complete()
            assert sorted(bodies) == [b"m0", b"m1", b"m2", b"m3", b"m4"]


async def test_a_list_or_tuple_is_read_once_and_may_go_at_once(connection_string: str, queue: str) -> None:
    # The engine encodes a list's messages during the send call: the caller
    # may empty the list and drop the messages (and their bodies) before
    # the send completes; a tuple, and timeout=, take the same path.
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            batch = [Message(bytes([65 + i]) * 1000, message_id="l%d" % i) for i in range(3)]
            task = asyncio.ensure_future(sender.send_messages(batch))
            await asyncio.sleep(0)  # the send has started
            batch.clear()
            gc.collect()
            await task
            await sender.send_messages((Message(b"t0", message_id="t0"), Message(b"t1", message_id="t1")))
            await sender.send_messages([Message(b"k", message_id="k")], timeout=30)
        async with client.get_queue_receiver(queue) as receiver:
            got = {}
            while len(got) < 6:
                batch = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
                assert batch, "messages missing: %r" % sorted(got)
                for m in batch:
                    got[m.message_id] = m.body
                    await m.complete()
            assert got == {"l0": b"A" * 1000, "l1": b"B" * 1000, "l2": b"C" * 1000, "t0": b"t0", "t1": b"t1", "k": b"k"}
