/**
 * vm jobs in real QEMU guests, end to end on a real planterd: the guest's own kernel, the cell
 * shared writable and the rest read-only, planter's state hidden, exit codes, kill, timeout, the
 * memory limit and re-adoption after planterd is SIGKILLed. With KVM where /dev/kvm boots the
 * guest's kernel, else TCG (emulated: 5–60 s per boot on a loaded host, hence the slow lane;
 * PLANTER_TEST_VM_ACCEL=kvm|tcg chooses). One VM at a time. The kernel cache is shared by every
 * test daemon (PLANTER_TEST_VM_CACHE, default /var/tmp/planter-test-vm). The refusals are in
 * test/integration/vm.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { kvmProblem, VmBackend } from "../../lib/sandbox/vm.ts";
import { cleanup, type DaemonHandle, startDaemon, waitFor } from "../harness.ts";

const env = process.env.PLANTER_TEST_VM_ACCEL;
const accel = env === "tcg" || env === "kvm" ? env : kvmProblem() === null ? "kvm" : "tcg";
const cache = process.env.PLANTER_TEST_VM_CACHE ?? "/var/tmp/planter-test-vm";
const why = new VmBackend({ cacheDir: cache, accel }).problem();
/** A boot and a short job under TCG on a loaded 2-core host: up to a few minutes; under KVM seconds. */
const BOOT_MS = accel === "tcg" ? 300_000 : 30_000;
const skip = why ? ` (skipped: ${why.message})` : ` (${accel})`;
const config = `[sandbox]\nmode = "enforced"\nwarm_ms = 0\n[vm]\ncache_dir = "${cache}"\naccel = "${accel}"\n`;

// Not under /tmp: the guest's /tmp is its own, so a state dir there would be out of sight anyway.
const home = mkdtempSync("/var/tmp/pt-vm-");
chmodSync(home, 0o1777);
const state = join(home, "state");
const cellDir = join(state, "cells", "default");
let d: DaemonHandle;
beforeAll(async () => {
  d = await startDaemon({ home, config });
});
afterAll(async () => {
  // Nothing of a failed test keeps a VM running: planterd leaves jobs running when it stops.
  for (const j of (await d.client.listJobs({}).catch(() => ({ jobs: [] as Job[] }))).jobs) {
    if (j.state === "running") await d.client.killJob(j.id, { force: true }).catch(() => undefined);
  }
  for (const j of (await d.client.listJobs({}).catch(() => ({ jobs: [] as Job[] }))).jobs) {
    if (j.state === "running") await d.client.waitJob(j.id, 20_000).catch(() => undefined);
  }
  await d.stop();
  cleanup(home);
});

const text = async (id: string, stream: "stdout" | "stderr") =>
  Buffer.from((await d.client.logs(id, { stream })).data, "base64").toString();

const run = async (script: string, extra: Record<string, unknown> = {}) => {
  const j = await d.client.createJob({ argv: ["sh", "-c", script], sandbox: { backend: "vm" }, ...extra });
  expect(j.sandbox.backend).toBe("vm");
  const job = (await d.client.waitJob(j.id, BOOT_MS)).job;
  return { job, out: await text(j.id, "stdout"), err: await text(j.id, "stderr") };
};

