// settle.mjs: Microsoft's JS SDK (@azure/service-bus 7.9.5) settling with property changes —
// abandon and defer send them as a modified outcome's message-annotations, dead-letter as a
// rejected outcome's error info (protocol.md §7.1), and a deferred message's settlement goes through
// the management update-disposition operation with properties-to-modify (§8.6). Also an
// oversized send, whose refusal names the message's size.
// Usage: node settle.mjs <node_modules dir> <amqp host:port> <queue>
// Prints one JSON line with what it observed; test_ms_js_sdk.py asserts on it.
import { run } from "./scenario.mjs";

const one = async (r) => (await r.receiveMessages(1, { maxWaitTimeInMs: 5000 }))[0];
await run(async (sdk, client, [queue], out) => {
  const sender = client.createSender(queue);
  await sender.sendMessages([{ body: "a", applicationProperties: { keep: "k", n: 1 } }, { body: "b" }]);
  const receiver = client.createReceiver(queue);
  const a = await one(receiver);
  await receiver.abandonMessage(a, { n: 2, added: "yes", when: new Date(86400000) });
  const a2 = await one(receiver);
  out.abandoned = { body: a2.body, count: a2.deliveryCount, props: a2.applicationProperties };
  await receiver.deferMessage(a2, { deferred: true });
  const [a3] = await receiver.receiveDeferredMessages([a2.sequenceNumber]);
  out.deferred = a3.applicationProperties;
  await receiver.abandonMessage(a3, { again: 3.5 });  // the management path
  const [a4] = await receiver.receiveDeferredMessages([a2.sequenceNumber]);
  out.deferredAbandoned = a4.applicationProperties;
  await receiver.completeMessage(a4);
  const b = await one(receiver);
  await receiver.deadLetterMessage(b, { deadLetterReason: "why", deadLetterErrorDescription: "because", extra: "x" });
  const dlq = client.createReceiver(queue, { subQueueType: "deadLetter", receiveMode: "receiveAndDelete" });
  const d = await one(dlq);
  out.deadLettered = { body: d.body, reason: d.deadLetterReason, desc: d.deadLetterErrorDescription,
                       props: d.applicationProperties };
  try {
    await sender.sendMessages({ body: Buffer.alloc(300 * 1024) });
    out.oversized = "sent";
  } catch (e) {
    out.oversized = { code: e.code, message: e.message };
  }
}, { retryOptions: { maxRetries: 0 } });
