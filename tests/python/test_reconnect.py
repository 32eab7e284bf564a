"""The engine reconnects after the service drops the connection; pending work completes."""

import asyncio

import pytest

from servicebus import Message
from servicebus.exceptions import ServiceBusServerBusyError
from servicebus.aio import ServiceBusClient


async def test_send_and_receive_after_connections_are_dropped(emulator, queue: str) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emulator.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"before"))
            (m,) = await receiver.receive_messages(max_wait_time=5)
            await m.complete()
            status, _ = await emulator.control("POST", "/faults", {"drop_connections": True})
            assert status == 200
            await asyncio.sleep(0.3)
            await sender.send_messages(Message(b"after"))
            got = []
            for _ in range(10):
                got += await receiver.receive_messages(max_wait_time=2)
                if got:
                    break
            assert [x.body for x in got] == [b"after"]
            await got[0].complete()


# server-busy tests: a fast but non-zero backoff so that the elapsed time can
# show it was applied (the engine waits factor * 2**(n-1) before retry n,
# capped at retry_backoff_max); only lower bounds are asserted, never speed.
BUSY_RETRY = {"retry_total": 3, "retry_backoff_factor": 0.1, "retry_backoff_max": 0.3}


def _min_backoff(retries: int) -> float:
    """The least total wait the configured policy allows before `retries` retries,
    less 5 ms per retry: the engine's clock counts whole milliseconds and the
    event loop's timers may wake a hair early."""
    f, cap = BUSY_RETRY["retry_backoff_factor"], BUSY_RETRY["retry_backoff_max"]
    return sum(min(f * 2 ** i, cap) - 0.005 for i in range(retries))


async def _fail_next_sends(emulator, n: int) -> None:  # type: ignore[no-untyped-def]
    status, _ = await emulator.control(
        "POST", "/faults", {"fail_next": n, "op": "send", "condition": "com.microsoft:server-busy"}
    )
    assert status == 200


async def _refusals_left(emulator) -> int:  # type: ignore[no-untyped-def]
    status, state = await emulator.control("POST", "/faults", {})  # no key: only the state
    assert status == 200, state
    return int(state["fail_next"])


@pytest.mark.parametrize("refusals", [1, BUSY_RETRY["retry_total"]])
async def test_server_busy_fewer_times_than_attempts_is_retried_after_backoff(emulator, queue: str, refusals: int) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    async with ServiceBusClient.from_connection_string(emulator.connection_string, **BUSY_RETRY) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"warm-up"))  # link attached: only the send is refused
            (m,) = await receiver.receive_messages(max_wait_time=5)
            await m.complete()
            try:
                await _fail_next_sends(emulator, refusals)
                t0 = loop.time()
                await sender.send_messages(Message(b"busy", message_id="busy-%d" % refusals))
                elapsed = loop.time() - t0
                assert await _refusals_left(emulator) == 0  # every refusal was consumed by a retry
            finally:
                await emulator.control("POST", "/faults", {"reset": True})
            assert elapsed >= _min_backoff(refusals)
            got = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
            for x in got:
                await x.complete()
            more = await receiver.receive_messages(max_message_count=10, max_wait_time=0.3)
            got += more
            # exactly one copy: a refused transfer is not enqueued
            assert [(x.body, x.message_id) for x in got] == [(b"busy", "busy-%d" % refusals)]


async def test_server_busy_more_times_than_attempts_raises_after_the_retries(emulator, queue: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    retries = BUSY_RETRY["retry_total"]
    async with ServiceBusClient.from_connection_string(emulator.connection_string, **BUSY_RETRY) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"warm-up"))
            (m,) = await receiver.receive_messages(max_wait_time=5)
            await m.complete()
            try:
                refusals = retries + 3
                await _fail_next_sends(emulator, refusals)
                t0 = loop.time()
                with pytest.raises(ServiceBusServerBusyError) as info:
                    await sender.send_messages(Message(b"never"))
                elapsed = loop.time() - t0
                # one attempt plus retry_total retries, then the error: no more
                assert await _refusals_left(emulator) == refusals - (1 + retries)
            finally:
                await emulator.control("POST", "/faults", {"reset": True})
            assert info.value.retriable
            assert info.value.condition == "com.microsoft:server-busy"
            assert elapsed >= _min_backoff(retries)
            # nothing was enqueued, and the sender still works
            assert await receiver.receive_messages(max_wait_time=0.3) == []
            await sender.send_messages(Message(b"after"))
            (m,) = await receiver.receive_messages(max_wait_time=5)
            assert m.body == b"after"
            await m.complete()


async def test_a_pending_receive_survives_a_dropped_connection(emulator, queue: str) -> None:  # type: ignore[no-untyped-def]
    from servicebus.exceptions import ServiceBusError

    async with ServiceBusClient.from_connection_string(emulator.connection_string) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            await sender.send_messages(Message(b"warm-up"))
            (m,) = await receiver.receive_messages(max_wait_time=5)
            await m.complete()
            pending = asyncio.ensure_future(receiver.receive_messages(max_wait_time=10))
            await asyncio.sleep(0.2)
            status, _ = await emulator.control("POST", "/faults", {"drop_connections": True})
            assert status == 200
            await asyncio.sleep(0.5)
            await sender.send_messages(Message(b"after-drop"))
            try:
                got = await asyncio.wait_for(pending, 15)
            except ServiceBusError:
                got = []  # the engine may fail the pending receive with a retriable error
            if not got:
                got = await receiver.receive_messages(max_wait_time=5)
            assert [x.body for x in got] == [b"after-drop"]
            await got[0].complete()
