"""A wrong SAS key fails with ServiceBusAuthenticationError and a clear message."""

import pytest

from servicebus import Message
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import ServiceBusAuthenticationError, ServiceBusError


async def test_wrong_key_is_an_authentication_error(emulator) -> None:  # type: ignore[no-untyped-def]
    conn_str = emulator.connection_string_with_key("not-the-right-key")
    async with ServiceBusClient.from_connection_string(conn_str) as client:
        sender = client.get_queue_sender("test-queue")
        with pytest.raises(ServiceBusAuthenticationError) as info:
            async with sender:
                await sender.send_messages(Message(b"x"))
    err = info.value
    assert isinstance(err, ServiceBusError)
    assert err.code == "unauthorized"
    text = str(err)
    assert "not-the-right-key" not in text
    assert len(text) > 20, text


async def test_wrong_key_on_receive(emulator) -> None:  # type: ignore[no-untyped-def]
    conn_str = emulator.connection_string_with_key("bad")
    async with ServiceBusClient.from_connection_string(conn_str) as client:
        with pytest.raises(ServiceBusAuthenticationError):
            async with client.get_queue_receiver("test-queue") as receiver:
                await receiver.receive_messages(max_wait_time=1)
