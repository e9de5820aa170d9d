/**
 * The TCP→Unix bridge (test/fixtures/net-bridge.ts) as its own program, as it would run inside a job's
 * sandbox: `net-bridge-fixture SOCKET [PORT]`; prints the port once it listens.
 */
import { bridge } from "../test/fixtures/net-bridge.ts";

const [path, port] = process.argv.slice(2);
if (!path) {
  console.error("usage: net-bridge-fixture SOCKET [PORT]");
  process.exit(2);
}
const b = await bridge(path, "127.0.0.1", Number(port ?? 0));
console.log(b.port);
