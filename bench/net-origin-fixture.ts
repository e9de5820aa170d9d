/**
 * An HTTP origin for bench/net.ts, in its own process (as a remote server would be): `/big/N`
 * answers N bytes, `/slow/MS` answers after MS milliseconds, anything else a few bytes. Prints its port.
 */
const big = new Uint8Array(1024 * 1024).fill(97);
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  idleTimeout: 60,
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/big/")) {
      let left = Number(path.slice(5));
      return new Response(
        new ReadableStream({
          pull(c) {
            if (left <= 0) return c.close();
            const n = Math.min(left, big.length);
            c.enqueue(big.subarray(0, n));
            left -= n;
          },
        }),
        { headers: { "Content-Length": path.slice(5) } },
      );
    }
    if (path.startsWith("/slow/")) await Bun.sleep(Number(path.slice(6)));
    return new Response("ok\n");
  },
});
console.log(server.port);
