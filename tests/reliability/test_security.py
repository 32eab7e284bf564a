"""Nobody gets in without the right key, and keys never leak.

SAS refusals map to the documented exceptions: a token the service refuses
(wrong key, expired, wrong audience, unknown policy) is
ServiceBusAuthenticationError; a valid token without the right the operation
needs (Send, Listen, Manage) is ServiceBusAuthorizationError. TLS verifies the
peer by default. Keys and signatures appear in no log line (frame traces
included, logging_enable=True), repr, or exception message.
"""

import base64
import hashlib
import hmac
import logging
import re
import time
import urllib.parse

import pytest

from conftest import LISTENER_KEY, QUEUE_SENDER_KEY, ROOT_KEY, SENDER_KEY

from servicebus import Message, ServiceBusSharedKeyCredential
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import (
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusConnectionError,
    ServiceBusError,
)

NO_RETRY = {"retry_total": 0}


def sas_token(resource: str, key_name: str, key: str, expiry: int) -> str:
    sr = urllib.parse.quote_plus(resource)
    sig = base64.b64encode(hmac.new(key.encode(), ("%s\n%d" % (sr, expiry)).encode(), hashlib.sha256).digest())
    return "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s" % (sr, urllib.parse.quote_plus(sig), expiry, key_name)


def sas_connection_string(emu, token: str) -> str:  # type: ignore[no-untyped-def]
    return "Endpoint=sb://localhost:%d;SharedAccessSignature=%s;UseDevelopmentEmulator=true;" % (emu.amqp_port, token)


async def _send(conn_str: str, queue: str, **kw) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(conn_str, **NO_RETRY, **kw) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"x"))


async def _receive(conn_str: str, queue: str, **kw) -> None:  # type: ignore[no-untyped-def]
    async with ServiceBusClient.from_connection_string(conn_str, **NO_RETRY, **kw) as client:
        async with client.get_queue_receiver(queue) as receiver:
            await receiver.receive_messages(max_wait_time=1)


@pytest.mark.parametrize("op", [_send, _receive])
async def test_wrong_key_is_an_authentication_error(emu, queue, op) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceBusAuthenticationError) as info:
        await op(emu.connection_string_for("RootManageSharedAccessKey", "d3Jvbmc="), queue)
    assert info.value.condition == "amqp:unauthorized-access"


async def test_unknown_policy_is_an_authentication_error(emu, queue) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceBusAuthenticationError):
        await _send(emu.connection_string_for("nobody", ROOT_KEY), queue)


async def test_expired_token_is_an_authentication_error(emu, queue) -> None:  # type: ignore[no-untyped-def]
    token = sas_token("sb://localhost/%s" % queue, "RootManageSharedAccessKey", ROOT_KEY, int(time.time()) - 60)
    with pytest.raises(ServiceBusAuthenticationError):
        await _send(sas_connection_string(emu, token), queue)


async def test_token_for_another_entity_is_an_authentication_error(emu, queue) -> None:  # type: ignore[no-untyped-def]
    token = sas_token("sb://localhost/other", "RootManageSharedAccessKey", ROOT_KEY, int(time.time()) + 3600)
    await _send(sas_connection_string(emu, token), "other")  # the right audience works
    with pytest.raises(ServiceBusAuthenticationError):
        await _send(sas_connection_string(emu, token), queue)


async def test_valid_token_for_the_namespace_works(emu, queue) -> None:  # type: ignore[no-untyped-def]
    token = sas_token("sb://localhost/", "RootManageSharedAccessKey", ROOT_KEY, int(time.time()) + 3600)
    await _send(sas_connection_string(emu, token), queue)


async def test_send_only_policy_cannot_receive(emu, queue) -> None:  # type: ignore[no-untyped-def]
    """Regression: missing rights were reported as authentication errors (core/src/error.c, fixed in c825694)."""
    conn = emu.connection_string_for("sender", SENDER_KEY)
    await _send(conn, queue)
    with pytest.raises(ServiceBusAuthorizationError) as info:
        await _receive(conn, queue)
    assert not isinstance(info.value, ServiceBusAuthenticationError)


async def test_listen_only_policy_cannot_send(emu, queue) -> None:  # type: ignore[no-untyped-def]
    conn = emu.connection_string_for("listener", LISTENER_KEY)
    await _receive(conn, queue)
    with pytest.raises(ServiceBusAuthorizationError):
        await _send(conn, queue)


