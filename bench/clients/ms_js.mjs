// One benchmark workload with Microsoft's JS SDK (@azure/service-bus 7.9.5,
// pinned in bench/js), printed as one JSON line, like bench/clients/py_client.py.
//
// Usage: node ms_js.mjs WORKLOAD QUEUE N
//   WORKLOAD  send_batch | send_single | recv_peeklock | recv_rad | latency | idle
// Environment: SB_CONN (connection string with UseDevelopmentEmulator=true:
// plain AMQP to the Endpoint's port), SB_LAT_RATE, SB_IDLE_S.
//
// Receiving uses subscribe() with maxConcurrentCalls = 300: the streaming
// receiver keeps 300 credits out (the JS SDK has no prefetch setting; this is
// its equivalent) and up to 300 handlers complete messages concurrently.
// Only the measured phase is timed; CPU is process.cpuUsage() (user + sys of
// the whole process), peak RSS is process.resourceUsage().maxRSS.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), "../js/package.json"));
const { ServiceBusClient } = require("@azure/service-bus");

const BODY = Buffer.alloc(1024, "x");
const PREFETCH = 300;

class Meter {
  start() {
    this.t0 = process.hrtime.bigint();
    this.c0 = process.cpuUsage();
  }
  stop() {
    this.seconds = Number(process.hrtime.bigint() - this.t0) / 1e9;
    const c = process.cpuUsage(this.c0);
    this.cpu = (c.user + c.system) / 1e6;
  }
}

async function sendBatch(client, queue, n, meter) {
  const sender = client.createSender(queue);
  await sender.sendMessages({ body: BODY }); // attach + warm-up, not counted
  meter.start();
  for (let done = 0; done < n; ) {
    const k = Math.min(100, n - done);
    const batch = [];
    for (let i = 0; i < k; i++) batch.push({ body: BODY });
    await sender.sendMessages(batch);
    done += k;
  }
  meter.stop();
  await sender.close();
  return { n, extra_sent: 1 };
}

async function sendSingle(client, queue, n, meter) {
  const sender = client.createSender(queue);
  await sender.sendMessages({ body: BODY });
  meter.start();
  for (let i = 0; i < n; i++) await sender.sendMessages({ body: BODY });
  meter.stop();
  await sender.close();
  return { n, extra_sent: 1 };
}

// Subscribes until n messages were handled (completed in peekLock mode).
function subscribeN(receiver, n, peek, onMessage) {
  return new Promise((resolve, reject) => {
    let got = 0;
    let lastAt = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - lastAt > 20000) {
        clearInterval(watchdog);
        reject(new Error(`only ${got} of ${n} messages arrived (20 s without one)`));
      }
    }, 500);
    const sub = receiver.subscribe(
      {
        async processMessage(msg) {
          lastAt = Date.now();
          if (onMessage) onMessage(msg);
          if (peek) await receiver.completeMessage(msg);
          got++;
          if (got === n) {
            clearInterval(watchdog);
            resolve(sub);
          }
        },
        async processError(args) {
          clearInterval(watchdog);
          reject(args.error);
        },
      },
      { autoCompleteMessages: false, maxConcurrentCalls: PREFETCH },
    );
  });
}

async function receive(client, queue, n, meter, peek) {
  const receiver = client.createReceiver(queue, {
    receiveMode: peek ? "peekLock" : "receiveAndDelete",
  });
  let started = false;
  const sub = await subscribeN(receiver, n, peek, () => {
    if (!started) {
      meter.start(); // the clock starts with the first message: attach excluded
      started = true;
    }
  });
  meter.stop();
  await sub.close();
  await receiver.close();
  return { n };
}

async function latency(client, queue, n, meter) {
  const rate = Number(process.env.SB_LAT_RATE || 200);
  const sentAt = new Map();
  const lat = [];
  const sender = client.createSender(queue);
  const receiver = client.createReceiver(queue, { receiveMode: "peekLock" });
  await sender.sendMessages({ body: BODY, messageId: "warm" });
  const warm = subscribeN(receiver, n + 1, true, (msg) => {
    const t = sentAt.get(String(msg.messageId));
    if (t !== undefined) {
      lat.push(Number(process.hrtime.bigint() - t) / 1e6);
      sentAt.delete(String(msg.messageId));
    }
  });
  await new Promise((r) => setTimeout(r, 500)); // the warm-up message goes through
  meter.start();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const target = t0 + BigInt(Math.round((i / rate) * 1e9));
    const delayMs = Number(target - process.hrtime.bigint()) / 1e6;
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    const id = `lat-${i}`;
    sentAt.set(id, process.hrtime.bigint());
    await sender.sendMessages({ body: BODY, messageId: id });
  }
  const sub = await warm;
  meter.stop();
  await sub.close();
  await receiver.close();
  await sender.close();
  lat.sort((a, b) => a - b);
  const pick = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))];
  return { n: lat.length, p50_ms: pick(0.5), p99_ms: pick(0.99), rate };
}

async function idle(client, queue, meter) {
  const wait = Number(process.env.SB_IDLE_S || 10) * 1000;
  const receiver = client.createReceiver(queue);
  await receiver.receiveMessages(1, { maxWaitTimeInMs: 1000 }); // attach
  meter.start();
  const got = await receiver.receiveMessages(1, { maxWaitTimeInMs: wait });
  meter.stop();
  await receiver.close();
  return { n: 0, idle_cpu_pct: (100 * meter.cpu) / meter.seconds, unexpected: got.length };
}

async function main() {
  const [workload, queue, nText] = process.argv.slice(2);
  const n = Number(nText);
  const meter = new Meter();
  const client = new ServiceBusClient(process.env.SB_CONN);
  let res;
  try {
    if (workload === "send_batch") res = await sendBatch(client, queue, n, meter);
    else if (workload === "send_single") res = await sendSingle(client, queue, n, meter);
    else if (workload === "recv_peeklock") res = await receive(client, queue, n, meter, true);
    else if (workload === "recv_rad") res = await receive(client, queue, n, meter, false);
    else if (workload === "latency") res = await latency(client, queue, n, meter);
    else if (workload === "idle") res = await idle(client, queue, meter);
    else throw new Error(`unknown workload ${workload}`);
  } finally {
    await client.close();
  }
  return { ...res, seconds: meter.seconds, cpu_s: meter.cpu };
}

let out = { ok: false };
try {
  out = { ...out, ...(await main()), ok: true };
} catch (e) {
  out.error = String((e && e.stack) || e).split("\n")[0].slice(0, 400);
}
out.rss_kb = process.resourceUsage().maxRSS;
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
