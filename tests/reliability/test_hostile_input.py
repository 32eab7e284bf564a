"""API misuse and hostile input from the Python side: clear exceptions, no
crash, and the client stays usable afterwards. Also end-to-end reproducers of
the bugs the fuzzers found in the emulator (tests/fuzz/known/README).
"""

import asyncio

import pytest

from servicebus import Message
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import MessageAlreadySettled, ServiceBusError

CLEAR = (TypeError, ValueError, ServiceBusError)


@pytest.fixture
async def pair(emu, queue):  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as client:
        async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
            yield client, sender, receiver


async def _still_works(sender, receiver) -> None:  # type: ignore[no-untyped-def]
    await sender.send_messages(Message(b"still fine"))
    for _ in range(10):
        got = await receiver.receive_messages(max_message_count=10, max_wait_time=1)
        for m in got:
            await m.complete()
        if any(bytes(m.body) == b"still fine" for m in got):
            return
    raise AssertionError("the client is not usable after the misuse")


@pytest.mark.parametrize(
    "bad",
    [42, 4.2, object(), [1, 2], {"a": 1}, [Message(b"ok"), 3], None],
    ids=["int", "float", "object", "list-of-int", "dict", "mixed-list", "none"],
)
async def test_send_of_a_wrong_type_raises_type_or_value_error(pair, bad) -> None:  # type: ignore[no-untyped-def]
    _, sender, receiver = pair
    with pytest.raises(CLEAR):
        await sender.send_messages(bad)
    await _still_works(sender, receiver)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"message_id": "x" * 129},
        {"session_id": "s" * 129},
        {"properties": {object(): 1}},
        {"properties": {"k": object()}},
        {"properties": {"k": {"nested": [1, {"deeper": object()}]}}},
        {"time_to_live": "soon"},
        {"message_id": "\udcff"},
        {"properties": {"\ud800": "lone surrogate"}},
    ],
    ids=["long-id", "long-session", "key-object", "value-object", "nested-object", "ttl-str", "surrogate-id",
         "surrogate-key"],
)
async def test_bad_message_fields_raise_clearly(pair, kwargs) -> None:  # type: ignore[no-untyped-def]
    _, sender, receiver = pair
    with pytest.raises(CLEAR + (UnicodeError,)):
        await sender.send_messages(Message(b"x", **kwargs))
    await _still_works(sender, receiver)


@pytest.mark.parametrize("size", [300 * 1024, 4 * 1024 * 1024, 32 * 1024 * 1024])
async def test_huge_body_is_refused_with_a_size_error(pair, size) -> None:  # type: ignore[no-untyped-def]
    _, sender, receiver = pair
    with pytest.raises(ServiceBusError) as info:
        await sender.send_messages(Message(b"b" * size))
    assert info.value.code in ("too-large", "message-size-exceeded"), info.value.code
    await _still_works(sender, receiver)


async def test_oversized_properties_are_refused_with_a_size_error(pair) -> None:  # type: ignore[no-untyped-def]
    _, sender, receiver = pair
    props = {"p%d" % i: "v" * 1000 for i in range(400)}
    with pytest.raises(ServiceBusError) as info:
        await sender.send_messages(Message(b"x", properties=props))
    assert info.value.code in ("too-large", "message-size-exceeded"), info.value.code
    await _still_works(sender, receiver)


async def test_settling_twice_raises_already_settled(pair) -> None:  # type: ignore[no-untyped-def]
    _, sender, receiver = pair
    await sender.send_messages(Message(b"once"))
    (m,) = await receiver.receive_messages(max_wait_time=5)
    await m.complete()
    for settle in (m.complete, m.abandon, m.defer, m.dead_letter):
        with pytest.raises(MessageAlreadySettled):
            await settle()


async def test_closed_objects_raise_and_never_crash(emu, queue) -> None:  # type: ignore[no-untyped-def]
    client = ServiceBusClient.from_connection_string(emu.connection_string)
    sender = client.get_queue_sender(queue)
    receiver = client.get_queue_receiver(queue)
    await sender.send_messages(Message(b"x"))
    (m,) = await receiver.receive_messages(max_wait_time=5)
    await sender.close()
    with pytest.raises(ServiceBusError):
        await sender.send_messages(Message(b"after close"))
    await receiver.close()
    with pytest.raises(ServiceBusError):
        await receiver.receive_messages(max_wait_time=1)
    with pytest.raises(ServiceBusError):
        await m.complete()  # its receiver is closed
    await client.close()
    await client.close()  # twice is fine
    with pytest.raises(ServiceBusError):
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(Message(b"x"))


