"""Interop with Microsoft's azure-servicebus 7.8.2 (Debian python3-azure).

A message sent by Microsoft's SDK is received by ours with every property
equal, and the other way round. Microsoft's SDK can only reach TLS port 5671
for `Endpoint=sb://host`, so this module starts its own emulator with
`--amqps-port 5671` on a random 127.x.y.z address (the generated certificate
names them); our client uses the same emulator's plain AMQP port.
"""

import datetime
import random
import subprocess
import uuid
from typing import Any, Dict, Iterator, Tuple

import pytest

from conftest import CONFIG, _emulator_binary

azure_sb = pytest.importorskip("azure.servicebus.aio")
from azure.servicebus import ServiceBusMessage  # noqa: E402

from servicebus import Message  # noqa: E402
from servicebus.aio import ServiceBusClient  # noqa: E402

QUEUE = "test-queue"
KEY = "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory) -> Iterator[Tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """(Microsoft connection string, our connection string, CA file)."""
    state = str(tmp_path_factory.mktemp("emu-interop"))
    for _ in range(8):
        host = "127.%d.%d.%d" % (random.randint(1, 250), random.randint(1, 250), random.randint(2, 250))
        proc = subprocess.Popen(
            [_emulator_binary(), "--config", CONFIG, "--host", host, "--amqps-port", "5671", "--amqp-port", "0",
             "--state-dir", state],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line.startswith("sbus-emulator ready"):
            break
        proc.wait()
    else:
        pytest.skip("no loopback address with a free port 5671")
    fields = dict(kv.split("=", 1) for kv in line.split()[2:])
    amqp_port = int(fields["amqp"].rsplit(":", 1)[1])
    ms = "Endpoint=sb://%s;%s" % (host, KEY)
    ours = "Endpoint=sb://%s:%d;%s" % (host, amqp_port, KEY)
    try:
        yield ms, ours, fields["ca"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # seen once: SIGTERM not honoured (STATUS.md)
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


PROPS: Dict[str, Any] = dict(
    message_id="interop-1",
    correlation_id="corr-1",
    subject="subj",
    content_type="application/json",
    to="dest",
    reply_to="reply-queue",
    reply_to_session_id="reply-session",
    partition_key="pk-1",
    time_to_live=datetime.timedelta(minutes=5),
)
APP = {"color": "red", "n": 7, "ok": True, "pi": 1.5}


def _norm(d: Dict[Any, Any]) -> Dict[str, Any]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in d.items()}


async def test_microsoft_sdk_to_ours(tls_emulator) -> None:  # type: ignore[no-untyped-def]
    ms_cs, our_cs, ca = tls_emulator
    body = "from microsoft " + uuid.uuid4().hex
    async with azure_sb.ServiceBusClient.from_connection_string(ms_cs, connection_verify=ca) as ms:
        async with ms.get_queue_sender(QUEUE) as s:
            await s.send_messages(ServiceBusMessage(body, application_properties=APP, **PROPS))
    async with ServiceBusClient.from_connection_string(our_cs) as client:
        async with client.get_queue_receiver(QUEUE) as r:
            (m,) = await r.receive_messages(max_wait_time=5)
            assert str(m) == body
            for name, value in PROPS.items():
                assert getattr(m, name) == value, name
            assert _norm(m.application_properties) == APP
            assert m.sequence_number is not None and m.enqueued_time_utc is not None
            await m.complete()


async def test_ours_to_microsoft_sdk(tls_emulator) -> None:  # type: ignore[no-untyped-def]
    ms_cs, our_cs, ca = tls_emulator
    body = "from servicebus " + uuid.uuid4().hex
    async with ServiceBusClient.from_connection_string(our_cs) as client:
        async with client.get_queue_sender(QUEUE) as s:
            await s.send_messages(Message(body, application_properties=APP, **PROPS))
    async with azure_sb.ServiceBusClient.from_connection_string(ms_cs, connection_verify=ca) as ms:
        async with ms.get_queue_receiver(QUEUE) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(msgs) == 1
            m = msgs[0]
            assert str(m) == body
            for name, value in PROPS.items():
                assert getattr(m, name) == value, name
            assert _norm(m.application_properties) == APP
            await r.complete_message(m)


async def test_batches_cross_both_ways(tls_emulator) -> None:  # type: ignore[no-untyped-def]
    ms_cs, our_cs, ca = tls_emulator
    async with ServiceBusClient.from_connection_string(our_cs) as client:
        async with client.get_queue_sender(QUEUE) as s:
            batch = await s.create_batch()
            for i in range(3):
                batch.add(Message("ours-%d" % i))
            await s.send_messages(batch)
    async with azure_sb.ServiceBusClient.from_connection_string(ms_cs, connection_verify=ca) as ms:
        async with ms.get_queue_sender(QUEUE) as s:
            await s.send_messages([ServiceBusMessage("ms-%d" % i) for i in range(3)])
    async with ServiceBusClient.from_connection_string(our_cs) as client:
        async with client.get_queue_receiver(QUEUE, max_wait_time=2) as r:
            got = []
            async for m in r:
                got.append(str(m))
                await m.complete()
    assert got == ["ours-0", "ours-1", "ours-2", "ms-0", "ms-1", "ms-2"]


def _unbytes(v: Any) -> Any:
    """uamqp returns the strings inside lists and maps as bytes."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [_unbytes(x) for x in v]
    if isinstance(v, dict):
        return {_unbytes(k): _unbytes(x) for k, x in v.items()}
    return v


