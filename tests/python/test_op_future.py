"""The operation Future keeps asyncio.Future's contract while its done
callbacks run in batches (servicebus._connection._OpFuture, _sbus/future.c):
in their contexts, in order, never from inside set_result, an exception
reported to the loop's handler without stopping the others, SystemExit and
KeyboardInterrupt propagated with the rest run later, remove / cancel /
wait_for / gather as with any Future."""

import asyncio
import contextvars
from typing import Any, List

import pytest

from servicebus import Message
from servicebus._connection import _OpFuture
from servicebus.aio import ServiceBusClient

from conftest import drain_queue

var: "contextvars.ContextVar[str]" = contextvars.ContextVar("var", default="unset")


async def _fill(client: ServiceBusClient, queue: str, n: int) -> None:
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages([Message(b"m%d" % i) for i in range(n)])


async def _receive(receiver: Any, n: int) -> List[Any]:
    got: List[Any] = []
    while len(got) < n:
        batch = await receiver.receive_messages(max_message_count=n - len(got), max_wait_time=5)
        assert batch, "messages missing"
        got += batch
    return got


def test_the_package_future_is_the_batching_one() -> None:
    # the C methods are installed (CPython's asyncio.Future is the C one)
    assert type(_OpFuture.__dict__["add_done_callback"]).__name__ == "method_descriptor"
    assert issubclass(_OpFuture, asyncio.Future)


async def test_callbacks_of_gathered_completions_run_in_order_and_context(
    connection_string: str, queue: str
) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _fill(client, queue, 20)
        async with client.get_queue_receiver(queue, prefetch_count=20) as receiver:
            msgs = await _receive(receiver, 20)
            seen: List[Any] = []
            futs = []
            for i, m in enumerate(msgs):
                fut = receiver.complete_message(m)
                assert isinstance(fut, asyncio.Future)
                # each callback in the context current when it was added ...
                var.set("implicit-%d" % i)
                fut.add_done_callback(lambda f, i=i: seen.append(("a", i, var.get(), f.result())))
                # ... or in the one given
                ctx = contextvars.copy_context()
                ctx.run(var.set, "explicit-%d" % i)
                fut.add_done_callback(lambda f, i=i: seen.append(("b", i, var.get())), context=ctx)
                futs.append(fut)
            assert seen == []  # nothing runs before the loop gets control
            assert await asyncio.gather(*futs) == [None] * 20
            await asyncio.sleep(0)
            expected: List[Any] = []
            for i in range(20):
                expected += [("a", i, "implicit-%d" % i, None), ("b", i, "explicit-%d" % i)]
            assert seen == expected


async def test_a_failing_callback_is_reported_and_the_others_run(connection_string: str, queue: str) -> None:
    loop = asyncio.get_running_loop()
    reported: List[Any] = []
    loop.set_exception_handler(lambda lp, context: reported.append(context))
    try:
        async with ServiceBusClient.from_connection_string(connection_string) as client:
            await _fill(client, queue, 3)
            async with client.get_queue_receiver(queue, prefetch_count=3) as receiver:
                msgs = await _receive(receiver, 3)
                ran: List[int] = []
                futs = [receiver.complete_message(m) for m in msgs]

                def boom(f: Any) -> None:
                    raise RuntimeError("callback failed")

                futs[1].add_done_callback(boom)
                for i, f in enumerate(futs):
                    f.add_done_callback(lambda f, i=i: ran.append(i))
                await asyncio.gather(*futs)
                await asyncio.sleep(0)
                assert ran == [0, 1, 2]
                assert len(reported) == 1
                assert isinstance(reported[0]["exception"], RuntimeError)
                assert "boom" in reported[0]["message"]
    finally:
        loop.set_exception_handler(None)