async def test_receive_arguments_are_checked(pair) -> None:  # type: ignore[no-untyped-def]
    _, sender, receiver = pair
    for bad in ({"max_message_count": "ten"}, {"max_message_count": -1}, {"max_wait_time": "soon"}):
        with pytest.raises(CLEAR):
            await receiver.receive_messages(**bad)
    await _still_works(sender, receiver)


@pytest.mark.parametrize(
    "conn_str",
    ["", "garbage", "Endpoint=", "Endpoint=sb://;SharedAccessKey=x", "Endpoint=sb://h:99999999;SharedAccessKeyName=a;SharedAccessKey=b",
     "Endpoint=sb://h\x00x;SharedAccessKeyName=a;SharedAccessKey=b", "=" * 100000],
    ids=["empty", "garbage", "no-host", "no-policy", "bad-port", "nul", "huge"],
)
def test_bad_connection_strings_raise_value_error(conn_str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, ServiceBusError)):
        ServiceBusClient.from_connection_string(conn_str)


async def test_many_concurrent_misuses_do_not_disturb_good_traffic(pair) -> None:  # type: ignore[no-untyped-def]
    _, sender, receiver = pair
    bad = [sender.send_messages(Message(b"b" * (300 * 1024))) for _ in range(20)]
    good = [sender.send_messages(Message(b"g%d" % i)) for i in range(20)]
    results = await asyncio.gather(*bad, *good, return_exceptions=True)
    assert all(isinstance(r, ServiceBusError) for r in results[:20])
    assert all(r is None for r in results[20:])


async def test_sql_rule_with_int64_min_div_minus_one_does_not_kill_the_broker(fresh_emu) -> None:  # type: ignore[no-untyped-def]
    """Regression (found by fuzz_sql): INT64_MIN / -1 in a rule trapped with SIGFPE and killed
    sbus-emulator (emulator/sql.c eval_arith; fixed in e642a63)."""
    emu = fresh_emu
    topic = await emu.aio.create_topic(subscriptions=[{"Name": "s", "Rules": [{"Name": "r", "Properties": {
        "FilterType": "Sql", "SqlFilter": {"SqlExpression": "(-9223372036854775807 - 1) / -1 = 1"}}}]}])
    async with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as client:
        async with client.get_topic_sender(topic) as sender:
            try:
                await asyncio.wait_for(sender.send_messages(Message(b"x")), 10)
            except ServiceBusError:
                pass
    await asyncio.sleep(0.3)
    assert emu.running, "sbus-emulator died (exit %s)" % emu._proc.poll()


async def test_invalid_utf8_from_the_wire_is_received_without_a_crash(emu, queue) -> None:  # type: ignore[no-untyped-def]
    """A peer (here the Lua binding, which sends Lua strings as they are) puts
    invalid UTF-8 into AMQP strings: the Python receiver must hand the message
    over (with replacement characters or raw bytes) or raise a ServiceBusError,
    never crash, and keep receiving."""
    import os
    import shutil
    import subprocess

    from conftest import ROOT

    build = os.environ.get("SBUS_BUILD_DIR") or os.path.join(ROOT, "build")
    so = os.path.join(build, "lua54", "servicebus.so")
    if not (shutil.which("lua5.4") and os.path.exists(so)):
        pytest.skip("needs lua5.4 and %s" % so)
    script = (
        'local sb = require "servicebus"\n'
        "local c = assert(sb.from_connection_string(arg[1]))\n"
        "local s = assert(c:sender(arg[2]))\n"
        'assert(s:send(sb.message{ body = "x", subject = "\\xc3\\x28", correlation_id = "\\xff\\xfe",'
        ' properties = { bad = "\\xed\\xa0\\x80", ["k\\xff"] = "v" } }))\n'
        'assert(s:send("after"))\n'
        "c:close()\n"
    )
    env = dict(os.environ, LUA_CPATH_5_4=os.path.join(build, "lua54", "?.so") + ";;",
               LUA_PATH_5_4=os.path.join(ROOT, "bindings", "lua", "?.lua") + ";;")
    proc = subprocess.run(["lua5.4", "-", emu.connection_string, queue], input=script.encode(), env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    async with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            seen = []
            for _ in range(10):
                try:
                    got = await receiver.receive_messages(max_message_count=10, max_wait_time=1)
                except ServiceBusError:
                    continue  # a clear refusal of the malformed one is acceptable
                for m in got:
                    repr(m), m.subject, m.correlation_id, m.properties  # noqa: B018 - must not crash
                    seen.append(bytes(m.body))
                    await m.complete()
                if b"after" in seen:
                    break
            assert b"after" in seen
