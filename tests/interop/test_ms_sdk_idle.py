"""The service's idle timers (protocol.md §1.6) with Microsoft's SDK.

The emulator runs with the service's values (link 10 min, connection 5 min, no link 1 min) on
its own clock, so POST /clock triggers them: an idle sender or receiver link is detached with
amqp:link:detach-forced, and the SDK attaches a new one on its next call.
"""
import logging

from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusConnectionError


async def test_idle_sender_is_detached_and_the_sdk_attaches_again(client, emulator, caplog):
    queue = emulator.create_queue()
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("before"))
            with caplog.at_level(logging.DEBUG, logger="azure.servicebus"), \
                    caplog.at_level(logging.DEBUG, logger="uamqp"):
                emulator.advance(601)
                await s.send_messages(ServiceBusMessage("after"))
        assert "detach-forced" in caplog.text and "IdleTimerExpired" in caplog.text
    assert emulator.entities()[queue]["active"] == 2


async def test_idle_receiver_is_detached_and_the_sdk_attaches_again(client, emulator, caplog):
    queue = emulator.create_queue()
    async with client:
        async with client.get_queue_receiver(queue) as r:
            assert await r.receive_messages(max_message_count=1, max_wait_time=1) == []
            with caplog.at_level(logging.DEBUG, logger="azure.servicebus"), \
                    caplog.at_level(logging.DEBUG, logger="uamqp"):
                emulator.advance(601)
                async with client.get_queue_sender(queue) as s:
                    await s.send_messages(ServiceBusMessage("late"))
                # With a short max_wait_time the SDK's retry (0.8 s back-off, new link) does not
                # fit in the call: the first call after the detach may raise, as against Azure;
                # the next one works on a new link.
                got, errors = [], 0
                for _ in range(5):
                    try:
                        got += await r.receive_messages(max_message_count=1, max_wait_time=2)
                    except ServiceBusConnectionError as e:
                        assert "IdleTimerExpired" in str(e)
                        errors += 1
                    if got:
                        break
                assert errors <= 1
            assert [str(m) for m in got] == ["late"]
            await r.complete_message(got[0])
        assert "detach-forced" in caplog.text
