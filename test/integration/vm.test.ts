/**
 * The vm backend on a real planterd: where vm jobs cannot run, a clear refusal that makes nothing;
 * where a VM boots (KVM, or TCG when PLANTER_TEST_VM_ACCEL=tcg), real jobs in real QEMU guests.
 * The kernel cache is shared by every test daemon (PLANTER_TEST_VM_CACHE, default /var/tmp/planter-test-vm).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import { VmBackend } from "../../lib/sandbox/vm.ts";
import { cleanup, type DaemonHandle, startDaemon } from "../harness.ts";

const accel = process.env.PLANTER_TEST_VM_ACCEL === "tcg" ? "tcg" : "kvm";
const cache = process.env.PLANTER_TEST_VM_CACHE ?? "/var/tmp/planter-test-vm";
const why = new VmBackend({ cacheDir: cache, accel }).problem();
/** A VM's boot under TCG takes tens of seconds on a loaded host; under KVM well under one. */
const BOOT_MS = accel === "tcg" ? 240_000 : 30_000;

let d: DaemonHandle;
beforeAll(async () => {
  d = await startDaemon({
    config: `[sandbox]\nmode = "enforced"\nwarm_ms = 0\n[vm]\ncache_dir = "${cache}"\naccel = "${accel}"\n`,
  });
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

const refusal = (e: unknown) => (e as PlanterError).code;

describe("vm backend: refusals that change nothing", () => {
  test("a backend of another platform, a lowered vm cell, a disabled mode", async () => {
    const before = (await d.client.listJobs({})).jobs.length;
    const other = process.platform === "linux" ? "seatbelt" : "bwrap";
    expect(refusal(await d.client.createJob({ argv: ["true"], sandbox: { backend: other } }).catch((e) => e))).toBe(
      "E_BAD_REQUEST",
    );
    await d.client.createCell({ name: "vmcell", sandbox: { backend: "vm" } });
    const lower = await d.client
      .createJob({ cell: "vmcell", argv: ["true"], sandbox: { backend: "bwrap" } })
      .catch((e) => e);
    expect([refusal(lower), (lower as Error).message]).toEqual([
      "E_BAD_REQUEST",
      "sandbox backend bwrap would leave its cell's vm backend",
    ]);
    const disabled = await d.client
      .createJob({ argv: ["true"], sandbox: { backend: "vm", mode: "disabled" } })
      .catch((e) => e);
    expect(refusal(disabled)).toBe("E_BAD_REQUEST");
    expect((await d.client.listJobs({})).jobs.length).toBe(before);
  });

  test.skipIf(why === null)(
    `where vm jobs cannot run: E_SANDBOX_UNAVAILABLE with why, and no job (${why?.message ?? "vm jobs can run here"})`,
    async () => {
      const before = (await d.client.listJobs({})).jobs.length;
      const e = (await d.client
        .createJob({ argv: ["true"], sandbox: { backend: "vm" } })
        .catch((x) => x)) as PlanterError;
      expect(e.code).toBe("E_SANDBOX_UNAVAILABLE");
      expect(e.message).toContain(why?.message ?? "");
      expect((await d.client.listJobs({})).jobs.length).toBe(before);
    },
  );
});

const skip = why ? ` (skipped: ${why.message})` : "";
describe("vm jobs in real QEMU guests", () => {
  const run = async (script: string, extra: Record<string, unknown> = {}) => {
    const j = await d.client.createJob({ argv: ["sh", "-c", script], sandbox: { backend: "vm" }, ...extra });
    expect(j.sandbox.backend).toBe("vm");
    const job = (await d.client.waitJob(j.id, BOOT_MS)).job;
    const read = async (stream: "stdout" | "stderr") =>
      Buffer.from((await d.client.logs(j.id, { stream })).data, "base64").toString();
    return { job, out: await read("stdout"), err: await read("stderr") };
  };

  test.skipIf(why !== null)(
    `its own kernel; cell writes reach the host; the rest is read-only; planter's state is hidden; the exit code${skip}`,
    async () => {
      const state = join(d.home, "state");
      const r = await run(
        `uname -r; echo made > vm-made.txt; touch /etc/pt-vm-escape 2>/dev/null && echo WROTE-ETC; ls ${state}/planter.db 2>/dev/null && echo SAW-STATE; exit 7`,
      );
      const host = Bun.spawnSync(["uname", "-r"]).stdout.toString().trim();
      const [kernel, ...rest] = r.out.trim().split("\n");
      expect(kernel).not.toBe(host);
      expect(rest).toEqual([]);
      expect([r.job.state, r.job.exit_code]).toEqual(["failed", 7]);
      expect(readFileSync(join(state, "cells", "default", "vm-made.txt"), "utf8")).toBe("made\n");
      expect(existsSync("/etc/pt-vm-escape")).toBe(false);
    },
    BOOT_MS + 10_000,
  );

  test.skipIf(why !== null)(
    `kill, timeout and the memory limit stop the VM${skip}`,
    async () => {
      const slow = await d.client.createJob({ argv: ["sleep", "600"], sandbox: { backend: "vm" } });
      await d.client.killJob(slow.id, { force: true });
      const killed = (await d.client.waitJob(slow.id, BOOT_MS)).job;
      expect([killed.state, killed.reason]).toEqual(["killed", "forced_kill"]);
      const t = await run("sleep 600", { limits: { timeout_ms: 3000 } });
      expect([t.job.state, t.job.reason]).toEqual(["killed", "timeout"]);
      const m = await run("head -c 400000000 /dev/zero | tail -c 1 >/dev/null", {
        limits: { max_rss_bytes: 128 << 20 },
      });
      expect([m.job.state, m.job.reason]).toEqual(["killed", "memory_limit"]);
    },
    3 * BOOT_MS + 10_000,
  );
});
