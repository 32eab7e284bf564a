"""The control surface seen through Microsoft's SDK: faults, forced detach, entity life cycle."""
import urllib.parse

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusError, ServiceBusServerBusyError


def no_retry(emulator):
    return ServiceBusClient.from_connection_string(emulator.conn_str, connection_verify=emulator.ca, retry_total=0)


def test_health_and_unknown_endpoints(emulator):
    assert emulator.call("GET", "/health") == (200, {"status": "healthy"})
    assert emulator.call("GET", "/nope")[0] == 404
    assert emulator.call("POST", "/clock", {"advance_ms": -5})[0] == 400
    assert emulator.call("POST", "/faults", {"fail_next": 1, "op": "explode"})[0] == 400


async def test_fail_next_send_with_server_busy(emulator, queue):
    emulator.faults(fail_next=1, op="send", condition="com.microsoft:server-busy")
    async with no_retry(emulator) as client:
        async with client.get_queue_sender(queue) as s:
            with pytest.raises(ServiceBusServerBusyError):
                await s.send_messages(ServiceBusMessage("refused"))
            await s.send_messages(ServiceBusMessage("accepted"))
    assert emulator.entities()[queue]["active"] == 1


async def test_fail_next_mgmt(emulator, queue):
    emulator.faults(fail_next=1, op="mgmt", condition="com.microsoft:server-busy")
    async with no_retry(emulator) as client:
        async with client.get_queue_receiver(queue) as r:
            with pytest.raises(ServiceBusServerBusyError):
                await r.peek_messages(max_message_count=1)
            assert await r.peek_messages(max_message_count=1) == []


async def test_forced_detach_surfaces_as_an_error_then_recovers(emulator, queue):
    async with no_retry(emulator) as client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("one"))
            emulator.faults(detach=queue, condition="amqp:link:detach-forced")
            with pytest.raises(ServiceBusError):
                await s.send_messages(ServiceBusMessage("two"))
    async with ServiceBusClient.from_connection_string(emulator.conn_str, connection_verify=emulator.ca) as client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("three"))
    assert emulator.entities()[queue]["active"] == 2


async def test_drop_connections_then_reconnect(emulator, queue, client):
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages(ServiceBusMessage("before"))
            emulator.faults(drop_connections=True)
            await s.send_messages(ServiceBusMessage("after"))  # the SDK reconnects and retries
    assert emulator.entities()[queue]["active"] == 2


async def test_create_and_delete_entities(emulator, client):
    status, body = emulator.call("POST", "/entities", {"Topic": {"Name": "rt-topic", "Subscriptions": [{"Name": "s1"}]}})
    assert status == 201, body
    assert emulator.call("POST", "/entities", {"Topic": {"Name": "rt-topic"}})[0] == 409
    status, body = emulator.call("POST", "/entities", {"Subscription": {"Name": "s2", "Rules": [
        {"Name": "r", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "n > 1"}}}]}, "TopicName": "rt-topic"})
    assert status == 201, body
    bad = emulator.call("POST", "/entities", {"Queue": {"Name": "rt-q", "Properties": {"LockDuration": "soon"}}})
    assert bad[0] == 400 and "Queue.Properties.LockDuration" in bad[1]["error"]
    async with client:
        async with client.get_topic_sender("rt-topic") as s:
            await s.send_messages([ServiceBusMessage("a", application_properties={"n": 1}),
                                   ServiceBusMessage("b", application_properties={"n": 2})])
    ents = emulator.entities()
    assert ents["rt-topic/Subscriptions/s1"]["active"] == 2
    assert ents["rt-topic/Subscriptions/s2"]["active"] == 1
    path = urllib.parse.quote("rt-topic/Subscriptions/s2", safe="")
    assert emulator.call("DELETE", "/entities/" + path)[0] == 200
    assert "rt-topic/Subscriptions/s2" not in emulator.entities()
    assert emulator.call("DELETE", "/entities/rt-topic")[0] == 200
    assert "rt-topic/Subscriptions/s1" not in emulator.entities()
    assert emulator.call("DELETE", "/entities/rt-topic")[0] == 404
