"""The azure-servicebus 7.x per-call ``timeout=`` on sender operations: the
engine gives that operation its own deadline (sbus_conn_set_op_timeout), so a
send stuck in retries fails with OperationTimeoutError instead of waiting for
the retry policy to run out."""
import pytest

from servicebus import Message
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import OperationTimeoutError


async def test_send_with_timeout_fails_with_operation_timeout_while_retrying(emulator, queue: str) -> None:  # type: ignore[no-untyped-def]
    # Long backoff: without the per-call deadline this send would wait ~10 s
    # between attempts and end with the server-busy error, not a timeout.
    async with ServiceBusClient.from_connection_string(
        emulator.connection_string, retry_total=3, retry_backoff_factor=10
    ) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"warm-up"), timeout=30)
            await emulator.control("POST", "/faults", {"fail_next": 5, "op": "send", "condition": "com.microsoft:server-busy"})
            try:
                with pytest.raises(OperationTimeoutError):
                    await sender.send_messages(Message(b"stuck"), timeout=0.5)
            finally:
                await emulator.control("POST", "/faults", {"reset": True})
            # The connection is still good afterwards.
            await sender.send_messages(Message(b"after"), timeout=30)


async def test_schedule_and_cancel_accept_timeout(emulator, queue: str) -> None:  # type: ignore[no-untyped-def]
    import datetime

    async with ServiceBusClient.from_connection_string(emulator.connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
            seqs = await sender.schedule_messages(Message(b"later"), when, timeout=30)
            assert len(seqs) == 1
            await sender.cancel_scheduled_messages(seqs, timeout=30)


async def test_timeout_must_be_positive(emulator, queue: str) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(emulator.connection_string) as client:
        async with client.get_queue_sender(queue) as sender:
            with pytest.raises(ValueError):
                await sender.send_messages(Message(b"x"), timeout=0)
        async with client.get_queue_receiver(queue) as receiver:
            assert await receiver.receive_messages(max_wait_time=1) == []  # nothing was sent
