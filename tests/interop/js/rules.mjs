// rules.mjs: Microsoft's JS SDK rule manager (add-rule, enumerate-rules, remove-rule over a
// subscription's $management node, protocol.md §8.11) against sbus-emulator.
// Usage: node rules.mjs <node_modules dir> <amqp host:port> <topic> <subscription>
// Prints one JSON line with what it observed; test_ms_js_sdk.py asserts on it.
import { run } from "./scenario.mjs";

async function list(rm) {
  const rules = [];
  for await (const r of rm.listRules()) rules.push(r);
  return rules.map((r) => ({ name: r.name, filter: r.filter, action: r.action && r.action.sqlExpression }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

await run(async (sdk, client, [topic, sub], out) => {
  const rm = client.createRuleManager(topic, sub);
  out.before = (await list(rm)).map((r) => r.name);
  await rm.createRule("red", { sqlExpression: "color = 'red'" }, { sqlExpression: "SET routed = 'yes'" });
  await rm.createRule("corr", { correlationId: "c-1", applicationProperties: { k: "v" } });
  await rm.deleteRule("$Default");
  out.after = await list(rm);
  const sender = client.createSender(topic);
  await sender.sendMessages([{ body: "r", applicationProperties: { color: "red" } },
                             { body: "b", applicationProperties: { color: "blue" } },
                             { body: "c", correlationId: "c-1", applicationProperties: { k: "v" } }]);
  const receiver = client.createReceiver(topic, sub, { receiveMode: "receiveAndDelete" });
  const got = [];
  for (let i = 0; i < 5 && got.length < 2; i++)
    got.push(...await receiver.receiveMessages(5, { maxWaitTimeInMs: 1000 }));
  out.received = got.map((m) => [m.body, (m.applicationProperties || {}).routed || null]);
});
