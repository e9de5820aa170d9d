/**
 * The job's end of its egress proxy: listening sockets on the loopback of the job's own network
 * namespace, made from outside and held by planterd (plans/design.md "Egress (#15)", option C).
 * No process of planter's runs in the sandbox, nothing is bound into it, and its seccomp filter is
 * unchanged.
 *
 * 1. bwrap reports the sandbox's first process (`--info-fd`) and waits (`--block-fd`) before it
 *    runs anything of the job.
 * 2. planterd opens that process's network namespace (and, not as root, the user namespace that
 *    owns it: `NS_GET_USERNS`) and runs `nsenter … planter net-listen`: the helper binds
 *    127.0.0.1:3128 and [::1]:3128 there, prints its pid and fds, and waits on its stdin.
 * 3. planterd takes the fds with `pidfd_getfd` (Linux 5.6), ends the helper, serves them
 *    (`net.Server.listen({fd})`) into the job's `EgressProxy`, and lets bwrap go on.
 *
 * After a planterd restart, step 2 and 3 run again for each adopted job (from the pid saved in
 * its dir). Where a step cannot run, the job is stopped before it runs (`sandbox_error`); it never
 * gets the host's network.
 */
import { dlopen, FFIType, type Pointer, ptr, read } from "bun:ffi";
import { closeSync, fstatSync, openSync, statSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";
import { startTime } from "../jobs/proc.ts";
import { systemProgram } from "../sandbox/identity.ts";

/** The port the proxy answers on inside every list job's namespace (HTTP, CONNECT and SOCKS5). */
export const PROXY_PORT = 3128;

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_IPV6 = 41;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const IPV6_V6ONLY = 26;
const NS_GET_USERNS = 0xb701;
const SYS_PIDFD_OPEN = 434;
const SYS_PIDFD_GETFD = 438;
const SYS_PIDFD_SEND_SIGNAL = 424;
/** How long the helper may take to say what it bound. */
const HELPER_TIMEOUT_MS = 10_000;

interface Libc {
  socket(domain: number, type: number, proto: number): number;
  bind(fd: number, addr: unknown, len: number): number;
  listen(fd: number, backlog: number): number;
  setsockopt(fd: number, level: number, name: number, value: unknown, len: number): number;
  ioctl(fd: number, request: number, arg: number): number;
  syscall(nr: number, a: number, b: number, c: number, d: number): number;
  pipe2(fds: unknown, flags: number): number;
  __errno_location(): number;
}

let lib: Libc | null | undefined;

function libc(): Libc {
  if (lib === undefined) {
    try {
      lib =
        process.platform === "linux"
          ? (dlopen("libc.so.6", {
              socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
              bind: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
              listen: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
              setsockopt: {
                args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u32],
                returns: FFIType.i32,
              },
              ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
              syscall: {
                args: [FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64],
                returns: FFIType.i64,
              },
              pipe2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
              __errno_location: { args: [], returns: FFIType.ptr },
            }).symbols as unknown as Libc)
          : null;
    } catch {
      lib = null;
    }
  }
  if (!lib) throw new PlanterError("E_SANDBOX_UNAVAILABLE", "network allow lists need Linux's libc (bun:ffi)");
  return lib;
}

/** errno of the last failed call, as its name where known. */
function errnoName(): string {
  const n = read.i32(libc().__errno_location() as unknown as Pointer, 0);
  const names: Record<number, string> = {
    1: "EPERM",
    3: "ESRCH",
    9: "EBADF",
    13: "EACCES",
    22: "EINVAL",
    24: "EMFILE",
    38: "ENOSYS",
    97: "EAFNOSUPPORT",
    98: "EADDRINUSE",
    99: "EADDRNOTAVAIL",
  };
  return names[n] ?? `errno ${n}`;
}

/** A pipe (both ends close-on-exec): [read end, write end]. */
export function pipe(): [number, number] {
  const fds = new Int32Array(2);
  if (libc().pipe2(ptr(fds), SOCK_CLOEXEC) < 0) throw new Error(`pipe2: ${errnoName()}`);
  return [fds[0] as number, fds[1] as number];
}

function syscall(nr: number, a: number, b = 0, c = 0, d = 0): number {
  return Number(libc().syscall(nr, a, b, c, d));
}

/**
 * A listening TCP socket on `host` (127.0.0.1 or ::1) at `port`; null where the address family or
 * address does not exist (a host without IPv6), an error otherwise (the port taken, say).
 */
