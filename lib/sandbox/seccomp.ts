/**
 * The seccomp filter of bwrap jobs (`--seccomp FD`): everything is allowed except a short list of
 * syscalls that return EPERM (docs/sandbox.md). Built with libseccomp through bun:ffi, so syscall
 * numbers come from libseccomp's tables rather than from this file.
 */
import { dlopen, read, FFIType as T } from "bun:ffi";
import { closeSync, fstatSync, mkdtempSync, openSync, readSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PlanterError } from "../api/errors.ts";

/** What a job's filter lets through besides the defaults. */
export interface SeccompOptions {
  /** Let the job create AF_UNIX sockets (a policy listed socket paths). */
  allowUnixSockets: boolean;
}

/** Syscalls every job is refused (EPERM), documented in docs/sandbox.md. */
export const DENIED_SYSCALLS: readonly string[] = [
  // Kernel keyrings are not namespaced: a job could read or plant keys of the whole user.
  "keyctl",
  "add_key",
  "request_key",
  // Large kernel attack surface no build needs; io_uring also runs socket() and friends unseen by seccomp.
  "bpf",
  "perf_event_open",
  "userfaultfd",
  "io_uring_setup",
  "io_uring_enter",
  "io_uring_register",
  // The mount layout is bwrap's; a job must not rearrange it or enter other namespaces.
  "mount",
  "umount2",
  "pivot_root",
  "fsopen",
  "fsconfig",
  "fsmount",
  "fspick",
  "move_mount",
  "open_tree",
  "mount_setattr",
  "setns",
  "unshare",
  // Host-wide state: accounting, swap, power, modules, I/O ports, quotas, the clock.
  "acct",
  "swapon",
  "swapoff",
  "reboot",
  "init_module",
  "finit_module",
  "delete_module",
  "kexec_load",
  "kexec_file_load",
  "iopl",
  "ioperm",
  "quotactl",
  "clock_settime",
  "settimeofday",
  "adjtimex",
  "clock_adjtime",
  // File handles open any inode of a mounted filesystem, bypassing the paths a sandbox hides.
  "name_to_handle_at",
  "open_by_handle_at",
  // Obsolete interfaces, kept only for old binaries.
  "lookup_dcookie",
  "nfsservctl",
  "uselib",
  "vm86",
  "vm86old",
];

/** One refusal: a syscall, or only its calls whose argument `index`, masked, equals `value`. */
export interface SeccompRule {
  syscall: string;
  arg?: { index: number; mask: number; value: number };
}

// The kernel reads these arguments as 32-bit ints: compare the low half only, or a job sets a high bit and passes.
const LOW32 = 0xffff_ffff;
const AF_UNIX = 1;
const SOCK_TYPE_MASK = 0xf;
const SOCK_DGRAM = 2;
// asm-generic values, the same on x86 and arm (powerpc, mips and sparc differ; see ARCHES).
const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541c;

/** The refusals of a job's filter, as data (pure). */
export function seccompRules(opts: SeccompOptions): SeccompRule[] {
  const rules: SeccompRule[] = DENIED_SYSCALLS.map((syscall) => ({ syscall }));
  // Both push bytes into a terminal's input queue: a job could type commands into the user's shell.
  for (const request of [TIOCSTI, TIOCLINUX]) {
    rules.push({ syscall: "ioctl", arg: { index: 1, mask: LOW32, value: request } });
  }
  if (!opts.allowUnixSockets) {
    rules.push({ syscall: "socket", arg: { index: 0, mask: LOW32, value: AF_UNIX } });
    // A datagram pair can still sendto() or connect() any socket path; stream and seqpacket pairs cannot.
    rules.push({ syscall: "socketpair", arg: { index: 1, mask: SOCK_TYPE_MASK, value: SOCK_DGRAM } });
    // i386's socketcall passes its arguments in memory, out of a filter's reach.
    rules.push({ syscall: "socketcall" });
  }
  return rules;
}

