/**
 * The seccomp filter against the real thing: libseccomp builds it, real bwrap loads it (`--seccomp 3`)
 * and real probes (perl, a hand-made x86 executable) try what it refuses. Each refusal is paired with a
 * control run that shows the same call without the filter, or with the option that allows it, gets through.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import {
  ARCH,
  DENIED_SYSCALLS,
  FIRST_UNREVIEWED,
  prefixProgram,
  type SeccompOptions,
  seccompProgram,
  seccompRules,
  seccompSupport,
  syscallNumber,
  UNIFIED_NUMBERS,
} from "../../lib/sandbox/seccomp.ts";
import { waitFor } from "../harness.ts";

const REFUSED: SeccompOptions = { allowUnixSockets: false };
const ALLOWED: SeccompOptions = { allowUnixSockets: true };
const EPERM = 1;
const ALLOW = 0x7fff0000;
const ERRNO_EPERM = 0x00050000 | EPERM;

let dir = "";
beforeEach(() => {
  dir = mkdtempSync("/tmp/pt-seccomp-");
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The conditional jumps by opcode (jeq, jgt, jge, jset #k): whether the true branch is taken. */
const JUMPS: Record<number, (acc: number, k: number) => boolean> = {
  21: (acc, k) => acc === k,
  37: (acc, k) => acc > k,
  53: (acc, k) => acc >= k,
  69: (acc, k) => (acc & k) !== 0,
};

/**
 * Run a classic-BPF seccomp program on one syscall, as the kernel would: seccomp_data is
 * nr, arch, instruction pointer, six 64-bit args. Unknown instructions fail the test.
 */
function evaluate(program: Uint8Array, call: { arch: number; nr: number; args?: bigint[] }): number {
  const data = new DataView(new ArrayBuffer(64));
  data.setUint32(0, call.nr >>> 0, true);
  data.setUint32(4, call.arch >>> 0, true);
  (call.args ?? []).forEach((a, i) => {
    data.setBigUint64(16 + 8 * i, a, true);
  });
  const code = new DataView(program.buffer, program.byteOffset, program.byteLength);
  let acc = 0;
  for (let pc = 0; pc * 8 < program.byteLength; pc++) {
    const op = code.getUint16(pc * 8, true);
    const jt = code.getUint8(pc * 8 + 2);
    const jf = code.getUint8(pc * 8 + 3);
    const k = code.getUint32(pc * 8 + 4, true);
    const jump = JUMPS[op];
    if (jump) pc += jump(acc, k) ? jt : jf;
    else if (op === 0x20)
      acc = data.getUint32(k, true); // ld [k]
    else if (op === 0x54)
      acc = (acc & k) >>> 0; // and #k
    else if (op === 0x05)
      pc += k; // ja
    else if (op === 0x06)
      return k; // ret #k
    else throw new Error(`unexpected BPF instruction 0x${op.toString(16)} at ${pc}`);
  }
  throw new Error("the program ran off its end");
}

/**
 * A syscall's number on one ABI. libseccomp answers i386's socket calls with pseudo-numbers (it also
 * routes them through socketcall), so their direct numbers, fixed kernel ABI since Linux 4.3, are given here.
 */
function number(name: string, arch: number): number {
  const i386Direct: Record<string, number> = { socket: 359, socketpair: 360 };
  return arch === ARCH.X86 && i386Direct[name] ? i386Direct[name] : syscallNumber(name, arch);
}

/** The ABIs an x86-64 filter must cover, each with the arch value the kernel puts in seccomp_data. */
const X86_ABIS = [
  { name: "x86_64", token: ARCH.X86_64, auditArch: 0xc000003e },
  { name: "i386", token: ARCH.X86, auditArch: 0x40000003 },
  // x32 syscalls arrive as AUDIT_ARCH_X86_64 with bit 0x40000000 in the number (libseccomp's numbers carry it).
  { name: "x32", token: ARCH.X32, auditArch: 0xc000003e },
];

