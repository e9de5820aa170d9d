/** sandbox.vm: whether vm jobs can run here (KVM, QEMU, busybox, the kernel) and a real boot of the guest. */
import { join } from "node:path";
import { bootProbe, kvmProblem, qemuPath, VmBackend, vmInstallHint } from "../../sandbox/vm.ts";
import { cachedAssets, KERNEL_PACKAGE, untrustedCache } from "../../sandbox/vm-assets.ts";
import { type Check, fail, ok, skip, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";

const vm: Check<DoctorContext> = {
  id: "sandbox.vm",
  description: "vm jobs (sandbox backend vm): KVM usable, QEMU present, the guest kernel fetched, a real boot",
  async run(ctx) {
    if (ctx.platform !== "linux") {
      return skip("vm jobs run on Linux only (macOS: a Virtualization.framework backend is designed, not built)");
    }
    const config = ctx.config.ok ? ctx.config.config.vm : { accel: "kvm" as const, cache_dir: undefined };
    const backend = new VmBackend({
      cacheDir: config.cache_dir ?? join(ctx.paths.stateDir, "vm"),
      accel: config.accel,
    });
    if (!qemuPath()) {
      return skip("QEMU is not installed: vm jobs are refused (other backends are unaffected)", vmInstallHint());
    }
    const why = backend.problem();
    // A host without a KVM that boots the guest lacks a capability, as one without QEMU does: vm
    // jobs are refused saying why, nothing of planter's is broken (the hint names TCG).
    const kvm = config.accel === "kvm" ? kvmProblem() : null;
    if (why && kvm && why.message.includes(kvm)) return skip(`vm jobs are refused: ${why.message}`, why.hint);
    if (why) {
      return warn(
        `vm jobs are refused: ${why.message}`,
        why.hint,
        /sudo [^\n]*/.exec(why.hint)?.[0] ?? "planter doctor",
      );
    }
    const untrusted = untrustedCache(backend.settings.cacheDir);
    if (untrusted) {
      return fail(
        `vm jobs are refused: the cache dir ${backend.settings.cacheDir} cannot be trusted: ${untrusted}`,
        "every vm job boots the kernel kept there: give [vm] cache_dir a directory only planterd's user (or root) can write",
        `sudo rm -rf ${backend.settings.cacheDir}  # planterd makes it again, its own`,
      );
    }
    const assets = cachedAssets(backend.settings.cacheDir);
    if (!assets) {
      return ok(
        `QEMU with ${backend.accel()}; the guest kernel (${KERNEL_PACKAGE}) is not fetched yet: planterd fetches it at the first vm job (not booted)`,
      );
    }
    const boot = await bootProbe(backend, assets, backend.accel() === "kvm" ? 10_000 : 120_000);
    if (!boot.ok) {
      return fail(
        `QEMU with ${backend.accel()}, kernel ${assets.version}: the guest does not boot: ${boot.message}`,
        'run the job with the bwrap backend; see docs/sandbox.md "VM jobs"',
        "planter doctor --json",
      );
    }
    return ok(`QEMU with ${backend.accel()}, kernel ${assets.version}: ${boot.message}`);
  },
};

export const vmChecks = [vm];
