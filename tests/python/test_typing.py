"""The package is typed (py.typed + the extension's stub): mypy --strict accepts
user code written against the public API, and the binding's own modules."""

import os
import subprocess
import sys
import textwrap

import pytest

USER_CODE = textwrap.dedent(
    '''
    import datetime
    from typing import List, Optional
    from servicebus import Message, ServiceBusMessage, ReceiveMode
    from servicebus.aio import ServiceBusClient, ReceivedMessage

    async def main(conn_str: str) -> None:
        async with ServiceBusClient.from_connection_string(conn_str) as client:
            async with client.get_queue_sender("q") as sender:
                msg: Message = ServiceBusMessage("x", message_id="1")
                mid: Optional[str] = msg.message_id
                msg.subject = "s"
                await sender.send_messages([msg])
                batch = await sender.create_batch()
                batch.add(Message(b"y"))
                size: int = batch.size_in_bytes
                seqs: List[int] = await sender.schedule_messages(msg, datetime.datetime.utcnow())
            async with client.get_queue_receiver("q", receive_mode=ReceiveMode.PeekLock) as receiver:
                got: List[ReceivedMessage] = await receiver.receive_messages(max_wait_time=1)
                for m in got:
                    seq: Optional[int] = m.sequence_number
                    until: Optional[datetime.datetime] = m.locked_until_utc
                    await m.complete()
    '''
)


def _mypy(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["/usr/bin/python3", "-m", "mypy", "--strict", "--ignore-missing-imports", "--no-incremental",
         "--python-executable", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )


@pytest.fixture(scope="module")
def mypy_available() -> None:
    if subprocess.run(["/usr/bin/python3", "-m", "mypy", "--version"], capture_output=True).returncode != 0:
        pytest.skip("mypy is not installed (Debian: apt-get install mypy)")


def test_user_code_type_checks(tmp_path, mypy_available) -> None:  # type: ignore[no-untyped-def]
    path = os.path.join(str(tmp_path), "user.py")
    with open(path, "w") as f:
        f.write(USER_CODE)
    res = _mypy(path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_binding_modules_are_strict_clean(mypy_available) -> None:  # type: ignore[no-untyped-def]
    # one mypy run for all of them (each run costs 4-5 s of start-up)
    modules = ["servicebus.aio", "servicebus.exceptions", "servicebus._message", "servicebus.amqp"]
    res = _mypy(*[a for m in modules for a in ("-m", m)], "--follow-imports=silent")
    assert res.returncode == 0, res.stdout + res.stderr
