"""Sessions: isolation, ordering, state, lock renewal, next-available and exclusivity."""
import datetime

import pytest
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusMessage
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusError, SessionCannotBeLockedError


@pytest.fixture
def squeue(emulator):
    return emulator.create_queue(RequiresSession=True, LockDuration="PT30S")


async def test_session_receiver_gets_only_its_session_in_order(client, squeue):
    async with client:
        async with client.get_queue_sender(squeue) as s:
            await s.send_messages([ServiceBusMessage("a%d" % i, session_id="A") for i in range(3)] +
                                  [ServiceBusMessage("b%d" % i, session_id="B") for i in range(2)])
        async with client.get_queue_receiver(squeue, session_id="B") as r:
            assert r.session.session_id == "B"
            got = await r.receive_messages(max_message_count=5, max_wait_time=3)
            assert [str(m) for m in got] == ["b0", "b1"]
            assert {m.session_id for m in got} == {"B"}
            for m in got:
                await r.complete_message(m)
        async with client.get_queue_receiver(squeue, session_id="A") as r:
            got = []
            while len(got) < 3:
                msgs = await r.receive_messages(max_message_count=3, max_wait_time=3)
                assert msgs
                got += msgs
            assert [str(m) for m in got] == ["a0", "a1", "a2"]


async def test_session_state_and_lock_renewal(client, squeue, emulator):
    async with client:
        async with client.get_queue_sender(squeue) as s:
            await s.send_messages(ServiceBusMessage("s", session_id="S1"))
        async with client.get_queue_receiver(squeue, session_id="S1") as r:
            assert await r.session.get_state() is None
            await r.session.set_state("step-2")
            assert await r.session.get_state() == b"step-2"
            before = r.session.locked_until_utc
            assert before is not None
            emulator.advance(10)  # the broker's session lock now has ~20 s left, on its own clock
            after = await r.session.renew_lock()
            # renewed for a whole LockDuration from now, on the client's clock (times on the wire
            # leave out the skew): after the jump that is later than the lock first granted
            now = datetime.datetime.now(datetime.timezone.utc)
            assert after >= before
            assert 25 < (after - now).total_seconds() <= 30
            await r.session.set_state(None)
            assert await r.session.get_state() is None


async def test_next_available_session_picks_a_session_with_messages(client, squeue):
    async with client:
        async with client.get_queue_sender(squeue) as s:
            await s.send_messages(ServiceBusMessage("n", session_id="N1"))
        async with client.get_queue_receiver(squeue, session_id=NEXT_AVAILABLE_SESSION) as r:
            assert r.session.session_id == "N1"
            msgs = await r.receive_messages(max_message_count=1, max_wait_time=3)
            assert [str(m) for m in msgs] == ["n"]
            await r.complete_message(msgs[0])


async def test_a_locked_session_cannot_be_accepted_twice(emulator, squeue):
    from azure.servicebus.aio import ServiceBusClient
    client = ServiceBusClient.from_connection_string(emulator.conn_str, connection_verify=emulator.ca, retry_total=0)
    async with client:
        async with client.get_queue_sender(squeue) as s:
            await s.send_messages(ServiceBusMessage("x", session_id="L1"))
        async with client.get_queue_receiver(squeue, session_id="L1") as r1:
            await r1.receive_messages(max_message_count=1, max_wait_time=3)
            with pytest.raises(SessionCannotBeLockedError):
                async with client.get_queue_receiver(squeue, session_id="L1") as r2:
                    await r2.receive_messages(max_message_count=1, max_wait_time=1)


async def test_message_without_session_id_is_refused(client, squeue):
    async with client:
        async with client.get_queue_sender(squeue) as s:
            with pytest.raises(ServiceBusError):
                await s.send_messages(ServiceBusMessage("no session"))


async def test_defer_and_peek_inside_a_session(client, squeue):
    async with client:
        async with client.get_queue_sender(squeue) as s:
            await s.send_messages([ServiceBusMessage("x1", session_id="D"), ServiceBusMessage("x2", session_id="D"),
                                   ServiceBusMessage("other", session_id="E")])
        async with client.get_queue_receiver(squeue, session_id="D") as r:
            first = (await r.receive_messages(max_message_count=1, max_wait_time=3))[0]
            await r.defer_message(first)
            peeked = await r.peek_messages(max_message_count=10, sequence_number=1)
            assert [str(p) for p in peeked] == ["x1", "x2"]
            deferred = await r.receive_deferred_messages([first.sequence_number])
            assert [str(d) for d in deferred] == ["x1"]
            await r.complete_message(deferred[0])
            rest = await r.receive_messages(max_message_count=5, max_wait_time=2)
            assert [str(m) for m in rest] == ["x2"]
            await r.complete_message(rest[0])


async def test_abandon_in_a_session_keeps_order(client, squeue):
    async with client:
        async with client.get_queue_sender(squeue) as s:
            await s.send_messages([ServiceBusMessage("o1", session_id="O"), ServiceBusMessage("o2", session_id="O")])
        async with client.get_queue_receiver(squeue, session_id="O") as r:
            m = (await r.receive_messages(max_message_count=1, max_wait_time=3))[0]
            assert str(m) == "o1"
            await r.abandon_message(m)
            again = (await r.receive_messages(max_message_count=1, max_wait_time=3))[0]
            assert (str(again), again.delivery_count) == ("o1", 1)
