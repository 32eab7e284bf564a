"""TLS to the emulator's amqps listener, verified against its generated CA."""

import pytest

from servicebus import Message, ServiceBusSharedKeyCredential
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import ServiceBusConnectionError


@pytest.fixture
def tls(emulator):  # type: ignore[no-untyped-def]
    if not emulator.amqps_port or not emulator.ca_file:
        pytest.skip("the emulator has no TLS listener")
    return emulator


async def test_namespace_and_shared_key_over_tls(tls, queue: str) -> None:  # type: ignore[no-untyped-def]
    cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")
    async with ServiceBusClient("localhost:%d" % tls.amqps_port, cred, connection_verify=tls.ca_file) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"over tls"))
        async with client.get_queue_receiver(queue) as receiver:
            got = await receiver.receive_messages(max_wait_time=5)
            assert [m.body for m in got] == [b"over tls"]
            await got[0].complete()


async def test_connection_string_without_emulator_flag_uses_tls(tls, queue: str) -> None:  # type: ignore[no-untyped-def]
    cs = (
        "Endpoint=sb://localhost:%d/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE"
        % tls.amqps_port
    )
    async with ServiceBusClient.from_connection_string(cs, connection_verify=tls.ca_file) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"tls cs"))
        async with client.get_queue_receiver(queue) as receiver:
            got = await receiver.receive_messages(max_wait_time=5)
            assert [m.body for m in got] == [b"tls cs"]
            await got[0].complete()


async def test_untrusted_certificate_is_a_connection_error(tls) -> None:  # type: ignore[no-untyped-def]
    cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")
    async with ServiceBusClient(
        "localhost:%d" % tls.amqps_port, cred, connection_verify="/etc/ssl/certs/ca-certificates.crt", retry_total=0
    ) as client:
        with pytest.raises(ServiceBusConnectionError) as info:
            async with client.get_queue_sender("test-queue") as sender:
                await sender.send_messages(Message(b"x"))
    assert info.value.code in ("tls", "connection")
