/**
 * planterd's start-up check of its database: fully before serving unless the database is exactly
 * as a clean shutdown left it, then cheaply at start and fully in the background after; damage found
 * either way is reported and never silently used.
 */
import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, existsSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { closedRecord, recordCleanClose } from "../../lib/state/integrity.ts";
import { baseEnv, cleanup, type DaemonHandle, PLANTER, raw, startDaemon, tempHome, waitFor } from "../harness.ts";
import { seedJobs } from "../seed.ts";

const homes: string[] = [];
afterAll(() => {
  for (const h of homes) cleanup(h);
});

function home(): string {
  const h = tempHome();
  homes.push(h);
  return h;
}

const dbOf = (h: string) => join(h, "state", "planter.db");

interface Ready {
  ready: boolean;
  state: string;
  integrity: { check: string; status: string; message: string | null; ms: number | null; hint: string | null };
}

async function ready(d: DaemonHandle): Promise<{ status: number; body: Ready }> {
  const r = await raw(d.socket, "GET", "/v1/ready");
  return { status: r.status, body: r.json as unknown as Ready };
}

/** The integrity status once the full check has run (at start, or in the background). */
async function checked(d: DaemonHandle): Promise<Ready["integrity"]> {
  return (
    await waitFor(async () => {
      const r = await ready(d);
      return r.body.integrity.status !== "running" && r.body.integrity;
    }, "the full check to finish")
  ).valueOf() as Ready["integrity"];
}

async function stop(d: DaemonHandle): Promise<void> {
  expect(await d.stop()).toBe(0);
}

describe("the database check at start", () => {
  test("a clean shutdown lets the next start check cheaply, and fully once it serves", async () => {
    const h = home();
    let d = await startDaemon({ home: h });
    expect(await checked(d)).toEqual({ check: "start", status: "ok", message: null, ms: null, hint: null });
    await stop(d);
    expect(existsSync(closedRecord(dbOf(h)))).toBe(true);
    d = await startDaemon({ home: h });
    // The record is taken at start: a crash in this run leaves none to vouch for it.
    expect(existsSync(closedRecord(dbOf(h)))).toBe(false);
    const after = await checked(d);
    expect(after).toMatchObject({ check: "background", status: "ok", message: null, hint: null });
    expect(after.ms).toBeGreaterThan(0);
    await stop(d);
    expect(existsSync(closedRecord(dbOf(h)))).toBe(true);
  });

  test("after a crash the next start checks fully before serving", async () => {
    const h = home();
    let d = await startDaemon({ home: h });
    await stop(d);
    d = await startDaemon({ home: h });
    await d.kill9();
    expect(existsSync(closedRecord(dbOf(h)))).toBe(false);
    d = await startDaemon({ home: h });
    expect((await checked(d)).check).toBe("start");
    await stop(d);
  });

  test("a database changed while planterd was down is checked fully before serving", async () => {
    const h = home();
    let d = await startDaemon({ home: h });
    await stop(d);
    const db = new Database(dbOf(h));
    db.run("INSERT OR REPLACE INTO meta (key, value) VALUES ('edited', 'by hand')");
    db.close();
    d = await startDaemon({ home: h });
    expect((await checked(d)).check).toBe("start");
    await stop(d);
  });

  test("damage under an unchanged file: found after start, reported, no new work, and the next start refuses", async () => {
    const h = home();
    const ids = seedJobs(join(h, "state"), 3000);
    let d = await startDaemon({ home: h });
    await stop(d);
    // Rot in a page of the jobs table's middle, below a file whose metadata planterd's record
    // vouches for (written afresh, as a disk that fails in place would leave it).
    const ro = new Database(dbOf(h), { readonly: true });
    const leaves = ro
      .query("SELECT pageno FROM dbstat WHERE name = 'jobs' AND pagetype = 'leaf' ORDER BY pageno")
      .all() as { pageno: number }[];
    const size = (ro.query("PRAGMA page_size").get() as { page_size: number }).page_size;
    ro.close();
    const page = leaves[Math.floor(leaves.length / 2)]?.pageno as number;
    const fd = openSync(dbOf(h), "r+");
    writeSync(fd, Buffer.alloc(16, 0xff), 0, 16, (page - 1) * size);
    closeSync(fd);
    recordCleanClose(dbOf(h));

    d = await startDaemon({ home: h });
    const found = await checked(d);
    expect(found).toMatchObject({ check: "background", status: "failed" });
    expect(found.message).toBe("database disk image is malformed");
    const r = await ready(d);
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ ready: false, state: "damaged" });
    expect(r.body.integrity.hint).toContain("planter.db.v*.bak");
    await waitFor(() => d.stderr().includes("error: the state database"), "the error on stderr");

    // No new work; reads still answer.
    for (const [method, path, body] of [
      ["POST", "/v1/jobs", JSON.stringify({ argv: ["true"] })],
      ["POST", "/v1/cells", JSON.stringify({ name: "new" })],
      ["DELETE", `/v1/jobs/${ids[0]}`, undefined],
    ] as const) {
      const refused = await raw(d.socket, method, path, body);
      expect(refused.status).toBe(503);
      expect(refused.json.error).toMatchObject({
        code: "E_UNAVAILABLE",
        message: expect.stringContaining("failed its integrity check after planterd started"),
      });
    }
    const latest = await d.client.listJobs({ limit: 3, order: "newest" });
    expect(latest.jobs.map((j) => j.id)).toEqual(ids.slice(-3).reverse());
    // A read that reaches the damaged page (listing every job, page by page) says what it is.
    let listed = await raw(d.socket, "GET", "/v1/jobs?limit=1000");
    while (listed.status === 200 && listed.json.next_after)
      listed = await raw(d.socket, "GET", `/v1/jobs?limit=1000&after=${listed.json.next_after}`);
    expect(listed.status).toBe(503);
    expect(listed.json.error?.message).toContain("failed its integrity check after planterd started");

    await stop(d);
    expect(existsSync(closedRecord(dbOf(h)))).toBe(false);
    const next = Bun.spawnSync([process.execPath, PLANTER, "daemon"], { env: baseEnv(h), stderr: "pipe" });
    expect(next.exitCode).toBe(1);
    expect(next.stderr.toString()).toContain("failed its integrity check");
  });
});
