// smoke.mjs: Microsoft's JS SDK (@azure/service-bus 7.9.5) against sbus-emulator over plain
// AMQP with UseDevelopmentEmulator=true (SASL ANONYMOUS, audience with the port, drain).
// Usage: node smoke.mjs <node_modules dir> <amqp host:port> <queue> <session queue>
// Prints one JSON line with what it observed; test_ms_js_sdk.py asserts on it.
import { run } from "./scenario.mjs";

await run(async (sdk, client, [queue, squeue], out) => {
  const sender = client.createSender(queue);
  await sender.sendMessages([{ body: "j1", messageId: "id-1", applicationProperties: { k: "v" } },
                             { body: "j2" }, { body: "j3" }]);
  const receiver = client.createReceiver(queue);
  const first = await receiver.receiveMessages(1, { maxWaitTimeInMs: 5000 });
  out.first = { body: first[0].body, seq: Number(first[0].sequenceNumber), count: first[0].deliveryCount,
                id: first[0].messageId, props: first[0].applicationProperties };
  await receiver.abandonMessage(first[0]);
  const again = await receiver.receiveMessages(1, { maxWaitTimeInMs: 5000 });
  out.again = { body: again[0].body, count: again[0].deliveryCount };
  await receiver.completeMessage(again[0]);
  const rest = await receiver.receiveMessages(5, { maxWaitTimeInMs: 2000 });
  out.rest = rest.map((m) => m.body);
  await receiver.deadLetterMessage(rest[0], { deadLetterReason: "js", deadLetterErrorDescription: "why" });
  await receiver.completeMessage(rest[1]);
  out.empty = (await receiver.receiveMessages(1, { maxWaitTimeInMs: 1000 })).length;
  const dlq = client.createReceiver(queue, { subQueueType: "deadLetter", receiveMode: "receiveAndDelete" });
  const dl = await dlq.receiveMessages(1, { maxWaitTimeInMs: 5000 });
  out.dlq = { body: dl[0].body, reason: dl[0].deadLetterReason, desc: dl[0].deadLetterErrorDescription };
  const seqs = await sender.scheduleMessages([{ body: "later" }], new Date(Date.now() + 3600e3));
  out.peek = (await receiver.peekMessages(5)).map((m) => [m.body, m.state]);
  await sender.cancelScheduledMessages(seqs);
  const ssender = client.createSender(squeue);
  await ssender.sendMessages([{ body: "s1", sessionId: "JS" }, { body: "s2", sessionId: "JS" }]);
  const sr = await client.acceptSession(squeue, "JS");
  await sr.setSessionState("state-1");
  const sm = await sr.receiveMessages(2, { maxWaitTimeInMs: 3000 });
  out.session = { id: sr.sessionId, bodies: sm.map((m) => m.body), state: String(await sr.getSessionState()) };
  for (const m of sm) await sr.completeMessage(m);
  await sr.close();
});
