/**
 * The vm backend on a real planterd: where vm jobs cannot run, a clear refusal that makes nothing.
 * Real jobs in real QEMU guests (seconds to minutes per boot) are in the slow lane: test/slow/vm.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
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
