/**
 * `planter job net JOB`: a job's connections from its `net.connect` events. Until job launch runs
 * the egress proxy, the events are written through the state layer as the proxy's records would
 * be; the last test makes real ones through a job's proxy.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { appendEvent } from "../../lib/state/events.ts";
import { bwrapReady, cleanup, cli, type DaemonHandle, startDaemon } from "../harness.ts";

let d: DaemonHandle;
beforeAll(async () => {
  d = await startDaemon();
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

/** Write events into the running daemon's database, as its own writes would (WAL: it reads them at once). */
function insert(rows: { kind: string; subject: string; data: Record<string, unknown>; at: number }[]): void {
  const db = new Database(join(d.home, "state", "planter.db"));
  try {
    db.run("PRAGMA busy_timeout = 5000");
    db.transaction(() => {
      for (const r of rows) appendEvent(db, r.kind, r.subject, r.data, r.at);
    })();
  } finally {
    db.close();
  }
}
const finished = async (id: string) => (await d.client.waitJob(id, 20_000)).job;
/** A connection record as the proxy writes it, for job `j`. */
const record = (j: Job, over: Record<string, unknown>) => ({
  job: j.id,
  host: "registry.npmjs.org",
  port: 443,
  decision: "allow",
  rule: "registry.npmjs.org",
  protocol: "connect",
  bytes_out: 0,
  bytes_in: 0,
  duration_ms: 0,
  ...over,
});

