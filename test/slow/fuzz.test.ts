/**
 * Bad input at scale (slow lane): 3000 seeded random requests and raw byte streams, 25 at a time,
 * against one planterd; it stays up, answers no 5xx, creates jobs only for what it accepted, and
 * its database stays intact.
 */
import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { cleanup, type DaemonHandle, rawExchange, rng, startDaemon } from "../harness.ts";

let d: DaemonHandle | null = null;
afterAll(async () => {
  if (d && d.proc.exitCode === null) await d.stop();
  if (d) cleanup(d.home);
});

async function daemon(config: string): Promise<DaemonHandle> {
  d = await startDaemon({ config });
  return d;
}

describe("bad input at scale", () => {
  test("a seeded fuzz run leaves the daemon alive, answers no 5xx, and keeps the database intact", async () => {
    const d = await daemon("[api]\nheader_timeout_ms = 200\nbody_timeout_ms = 200\nmax_body_bytes = 65536\n");
    const seed = 20261122;
    const rnd = rng(seed);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)] as T;
    const paths = [
      "/v1/jobs",
      "/v1/cells",
      "/v1/events",
      "/v1/jobs/j-x/logs",
      "/v1/jobs/j-x/kill",
      "/v1/cells/%zz",
      "/v1/../etc",
      "/v1/jobs?limit=-1",
      "/v1/events?cursor=zz:1",
      "/",
      "/v1/jobs/\u00e9",
    ];
    const bodies = [
      () => JSON.stringify({ argv: ["true"], bogus: rnd() }),
      () =>
        JSON.stringify({
          argv: Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => String(rnd())),
          cell: pick(["default", "NOPE", "..", ""]),
        }),
      () => JSON.stringify({ name: pick(["a", "..", "x".repeat(70), "ok-cell", "\u0000"]) }),
      () => JSON.stringify({ argv: ["a\u0000b"] }),
      () => '{"argv": ["tru',
      () => "[1,2,3]",
      () => "null",
      () => Buffer.from(Array.from({ length: 64 }, () => Math.floor(rnd() * 256))).toString("latin1"),
      () => "x".repeat(70_000),
      () => JSON.stringify({ argv: ["echo", "fuzz"], env: pick([{ A: 1 }, ["x"], { "1bad": "v" }, null]) }),
    ];
    const statuses: number[] = [];
    let created = 0;
    let count = 0;
    const started = (await d.client.listJobs({ limit: 1000 })).jobs.length;
    /** One fuzz case: a fetch with random method, path, headers and body, or raw bytes on a socket. */
    const one = async () => {
      if (rnd() < 0.85) {
        const method = pick(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"]);
        const path = pick(paths);
        const body = method === "GET" || method === "HEAD" ? undefined : pick(bodies)();
        const headers = { "content-type": pick(["application/json", "text/plain", ""]) };
        const res = await fetch(`http://planterd${path}`, { unix: d.socket, method, body, headers }).catch(() => null);
        if (res) {
          statuses.push(res.status);
          if (res.status === 201 && path === "/v1/jobs") created++;
          await res.arrayBuffer();
        }
      } else {
        // Raw bytes: truncated requests, garbage, oversized declared lengths.
        const lines = pick([
          'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"argv":',
          "GET /v1/health HTTP/1.1\r\nHost: x\r\n",
          "\u0000\u0001\u0002garbage\r\n\r\n",
          "POST /v1/cells HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{}",
          "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
          `GET /${"a".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
        ]);
        const reply = await rawExchange(d.socket, Buffer.from(lines, "latin1"), rnd() < 0.5);
        const m = /^HTTP\/1\.1 (\d{3})/.exec(reply);
        if (m) statuses.push(Number(m[1]));
      }
      count++;
    };
    // Batches of concurrent cases: partial requests wait out the short header timeout together.
    for (let i = 0; i < 3000; i += 25) await Promise.all(Array.from({ length: 25 }, one));
    expect(count).toBe(3000);
    expect(statuses.length).toBeGreaterThan(2000);
    expect(statuses.filter((s) => s >= 500)).toEqual([]);
    expect(await d.client.health()).toEqual({ ok: true });
    // Only the requests answered 201 created jobs; everything refused changed nothing.
    const jobs = (await d.client.listJobs({ limit: 1000 })).jobs;
    expect(jobs.length - started).toBe(created);
    const db = new Database(join(d.home, "state", "planter.db"), { readonly: true });
    expect(db.query("PRAGMA integrity_check").all()).toEqual([{ integrity_check: "ok" }]);
    db.close();
  }, 120_000);
});
