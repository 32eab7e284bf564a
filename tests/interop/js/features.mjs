// features.mjs: scheduling, cancel and peek, streaming with auto-complete, deferral, sessions
// with state, a sized batch, ReceiveAndDelete draining and the dead-letter queue, through
// Microsoft's JS SDK. Args: <queue> <session queue>.
import { run } from "./scenario.mjs";
run(async (sdk, client, [queue, squeue], out) => {
  const s = client.createSender(queue);
  // schedule + cancel + peek
  const at = new Date(Date.now() + 600000); // far enough ahead for a loaded machine
  const seqs = await s.scheduleMessages([{ body: "sch1" }, { body: "sch2" }], at);
  out.seqs = seqs.map(Number);
  const r0 = client.createReceiver(queue);
  const peeked = await r0.peekMessages(10);
  out.peekedState = peeked.map((m) => m.state);
  await s.cancelScheduledMessages(seqs[0]);
  const peeked2 = await r0.peekMessages(10, { fromSequenceNumber: seqs[0] });
  out.peekedAfterCancel = peeked2.map((m) => m.body);
  await r0.close();
  // streaming subscribe with autocomplete
  await s.sendMessages([{ body: "a" }, { body: "b" }, { body: "c", messageId: "mc" }]);
  const r = client.createReceiver(queue);
  const got = [];
  await new Promise((resolve, reject) => {
    const sub = r.subscribe({
      processMessage: async (m) => { got.push(m.body); if (got.length === 3) { await sub.close(); resolve(); } },
      processError: async (e) => { reject(e.error); },
    }, { autoCompleteMessages: true, maxConcurrentCalls: 2 });
  });
  out.streamed = got;
  // defer and receive deferred
  await s.sendMessages({ body: "d1" });
  const [d] = await r.receiveMessages(1, { maxWaitTimeInMs: 5000 });
  await r.deferMessage(d);
  const [dd] = await r.receiveDeferredMessages([d.sequenceNumber]);
  out.deferred = { body: dd.body, state: dd.state };
  await r.renewMessageLock(dd);
  await r.completeMessage(dd);
  await r.close();
  // sessions with state
  const ss = client.createSender(squeue);
  await ss.sendMessages([{ body: "s1", sessionId: "A" }, { body: "s2", sessionId: "A" }, { body: "t1", sessionId: "B" }]);
  const sr = await client.acceptNextSession(squeue);
  out.firstSession = sr.sessionId;
  await sr.setSessionState("st-1");
  out.state = String(await sr.getSessionState());
  const until = await sr.renewSessionLock();
  out.renewed = until instanceof Date;
  const sm = await sr.receiveMessages(5, { maxWaitTimeInMs: 2000 });
  out.sessionBodies = sm.map((m) => m.body);
  for (const m of sm) await sr.completeMessage(m);
  await sr.close();
  const sb = await client.acceptSession(squeue, "B");
  const bm = await sb.receiveMessages(5, { maxWaitTimeInMs: 2000 });
  out.bBodies = bm.map((m) => m.body);
  for (const m of bm) await sb.completeMessage(m);
  await sb.close();
  // session accept on empty
  const t0 = Date.now(); try { await client.acceptNextSession(squeue, { maxAutoLockRenewalDurationInMs: 0 }); out.empty = "got one?"; }
  catch (e) { out.empty = e.code || e.name; } out.emptyMs = Date.now() - t0;
  // batch
  const batch = await s.createMessageBatch({ maxSizeInBytes: 5000 });
  let n = 0; while (batch.tryAddMessage({ body: "x".repeat(100) })) n++;
  out.batchCount = n;
  await s.sendMessages(batch);
  const r2 = client.createReceiver(queue, { receiveMode: "receiveAndDelete" });
  let total = 0; out.drainedBodies = [];
  for (;;) { const ms = await r2.receiveMessages(100, { maxWaitTimeInMs: 1000 }); if (!ms.length) break; total += ms.length; for (const m of ms) if (m.body !== "x".repeat(100)) out.drainedBodies.push(m.body); }
  out.drained = total;
  await r2.close();
  // DLQ receiver and dead-letter
  await s.sendMessages({ body: "dl" });
  const r3 = client.createReceiver(queue);
  const [m3] = await r3.receiveMessages(1, { maxWaitTimeInMs: 5000 });
  await r3.deadLetterMessage(m3, { deadLetterReason: "R", deadLetterErrorDescription: "D" });
  await r3.close();
  const dlr = client.createReceiver(queue, { subQueueType: "deadLetter" });
  const [dm] = await dlr.receiveMessages(1, { maxWaitTimeInMs: 5000 });
  out.dlq = { body: dm.body, reason: dm.deadLetterReason, desc: dm.deadLetterErrorDescription, src: dm.deadLetterSource };
  await dlr.completeMessage(dm);
  await dlr.close();
  await s.close(); await ss.close();
}, { retryOptions: { timeoutInMs: 5000, maxRetries: 0 } });