describe("from net.connect events", () => {
  let j: Job;
  let t0: number;
  beforeAll(async () => {
    j = await finished((await d.client.createJob({ argv: ["true"] })).id);
    const other = await finished((await d.client.createJob({ argv: ["true"] })).id);
    t0 = Date.parse("2026-03-01T10:00:00.000Z");
    const ev = (over: Record<string, unknown>, endsAt: number) => ({
      kind: "net.connect",
      subject: `job/${j.id}`,
      data: record(j, over),
      at: endsAt,
    });
    insert([
      // Written when each ends: the long download began first.
      ev({ address: "104.16.3.35", bytes_out: 1834, bytes_in: 3_456_789, duration_ms: 1234 }, t0 + 2000),
      ev(
        {
          host: "evil.example",
          decision: "deny",
          rule: "unlisted",
          duration_ms: 1,
          error: "planter: evil.example:443 is not in the allow list",
        },
        t0 + 3001,
      ),
      ev(
        { host: "::1", port: 8080, decision: "deny", rule: "local:loopback", protocol: "socks5", duration_ms: 0 },
        t0 + 4000,
      ),
      ev(
        { host: "api.github.com", rule: "*.github.com", duration_ms: 10_002, error: "connect ETIMEDOUT" },
        t0 + 10_500,
      ),
      // Not this job's, or not a connection: never listed.
      { kind: "net.connect", subject: `job/${other.id}`, data: record(other, {}), at: t0 + 5000 },
      { kind: "job.note", subject: `job/${j.id}`, data: { host: "x" }, at: t0 + 6000 },
    ]);
  });

  test("a table, oldest connection first, with a summary line", async () => {
    const r = await cli(d.home, ["job", "net", j.id]);
    expect(r).toEqual({
      code: 0,
      stdout: [
        "TIME (UTC)  DECISION  DESTINATION             RULE                OUT      IN       DURATION  NOTE",
        "10:00:00    allow     api.github.com:443      *.github.com        0 B      0 B      10s       connect ETIMEDOUT",
        "10:00:00    allow     registry.npmjs.org:443  registry.npmjs.org  1.8 KiB  3.3 MiB  1.2s      -",
        "10:00:03    deny      evil.example:443        unlisted            0 B      0 B      1ms       planter: evil.example:443 is not in the allow list",
        "10:00:04    deny      [::1]:8080              local:loopback      0 B      0 B      0ms       -",
        "4 connections: 2 allowed (1 failed), 2 denied",
        "",
      ].join("\n"),
      stderr: "",
    });
  });

  test("--json: every record with its time, the counts; complete while no older event was pruned", async () => {
    const r = await cli(d.home, ["job", "net", j.id, "--json"]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    const iso = (ms: number) => new Date(ms).toISOString();
    expect(JSON.parse(r.stdout)).toEqual({
      job: j.id,
      connections: [
        {
          at: iso(t0 + 2000),
          ...record(j, { address: "104.16.3.35", bytes_out: 1834, bytes_in: 3_456_789, duration_ms: 1234 }),
        },
        {
          at: iso(t0 + 3001),
          ...record(j, {
            host: "evil.example",
            decision: "deny",
            rule: "unlisted",
            duration_ms: 1,
            error: "planter: evil.example:443 is not in the allow list",
          }),
        },
        {
          at: iso(t0 + 4000),
          ...record(j, { host: "::1", port: 8080, decision: "deny", rule: "local:loopback", protocol: "socks5" }),
        },
        {
          at: iso(t0 + 10_500),
          ...record(j, {
            host: "api.github.com",
            rule: "*.github.com",
            duration_ms: 10_002,
            error: "connect ETIMEDOUT",
          }),
        },
      ],
      allowed: 2,
      denied: 2,
      complete: true,
    });
  });

  test("a record it cannot read is left out and said on stderr; the rest are listed", async () => {
    const k = await finished((await d.client.createJob({ argv: ["true"] })).id);
    insert([
      { kind: "net.connect", subject: `job/${k.id}`, data: record(k, { port: "443" }), at: Date.now() },
      {
        kind: "net.connect",
        subject: `job/${k.id}`,
        data: record(k, { decision: "deny", rule: "metadata", host: "metadata" }),
        at: Date.now(),
      },
    ]);
    const r = await cli(d.home, ["job", "net", k.id]);
    expect(r.code).toBe(0);
    expect(r.stdout).toEndWith("\n1 connection: 0 allowed, 1 denied\n");
    expect(r.stdout).toContain("  deny      metadata:443  metadata  ");
    expect(r.stderr).toBe(`planter: 1 net.connect event(s) of job ${k.id} were not understood and left out\n`);
  });

  test("no connections: it says why, from the job's network", async () => {
    const plain = await finished((await d.client.createJob({ argv: ["true"] })).id);
    expect(await cli(d.home, ["job", "net", plain.id])).toEqual({
      code: 0,
      stdout: `no connections recorded for job ${plain.id}: it ran without a sandbox, so its connections do not go through planter's proxy\n`,
      stderr: "",
    });
    const json = JSON.parse((await cli(d.home, ["job", "net", plain.id, "--json"])).stdout);
    expect(json).toEqual({ job: plain.id, connections: [], allowed: 0, denied: 0, complete: true });
    if (!(await bwrapReady(d))) return;
    const none = await finished((await d.client.createJob({ argv: ["true"], sandbox: { mode: "enforced" } })).id);
    expect((await cli(d.home, ["job", "net", none.id])).stdout).toBe(
      `no connections recorded for job ${none.id}: its network is none: it could reach nothing\n`,
    );
    await d.client.createCell({ name: "hostnet", sandbox: { policy: { network: "host" } } });
    const host = await finished(
      (await d.client.createJob({ cell: "hostnet", argv: ["true"], sandbox: { mode: "enforced" } })).id,
    );
    expect((await cli(d.home, ["job", "net", host.id])).stdout).toBe(
      `no connections recorded for job ${host.id}: it has the host's network: only jobs with an allow list go through planter's proxy, which records them\n`,
    );
  });

  test("events pruned since the job began: said on stderr, and complete is false", async () => {
    const old = await finished((await d.client.createJob({ argv: ["true"] })).id);
    insert([{ kind: "net.connect", subject: `job/${old.id}`, data: record(old, {}), at: Date.now() }]);
    // Prune by hand what retention would: every event up to the job's last one before the record.
    const db = new Database(join(d.home, "state", "planter.db"));
    db.run("PRAGMA busy_timeout = 5000");
    const last = db
      .query("SELECT MAX(seq) AS s FROM events WHERE subject = ? AND kind = 'job.finished'")
      .get(`job/${old.id}`) as {
      s: number;
    };
    db.run("DELETE FROM events WHERE seq <= ?", [last.s]);
    db.close();
    const r = await cli(d.home, ["job", "net", old.id]);
    expect(r.stdout).toEndWith("\n1 connection: 1 allowed, 0 denied\n");
    expect(r.stderr).toBe(
      "planter: the oldest events were pruned since the job began ([events] retain): its earliest connections may be missing\n",
    );
    expect(JSON.parse((await cli(d.home, ["job", "net", old.id, "--json"])).stdout).complete).toBe(false);
  });

  test("an unknown job is an error with a hint; --help teaches", async () => {
    const r = await cli(d.home, ["job", "net", "j-nosuch"]);
    expect(r).toEqual({
      code: 1,
      stdout: "",
      stderr: 'planter: no job "j-nosuch"\nhint: list jobs with `planter job ls`\n',
    });
    const help = await cli(d.home, ["job", "net", "--help"]);
    expect(help.stdout).toContain("Usage: planter job net [options] ID");
    expect(help.stdout).toContain("planter events --kind net.connect --subject job/JOB -f");
  });
});

/** Real connections through a job's egress proxy, once job launch runs it (plans/design.md "Egress (#15)"). */
describe("through the proxy", () => {
  test("an allowed and a refused request of a job are listed as the proxy decided them", async () => {
    const e = await startDaemon({ config: '[sandbox]\nmode = "enforced"\n' });
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("egress ok\n") });
    try {
      if (!(await bwrapReady(e))) return;
      const allowed = `127.0.0.1:${server.port}`;
      await cli(e.home, ["cell", "create", "egress", "--net-allow", allowed]);
      // NO_PROXY names the job's own loopback: these requests name the proxy themselves.
      const curl = (url: string) => `curl -sS --max-time 10 --noproxy '' -x "$HTTP_PROXY" ${url}`;
      const j = await e.client.createJob({
        cell: "egress",
        argv: ["sh", "-c", `${curl(`http://${allowed}/`)}; ${curl(`http://127.0.0.2:${server.port}/`)}; true`],
      });
      const done = (await e.client.waitJob(j.id, 30_000)).job;
      expect(Buffer.from((await e.client.logs(done.id, {})).data, "base64").toString()).toContain("egress ok\n");
      const r = JSON.parse((await cli(e.home, ["job", "net", j.id, "--json"])).stdout);
      expect([r.allowed, r.denied, r.complete]).toEqual([1, 1, true]);
      expect(
        r.connections.map((c: { decision: string; host: string; port: number }) => [c.decision, c.host, c.port]),
      ).toEqual([
        ["allow", "127.0.0.1", server.port],
        ["deny", "127.0.0.2", server.port],
      ]);
      expect(r.connections[0]).toMatchObject({ rule: allowed, protocol: "http", job: j.id });
      expect(r.connections[0].bytes_in).toBeGreaterThan(0);
      const text = await cli(e.home, ["job", "net", j.id]);
      expect(text.stdout).toEndWith("\n2 connections: 1 allowed, 1 denied\n");
    } finally {
      await server.stop(true);
      await e.stop();
      cleanup(e.home);
    }
  }, 60_000);
});