describe.skipIf(why !== null)(`vm jobs in real QEMU guests${skip}`, () => {
  test("stdin is refused at creation with why (no input FIFO is wired to the guest); max_pids below 4 too; no job is made", async () => {
    const before = (await d.client.listJobs({})).jobs.length;
    const e = await d.client.createJob({ argv: ["cat"], stdin: true, sandbox: { backend: "vm" } }).catch((x) => x);
    expect([e.code, e.message]).toEqual(["E_BAD_REQUEST", "a vm job takes no stdin yet (planter run -i, stdin: true)"]);
    const p = await d.client
      .createJob({ argv: ["true"], limits: { max_pids: 2 }, sandbox: { backend: "vm" } })
      .catch((x) => x);
    expect(p.code).toBe("E_BAD_REQUEST");
    expect((await d.client.listJobs({})).jobs.length).toBe(before);
  });

  test(
    "its own kernel; both streams logged; cell writes reach the host; the rest is read-only; planter's state is hidden; the exit code",
    async () => {
      const r = await run(
        `uname -r; echo err >&2; echo made > vm-made.txt; touch /etc/pt-vm-escape 2>/dev/null && echo WROTE-ETC; ls -A ${state}; ls ${state}/jobs 2>/dev/null && echo SAW-JOBS; exit 7`,
      );
      const host = Bun.spawnSync(["uname", "-r"]).stdout.toString().trim();
      const [kernel, ...rest] = r.out.trim().split("\n");
      expect(kernel).toMatch(/^\d+\.\d+/);
      expect(kernel).not.toBe(host);
      // planter's state dir holds, in the guest's view as in a bwrap job's, only the mount points of its binds.
      expect(rest).toEqual(["cells", "homes"]);
      expect(readdirSync(state)).toContain("jobs");
      expect(r.err).toBe("err\n");
      expect([r.job.state, r.job.exit_code]).toEqual(["failed", 7]);
      expect(readFileSync(join(cellDir, "vm-made.txt"), "utf8")).toBe("made\n");
      expect(existsSync("/etc/pt-vm-escape")).toBe(false);
    },
    BOOT_MS + 10_000,
  );

  test(
    "kill, timeout and the memory limit stop the VM",
    async () => {
      const slow = await d.client.createJob({ argv: ["sleep", "600"], sandbox: { backend: "vm" } });
      await d.client.killJob(slow.id, { force: true });
      const killed = (await d.client.waitJob(slow.id, BOOT_MS)).job;
      expect([killed.state, killed.reason]).toEqual(["killed", "forced_kill"]);
      const t = await run("sleep 600", { limits: { timeout_ms: 3000 } });
      expect([t.job.state, t.job.reason]).toEqual(["killed", "timeout"]);
      // tail keeps the last 1 GB of a pipe in memory, growing by small buffers, in a 128 MiB guest:
      // the guest's kernel kills it (and the shell exits 137).
      const m = await run("head -c 1000000000 /dev/zero | tail -c 1000000000", {
        limits: { max_rss_bytes: 128 << 20 },
      });
      expect([m.job.state, m.job.reason]).toEqual(["killed", "memory_limit"]);
    },
    3 * BOOT_MS + 10_000,
  );

  test(
    "signals reach the job in the guest: its INT handler runs and it goes on; its TERM handler ends it, then the VM",
    async () => {
      const j = await d.client.createJob({
        argv: [
          "sh",
          "-c",
          "trap 'echo got INT' INT; trap 'echo got TERM; exit 3' TERM; echo up; while :; do sleep 1; done",
        ],
        sandbox: { backend: "vm" },
      });
      await waitFor(async () => (await text(j.id, "stdout")) === "up\n", "the guest's job to start", BOOT_MS);
      await d.client.killJob(j.id, { signal: "INT" });
      await waitFor(async () => (await text(j.id, "stdout")) === "up\ngot INT\n", "the INT handler", BOOT_MS);
      expect((await d.client.getJob(j.id)).state).toBe("running");
      await d.client.killJob(j.id, {});
      const ended = (await d.client.waitJob(j.id, BOOT_MS)).job;
      expect(await text(j.id, "stdout")).toBe("up\ngot INT\ngot TERM\n");
      // As a job on the host that handles TERM: it ended by itself, with its own code, the kill recorded.
      expect([ended.state, ended.reason, ended.exit_code, ended.kill?.signal]).toEqual(["failed", "exited", 3, "TERM"]);
    },
    BOOT_MS + 10_000,
  );

  test(
    "planterd SIGKILLed while a VM job runs: the restarted planterd adopts it and records its end",
    async () => {
      const go = join(cellDir, "vm-go");
      const j = await d.client.createJob({
        argv: ["sh", "-c", "echo up; while [ ! -e vm-go ]; do sleep 1; done; echo done; exit 4"],
        sandbox: { backend: "vm" },
      });
      await waitFor(async () => (await text(j.id, "stdout")) === "up\n", "the guest's job to start", BOOT_MS);
      await d.kill9();
      d = await startDaemon({ home, config });
      expect((await d.client.getJob(j.id)).state).toBe("running");
      writeFileSync(go, "");
      const ended = (await d.client.waitJob(j.id, BOOT_MS)).job;
      expect([ended.state, ended.reason, ended.exit_code]).toEqual(["failed", "exited", 4]);
      expect(await text(j.id, "stdout")).toBe("up\ndone\n");
    },
    2 * BOOT_MS + 30_000,
  );
});