function listenOn(family: 4 | 6, port: number): number | null {
  const c = libc();
  const fd = c.socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    if (errnoName() === "EAFNOSUPPORT") return null;
    throw new Error(`socket: ${errnoName()}`);
  }
  try {
    // SO_REUSEADDR: the previous planterd's closed connections (TIME_WAIT on port 3128) must not
    // keep a restarted one from listening again. Never SO_REUSEPORT: that would let a job's own
    // socket share the port (bind fails while any other socket listens there).
    const one = new Int32Array([1]);
    if (c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, ptr(one), 4) < 0) throw new Error(`SO_REUSEADDR: ${errnoName()}`);
    let addr: Uint8Array;
    if (family === 4) {
      addr = new Uint8Array(16);
      new DataView(addr.buffer).setUint16(0, AF_INET, true);
      new DataView(addr.buffer).setUint16(2, port, false);
      addr.set([127, 0, 0, 1], 4);
    } else {
      // No IPv4 on this socket (its own socket above has 127.0.0.1).
      if (c.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, ptr(one), 4) < 0) throw new Error(`IPV6_V6ONLY: ${errnoName()}`);
      addr = new Uint8Array(28);
      new DataView(addr.buffer).setUint16(0, AF_INET6, true);
      new DataView(addr.buffer).setUint16(2, port, false);
      addr[23] = 1; // ::1
    }
    if (c.bind(fd, ptr(addr), addr.length) < 0) {
      const e = errnoName();
      if (family === 6 && e === "EADDRNOTAVAIL") {
        closeSync(fd);
        return null;
      }
      throw new Error(`bind ${family === 4 ? "127.0.0.1" : "[::1]"}:${port}: ${e}`);
    }
    if (c.listen(fd, 511) < 0) throw new Error(`listen: ${errnoName()}`);
    return fd;
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      // closed above
    }
    throw e;
  }
}

/**
 * `planter net-listen` (hidden), run by planterd through nsenter in a job's network namespace:
 * bind the proxy's port on both loopbacks, print `PID FD4 FD6` (-1: none), and wait until stdin
 * ends (planterd has taken the fds by then). Exit 1 with a reason on stderr.
 */
export async function netListenMain(port = PROXY_PORT): Promise<never> {
  try {
    const v4 = listenOn(4, port);
    const v6 = listenOn(6, port);
    await Bun.write(Bun.stdout, `${process.pid} ${v4 ?? -1} ${v6 ?? -1}\n`);
    for await (const _ of Bun.stdin.stream()) {
      // nothing is said on stdin: its end says planterd is done
    }
    process.exit(0);
  } catch (e) {
    console.error(`planter net-listen: ${(e as Error).message}`);
    process.exit(1);
  }
}

/** Where nsenter (util-linux) is (`systemProgram`). */
export function nsenterPath(): string {
  const found = systemProgram("nsenter");
  if (!found) {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      "nsenter (util-linux) is not installed: planter cannot give a job with a network allow list its proxy",
      { hint: "install util-linux (Debian: apt-get install util-linux)" },
    );
  }
  return found;
}

/**
 * Read what bwrap's `--info-fd` says (`{"child-pid": N, …}`) from `fd` (a pipe's read end, closed
 * here): the sandbox's first process, or null when the pipe ended first (bwrap failed or the job
 * was stopped).
 */
export async function readChildPid(fd: number): Promise<number | null> {
  let text = "";
  const reader = Bun.file(fd).stream().getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
      if (text.includes("}")) break;
      if (text.length > 4096) break;
    }
  } finally {
    reader.cancel().catch(() => {});
    try {
      closeSync(fd);
    } catch {
      // Bun closed it with the stream
    }
  }
  const m = /"child-pid"\s*:\s*(\d+)/.exec(text);
  return m ? Number(m[1]) : null;
}

/** The inode of a namespace file (`/proc/…/ns/net`), to tell two namespaces apart. */
const nsIno = (path: string) => statSync(path).ino;

function setupFailure(what: string, hint?: string): PlanterError {
  return new PlanterError("E_SANDBOX_UNAVAILABLE", `the job's egress proxy could not be set up: ${what}`, {
    hint: hint ?? "run `planter sandbox check`; a job with a network allow list needs Linux 5.6+ and util-linux",
  });
}

/**
 * The namespaces to enter for process `pid` (started at `start`): its network namespace, and (not
 * as root) the user namespace that owns it. Every fd opened goes into `opened`.
 */
