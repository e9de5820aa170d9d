import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import { DEFAULT_POLICY } from "../../lib/sandbox/policy.ts";
import { cleanup, type DaemonHandle, pidAlive, startDaemon } from "../harness.ts";

let d: DaemonHandle;
beforeAll(async () => {
  d = await startDaemon();
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

const code = async (p: Promise<unknown>) => ((await p.catch((e) => e)) as PlanterError).code;

test("a default cell exists from the start", async () => {
  const { cells } = await d.client.listCells();
  expect(cells.map((c) => c.name)).toEqual(["default"]);
  expect(cells[0]?.managed).toBe(true);
});

test("create, show, list a managed cell", async () => {
  const c = await d.client.createCell({ name: "build", env: { A: "1" }, limits: { timeout_ms: 1000 } });
  expect(c).toEqual({
    name: "build",
    dir: join(d.home, "state", "cells", "build"),
    managed: true,
    env: { A: "1" },
    limits: { timeout_ms: 1000 },
    sandbox: {},
    created_at: c.created_at,
    // A root peer's cells belong to the unprivileged user its jobs run as (the harness: nobody).
    owner_uid: process.getuid?.() === 0 ? 65534 : (process.getuid?.() ?? null),
    jobs: { running: 0, total: 0 },
    // The harness's daemon runs jobs unsandboxed; the policy is planter's default.
    effective_sandbox: { mode: "disabled", policy: DEFAULT_POLICY, refused: null },
  });
  expect(existsSync(c.dir)).toBe(true);
  expect(await d.client.getCell("build")).toEqual(c);
  expect((await d.client.listCells()).cells.map((x) => x.name)).toEqual(["build", "default"]);
  expect(await code(d.client.createCell({ name: "build" }))).toBe("E_CONFLICT");
});

test("a cell in a directory the user names is never deleted", async () => {
  const dir = mkdtempSync("/tmp/pt-userdir-");
  // Root's cell runs its jobs as nobody, who must reach the dir.
  chmodSync(dir, 0o755);
  const c = await d.client.createCell({ name: "mine", dir });
  expect([c.dir, c.managed]).toEqual([dir, false]);
  const j = await d.client.createJob({ cell: "mine", argv: ["pwd"] });
  await d.client.waitJob(j.id, 10_000);
  expect(Buffer.from((await d.client.logs(j.id, {})).data, "base64").toString()).toBe(`${dir}\n`);
  await d.client.removeCell("mine", false);
  expect(existsSync(dir)).toBe(true);
  rmSync(dir, { recursive: true });
  expect(await code(d.client.createCell({ name: "gone", dir: "/nonexistent/dir" }))).toBe("E_BAD_REQUEST");
});

test("invalid names are refused", async () => {
  for (const name of ["..", ".", "a/b", "", "A", "-x", "x".repeat(64), "a b", "a\0b"]) {
    expect(await code(d.client.createCell({ name }))).toBe("E_BAD_REQUEST");
  }
  expect(await code(d.client.getCell(".."))).toBe("E_NOT_FOUND");
});

test("remove refuses while jobs run; force kills them first and removes jobs and logs", async () => {
  await d.client.createCell({ name: "busy" });
  const j = await d.client.createJob({ cell: "busy", argv: ["sleep", "300"] });
  const err = (await d.client.removeCell("busy", false).catch((e) => e)) as PlanterError;
  expect(err.code).toBe("E_CONFLICT");
  expect(err.hint).toContain("--force");
  expect(err.details).toEqual({ running: [j.id] });
  expect((await d.client.getJob(j.id)).state).toBe("running");

  const r = await d.client.removeCell("busy", true);
  expect(r).toEqual({ removed: "busy", jobs_removed: 1 });
  expect(pidAlive(j.pid as number)).toBe(false);
  expect(await code(d.client.getCell("busy"))).toBe("E_NOT_FOUND");
  expect(await code(d.client.getJob(j.id))).toBe("E_NOT_FOUND");
  expect(existsSync(join(d.home, "state", "jobs", j.id))).toBe(false);
  expect(existsSync(join(d.home, "state", "cells", "busy"))).toBe(false);
});

test("jobs in an unknown cell are refused with a hint", async () => {
  const err = (await d.client.createJob({ cell: "nope", argv: ["true"] }).catch((e) => e)) as PlanterError;
  expect(err.code).toBe("E_NOT_FOUND");
  expect(err.hint).toContain("planter cell create nope");
});

test("the default cell comes back when removed", async () => {
  await d.client.removeCell("default", true);
  const j = await d.client.createJob({ argv: ["true"] });
  expect(j.cell).toBe("default");
  expect((await d.client.getCell("default")).managed).toBe(true);
});

test("request_ref makes cell creation replay-safe", async () => {
  const a = await d.client.createCell({ name: "ref-cell", request_ref: "r1" });
  const b = await d.client.createCell({ name: "ref-cell", request_ref: "r1" });
  expect(b).toEqual(a);
  expect(await code(d.client.createCell({ name: "other", request_ref: "r1" }))).toBe("E_IDEMPOTENCY_CONFLICT");
});

test("a cell's env, limits and policy are kept small (64 KiB): a larger one is refused, nothing made", async () => {
  const env: Record<string, string> = {};
  for (let i = 0; i < 10; i++) env[`V${i}`] = "x".repeat(7000);
  const e = (await d.client.createCell({ name: "fat", env }).catch((x) => x)) as PlanterError;
  expect([e.code, e.message]).toEqual([
    "E_BAD_REQUEST",
    expect.stringMatching(/^cell fat's env, limits and sandbox policy take \d+ bytes; a cell keeps at most 65536$/),
  ]);
  expect(e.hint).toContain("--env");
  expect(await code(d.client.getCell("fat"))).toBe("E_NOT_FOUND");
  // Just under the limit is fine.
  const ok = await d.client.createCell({ name: "lean", env: { V: "x".repeat(60_000) } });
  expect(ok.env.V?.length).toBe(60_000);
});

test("past [api] max_cells_per_uid a new cell is refused (503) and nothing is made; removing one makes room", async () => {
  const c = await startDaemon({ config: "[api]\nmax_cells_per_uid = 3\n" });
  try {
    // The default cell is the user's first.
    await c.client.createCell({ name: "a" });
    await c.client.createCell({ name: "b" });
    const e = (await c.client.createCell({ name: "c" }).catch((x) => x)) as PlanterError;
    expect([e.code, e.status, e.message]).toEqual([
      "E_UNAVAILABLE",
      503,
      // As root, root's cells belong to the root-peer user.
      expect.stringMatching(/^uid \d+ already owns 3 cells, the most one user may \(\[api\] max_cells_per_uid\)$/),
    ]);
    expect(existsSync(join(c.home, "state", "cells", "c"))).toBe(false);
    await c.client.removeCell("a", false);
    expect((await c.client.createCell({ name: "c" })).name).toBe("c");
  } finally {
    await c.stop();
    cleanup(c.home);
  }
});