describe.skipIf(process.platform !== "linux")("the program (libseccomp)", () => {
  test("libseccomp loads and says its version", () => {
    const s = seccompSupport();
    expect(s.ok).toBe(true);
    expect(s.ok && s.version).toMatch(/^2\.\d+\.\d+$/);
  });

  test("built once per option set: the same bytes object again, a different one for other options", () => {
    const a = seccompProgram(REFUSED);
    expect(seccompProgram({ allowUnixSockets: false })).toBe(a);
    expect(seccompProgram(ALLOWED)).not.toBe(a);
    expect(a.byteLength % 8).toBe(0);
  });

  test("every denied name is a syscall libseccomp knows, or one refused by its unified number (a typo would deny nothing)", () => {
    const arches = [ARCH.X86_64, ARCH.X86, ARCH.X32, ARCH.AARCH64, ARCH.ARM];
    const unknown = DENIED_SYSCALLS.filter((n) => arches.every((a) => syscallNumber(n, a) < 0));
    expect(unknown.filter((n) => UNIFIED_NUMBERS[n] === undefined)).toEqual([]);
    // Where libseccomp knows a unified call, its number is the one this table says.
    for (const [name, nr] of Object.entries(UNIFIED_NUMBERS)) {
      const known = syscallNumber(name, ARCH.X86_64);
      if (known >= 0) expect([name, known]).toEqual([name, nr]);
    }
  });

  test("syscalls newer than planter's table answer ENOSYS on every ABI; denied new calls are refused by number; the rest pass on", () => {
    const ENOSYS_RET = 0x00050000 | 38;
    const X32 = 0x40000000;
    // Run alone, the prefix either returns or falls off its end into libseccomp's rules ("rules").
    const run = (arches: number[], arch: number, nr: number) => {
      const prefix = prefixProgram(arches);
      const ret = new Uint8Array(8);
      new DataView(ret.buffer).setUint16(0, 0x06, true); // ret #0: stands for "the rules decide"
      const p = new Uint8Array(prefix.length + 8);
      p.set(prefix);
      p.set(ret, prefix.length);
      const r = evaluate(p, { arch, nr });
      return r === 0 ? "rules" : r === ENOSYS_RET ? "ENOSYS" : r === ERRNO_EPERM ? "EPERM" : r;
    };
    const x86 = [ARCH.X86_64, ARCH.X86];
    for (const [arch, base] of [
      [ARCH.X86_64, 0],
      [ARCH.X86_64, X32],
      [ARCH.X86, 0],
    ] as const) {
      const at = (nr: number) => run(x86, arch, base + nr);
      expect([arch, base, at(FIRST_UNREVIEWED), at(FIRST_UNREVIEWED + 1), at(511)]).toEqual([
        arch,
        base,
        "ENOSYS",
        "ENOSYS",
        "ENOSYS",
      ]);
      expect([arch, base, at(467), at(443), at(428), at(425)]).toEqual([
        arch,
        base,
        "EPERM",
        "EPERM",
        "EPERM",
        "EPERM",
      ]);
      // Older calls, and new ones reviewed and allowed (clone3, close_range, fchmodat2, file_setattr), go on to the rules.
      expect([arch, base, at(0), at(41), at(435), at(436), at(452), at(FIRST_UNREVIEWED - 1)]).toEqual([
        arch,
        base,
        ...Array(6).fill("rules"),
      ]);
    }
    // x32's own calls (512–547) are the rules'; past them, ENOSYS; i386's and x86-64's big numbers too.
    expect([run(x86, ARCH.X86_64, X32 + 512), run(x86, ARCH.X86_64, X32 + 547)]).toEqual(["rules", "rules"]);
    expect([run(x86, ARCH.X86_64, X32 + 548), run(x86, ARCH.X86_64, 0xffffffff), run(x86, ARCH.X86, 1000)]).toEqual([
      "ENOSYS",
      "ENOSYS",
      "ENOSYS",
    ]);
    // An arch the prefix does not know: libseccomp's rules decide (they kill a foreign arch).
    expect(run(x86, ARCH.AARCH64, 1000)).toBe("rules");
    // arm64 and arm: the same numbers; arm's private calls (from 0x0f0000) pass on.
    const arm = [ARCH.AARCH64, ARCH.ARM];
    expect([
      run(arm, ARCH.AARCH64, 467),
      run(arm, ARCH.AARCH64, FIRST_UNREVIEWED),
      run(arm, ARCH.AARCH64, 0x0f0005),
    ]).toEqual(["EPERM", "ENOSYS", "ENOSYS"]);
    expect([run(arm, ARCH.ARM, 467), run(arm, ARCH.ARM, FIRST_UNREVIEWED), run(arm, ARCH.ARM, 0x0f0005)]).toEqual([
      "EPERM",
      "ENOSYS",
      "rules",
    ]);
  });

  test.skipIf(process.arch !== "x64")(
    "x86-64: the whole program refuses a new unreviewed number and open_tree_attr on every ABI",
    () => {
      const program = seccompProgram(REFUSED);
      for (const abi of X86_ABIS) {
        const base = abi.name === "x32" ? 0x40000000 : 0;
        expect([abi.name, evaluate(program, { arch: abi.auditArch, nr: base + FIRST_UNREVIEWED })]).toEqual([
          abi.name,
          0x00050000 | 38,
        ]);
        expect([abi.name, evaluate(program, { arch: abi.auditArch, nr: base + 467 })]).toEqual([abi.name, ERRNO_EPERM]);
        expect([abi.name, evaluate(program, { arch: abi.auditArch, nr: base + 452 })]).toEqual([abi.name, ALLOW]);
      }
    },
  );

  test("the rules as data: AF_UNIX refusals only without allowUnixSockets; families other than inet, inet6, netlink always", () => {
    const extra = (o: SeccompOptions) => seccompRules(o).slice(DENIED_SYSCALLS.length);
    const ioctl = [
      { syscall: "ioctl", arg: { index: 1, mask: 0xffffffff, value: 0x5412 } },
      { syscall: "ioctl", arg: { index: 1, mask: 0xffffffff, value: 0x541c } },
    ];
    const families = [
      ...Array.from({ length: 64 }, (_, f) => f)
        .filter((f) => ![1, 2, 10, 16].includes(f))
        .map((f) => ({ syscall: "socket", arg: { index: 0, mask: 0xffffffff, value: f } })),
      ...Array.from({ length: 26 }, (_, i) => 2 ** (i + 6)).map((b) => ({
        syscall: "socket",
        arg: { index: 0, mask: b, value: b },
      })),
      { syscall: "socketcall" },
    ];
    expect(extra(ALLOWED)).toEqual([...ioctl, ...families]);
    expect(extra(REFUSED)).toEqual([
      ...ioctl,
      { syscall: "socket", arg: { index: 0, mask: 0xffffffff, value: 1 } },
      { syscall: "socketpair", arg: { index: 1, mask: 0xf, value: 2 } },
      ...families,
    ]);
  });

  test.skipIf(process.arch !== "x64")(
    "x86-64: every denied syscall is refused on all three ABIs, others allowed",
    () => {
      const program = seccompProgram(REFUSED);
      const ALLOWED_CALLS = ["read", "openat", "clone", "clone3", "ptrace", "process_vm_readv", "personality"];
      for (const abi of X86_ABIS) {
        /** name → the filter's verdict, for the names this ABI has. */
        const verdicts = (names: string[]) =>
          Object.fromEntries(
            names.flatMap((n) => {
              const nr = syscallNumber(n, abi.token);
              return nr < 0 ? [] : [[n, evaluate(program, { arch: abi.auditArch, nr })]];
            }),
          );
        const every = (v: Record<string, number>, verdict: number) =>
          Object.fromEntries(Object.keys(v).map((n) => [n, verdict]));
        const denied = verdicts([...DENIED_SYSCALLS, "socketcall"]);
        expect(Object.keys(denied).length).toBeGreaterThan(30); // a floor: the names resolved at all
        expect({ abi: abi.name, ...denied }).toEqual({ abi: abi.name, ...every(denied, ERRNO_EPERM) });
        const allowed = verdicts(ALLOWED_CALLS);
        expect({ abi: abi.name, ...allowed }).toEqual({ abi: abi.name, ...every(allowed, ALLOW) });
      }
      // On i386 only, so the loop proved nothing for them on the other ABIs.
      const i386 = (name: string) => syscallNumber(name, ARCH.X86);
      expect([i386("vm86"), i386("vm86old"), i386("socketcall")].every((nr) => nr > 0)).toBe(true);
      // Refused whatever the policy: its arguments (the address family too) are out of a filter's reach.
      expect(evaluate(seccompProgram(ALLOWED), { arch: 0x40000003, nr: i386("socketcall") })).toBe(ERRNO_EPERM);
    },
  );

  test.skipIf(process.arch !== "x64")("x86-64: argument rules on every ABI, compared on the low 32 bits", () => {
    const refused = seccompProgram(REFUSED);
    const allowed = seccompProgram(ALLOWED);
    for (const abi of X86_ABIS) {
      const call = (name: string, ...args: bigint[]) => ({ arch: abi.auditArch, nr: number(name, abi.token), args });
      const results = (p: Uint8Array) => [
        evaluate(p, call("socket", 1n, 1n, 0n)),
        evaluate(p, call("socket", 2n, 1n, 0n)),
        evaluate(p, call("socket", 10n, 1n, 0n)),
        evaluate(p, call("socket", 16n, 3n, 0n)),
        evaluate(p, call("socket", 40n, 1n, 0n)), // AF_VSOCK
        evaluate(p, call("socket", 31n, 1n, 0n)), // AF_BLUETOOTH
        evaluate(p, call("socket", 63n, 1n, 0n)),
        evaluate(p, call("socket", 64n, 1n, 0n)),
        evaluate(p, call("socket", 0x8000_0002n, 1n, 0n)),
        evaluate(p, call("socketpair", 1n, 1n, 0n)),
        evaluate(p, call("socketpair", 1n, 2n | 0x80000n, 0n)),
        evaluate(p, call("ioctl", 0n, 0x5412n)),
        evaluate(p, call("ioctl", 0n, 0x541cn)),
        evaluate(p, call("ioctl", 0n, 0x5413n)),
      ];
      expect([abi.name, ...results(refused)]).toEqual([
        abi.name,
        ...[1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0].map((r) => (r ? ERRNO_EPERM : ALLOW)),
      ]);
      expect([abi.name, ...results(allowed)]).toEqual([
        abi.name,
        ...[0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0].map((r) => (r ? ERRNO_EPERM : ALLOW)),
      ]);
    }
    // The kernel truncates these arguments to 32 bits on x86_64: a high bit must not slip past the rule.
    const x64 = (name: string, ...args: bigint[]) => ({ arch: 0xc000003e, nr: syscallNumber(name, ARCH.X86_64), args });
    expect(evaluate(refused, x64("socket", (1n << 32n) | 1n, 1n, 0n))).toBe(ERRNO_EPERM);
    expect(evaluate(allowed, x64("socket", (1n << 32n) | 40n, 1n, 0n))).toBe(ERRNO_EPERM);
    expect(evaluate(allowed, x64("socket", (1n << 32n) | 2n, 1n, 0n))).toBe(ALLOW);
    expect(evaluate(refused, x64("ioctl", 0n, (1n << 40n) | 0x5412n))).toBe(ERRNO_EPERM);
  });
});

