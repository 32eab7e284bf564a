"""Credentials: shared key, and get_token objects (sync and async)."""

import time

import pytest

from servicebus import AccessToken, Message, ServiceBusSharedKeyCredential
from servicebus.aio import ServiceBusClient, ServiceBusSender
from servicebus.exceptions import ServiceBusAuthenticationError


def _namespace(emulator) -> str:  # type: ignore[no-untyped-def]
    return "localhost:%d" % emulator.port


def test_shared_key_credential_makes_sas_tokens_and_hides_the_key() -> None:
    cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")
    tok = cred.get_token("sb://localhost/test-queue")
    assert isinstance(tok, AccessToken)
    assert tok.token.startswith("SharedAccessSignature ")
    assert "skn=RootManageSharedAccessKey" in tok.token
    assert tok.expires_on > time.time()
    assert "SAS_KEY_VALUE" not in repr(cred)


class SyncSas:
    """A get_token object handing out SAS tokens for the whole namespace."""

    def __init__(self, resource: str, key: str = "SAS_KEY_VALUE") -> None:
        self.inner = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", key)
        self.resource = resource
        self.calls = 0

    def get_token(self, *scopes: str) -> AccessToken:
        self.calls += 1
        return self.inner.get_token(self.resource)


class AsyncSas(SyncSas):
    async def get_token(self, *scopes: str) -> AccessToken:  # type: ignore[override]
        self.calls += 1
        return self.inner.get_token(self.resource)


@pytest.mark.parametrize("cls", [SyncSas, AsyncSas])
async def test_get_token_credentials(emulator, cls, queue) -> None:  # type: ignore[no-untyped-def]
    cred = cls("sb://localhost:%d/" % emulator.port)
    client = ServiceBusClient(_namespace(emulator), cred, use_tls=False)
    async with client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"token"))
        async with client.get_queue_receiver(queue) as receiver:
            got = await receiver.receive_messages(max_wait_time=5)
            assert [m.body for m in got] == [b"token"]
            await got[0].complete()
    assert cred.calls >= 1


async def test_shared_key_credential_with_the_constructor(emulator, queue) -> None:  # type: ignore[no-untyped-def]
    cred = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")
    async with ServiceBusSender(_namespace(emulator), cred, queue_name=queue, use_tls=False) as sender:
        await sender.send_messages(Message(b"ctor"))


async def test_failing_get_token_is_an_authentication_error(emulator) -> None:  # type: ignore[no-untyped-def]
    class Broken:
        def get_token(self, *scopes: str) -> AccessToken:
            raise RuntimeError("no token today")

    client = ServiceBusClient(_namespace(emulator), Broken(), use_tls=False, retry_total=0)
    async with client:
        with pytest.raises(ServiceBusAuthenticationError):
            async with client.get_queue_sender("test-queue") as sender:
                await sender.send_messages(Message(b"x"))


async def test_get_token_may_return_a_plain_tuple(emulator, queue) -> None:  # type: ignore[no-untyped-def]
    inner = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")
    resource = "sb://localhost:%d/" % emulator.port

    class TupleCred:
        def get_token(self, *scopes: str):  # type: ignore[no-untyped-def]
            tok = inner.get_token(resource)
            return (tok.token, tok.expires_on)

    async with ServiceBusClient(_namespace(emulator), TupleCred(), use_tls=False) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"tuple"))


async def test_get_token_is_called_again_before_expiry(emulator, queue) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    inner = ServiceBusSharedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")
    resource = "sb://localhost:%d/" % emulator.port
    issued = []

    class ShortLived:
        async def get_token(self, *scopes: str) -> AccessToken:
            tok = inner.get_token(resource, expiry=4)
            issued.append(tok.expires_on)
            return tok

    async with ServiceBusClient(_namespace(emulator), ShortLived(), use_tls=False) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(Message(b"t1"))
            await asyncio.sleep(3.5)
            assert len(issued) >= 2, "the token was not refreshed before it expired"
            await sender.send_messages(Message(b"t2"))
