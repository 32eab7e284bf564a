"""An idle receiver costs no CPU: no polling, no threads."""

import asyncio
import threading
import time

from servicebus.aio import ServiceBusClient


async def test_idle_receive_uses_no_cpu_and_no_threads(connection_string: str, queue: str) -> None:
    threads = threading.active_count()
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            await receiver.receive_messages(max_wait_time=0.1)
            cpu = time.process_time()
            got = await receiver.receive_messages(max_wait_time=2)
            used = time.process_time() - cpu
            assert got == []
            assert threading.active_count() == threads
    assert used < 0.05, "an idle receive used %.3fs of CPU in 2s" % used


def test_on_uvloop(connection_string: str) -> None:
    import uvloop

    from servicebus import Message

    async def main() -> bytes:
        from conftest import drain_queue

        await drain_queue(connection_string, "test-queue-2")
        async with ServiceBusClient.from_connection_string(connection_string) as client:
            async with client.get_queue_sender("test-queue-2") as sender:
                await sender.send_messages(Message(b"uv"))
            async with client.get_queue_receiver("test-queue-2") as receiver:
                got = await receiver.receive_messages(max_wait_time=5)
                await got[0].complete()
                return got[0].body

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == b"uv"
    finally:
        loop.close()
    asyncio.set_event_loop(None)


async def test_the_requested_loop_runs_the_suite() -> None:
    import os

    loop = asyncio.get_running_loop()
    if os.environ.get("SBUS_TEST_LOOP") == "uvloop":
        assert type(loop).__module__.startswith("uvloop")
    else:
        assert type(loop).__module__.startswith("asyncio")
