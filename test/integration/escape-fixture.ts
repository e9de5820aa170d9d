/**
 * A peer of planterd running as another user (the escape suite runs it as nobody): one API request
 * over the socket, the reply on stdout as `{status, body}`.
 *
 *   bun escape-fixture.ts SOCKET METHOD PATH [JSON-BODY]
 */
export {};

const [socket, method, path, body] = process.argv.slice(2);
if (!socket || !method || !path) {
  process.stderr.write("usage: escape-fixture.ts SOCKET METHOD PATH [JSON-BODY]\n");
  process.exit(2);
}
const res = await fetch(`http://planterd${path}`, {
  unix: socket,
  method,
  body: body || undefined,
  headers: { "content-type": "application/json" },
});
const text = await res.text();
let parsed: unknown = text;
try {
  parsed = JSON.parse(text);
} catch {
  parsed = text;
}
process.stdout.write(`${JSON.stringify({ status: res.status, body: parsed })}\n`);
