"""The emulator is killed (SIGKILL) and restarted mid-stream.

The clients talk to it through a relay, which is pointed at the new
emulator (an empty broker: its state lives in memory) once it is up. The
test's code re-creates nothing: the same client, sender and receiver objects
must carry on by themselves, and what was in flight must be reported:

- settling a message received from the dead broker raises
  MessageLockExpired (its lock died with the broker);
- a send started while the broker was down either completes once it is
  back or raises a retriable ServiceBusConnectionError, within a bound;
- every send that returned after the restart is received from the new
  broker.
"""

import asyncio
import os
import signal

from conftest import CONFIG, emulator_binary, relayed
from relay import Relay

from servicebus import Message
from servicebus.aio import ServiceBusClient
from servicebus.exceptions import MessageLockExpired, ServiceBusConnectionError
from servicebus.testing import Emulator

QUEUE = "other"  # declared in config.json, so both emulators have it


async def test_emulator_killed_and_restarted_mid_stream() -> None:
    first = Emulator(CONFIG, binary=emulator_binary(), amqps_port=None)
    await first.astart()
    second = None
    relay = await Relay(("127.0.0.1", first.amqp_port)).start()
    try:
        conn = relayed(first.connection_string, relay.port)
        async with ServiceBusClient.from_connection_string(conn) as client:
            sender = client.get_queue_sender(QUEUE)
            receiver = client.get_queue_receiver(QUEUE)
            async with sender, receiver:
                await sender.send_messages([Message(b"before-%d" % i) for i in range(20)])
                held = []
                while len(held) < 10:
                    held += await receiver.receive_messages(max_message_count=10 - len(held), max_wait_time=2)
                for m in held[:5]:
                    await m.complete()
                in_flight = held[5:]  # received, locked, not settled yet

                os.kill(first.pid, signal.SIGKILL)
                await asyncio.sleep(0.3)
                down_send = asyncio.ensure_future(sender.send_messages(Message(b"while-down")))
                await asyncio.sleep(1.0)

                second = Emulator(CONFIG, binary=emulator_binary(), amqps_port=None)
                await second.astart()
                relay.target = ("127.0.0.1", second.amqp_port)

                # what was in flight is reported, not lost silently
                for m in in_flight:
                    try:
                        await asyncio.wait_for(m.complete(), 60)
                    except MessageLockExpired:
                        continue
                    raise AssertionError("settling a message of the dead broker succeeded")
                try:
                    await asyncio.wait_for(down_send, 60)
                    down_ok = True
                except ServiceBusConnectionError as exc:
                    assert exc.retriable, exc
                    down_ok = False

                # the same objects carry on
                await sender.send_messages([Message(b"after-%d" % i) for i in range(10)])
                got = []
                for _ in range(30):
                    batch = await receiver.receive_messages(max_message_count=20, max_wait_time=1)
                    for m in batch:
                        await m.complete()
                    got += [bytes(m.body) for m in batch]
                    if len(got) >= 10 + down_ok:
                        break
                expected = sorted([b"after-%d" % i for i in range(10)] + ([b"while-down"] if down_ok else []))
                assert sorted(got) == expected
                print("\nFIGURES restart: in_flight_settles_reported=%d send_while_down=%s" % (
                    len(in_flight), "completed" if down_ok else "raised"))
    finally:
        await relay.stop()
        if second is not None:
            await second.astop()
        await first.astop()