const BWRAP = Bun.which("bwrap");

/** Where the filter file lives during one run; checked to be gone from the job's fd table. */
const filterPath = () => join(dir, "filter.bpf");

/**
 * Run argv under real bwrap, with `filter`'s program passed as fd 3 (`--seccomp 3`), or with no filter
 * when null (a control). `caps` makes the job uid 0 with every capability in its own user namespace,
 * which owns its mount and pid namespaces (an unprivileged bwrap otherwise nests a second user
 * namespace), so a control gets past the kernel's own permission checks and shows what the filter adds.
 */
async function jail(
  argv: string[],
  filter: SeccompOptions | null,
  opts: { caps?: boolean; newSession?: boolean } = {},
): Promise<{ code: number; out: string; err: string }> {
  const a = [BWRAP ?? "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"];
  a.push("--ro-bind", dir, dir, "--unshare-pid", "--unshare-net", "--die-with-parent");
  if (opts.newSession !== false) a.push("--new-session");
  a.push(...(opts.caps ? ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL"] : ["--cap-drop", "ALL"]));
  let fd: number | "ignore" = "ignore";
  if (filter) {
    writeFileSync(filterPath(), seccompProgram(filter));
    fd = openSync(filterPath(), "r");
    a.push("--seccomp", "3");
  }
  try {
    const p = Bun.spawn([...a, "--", ...argv], {
      stdio: ["ignore", "pipe", "pipe", fd],
      env: { PATH: "/usr/bin:/bin", LC_ALL: "C" },
    });
    const [out, err, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    return { code, out, err };
  } finally {
    if (typeof fd === "number") closeSync(fd);
  }
}

/** perl one-liners (perl-base is on every Debian); each dies with the errno text on failure. */
const PERL = {
  unixSocket: 'use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!\\n"; print "ok\\n"',
  inetSocket: 'use Socket; socket(my $s, AF_INET, SOCK_STREAM, 0) or die "socket: $!\\n"; print "ok\\n"',
  netlinkSocket: 'socket(my $s, 16, 3, 0) or die "socket: $!\\n"; print "ok\\n"', // AF_NETLINK, SOCK_RAW, NETLINK_ROUTE
  pair: 'use Socket; socketpair(my $a, my $b, AF_UNIX, $ARGV[0] eq "dgram" ? SOCK_DGRAM : SOCK_STREAM, 0) or die "socketpair: $!\\n"; print "ok\\n"',
  connect:
    'use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!\\n"; connect($s, pack_sockaddr_un($ARGV[0])) or die "connect: $!\\n"; print scalar <$s>',
  sendDgram:
    'use Socket; socketpair(my $a, my $b, AF_UNIX, SOCK_DGRAM, 0) or die "socketpair: $!\\n"; send($a, "through a pair\\n", 0, pack_sockaddr_un($ARGV[0])) or die "send: $!\\n"; print "sent\\n"',
  /** Each argument group is `name nr arg…` (up to 6 args; a `buf` arg is a pointer to 512 zero bytes); prints name=errno|ok. */
  syscalls:
    'open(my $null, "<", "/dev/null") or die; my @r; for (@ARGV) { my ($n, $nr, @a) = split / /; @a = map { $_ eq "buf" ? "\\0" x 512 : $_ eq "null" ? fileno($null) : 0 + $_ } @a; my $r = syscall($nr, @a); push @r, "$n=" . ($r < 0 ? 0 + $! : "ok") } print join(" ", @r), "\\n"',
};

/** name → errno (or "ok") from the syscalls one-liner's output. */
const parse = (out: string) =>
  Object.fromEntries(
    out
      .trim()
      .split(" ")
      .map((kv) => kv.split("=")),
  );

describe.skipIf(process.platform !== "linux")("inside real bwrap", () => {
  test("bwrap is installed (apt-get install bubblewrap)", () => {
    expect(BWRAP).toBeTruthy();
  });

  test("an ordinary program runs, with the filter loaded and its fd closed before exec", async () => {
    const r = await jail(
      ["sh", "-c", "ls / >/dev/null && cat /etc/hostname && grep Seccomp: /proc/self/status && ls -l /proc/self/fd/"],
      REFUSED,
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toStartWith(`${readFileSync("/etc/hostname", "utf8")}Seccomp:\t2\n`);
    // bwrap reads the program and closes fd 3: nothing in the job points at the filter file.
    expect(r.out).not.toContain(filterPath());
    expect(r.out).toContain(" 2 -> ");
  });

  test("socket(AF_UNIX) is refused with EPERM, and allowed with allowUnixSockets", async () => {
    const refused = await jail(["perl", "-e", PERL.unixSocket], REFUSED);
    expect([refused.code, refused.err]).toEqual([1, "socket: Operation not permitted\n"]);
    const allowed = await jail(["perl", "-e", PERL.unixSocket], ALLOWED);
    expect([allowed.code, allowed.out, allowed.err]).toEqual([0, "ok\n", ""]);
  });

  test("socketpair(AF_UNIX, SOCK_STREAM) works either way; a datagram pair only when AF_UNIX is allowed", async () => {
    for (const opts of [REFUSED, ALLOWED]) {
      expect((await jail(["perl", "-e", PERL.pair, "stream"], opts)).out).toBe("ok\n");
    }
    expect((await jail(["perl", "-e", PERL.pair, "dgram"], REFUSED)).err).toBe("socketpair: Operation not permitted\n");
    expect((await jail(["perl", "-e", PERL.pair, "dgram"], ALLOWED)).out).toBe("ok\n");
  });

  test("AF_INET and AF_NETLINK sockets can still be created (loopback only, with --unshare-net)", async () => {
    for (const probe of [PERL.inetSocket, PERL.netlinkSocket]) {
      const r = await jail(["perl", "-e", probe], REFUSED);
      expect([r.code, r.out, r.err]).toEqual([0, "ok\n", ""]);
    }
  });

  test("a listening Unix socket bound into the sandbox: unreachable when refused, answers when allowed", async () => {
    const path = join(dir, "s.sock");
    const server = createServer((s) => s.end("hello\n"));
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const refused = await jail(["perl", "-e", PERL.connect, path], REFUSED);
      expect([refused.code, refused.out, refused.err]).toEqual([1, "", "socket: Operation not permitted\n"]);
      const allowed = await jail(["perl", "-e", PERL.connect, path], ALLOWED);
      expect([allowed.code, allowed.out, allowed.err]).toEqual([0, "hello\n", ""]);
    } finally {
      server.close();
    }
  });

  test("a datagram socketpair cannot reach a host datagram socket when AF_UNIX is refused (it can when allowed)", async () => {
    const path = join(dir, "d.sock");
    const listener = Bun.spawn(
      [
        "perl",
        "-e",
        "use Socket; socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die; bind($s, pack_sockaddr_un($ARGV[0])) or die; recv($s, my $m, 100, 0); print $m",
        path,
      ],
      { stdout: "pipe", stderr: "inherit" },
    );
    try {
      await waitFor(() => existsSync(path), "the host datagram socket");
      const refused = await jail(["perl", "-e", PERL.sendDgram, path], REFUSED);
      expect([refused.code, refused.out, refused.err]).toEqual([1, "", "socketpair: Operation not permitted\n"]);
      const allowed = await jail(["perl", "-e", PERL.sendDgram, path], ALLOWED);
      expect(allowed.out).toBe("sent\n");
      expect(await new Response(listener.stdout).text()).toBe("through a pair\n");
    } finally {
      listener.kill();
    }
  });

  test("the high 32 bits of socket()'s family do not hide AF_UNIX (the kernel ignores them)", async () => {
    const probe = `socket ${syscallNumber("socket")} ${2 ** 32 + 1} 1 0`;
    expect(parse((await jail(["perl", "-e", PERL.syscalls, probe], REFUSED)).out)).toEqual({ socket: String(EPERM) });
    expect(parse((await jail(["perl", "-e", PERL.syscalls, probe], ALLOWED)).out)).toEqual({ socket: "ok" });
  });

  /**
   * Denied syscalls with arguments that fail harmlessly (or are no-ops) in a user namespace, so the
   * control run shows a result other than EPERM. acct and swapoff are absent: the kernel refuses them
   * with EPERM in any user namespace, so only the BPF checks above can see the filter's part in them.
   */
  const FAMILIES: [string, ...(number | string)[]][] = [
    ["keyctl", 9999],
    ["add_key", 0, 0, 0, 0, 0],
    ["request_key", 0, 0, 0, 0],
    ["bpf", 0, 0, 0],
    ["perf_event_open", 0, 0, -1, -1, 0],
    ["userfaultfd", 1], // UFFD_USER_MODE_ONLY: allowed for unprivileged users
    ["io_uring_setup", 0, 0],
    ["io_uring_enter", -1, 0, 0, 0, 0, 0],
    ["io_uring_register", -1, 0, 0, 0],
    ["mount", 0, 0, 0, 0, 0],
    ["umount2", 0, 0],
    ["pivot_root", 0, 0],
    ["fsopen", 0, 0],
    ["fsconfig", -1, 0, 0, 0, 0],
    ["fsmount", -1, 0, 0],
    ["fspick", -1, 0, 0],
    ["move_mount", -1, 0, -1, 0, 0],
    ["open_tree", -1, 0, 0],
    ["mount_setattr", -1, 0, 0, 0, 0],
    ["setns", -1, 0],
    ["unshare", 0],
    ["reboot", 0, 0, 0, 0],
    ["quotactl", 0, 0, 0, 0],
    ["clock_settime", 0, 0],
    ["settimeofday", 1, 0], // a bad pointer: EFAULT before any permission check
    ["adjtimex", "buf"], // modes 0: a read-only query
    ["clock_adjtime", 0, "buf"],
    ["name_to_handle_at", -1, 0, 0, 0, 0],
    ["open_by_handle_at", -1, 0, 0],
    ["init_module", 0, 0, 0],
    ["finit_module", -1, 0, 0],
    ["delete_module", 0, 0],
    ["kexec_load", 0, 0, 0, 0],
    ["kexec_file_load", -1, -1, 0, 0, 0],
    ["iopl", 0],
    ["ioperm", 0, 0, 0],
    ["lookup_dcookie", 0, 0, 0],
    ["nfsservctl", 0, 0, 0],
    ["uselib", 0],
  ];

  test("each denied syscall returns EPERM under the filter, and something else without it", async () => {
    const groups = FAMILIES.flatMap(([name, ...args]) => {
      const nr = syscallNumber(name);
      return nr < 0 ? [] : [[name, nr, ...args].join(" ")];
    });
    expect(groups.length).toBeGreaterThan(30);
    const control = parse((await jail(["perl", "-e", PERL.syscalls, ...groups], null, { caps: true })).out);
    const filtered = parse((await jail(["perl", "-e", PERL.syscalls, ...groups], REFUSED, { caps: true })).out);
    const names = Object.keys(control);
    expect(names.length).toBe(groups.length);
    expect(names.filter((n) => control[n] === String(EPERM))).toEqual([]);
    expect(filtered).toEqual(Object.fromEntries(names.map((n) => [n, String(EPERM)])));
  });

  test("open_tree_attr (Linux 6.15, newer than this libseccomp may know) is refused by number; fchmodat2 works; unreviewed numbers ENOSYS", async () => {
    const groups = [
      `open_tree_attr 467 -1 0 0 0 0`,
      `fchmodat2 452 -100 /nonexistent 0 0`,
      `next ${FIRST_UNREVIEWED} 0 0 0`,
    ];
    const control = parse((await jail(["perl", "-e", PERL.syscalls, ...groups], null, { caps: true })).out);
    const filtered = parse((await jail(["perl", "-e", PERL.syscalls, ...groups], REFUSED, { caps: true })).out);
    // Without the filter this kernel may have it (EBADF for fd -1) or not (ENOSYS): never EPERM.
    expect(control.open_tree_attr).not.toBe(String(EPERM));
    expect(filtered.open_tree_attr).toBe(String(EPERM));
    // fchmodat2 reaches the kernel (a bad path: EFAULT from the number-as-pointer, or ENOENT), as without the filter.
    expect(filtered.fchmodat2).toBe(control.fchmodat2);
    expect(filtered.next).toBe("38");
  });

  test("ioctl TIOCSTI and TIOCLINUX are refused whatever the fd (also with high bits set); other ioctls are not", async () => {
    const ioctl = syscallNumber("ioctl");
    const groups = [
      `tiocsti ${ioctl} null ${0x5412} 0`,
      `tiocsti_high ${ioctl} null ${2 ** 32 + 0x5412} 0`,
      `tioclinux ${ioctl} null ${0x541c} 0`,
      `tiocgwinsz ${ioctl} null ${0x5413} buf`,
    ];
    const control = parse((await jail(["perl", "-e", PERL.syscalls, ...groups], null, { caps: true })).out);
    const ENOTTY = "25";
    expect(control).toEqual({ tiocsti: ENOTTY, tiocsti_high: ENOTTY, tioclinux: ENOTTY, tiocgwinsz: ENOTTY });
    const filtered = parse((await jail(["perl", "-e", PERL.syscalls, ...groups], REFUSED, { caps: true })).out);
    expect(filtered).toEqual({ tiocsti: "1", tiocsti_high: "1", tioclinux: "1", tiocgwinsz: ENOTTY });
  });

  const legacyTiocsti = (() => {
    try {
      return readFileSync("/proc/sys/dev/tty/legacy_tiocsti", "utf8").trim() !== "0";
    } catch {
      return true; // kernels before 6.2 have no switch: TIOCSTI always works on one's own terminal
    }
  })();
  test.skipIf(!Bun.which("script") || !legacyTiocsti)(
    "TIOCSTI on a real terminal (a pty from script(1)): injects without the filter, EPERM with it — skipped without script(1) or with dev.tty.legacy_tiocsti=0",
    async () => {
      writeFileSync(filterPath(), seccompProgram(REFUSED));
      const perl =
        'open(my $t, "+<", "/dev/tty") or die "open: $!\\n"; my $c = "x"; ioctl($t, 0x5412, $c) or die "tiocsti: $!\\n"; print "injected\\n"';
      const bwrap = `${BWRAP} --ro-bind / / --dev /dev --proc /proc --ro-bind ${dir} ${dir} --unshare-pid --unshare-user --cap-add ALL`;
      const run = async (seccomp: string) => {
        const cmd = `${bwrap} ${seccomp} -- perl -e '${perl}'`;
        const p = Bun.spawn(["script", "-qec", cmd, "/dev/null"], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
        return (await new Response(p.stdout).text()).replaceAll("\r", "");
      };
      // The tty echoes the injected "x" back: it really reached the terminal's input queue.
      expect(await run("")).toBe("xinjected\n");
      expect(await run(`--seccomp 3 3<${filterPath()}`)).toBe("tiocsti: Operation not permitted\n");
    },
  );
});

/** A static x86-64 executable of one syscall, exiting with the low byte of its negated result (errno, or 256 - fd). */
function oneSyscall(
  abi: "int80" | "x32",
  nr: number,
  args: [number, number, number],
  memory: number[] = [],
): Uint8Array {
  const u32 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
  const enter =
    abi === "int80"
      ? [0xb8, ...u32(nr), 0xbb, ...u32(args[0]), 0xb9, ...u32(args[1]), 0xba, ...u32(args[2]), 0xcd, 0x80]
      : [0xb8, ...u32(nr), 0xbf, ...u32(args[0]), 0xbe, ...u32(args[1]), 0xba, ...u32(args[2]), 0x0f, 0x05];
  // neg eax; mov edi, eax; mov eax, 60 (exit); syscall
  const code = [...enter, 0xf7, 0xd8, 0x89, 0xc7, 0xb8, ...u32(60), 0x0f, 0x05];
  const image = new Uint8Array(MEMORY_OFFSET + memory.length * 4);
  const v = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]); // ELF, 64-bit, little-endian, version 1
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 0x3e, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(BASE + 120), true); // entry: right after the headers
  v.setBigUint64(32, 64n, true); // program headers follow the ELF header
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, 1, true);
  v.setUint32(64, 1, true); // PT_LOAD the whole file, rwx, at BASE (below 4 GiB, where int 0x80 can point)
  v.setUint32(68, 7, true);
  v.setBigUint64(80, BigInt(BASE), true);
  v.setBigUint64(88, BigInt(BASE), true);
  v.setBigUint64(96, BigInt(image.length), true);
  v.setBigUint64(104, BigInt(image.length), true);
  v.setBigUint64(112, 0x1000n, true);
  image.set(code, 120);
  image.set(memory.flatMap(u32), MEMORY_OFFSET);
  return image;
}
const BASE = 0x400000;
const MEMORY_OFFSET = 0x100;

