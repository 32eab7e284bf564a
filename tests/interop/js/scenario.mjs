// scenario.mjs: what every JS SDK interop script shares. argv is
// <node_modules dir> <amqp host:port> <script's own arguments...>; the SDK is loaded from that
// node_modules (bench/js installs it), connected with the emulator's connection string over plain
// AMQP, and the scenario fills an object that is printed as one JSON line with `ok` (and `error`
// when it threw), for test_ms_js_sdk.py to assert on.
import { createRequire } from "node:module";
import path from "node:path";

/** Run scenario(sdk, client, args, out) with a ServiceBusClient made from clientOptions. */
export async function run(scenario, clientOptions = {}) {
  const [modules, address, ...args] = process.argv.slice(2);
  const require = createRequire(path.join(modules, "noop.js"));
  const sdk = require("@azure/service-bus");
  // the host too: the interop fixture moves off 127.0.0.1 when its port 5671 is taken
  const conn = `Endpoint=sb://${address};SharedAccessKeyName=RootManageSharedAccessKey;` +
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
  const out = {};
  const client = new sdk.ServiceBusClient(conn, clientOptions);
  try {
    await scenario(sdk, client, args, out);
    out.ok = true;
  } catch (e) {
    out.ok = false;
    out.error = String((e && e.stack) || e);
  } finally {
    await client.close();
  }
  console.log(JSON.stringify(out));
}
