"""logging_enable=True sends the AMQP frame trace to logging.getLogger("servicebus")."""

import logging

from servicebus import Message
from servicebus.aio import ServiceBusClient


async def test_frame_trace_is_logged(connection_string: str, queue: str, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="servicebus")
    async with ServiceBusClient.from_connection_string(connection_string, logging_enable=True) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"traced"))
    lines = [r.getMessage() for r in caplog.records if r.name == "servicebus"]
    assert len(lines) > 3
    assert any("open" in line.lower() for line in lines)
    assert all("SAS_KEY_VALUE" not in line for line in lines)


async def test_no_trace_by_default(connection_string: str, queue: str, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="servicebus")
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"quiet"))
    assert not [r for r in caplog.records if r.name == "servicebus" and r.levelno == logging.INFO]