describe.skipIf(process.platform !== "linux" || process.arch !== "x64")(
  "other x86 ABIs for real: int 0x80 (i386) and x32 numbers from a 64-bit process",
  () => {
    /** Run the executable in bwrap; its exit code is the errno (or 256 - fd). */
    async function exec(image: Uint8Array, filter: SeccompOptions | null): Promise<number> {
      const path = join(dir, "probe");
      writeFileSync(path, image, { mode: 0o755 });
      const r = await jail([path], filter, { caps: true });
      expect(r.err).toBe("");
      return r.code;
    }
    const i386 = (name: string) => number(name, ARCH.X86);
    const x32 = (name: string) => syscallNumber(name, ARCH.X32);
    const FD3 = 253; // the first free fd: bwrap closed the seccomp fd
    const ENOSYS = 38;

    test("i386 socket(AF_UNIX) via int 0x80: EPERM when refused, a socket when allowed", async () => {
      const probe = oneSyscall("int80", i386("socket"), [1, 1, 0]);
      expect(await exec(probe, REFUSED)).toBe(EPERM);
      expect(await exec(probe, ALLOWED)).toBe(FD3);
    });

    test("i386 socketcall(SYS_SOCKET, [AF_UNIX | AF_VSOCK, …]): EPERM either way (its family is out of a filter's reach)", async () => {
      for (const family of [1, 40]) {
        const probe = oneSyscall("int80", i386("socketcall"), [1, BASE + MEMORY_OFFSET, 0], [family, 1, 0]);
        expect(await exec(probe, REFUSED)).toBe(EPERM);
        expect(await exec(probe, ALLOWED)).toBe(EPERM);
        expect(await exec(probe, null)).not.toBe(EPERM);
      }
    });

    test("i386 socketcall(SYS_SOCKETPAIR, [AF_UNIX, SOCK_DGRAM, …]): EPERM either way (its type is out of a filter's reach)", async () => {
      const sv = BASE + MEMORY_OFFSET + 16;
      const probe = oneSyscall("int80", i386("socketcall"), [8, BASE + MEMORY_OFFSET, 0], [1, 2, 0, sv, 0, 0]);
      expect(await exec(probe, REFUSED)).toBe(EPERM);
      expect(await exec(probe, ALLOWED)).toBe(EPERM);
      expect(await exec(probe, null)).toBe(0);
    });

    test("i386 socket(AF_VSOCK) via int 0x80: EPERM either way", async () => {
      const probe = oneSyscall("int80", i386("socket"), [40, 1, 0]);
      expect(await exec(probe, REFUSED)).toBe(EPERM);
      expect(await exec(probe, ALLOWED)).toBe(EPERM);
    });

    test("i386 keyctl via int 0x80: EPERM with the filter, EOPNOTSUPP without", async () => {
      const probe = oneSyscall("int80", i386("keyctl"), [9999, 0, 0]);
      expect(await exec(probe, null)).toBe(95);
      expect(await exec(probe, ALLOWED)).toBe(EPERM);
    });

    test("x32 socket(AF_UNIX) and keyctl: EPERM with the filter; without it, whatever this kernel does (not EPERM)", async () => {
      const socket = oneSyscall("x32", x32("socket"), [1, 1, 0]);
      const keyctl = oneSyscall("x32", x32("keyctl"), [9999, 0, 0]);
      expect(x32("socket") & 0x40000000).toBeTruthy();
      expect(await exec(socket, REFUSED)).toBe(EPERM);
      expect(await exec(keyctl, ALLOWED)).toBe(EPERM);
      // Kernels without CONFIG_X86_X32_ABI answer ENOSYS; with it, a socket and EOPNOTSUPP.
      expect([ENOSYS, FD3]).toContain(await exec(socket, ALLOWED));
      expect([ENOSYS, 95]).toContain(await exec(keyctl, null));
    });
  },
);