function namespacesOf(pid: number, start: string | null, opened: number[]): number[] {
  const target = syscall(SYS_PIDFD_OPEN, pid);
  if (target < 0) throw setupFailure(`the sandbox (pid ${pid}) is gone (${errnoName()})`);
  opened.push(target);
  let net: number;
  try {
    net = openSync(`/proc/${pid}/ns/net`, "r");
  } catch (e) {
    throw setupFailure(`cannot open the sandbox's network namespace: ${(e as Error).message}`);
  }
  opened.push(net);
  // The pidfd names the process that held `pid` when it was opened: alive now, it held the pid
  // throughout, so the namespace is its; its start time says it is the sandbox meant.
  if (syscall(SYS_PIDFD_SEND_SIGNAL, target, 0, 0, 0) < 0 || (start !== null && startTime(pid) !== start)) {
    throw setupFailure(`the sandbox (pid ${pid}) is gone`);
  }
  // Never the host's own namespace (a sandbox that shares it has no allow list to enforce).
  if (fstatSync(net).ino === nsIno("/proc/self/ns/net")) {
    throw setupFailure(`process ${pid} is in planterd's network namespace`);
  }
  if (process.getuid?.() === 0) return [net];
  // The namespace's owner: bwrap made it in an outer user namespace of its own, which no process
  // of the job is in (its processes sit in a nested one).
  const user = libc().ioctl(net, NS_GET_USERNS, 0);
  if (user < 0) throw setupFailure(`NS_GET_USERNS: ${errnoName()}`);
  opened.push(user);
  return [user, net];
}

/** Take the helper's fds (`remote`, -1: none) into planterd. */
function takeFds(helperPid: number, remote: number[], opened: number[]): number[] {
  const own = syscall(SYS_PIDFD_OPEN, helperPid);
  if (own < 0) throw setupFailure(`pidfd_open of the helper: ${errnoName()}`);
  opened.push(own);
  const taken: number[] = [];
  for (const r of remote) {
    if (r < 0) continue;
    const fd = syscall(SYS_PIDFD_GETFD, own, r, 0);
    if (fd < 0) {
      const e = errnoName();
      for (const t of taken) closeSync(t);
      throw setupFailure(
        `pidfd_getfd: ${e}`,
        e === "EPERM"
          ? "planterd may not take file descriptors from its helper: check kernel.yama.ptrace_scope (≤ 1) and LSM rules on ptrace"
          : e === "ENOSYS"
            ? "this kernel has no pidfd_getfd (Linux 5.6+): network allow lists cannot be enforced here"
            : undefined,
      );
    }
    taken.push(fd);
  }
  if (!taken.length) throw setupFailure("no loopback address in the job's namespace");
  return taken;
}

/**
 * Listening sockets on the proxy port in the network namespace of process `pid` (started at
 * `start`, when known): their fds in planterd (IPv4 first; IPv6 where the namespace has it).
 * `argv` runs the helper (this binary's `net-listen`). Throws PlanterError E_SANDBOX_UNAVAILABLE
 * with the reason; nothing stays open then.
 */
export async function takeListeners(pid: number, start: string | null, argv: string[]): Promise<number[]> {
  const nsenter = nsenterPath();
  const opened: number[] = [];
  try {
    const ns = namespacesOf(pid, start, opened);
    const flags =
      ns.length === 2
        ? ["--user=/proc/self/fd/3", "--preserve-credentials", "--net=/proc/self/fd/4"]
        : ["--net=/proc/self/fd/3"];
    const helper = Bun.spawn([nsenter, ...flags, ...argv], {
      stdio: ["pipe", "pipe", "pipe", ...ns],
      env: { PATH: "/usr/bin:/bin" },
    });
    try {
      const line = await firstLine(helper.stdout, HELPER_TIMEOUT_MS);
      const m = line === null ? null : /^(\d+) (-?\d+) (-?\d+)$/.exec(line);
      if (!m || Number(m[1]) !== helper.pid) {
        helper.kill("SIGKILL");
        const why = (await new Response(helper.stderr).text()).trim().split("\n").slice(-1)[0];
        throw setupFailure(
          why || (line === null ? "the helper said nothing" : `the helper said ${JSON.stringify(line)}`),
        );
      }
      return takeFds(helper.pid, [Number(m[2]), Number(m[3])], opened);
    } finally {
      helper.stdin.end();
      // The helper exits once its stdin ends; one that does not is killed.
      const timer = setTimeout(() => helper.kill("SIGKILL"), HELPER_TIMEOUT_MS);
      void helper.exited.then(() => clearTimeout(timer));
    }
  } finally {
    for (const fd of opened) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  }
}

/** The first line of a stream (without its newline), or null at its end or after `ms`. */
async function firstLine(stream: ReadableStream<Uint8Array>, ms: number): Promise<string | null> {
  const reader = stream.getReader();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    while (!text.includes("\n")) {
      const r = await Promise.race([reader.read(), timeout]);
      if (r === null || r.done) return null;
      text += new TextDecoder().decode(r.value);
      if (text.length > 256) return null;
    }
    return text.slice(0, text.indexOf("\n"));
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}
