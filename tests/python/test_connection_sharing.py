"""One AMQP connection per ServiceBusClient, shared by its senders and
receivers; from_connection_string handlers own theirs."""

from servicebus import Message
from servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender


async def test_client_children_share_one_connection(connection_string: str, queue: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(queue) as s1, client.get_topic_sender("topic.1") as s2:
            async with client.get_queue_receiver(queue) as r1, client.get_queue_receiver("test-queue-2") as r2:
                await s1.send_messages(Message(b"shared"))
                await s2.send_messages(Message(b"shared"))
                handle = client._connection._handle
                assert handle is not None
                assert r1._handle.connection is handle and r2._handle.connection is handle
                for h in (s1, s2, r1, r2):
                    assert h._connection is client._connection
                got = await r1.receive_messages(max_wait_time=5)
                for m in got:
                    await m.complete()


async def test_handlers_from_connection_string_own_their_connection(connection_string: str, queue: str) -> None:
    async with ServiceBusSender.from_connection_string(connection_string, queue_name=queue) as sender:
        async with ServiceBusReceiver.from_connection_string(connection_string, queue_name=queue) as receiver:
            assert sender._connection is not receiver._connection
            await sender.send_messages(Message(b"own"))
            got = await receiver.receive_messages(max_wait_time=5)
            await got[0].complete()
    assert sender._connection.closed and receiver._connection.closed