/** libseccomp's architecture tokens (AUDIT_ARCH_* values). */
export const ARCH = {
  X86_64: 0xc000003e,
  X86: 0x40000003,
  X32: 0x4000003e,
  AARCH64: 0xc00000b7,
  ARM: 0x40000028,
} as const;

/**
 * The ABIs a filter covers, by native arch: every ABI the kernel may enter through, or a job escapes
 * the rules with `int 0x80` (i386) or x32 syscall numbers. arm64 kernels may run 32-bit arm code.
 */
const ARCHES: Record<number, number[]> = {
  [ARCH.X86_64]: [ARCH.X86, ARCH.X32],
  [ARCH.AARCH64]: [ARCH.ARM],
};

const SCMP_ACT_ALLOW = 0x7fff0000;
const SCMP_ACT_ERRNO_EPERM = 0x00050000 | 1;
const SCMP_CMP_MASKED_EQ = 7;
const NR_SCMP_ERROR = -1;
/** sizeof(struct scmp_arg_cmp): u32 arg, u32 op, u64 datum_a (mask), u64 datum_b (value). */
const ARG_CMP_SIZE = 24;

interface Libseccomp {
  seccomp_version(): number | null;
  seccomp_arch_native(): number;
  seccomp_init(action: number): number | null;
  seccomp_release(ctx: number): void;
  seccomp_arch_add(ctx: number, arch: number): number;
  seccomp_syscall_resolve_name_arch(arch: number, name: Uint8Array): number;
  seccomp_rule_add_array(ctx: number, action: number, syscall: number, count: number, args: Uint8Array | null): number;
  seccomp_export_bpf(ctx: number, fd: number): number;
}

let loaded: { lib: Libseccomp; version: string } | { error: string } | undefined;

/** libseccomp through bun:ffi, opened once; every symbol used here exists since 2.3. */
function libseccomp(): { lib: Libseccomp; version: string } | { error: string } {
  if (loaded) return loaded;
  try {
    const { symbols } = dlopen("libseccomp.so.2", {
      seccomp_version: { args: [], returns: T.ptr },
      seccomp_arch_native: { args: [], returns: T.u32 },
      seccomp_init: { args: [T.u32], returns: T.ptr },
      seccomp_release: { args: [T.ptr], returns: T.void },
      seccomp_arch_add: { args: [T.ptr, T.u32], returns: T.i32 },
      seccomp_syscall_resolve_name_arch: { args: [T.u32, T.ptr], returns: T.i32 },
      seccomp_rule_add_array: { args: [T.ptr, T.u32, T.i32, T.u32, T.ptr], returns: T.i32 },
      seccomp_export_bpf: { args: [T.ptr, T.i32], returns: T.i32 },
    });
    const lib = symbols as unknown as Libseccomp;
    const v = lib.seccomp_version();
    const version = v ? [0, 4, 8].map((o) => read.u32(v as never, o)).join(".") : "unknown";
    loaded = { lib, version };
  } catch (e) {
    loaded = { error: `libseccomp.so.2 cannot be loaded (${(e as Error).message})` };
  }
  return loaded;
}

const HINT = "install libseccomp: sudo apt-get install libseccomp2 (Debian, Ubuntu) or sudo dnf install libseccomp";

/** Whether libseccomp can be loaded here, with the reason when not (for doctor / probe). */
export function seccompSupport(): { ok: true; version: string } | { ok: false; message: string } {
  const l = libseccomp();
  if ("error" in l) return { ok: false, message: l.error };
  const native = l.lib.seccomp_arch_native() >>> 0;
  if (!ARCHES[native])
    return { ok: false, message: `no seccomp filter for this architecture (0x${native.toString(16)})` };
  return { ok: true, version: l.version };
}

