/**
 * The vm backend on a real planterd: where vm jobs cannot run, a clear refusal that makes nothing.
 * Real jobs in real QEMU guests (seconds to minutes per boot) are in the slow lane: test/slow/vm.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import { VmBackend } from "../../lib/sandbox/vm.ts";
import { cleanup, type DaemonHandle, startDaemon } from "../harness.ts";

const accel = process.env.PLANTER_TEST_VM_ACCEL === "tcg" ? "tcg" : "kvm";
const cache = process.env.PLANTER_TEST_VM_CACHE ?? "/var/tmp/planter-test-vm";
const why = new VmBackend({ cacheDir: cache, accel }).problem();

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

describe.skipIf(process.getuid?.() !== 0 || new VmBackend({ cacheDir: cache, accel: "tcg" }).problem() !== null)(
  "vm backend: a kernel cache another user could fill",
  () => {
    test("a [vm] cache_dir another user made first is refused (E_SANDBOX_UNAVAILABLE, nothing booted, no job)", async () => {
      // Another local user made the configured dir first and put a kernel in it.
      const planted = mkdtempSync("/var/tmp/pt-vmplant-");
      mkdirSync(join(planted, "kernel", "6.1.0-9-amd64", "modules"), { recursive: true });
      writeFileSync(join(planted, "kernel", "current"), "6.1.0-9-amd64\n");
      writeFileSync(join(planted, "kernel", "6.1.0-9-amd64", "vmlinuz"), "a kernel of the other user's");
      Bun.spawnSync(["chown", "-R", "65534:65534", planted]);
      await using e = await startDaemon({
        config: `[sandbox]\nmode = "enforced"\nwarm_ms = 0\n[vm]\ncache_dir = "${planted}"\naccel = "tcg"\n`,
      });
      try {
        const err = (await e.client
          .createJob({ argv: ["true"], sandbox: { backend: "vm" } })
          .catch((x) => x)) as PlanterError;
        expect([err.code, err.message]).toEqual([
          "E_SANDBOX_UNAVAILABLE",
          `the vm cache dir ${planted} cannot be trusted: ${planted} belongs to uid 65534, not to planterd's user or root`,
        ]);
        expect((await e.client.listJobs({})).jobs).toEqual([]);
        expect(readFileSync(join(planted, "kernel", "6.1.0-9-amd64", "vmlinuz"), "utf8")).toBe(
          "a kernel of the other user's",
        );
      } finally {
        rmSync(planted, { recursive: true, force: true });
      }
    });
  },
);
