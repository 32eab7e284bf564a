"""One benchmark workload with an asyncio Service Bus client, printed as one JSON line.

Usage: py_client.py SDK LOOP WORKLOAD QUEUE N
  SDK       ours (servicebus.aio) or ms (Microsoft's azure.servicebus.aio 7.8.2)
  LOOP      asyncio or uvloop
  WORKLOAD  send_batch | send_single | recv_peeklock | recv_rad | latency | idle
Environment: SB_CONN (connection string), SB_CA (CA file for TLS, optional),
SB_TRANSPORT (amqp, the default, or websocket: transport_type=AmqpOverWebsocket),
SB_LAT_RATE (messages/s for the latency workload), SB_IDLE_S (idle wait).

Both SDKs expose the same azure.servicebus.aio surface, so the same code drives
both; where the spellings of 7.0 and later 7.x differ (ServiceBusMessage vs
Message, receiver.complete_message vs message.complete), the newer one is used
when present. Only the measured phase is timed: connecting and attaching links
happen before the clock starts (the first operation after a warm-up).

CPU is time.process_time() (user + sys of the whole process, all threads);
peak RSS is getrusage's ru_maxrss.
"""
import asyncio
import json
import os
import resource
import sys
import time

BODY = b"x" * 1024
PREFETCH = 300


def load_sdk(name):
    """Returns (ServiceBusClient, make_message, RAD mode, PEEK mode, extra client kwargs)."""
    if name == "ms":
        from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
        from azure.servicebus.aio import ServiceBusClient
        kwargs = {}
        if os.environ.get("SB_CA"):
            kwargs["connection_verify"] = os.environ["SB_CA"]
        return (ServiceBusClient, ServiceBusMessage, ServiceBusReceiveMode.RECEIVE_AND_DELETE,
                ServiceBusReceiveMode.PEEK_LOCK, kwargs)
    import servicebus
    from servicebus.aio import ServiceBusClient
    make = getattr(servicebus, "ServiceBusMessage", None) or servicebus.Message
    mode = getattr(servicebus, "ServiceBusReceiveMode", None) or servicebus.ReceiveMode
    rad = getattr(mode, "RECEIVE_AND_DELETE", None) or mode.ReceiveAndDelete
    peek = getattr(mode, "PEEK_LOCK", None) or mode.PeekLock
    kwargs = {}
    if os.environ.get("SB_CA"):
        kwargs["connection_verify"] = os.environ["SB_CA"]
    transport = os.environ.get("SB_TRANSPORT", "amqp")
    if transport == "websocket":
        kwargs["transport_type"] = servicebus.TransportType.AmqpOverWebsocket
    elif transport not in ("", "amqp"):
        raise SystemExit(f"SB_TRANSPORT must be amqp or websocket, not {transport}")
    return ServiceBusClient, make, rad, peek, kwargs


def settle_complete(receiver, msg):
    fn = getattr(receiver, "complete_message", None)
    return fn(msg) if fn else msg.complete()


class Meter:
    """Wall clock and process CPU over the measured phase."""

    def start(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self):
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


async def send_batch(client, make, queue, n, meter):
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(make(BODY))  # attach + warm-up, not counted
        meter.start()
        done = 0
        while done < n:
            k = min(100, n - done)
            await sender.send_messages([make(BODY) for _ in range(k)])
            done += k
        meter.stop()
    return {"n": n, "extra_sent": 1}


async def send_single(client, make, queue, n, meter):
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(make(BODY))
        meter.start()
        for _ in range(n):
            await sender.send_messages(make(BODY))
        meter.stop()
    return {"n": n, "extra_sent": 1}


async def receive(client, queue, n, meter, mode, peek):
    async with client.get_queue_receiver(queue, receive_mode=mode, prefetch_count=PREFETCH) as rcv:
        got = 0
        started = False
        while got < n:
            batch = await rcv.receive_messages(max_message_count=PREFETCH, max_wait_time=20)
            if not batch:
                raise RuntimeError(f"only {got} of {n} messages arrived (20 s without one)")
            if not started:  # the clock starts with the first message: attach excluded
                meter.start()
                started = True
            if peek:
                await asyncio.gather(*(settle_complete(rcv, m) for m in batch))
            got += len(batch)
        meter.stop()
    return {"n": got}


async def latency(client, make, queue, n, meter):
    """Streaming consumer (`async for`, the SDKs' documented idiom) against a paced sender."""
    rate = float(os.environ.get("SB_LAT_RATE", "200"))
    sent_at = {}
    lat = []
    async with client.get_queue_sender(queue) as sender, \
            client.get_queue_receiver(queue, prefetch_count=PREFETCH, max_wait_time=20) as rcv:
        await sender.send_messages(make(BODY, message_id="warm"))

        async def consume():
            async for m in rcv:
                now = time.perf_counter()
                t = sent_at.pop(str(m.message_id), None)
                if t is not None:
                    lat.append(now - t)
                await settle_complete(rcv, m)
                if len(lat) >= n:
                    return
            raise RuntimeError(f"latency: {len(lat)} of {n} arrived (20 s without one)")

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.5)  # the receiver attaches, the warm-up message goes through
        meter.start()
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            mid = f"lat-{i}"
            sent_at[mid] = time.perf_counter()
            await sender.send_messages(make(BODY, message_id=mid))
            if consumer.done():
                break
        await asyncio.wait_for(consumer, 60)
        meter.stop()
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    return {"n": len(lat), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "rate": rate}


async def idle(client, queue, meter):
    wait = float(os.environ.get("SB_IDLE_S", "10"))
    async with client.get_queue_receiver(queue) as rcv:
        await rcv.receive_messages(max_message_count=1, max_wait_time=1)  # attach
        meter.start()
        got = await rcv.receive_messages(max_message_count=1, max_wait_time=wait)
        meter.stop()
    return {"n": 0, "idle_cpu_pct": 100.0 * meter.cpu / meter.seconds, "unexpected": len(got)}


async def main(sdk, workload, queue, n):
    Client, make, rad, peek, kwargs = load_sdk(sdk)
    meter = Meter()
    async with Client.from_connection_string(os.environ["SB_CONN"], **kwargs) as client:
        if workload == "send_batch":
            res = await send_batch(client, make, queue, n, meter)
        elif workload == "send_single":
            res = await send_single(client, make, queue, n, meter)
        elif workload == "recv_peeklock":
            res = await receive(client, queue, n, meter, peek, True)
        elif workload == "recv_rad":
            res = await receive(client, queue, n, meter, rad, False)
        elif workload == "latency":
            res = await latency(client, make, queue, n, meter)
        elif workload == "idle":
            res = await idle(client, queue, meter)
        else:
            raise SystemExit(f"unknown workload {workload}")
    res.update(seconds=meter.seconds, cpu_s=meter.cpu)
    return res


def run():
    sdk, loop, workload, queue, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    out = {"ok": False}
    try:
        if loop == "uvloop":
            import uvloop
            uvloop.install()
        out.update(asyncio.run(main(sdk, workload, queue, n)))
        out["ok"] = True
    except BaseException as e:  # reported, never hidden
        out["error"] = f"{type(e).__name__}: {e}"[:400]
    out["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out), flush=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    run()
