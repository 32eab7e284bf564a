"""Authentication and authorisation: SAS checks, claims per link, unknown entities, sizes.

uamqp 7.8.2 can crash the interpreter while tearing down a connection whose
put-token failed, so the negative authentication cases run in a subprocess.
"""
import os
import subprocess
import sys
import textwrap

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusAuthenticationError, \
    ServiceBusAuthorizationError, MessagingEntityNotFoundError, ServiceBusError

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from azure.servicebus.aio import ServiceBusClient
    from azure.servicebus import ServiceBusMessage
    async def main():
        c = ServiceBusClient.from_connection_string(sys.argv[1], connection_verify=sys.argv[2], retry_total=0)
        try:
            async with c:
                async with c.get_queue_sender(sys.argv[3]) as s:
                    await s.send_messages(ServiceBusMessage("x"))
            print("RESULT ok")
        except Exception as e:
            print("RESULT", type(e).__name__, str(e).replace("\\n", " ")[:300])
        sys.stdout.flush()
    asyncio.run(main())
""")


def run_sender(conn_str, ca, entity):
    p = subprocess.run([sys.executable, "-c", SCRIPT, conn_str, ca, entity], capture_output=True, text=True, timeout=120)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT"):
            return line
    return "CRASH rc=%d %s" % (p.returncode, p.stderr[-300:])


def test_wrong_key_is_refused(emulator):
    conn = emulator.conn_str.replace("SAS_KEY_VALUE", "WRONG_KEY")
    result = run_sender(conn, emulator.ca, "queue.1")
    assert result.startswith("RESULT ServiceBusAuthenticationError") or result.startswith("RESULT ServiceBusError"), result


def test_unknown_key_name_is_refused(emulator):
    conn = emulator.conn_str.replace("RootManageSharedAccessKey", "NoSuchPolicy")
    result = run_sender(conn, emulator.ca, "queue.1")
    assert result.startswith("RESULT ServiceBus"), result
    assert result != "RESULT ok"


def test_correct_key_in_a_subprocess_works(emulator):
    assert run_sender(emulator.conn_str, emulator.ca, "queue.1") == "RESULT ok"


async def test_unknown_entity_is_not_found(client):
    async with client:
        with pytest.raises((MessagingEntityNotFoundError, ServiceBusError)) as ei:
            async with client.get_queue_sender("no-such-queue") as s:
                await s.send_messages(ServiceBusMessage("x"))
        assert "could not be found" in str(ei.value)


async def test_entity_policy_rights_are_enforced(emulator):
    from azure.servicebus.aio import ServiceBusClient
    name = "auth-" + os.urandom(4).hex()
    status, body = emulator.call("POST", "/entities", {"Queue": {"Name": name, "SharedAccessPolicies": [
        {"Name": "sender", "Key": "c2VuZGVyLWtleQ==", "Rights": ["Send"]}]}})
    assert status == 201, body
    conn = emulator.conn_str.replace("RootManageSharedAccessKey", "sender").replace("SAS_KEY_VALUE", "c2VuZGVyLWtleQ==")
    client = ServiceBusClient.from_connection_string(conn, connection_verify=emulator.ca, retry_total=0)
    async with client:
        async with client.get_queue_sender(name) as s:
            await s.send_messages(ServiceBusMessage("allowed"))
        with pytest.raises((ServiceBusAuthorizationError, ServiceBusError)) as ei:
            async with client.get_queue_receiver(name) as r:
                await r.receive_messages(max_message_count=1, max_wait_time=1)
        assert "Listen" in str(ei.value) or "nauthorized" in str(ei.value)
    assert emulator.entities()[name]["active"] == 1


async def test_oversized_message_is_refused(client, queue):
    async with client:
        async with client.get_queue_sender(queue) as s:
            with pytest.raises(MessageSizeExceededError):
                await s.send_messages(ServiceBusMessage(b"x" * 300000))
            await s.send_messages(ServiceBusMessage(b"y" * 200000))
        async with client.get_queue_receiver(queue) as r:
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(b"".join(msgs[0].body)) == 200000