async def test_listen_only_policy_cannot_schedule(emu, queue) -> None:  # type: ignore[no-untyped-def]
    import datetime

    conn = emu.connection_string_for("listener", LISTENER_KEY)
    with pytest.raises((ServiceBusAuthorizationError, ServiceBusAuthenticationError)):
        async with ServiceBusClient.from_connection_string(conn, **NO_RETRY) as client:
            async with client.get_queue_sender(queue) as sender:
                await sender.schedule_messages(Message(b"x"), datetime.datetime.now(datetime.timezone.utc))


async def test_entity_policy_is_limited_to_its_entity_and_right(emu) -> None:  # type: ignore[no-untyped-def]
    conn = emu.connection_string_for("queue-sender", QUEUE_SENDER_KEY)
    await _send(conn, "secured")
    with pytest.raises(ServiceBusAuthorizationError):
        await _receive(conn, "secured")
    with pytest.raises((ServiceBusAuthenticationError, ServiceBusAuthorizationError)):
        await _send(conn, "other")


# ---------------------------------------------------------------- TLS


async def test_tls_verifies_the_server_by_default(emu, queue) -> None:  # type: ignore[no-untyped-def]
    """No CA given: the emulator's self-signed chain is refused."""
    cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", ROOT_KEY)
    async with ServiceBusClient("localhost:%d" % emu.amqps_port, cred, **NO_RETRY) as client:
        with pytest.raises(ServiceBusConnectionError):
            async with client.get_queue_sender(queue) as sender:
                await sender.send_messages(Message(b"x"))


async def test_tls_with_the_ca_works(emu, queue) -> None:  # type: ignore[no-untyped-def]
    cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", ROOT_KEY)
    async with ServiceBusClient("localhost:%d" % emu.amqps_port, cred, connection_verify=emu.ca_file) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"x"))


async def test_turning_verification_off_is_explicit_and_logs_a_warning(emu, queue, caplog) -> None:  # type: ignore[no-untyped-def]
    cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", ROOT_KEY)
    with caplog.at_level(logging.WARNING):
        async with ServiceBusClient("localhost:%d" % emu.amqps_port, cred, connection_verify=False) as client:
            async with client.get_queue_sender(queue) as sender:
                await sender.send_messages(Message(b"x"))  # works: verification is off
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "verif" in r.getMessage().lower()]
    assert warned, "connection_verify=False must log a warning (the engine emits it on open)"


# ------------------------------------------------------- keys never leak


def _secret_patterns(*keys: str):  # type: ignore[no-untyped-def]
    pats = [re.escape(k) for k in keys]
    pats.append(r"sig=(?!\*|<|\[|redacted)[A-Za-z0-9%+/=]{8,}")  # a real signature value
    return re.compile("|".join(pats))


async def test_keys_and_signatures_never_appear_in_logs_reprs_or_errors(emu, queue, caplog) -> None:  # type: ignore[no-untyped-def]
    secret = _secret_patterns(ROOT_KEY, SENDER_KEY, LISTENER_KEY, "d3Jvbmc=")
    texts = []
    with caplog.at_level(logging.DEBUG):
        conn = emu.connection_string
        async with ServiceBusClient.from_connection_string(conn, logging_enable=True) as client:
            texts.append(repr(client))
            async with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as receiver:
                texts += [repr(sender), repr(receiver), str(sender), str(receiver)]
                await sender.send_messages(Message(b"secret-free"))
                (m,) = await receiver.receive_messages(max_wait_time=5)
                texts += [repr(m), str(m)]
                await m.complete()
        cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", ROOT_KEY)
        texts += [repr(cred), str(cred)]
        # failures: wrong key, expired token, bad connection string
        for conn_str in (
            emu.connection_string_for("RootManageSharedAccessKey", "d3Jvbmc="),
            emu.connection_string_for("sender", SENDER_KEY),
        ):
            try:
                await _receive(conn_str, queue, logging_enable=True)
            except ServiceBusError as exc:
                texts += [str(exc), repr(exc), str(exc.reason), str(exc.__dict__)]
        try:
            ServiceBusClient.from_connection_string("Endpoint=;SharedAccessKey=%s" % ROOT_KEY)
        except Exception as exc:  # noqa: BLE001 - any refusal, as long as it does not quote the key
            texts += [str(exc), repr(exc)]
    texts += [r.getMessage() for r in caplog.records]
    assert any("sasl" in t.lower() or "attach" in t.lower() for t in texts), "the frame trace was not captured"
    leaks = [t for t in texts if secret.search(t)]
    assert not leaks, "secrets in: %s" % [secret.search(t).group(0) + " in " + t[:200] for t in leaks[:3]]
