"""Repeated operations leave no Python objects or pending Futures behind."""

import gc

from servicebus import Message
from servicebus.aio import ServiceBusClient


async def test_no_object_growth_over_many_round_trips(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:

            async def round_trip() -> None:
                await sender.send_messages([Message(b"leak?", application_properties={"k": 1})] * 5)
                n = 0
                while n < 5:
                    got = await receiver.receive_messages(max_message_count=5, max_wait_time=5)
                    for m in got:
                        _ = (m.body, m.application_properties, m.enqueued_time_utc, m.lock_token)
                        await m.complete()
                    n += len(got)

            for _ in range(20):
                await round_trip()
            gc.collect()
            before = len(gc.get_objects())
            for _ in range(200):
                await round_trip()
            gc.collect()
            after = len(gc.get_objects())
            assert client._connection._handle.pending_count == 0
    assert after - before < 200, (before, after)


async def test_total_refcount_is_stable_on_debug_builds(connection_string: str, queue: str) -> None:
    """Reference counts are exact on every path (python3.11-dbg has sys.gettotalrefcount)."""
    import sys

    import pytest

    if not hasattr(sys, "gettotalrefcount"):
        pytest.skip("needs a debug interpreter (python3.11-dbg)")
    from decimal import Decimal

    from servicebus import ReceiveMode
    from servicebus._sbus import _decode_amqp
    from servicebus.amqp import AmqpAnnotatedMessage
    from servicebus.exceptions import MessageAlreadySettled

    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            async with client.get_queue_receiver(queue, receive_mode=ReceiveMode.ReceiveAndDelete) as rad:

                async def cycle() -> None:
                    msgs = [Message(b"rc", message_id="x", application_properties={"a": 1, "b": "s"}) for _ in range(3)]
                    await sender.send_messages(msgs)
                    batch = await sender.create_batch()
                    batch.add(Message(b"in batch"))
                    await sender.send_messages(batch)
                    got = []
                    while len(got) < 4:
                        got += await receiver.receive_messages(max_message_count=4, max_wait_time=5)
                    for m in got:
                        _ = (m.body, m.properties, m.lock_token, m.locked_until_utc, repr(m), str(m))
                        await m.complete()
                    try:
                        await got[0].complete()
                    except MessageAlreadySettled:
                        pass
                    await receiver.peek_messages(5)
                    assert await rad.receive_messages(max_wait_time=0.01) == []
                    # compound values and sequence / value bodies, both ways
                    compound = {"l": [1, "a", None, {"k": (2, b"b")}], "d": Decimal("1.5")}
                    await sender.send_messages(
                        [
                            AmqpAnnotatedMessage(sequence_body=[[1, "x"], [2.5]], application_properties=compound),
                            AmqpAnnotatedMessage(value_body={"v": [1, 2]}),
                        ]
                    )
                    extra: list = []
                    while len(extra) < 2:
                        extra += await rad.receive_messages(max_message_count=2, max_wait_time=5)
                    for m in extra:
                        _ = (m.body, m.body_type, m.application_properties)
                    _ = _decode_amqp(b"\x00\xa3\x01d\xc1\x05\x02\xc0\x01\x00\x40")
                    try:
                        Message(b"x", application_properties={"o": [object()]})._encoded_size()
                    except TypeError:
                        pass

                for _ in range(10):
                    await cycle()
                gc.collect()
                before = sys.gettotalrefcount()
                for _ in range(100):
                    await cycle()
                gc.collect()
                after = sys.gettotalrefcount()
    print("refcount delta over 100 cycles:", after - before)
    assert abs(after - before) < 50, (before, after)
