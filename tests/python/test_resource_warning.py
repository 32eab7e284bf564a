"""Clients, senders and receivers left open emit ResourceWarning."""

import asyncio
import gc

import pytest

from servicebus.aio import ServiceBusClient, ServiceBusReceiver


async def test_unclosed_client_warns(connection_string: str, queue: str) -> None:
    client = ServiceBusClient.from_connection_string(connection_string)
    receiver = client.get_queue_receiver(queue)
    await receiver.receive_messages(max_wait_time=0.1)
    with pytest.warns(ResourceWarning):
        del client, receiver
        gc.collect()
    await asyncio.sleep(0.05)


async def test_unclosed_receiver_from_connection_string_warns(connection_string: str, queue: str) -> None:
    receiver = ServiceBusReceiver.from_connection_string(connection_string, queue_name=queue)
    await receiver.receive_messages(max_wait_time=0.1)
    with pytest.warns(ResourceWarning):
        del receiver
        gc.collect()
    await asyncio.sleep(0.05)


async def test_closed_client_does_not_warn(connection_string: str, queue: str, recwarn) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_receiver(queue) as receiver:
            await receiver.receive_messages(max_wait_time=0.1)
    del client, receiver
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


async def test_extension_connection_warns_when_dropped_open() -> None:
    """The C type itself warns in tp_dealloc (and does no I/O there)."""
    from servicebus._connection import _OpFuture, _Protocol

    cs = "Endpoint=sb://localhost:1;SharedAccessKeyName=R;SharedAccessKey=K;UseDevelopmentEmulator=true"
    conn = _Protocol(asyncio.get_running_loop(), _OpFuture, {"connection_string": cs})
    with pytest.warns(ResourceWarning, match="unclosed servicebus connection"):
        del conn
        gc.collect()
    closed = _Protocol(asyncio.get_running_loop(), _OpFuture, {"connection_string": cs})
    closed.abort()
    del closed
    gc.collect()


async def test_a_failed_async_with_releases_its_connection(emulator, recwarn) -> None:  # type: ignore[no-untyped-def]
    from servicebus.aio import ServiceBusSender
    from servicebus.exceptions import ServiceBusAuthenticationError

    cs = emulator.connection_string_with_key("wrong") + "EntityPath=test-queue"
    sender = ServiceBusSender.from_connection_string(cs)
    with pytest.raises(ServiceBusAuthenticationError):
        async with sender:
            pass
    assert sender._connection.closed
    del sender
    gc.collect()
    await asyncio.sleep(0.05)
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]