async def test_amqp_bodies_and_compound_values_cross_both_ways(tls_emulator) -> None:  # type: ignore[no-untyped-def]
    from azure.servicebus.amqp import AmqpAnnotatedMessage as MsAnnotated
    from uamqp.types import AMQPDescribed, AMQPSymbol

    from servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType

    ms_cs, our_cs, ca = tls_emulator
    props = {"list": [1, "a", None], "dict": {"k": 1, "n": [2]}}
    async with azure_sb.ServiceBusClient.from_connection_string(ms_cs, connection_verify=ca) as ms:
        async with ms.get_queue_sender(QUEUE) as s:
            await s.send_messages(MsAnnotated(sequence_body=[[1, "two"], [4.5]], application_properties=props))
            await s.send_messages(MsAnnotated(value_body={"a": [1, 2]}))
            await s.send_messages(
                ServiceBusMessage(
                    b"typed",
                    application_properties={
                        "sym": AMQPSymbol("s"),
                        "described": AMQPDescribed(AMQPSymbol("d"), "v"),
                    },
                )
            )
    async with ServiceBusClient.from_connection_string(our_cs) as client:
        async with client.get_queue_receiver(QUEUE) as r:
            got: list = []
            while len(got) < 3:
                got += await r.receive_messages(max_message_count=3, max_wait_time=5)
            for m in got:
                await m.complete()
            async with client.get_queue_sender(QUEUE) as s:
                await s.send_messages(
                    [
                        AmqpAnnotatedMessage(sequence_body=[[1, "two"], [4.5]], application_properties=props),
                        AmqpAnnotatedMessage(value_body={"a": [1, 2]}),
                    ]
                )
    assert got[0].body_type is AmqpMessageBodyType.SEQUENCE and got[0].body == [[1, "two"], [4.5]]
    assert got[0].application_properties == props
    assert got[1].body_type is AmqpMessageBodyType.VALUE and got[1].body == {"a": [1, 2]}
    assert got[2].application_properties == {"sym": "s", "described": ("d", "v")}  # uamqp cannot send a char
    async with azure_sb.ServiceBusClient.from_connection_string(ms_cs, connection_verify=ca) as ms:
        async with ms.get_queue_receiver(QUEUE) as r:
            back: list = []
            while len(back) < 2:
                back += await r.receive_messages(max_message_count=2, max_wait_time=5)
            for m in back:
                await r.complete_message(m)
            assert back[0].body_type.value == "sequence" and _unbytes(list(back[0].body)) == [[1, "two"], [4.5]]
            assert _unbytes(back[0].application_properties) == props
            assert back[1].body_type.value == "value" and _unbytes(back[1].body) == {"a": [1, 2]}
