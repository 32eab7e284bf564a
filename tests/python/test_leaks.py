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
