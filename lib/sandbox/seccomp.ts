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
  "open_tree_attr",
  "setns",
  "unshare",
  // The kernel log (where dmesg_restrict is 0): other processes' names and addresses, hardware.
  "syslog",
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
  "quotactl_fd",
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
/**
 * Address families a job may create sockets of: Internet (v4, v6) and netlink, all in the job's
 * own network namespace. Every other family is refused, above all those no network namespace
 * contains: AF_VSOCK reaches the hypervisor's services (and other VMs) from a job with
 * `network = "none"`, AF_BLUETOOTH the host's radios; the rest (AF_ALG, AF_RDS, AF_TIPC, AF_KCM,
 * AF_SMC, …) is kernel attack surface no build needs. AF_UNIX is decided by the policy.
 */
const JOB_FAMILIES: readonly number[] = [2, 10, 16];

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
  }
  // Families outside JOB_FAMILIES, on the low 32 bits the kernel reads: 0–63 one by one, and any
  // value of 64 or more by the bit that makes it so (a comparison of the whole register would let
  // high bits through, or refuse AF_INET with a high bit set).
  for (let family = 0; family < 64; family++) {
    if (family === AF_UNIX || JOB_FAMILIES.includes(family)) continue;
    rules.push({ syscall: "socket", arg: { index: 0, mask: LOW32, value: family } });
  }
  for (let bit = 6; bit < 32; bit++) {
    rules.push({ syscall: "socket", arg: { index: 0, mask: 2 ** bit, value: 2 ** bit } });
  }
  // i386's socketcall passes its arguments in memory, out of a filter's reach (modern libcs call socket directly).
  rules.push({ syscall: "socketcall" });
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

/**
 * Syscall numbers from 424 on are the same on every ABI (x86-64, i386, x32 with its bit, arm64,
 * arm): the ones DENIED_SYSCALLS names by such a number are refused by number too, so a libseccomp
 * older than the call (which leaves the name out) still refuses it.
 */
export const UNIFIED_NUMBERS: Readonly<Record<string, number>> = {
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  mount_setattr: 442,
  quotactl_fd: 443,
  open_tree_attr: 467,
};

/**
 * The first syscall number planter has not reviewed (Linux 6.18 ends at 469, file_setattr). Every
 * number from here up answers ENOSYS, as on a kernel without it: a syscall newer than these rules
 * (and than libseccomp's tables) is refused until it is looked at, not allowed unseen. Programs
 * treat ENOSYS as "this kernel is older" and fall back.
 */
export const FIRST_UNREVIEWED = 470;

const X32_BIT = 0x4000_0000;
/** x32's own numbers (512–547: calls whose x32 arguments differ) lie past the common table. */
const X32_OWN = [512, 548] as const;
/** 32-bit arm's private calls (cacheflush, set_tls, …) are numbered from 0x0f0000. */
const ARM_PRIVATE = 0x0f_0000;

const SECCOMP_RET_ERRNO = 0x0005_0000;
const EPERM = 1;
const ENOSYS = 38;

/** One classic-BPF instruction; jumps name labels, resolved by `assemble`. */
type Insn =
  | { op: "ld"; k: 0 | 4 }
  | { op: "jeq" | "jge"; k: number; yes: string; no?: string }
  | { op: "ja"; to: string }
  | { op: "ret"; k: number }
  | { label: string };

/**
 * The filter's prefix, run before libseccomp's rules: per ABI, the unified numbers of denied calls
 * refused (EPERM) and every number at or past FIRST_UNREVIEWED answered ENOSYS; everything else
 * (and an arch this prefix does not know) goes on to libseccomp's program, which follows it.
 */
export function prefixProgram(arches: readonly number[]): Uint8Array {
  const denied = DENIED_SYSCALLS.flatMap((n) => (UNIFIED_NUMBERS[n] === undefined ? [] : [UNIFIED_NUMBERS[n]]));
  const insns: Insn[] = [{ op: "ld", k: 4 }];
  const common = (base: number): Insn[] => [
    ...denied.map((nr): Insn => ({ op: "jeq", k: base + nr, yes: "eperm" })),
    { op: "jge", k: base + FIRST_UNREVIEWED, yes: "enosys" },
    { op: "ja", to: "rules" },
  ];
  arches.forEach((arch, i) => {
    const here = `arch${i}`;
    const next = i + 1 < arches.length ? `arch${i + 1}-test` : "rules";
    insns.push({ label: `arch${i}-test` }, { op: "jeq", k: arch, yes: here, no: next }, { label: here });
    insns.push({ op: "ld", k: 0 });
    if (arch === ARCH.X86_64) {
      // x32 calls arrive with this arch and X32_BIT in the number.
      insns.push({ op: "jge", k: X32_BIT, yes: `${here}-x32` }, ...common(0), { label: `${here}-x32` });
      insns.push({ op: "jge", k: X32_BIT + X32_OWN[1], yes: "enosys" });
      insns.push({ op: "jge", k: X32_BIT + X32_OWN[0], yes: "rules" }, ...common(X32_BIT));
    } else if (arch === ARCH.ARM) {
      insns.push({ op: "jge", k: ARM_PRIVATE, yes: "rules" }, ...common(0));
    } else insns.push(...common(0));
  });
  insns.push(
    { label: "enosys" },
    { op: "ret", k: SECCOMP_RET_ERRNO | ENOSYS },
    { label: "eperm" },
    { op: "ret", k: SECCOMP_RET_ERRNO | EPERM },
    { label: "rules" },
  );
  return assemble(insns);
}

/** Instructions to bytes (struct sock_filter, little-endian as on every ABI filtered here). */
function assemble(insns: Insn[]): Uint8Array {
  const at = new Map<string, number>();
  let pc = 0;
  for (const i of insns) {
    if ("label" in i) at.set(i.label, pc);
    else pc++;
  }
  const out = new DataView(new ArrayBuffer(pc * 8));
  pc = 0;
  const rel = (label: string) => {
    const to = at.get(label);
    if (to === undefined || to <= pc || to - pc - 1 > 255) throw new Error(`BPF prefix: bad jump to ${label}`);
    return to - pc - 1;
  };
  for (const i of insns) {
    if ("label" in i) continue;
    let code = 0;
    let jt = 0;
    let jf = 0;
    let k = 0;
    if (i.op === "ld") [code, k] = [0x20, i.k];
    else if (i.op === "ret") [code, k] = [0x06, i.k];
    else if (i.op === "ja") {
      code = 0x05;
      const to = at.get(i.to);
      if (to === undefined || to <= pc) throw new Error(`BPF prefix: bad jump to ${i.to}`);
      k = to - pc - 1;
    } else {
      code = i.op === "jeq" ? 0x15 : 0x35;
      k = i.k;
      jt = rel(i.yes);
      jf = i.no === undefined ? 0 : rel(i.no);
    }
    out.setUint16(pc * 8, code, true);
    out.setUint8(pc * 8 + 2, jt);
    out.setUint8(pc * 8 + 3, jf);
    out.setUint32(pc * 8 + 4, k >>> 0, true);
    pc++;
  }
  return new Uint8Array(out.buffer);
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
    const native = lib.seccomp_arch_native() >>> 0;
    const rules = exportBpf(ctx, lib, fail);
    const prefix = prefixProgram([native, ...(ARCHES[native] ?? []).filter((a) => a !== ARCH.X32)]);
    const program = new Uint8Array(prefix.length + rules.length);
    program.set(prefix);
    program.set(rules, prefix.length);
    return program;
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
