/** 1. API round trip: GET /v1/jobs/{id} on an existing job, one client and 16 concurrent clients. */
import { cpuMs, get, header, note, percentile, report, socketFds, spread, withDaemon } from "./common.ts";

const BENCH = "1 api";
const CLIENTS = 16;

/** Sequential requests from one client for at most `n` requests or `ms`; per-request ms. */
async function oneClient(socket: string, path: string, n: number, ms: number): Promise<number[]> {
  const out: number[] = [];
  const deadline = performance.now() + ms;
  for (let i = 0; i < n && performance.now() < deadline; i++) {
    const t0 = performance.now();
    await get(socket, path);
    out.push(performance.now() - t0);
  }
  return out;
}

/** `clients` loops of sequential requests for `ms`; completed requests and per-request ms. */
async function concurrent(
  socket: string,
  path: string,
  clients: number,
  ms: number,
): Promise<{ done: number; elapsed: number; lat: number[] }> {
  const lat: number[] = [];
  const start = performance.now();
  const deadline = start + ms;
  let done = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        await get(socket, path);
        const t1 = performance.now();
        done++;
        if (lat.length < 200_000) lat.push(t1 - t0);
      }
    }),
  );
  return { done, elapsed: performance.now() - start, lat };
}

export async function apiBench(): Promise<void> {
  header("1. API round trip: GET /v1/jobs/{id} (Bun fetch, unix:, keep-alive)");
  await withDaemon("source", async (d) => {
    const job = await d.client.createJob({ argv: ["/bin/true"] });
    await d.client.waitJob(job.id, 10_000);
    const path = `/v1/jobs/${job.id}`;
    const bytes = (await get(d.socket, path)).length;
    note(`daemon: bun scripts/planter.ts daemon (pid ${d.pid}); response ${bytes} bytes`);

    await oneClient(d.socket, path, 2000, 5000); // warm-up
    const single = await oneClient(d.socket, path, 5000, 5000);
    report(BENCH, "p50 latency, 1 client", percentile(single, 50), "ms", "le", 0.3, 3);
    note(`1 client: ${spread(single)}`);

    await concurrent(d.socket, path, CLIENTS, 1000); // warm-up: opens the connections
    const cpu0 = cpuMs(d.pid);
    const r = await concurrent(d.socket, path, CLIENTS, 4000);
    const cpu = cpuMs(d.pid) - cpu0;
    const rps = (r.done / r.elapsed) * 1000;
    report(BENCH, `throughput, ${CLIENTS} clients`, rps, "req/s", "ge", 20_000, 0);
    note(`${CLIENTS} clients: ${spread(r.lat)}`);
    note(
      `daemon CPU ${((cpu / r.elapsed) * 100).toFixed(0)}% of one core (${((cpu / r.done) * 1000).toFixed(1)} µs/request); ` +
        `daemon socket fds after the run: ${socketFds(d.pid)}`,
    );

    // Control: the cheapest route, to separate HTTP-stack cost from the handler's.
    const h = await concurrent(d.socket, "/v1/health", CLIENTS, 2000);
    note(
      `control GET /v1/health, ${CLIENTS} clients: ${((h.done / h.elapsed) * 1000).toFixed(0)} req/s, p50 ${percentile(h.lat, 50).toFixed(3)} ms`,
    );
  });
}