async def test_remove_done_callback_and_wait_for(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _fill(client, queue, 2)
        async with client.get_queue_receiver(queue, prefetch_count=2) as receiver:
            a, b = await _receive(receiver, 2)
            ran: List[str] = []

            def cb(f: Any) -> None:
                ran.append("removed")

            def keep(f: Any) -> None:
                ran.append("kept")

            fut = receiver.complete_message(a)
            fut.add_done_callback(cb)
            fut.add_done_callback(keep)
            fut.add_done_callback(cb)
            assert fut.remove_done_callback(cb) == 2
            assert fut.remove_done_callback(cb) == 0
            await asyncio.wait_for(fut, 5)
            assert await asyncio.wait_for(receiver.complete_message(b), 5) is None
            await asyncio.sleep(0)
            assert ran == ["kept"]


async def test_callback_added_after_completion_runs_soon(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _fill(client, queue, 1)
        async with client.get_queue_receiver(queue) as receiver:
            (m,) = await _receive(receiver, 1)
            fut = receiver.complete_message(m)
            await fut
            ran: List[Any] = []
            fut.add_done_callback(ran.append)
            assert ran == []
            await asyncio.sleep(0)
            assert ran == [fut]


async def test_cancel_runs_the_callbacks_and_cancels_the_operation(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            await receiver.receive_messages(max_wait_time=0.05)  # attached
            fut = receiver._handle.receive(1, -1)  # waits forever
            ran: List[Any] = []
            fut.add_done_callback(lambda f: ran.append(f.cancelled()))
            assert client._connection._handle.pending_count == 1
            assert fut.cancel("enough")
            assert not fut.cancel()
            assert client._connection._handle.pending_count == 0
            await asyncio.sleep(0)
            assert ran == [True]
            with pytest.raises(asyncio.CancelledError):
                fut.result()


async def test_repr_and_callbacks_show_the_pending_callbacks() -> None:
    fut = _OpFuture(loop=asyncio.get_running_loop())
    assert fut._callbacks is None
    fut.add_done_callback(str)
    fut.add_done_callback(id)
    assert [cb for cb, _ in fut._callbacks] == [str, id]
    assert "cb=[str(), id()]" in repr(fut)
    fut.cancel()
    assert fut._callbacks is None


async def test_set_result_from_outside_schedules_the_callbacks() -> None:
    loop = asyncio.get_running_loop()
    fut = _OpFuture(loop=loop)
    ran: List[Any] = []
    fut.add_done_callback(lambda f: ran.append(f.result()))
    fut.set_result(42)
    assert ran == []
    await asyncio.sleep(0)
    assert ran == [42]
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_result(1)
    other = _OpFuture(loop=loop)
    other.add_done_callback(lambda f: ran.append(type(f.exception())))
    other.set_exception(KeyError("x"))
    await asyncio.sleep(0)
    assert ran == [42, KeyError]


def test_system_exit_in_a_callback_propagates_and_the_rest_run_later(connection_string: str) -> None:
    loop = asyncio.new_event_loop()
    ran: List[int] = []
    state: Any = {}

    async def start() -> None:
        await drain_queue(connection_string, "test-queue")
        client = ServiceBusClient.from_connection_string(connection_string)
        await _fill(client, "test-queue", 3)
        receiver = client.get_queue_receiver("test-queue", prefetch_count=3)
        msgs = await _receive(receiver, 3)
        futs = [receiver.complete_message(m) for m in msgs]

        def stop(f: Any) -> None:
            raise SystemExit(3)

        futs[0].add_done_callback(lambda f: ran.append(0))
        futs[0].add_done_callback(stop)
        futs[1].add_done_callback(lambda f: ran.append(1))
        futs[2].add_done_callback(lambda f: ran.append(2))
        state.update(client=client, receiver=receiver, futs=futs)
        await asyncio.Event().wait()  # the SystemExit ends the loop's run

    try:
        with pytest.raises(SystemExit):
            loop.run_until_complete(start())
        assert ran == [0]
        loop.run_until_complete(asyncio.sleep(0.01))
        assert ran == [0, 1, 2]
        assert all(f.done() and f.result() is None for f in state["futs"])
        loop.run_until_complete(state["receiver"].close())
        loop.run_until_complete(state["client"].close())
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


async def test_operations_started_by_done_callbacks_need_no_flush_turn(connection_string: str, queue: str) -> None:
    # A Task resumed by an operation Future runs inside the batch of done
    # callbacks: the first operation it starts is written at once, the
    # others when the batch ends - no `_flush` scheduled for a later turn.
    loop = asyncio.get_running_loop()
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        await _fill(client, queue, 10)
        async with client.get_queue_receiver(queue, prefetch_count=10) as receiver, client.get_queue_sender(
            queue
        ) as sender:
            msgs = await _receive(receiver, 10)
            await sender.send_messages(Message(b"x"))  # resumed by the send's Future
            scheduled: List[str] = []
            real = loop.call_soon

            def spy(cb: Any, *args: Any, **kwargs: Any) -> Any:
                scheduled.append(getattr(cb, "__name__", ""))
                return real(cb, *args, **kwargs)

            try:
                loop.call_soon = spy  # type: ignore[method-assign]
            except AttributeError:
                pytest.skip("this loop's call_soon cannot be observed")
            try:
                futs = [receiver.complete_message(m) for m in msgs]
            finally:
                del loop.call_soon  # type: ignore[method-assign]
            assert "_flush" not in scheduled
            await asyncio.wait_for(asyncio.gather(*futs), 10)
            # the same from a task started by call_soon (no callbacks around it)
            await _fill(client, queue, 2)
            msgs = await _receive(receiver, 2)
            await asyncio.sleep(0)
            await asyncio.wait_for(asyncio.gather(*(receiver.complete_message(m) for m in msgs)), 10)


async def test_total_refcount_is_stable_on_debug_builds(connection_string: str, queue: str) -> None:
    """The batching paths keep reference counts exact (python3.11-dbg)."""
    import gc
    import sys

    if not hasattr(sys, "gettotalrefcount"):
        pytest.skip("needs a debug interpreter (python3.11-dbg)")
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda lp, context: None)
    try:
        async with ServiceBusClient.from_connection_string(connection_string) as client:
            async with client.get_queue_receiver(queue, prefetch_count=4) as receiver:

                def boom(f: Any) -> None:
                    raise RuntimeError("x")

                async def cycle() -> None:
                    await _fill(client, queue, 4)
                    msgs = await _receive(receiver, 4)
                    futs = [receiver.complete_message(m) for m in msgs]
                    futs[0].add_done_callback(boom)
                    futs[1].add_done_callback(boom)
                    futs[1].add_done_callback(id)
                    futs[1].add_done_callback(boom)
                    futs[1].remove_done_callback(boom)
                    await asyncio.gather(*futs)
                    waiting = receiver._handle.receive(1, -1)
                    waiting.add_done_callback(id)
                    waiting.cancel()
                    alone = _OpFuture(loop=loop)
                    alone.add_done_callback(id)
                    alone.set_result(1)
                    await asyncio.sleep(0)

                for _ in range(5):
                    await cycle()
                gc.collect()
                before = sys.gettotalrefcount()
                for _ in range(50):
                    await cycle()
                gc.collect()
                after = sys.gettotalrefcount()
    finally:
        loop.set_exception_handler(None)
    print("refcount delta over 50 cycles:", after - before)
    assert abs(after - before) < 50, (before, after)