/** A syscall's number on one ABI (0: this machine's) per libseccomp; negative when that ABI lacks it or libseccomp does not know it. */
export function syscallNumber(name: string, arch = 0): number {
  const l = libseccomp();
  if ("error" in l) throw new PlanterError("E_SANDBOX_UNAVAILABLE", l.error, { hint: HINT });
  return l.lib.seccomp_syscall_resolve_name_arch(arch, Buffer.from(`${name}\0`));
}

const cache = new Map<boolean, Uint8Array>();

/** The BPF program (bytes for bwrap --seccomp) for this machine's architecture; cached per options. */
export function seccompProgram(opts: SeccompOptions): Uint8Array {
  let program = cache.get(opts.allowUnixSockets);
  if (!program) {
    program = build(opts);
    cache.set(opts.allowUnixSockets, program);
  }
  return program;
}

/** Build and export one filter; libseccomp errors are negative errnos. */
function build(opts: SeccompOptions): Uint8Array {
  const support = seccompSupport();
  if (!support.ok) throw new PlanterError("E_SANDBOX_UNAVAILABLE", support.message, { hint: HINT });
  const { lib } = libseccomp() as { lib: Libseccomp };
  const fail = (what: string, rc: number) =>
    new PlanterError("E_SANDBOX_UNAVAILABLE", `libseccomp failed to ${what} (errno ${-rc})`, { hint: HINT });
  const ctx = lib.seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) throw fail("create a filter", -12);
  try {
    for (const arch of ARCHES[lib.seccomp_arch_native() >>> 0] ?? []) {
      const rc = lib.seccomp_arch_add(ctx, arch);
      if (rc < 0) throw fail(`add architecture 0x${arch.toString(16)}`, rc);
    }
    for (const rule of seccompRules(opts)) {
      // The rule API takes the native number (a negative pseudo-number for syscalls only other ABIs
      // have, like socketcall) and maps it by name to each ABI of the filter, leaving out the ABIs without it.
      // A name this libseccomp does not know (older than the syscall) cannot be filtered: skipped.
      const nr = syscallNumber(rule.syscall);
      if (nr === NR_SCMP_ERROR) continue;
      let cmp: Uint8Array | null = null;
      if (rule.arg) {
        const v = new DataView(new ArrayBuffer(ARG_CMP_SIZE));
        v.setUint32(0, rule.arg.index, true);
        v.setUint32(4, SCMP_CMP_MASKED_EQ, true);
        v.setBigUint64(8, BigInt(rule.arg.mask), true);
        v.setBigUint64(16, BigInt(rule.arg.value), true);
        cmp = new Uint8Array(v.buffer);
      }
      const rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO_EPERM, nr, cmp ? 1 : 0, cmp);
      if (rc < 0) throw fail(`add a rule for ${rule.syscall}`, rc);
    }
    return exportBpf(ctx, lib, fail);
  } finally {
    lib.seccomp_release(ctx);
  }
}

/** libseccomp 2.5 exports only to a file descriptor: an unlinked temp file, read back whole. */
function exportBpf(ctx: number, lib: Libseccomp, fail: (what: string, rc: number) => Error): Uint8Array {
  let fd: number;
  try {
    const dir = mkdtempSync(join(tmpdir(), "planter-seccomp-"));
    fd = openSync(join(dir, "filter.bpf"), "w+", 0o600);
    rmSync(dir, { recursive: true });
  } catch (e) {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      `cannot write the seccomp filter to ${tmpdir()}: ${(e as Error).message}`,
      {
        hint: "make TMPDIR a writable directory",
      },
    );
  }
  try {
    const rc = lib.seccomp_export_bpf(ctx, fd);
    if (rc < 0) throw fail("export the filter", rc);
    const bytes = new Uint8Array(fstatSync(fd).size);
    for (let at = 0; at < bytes.length; ) {
      const n = readSync(fd, bytes, at, bytes.length - at, at);
      if (n === 0) break;
      at += n;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}
