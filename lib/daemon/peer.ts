/**
 * Peer credentials of a Unix-socket connection. Linux: getsockopt(SO_PEERCRED) through bun:ffi,
 * with supplementary groups from /proc/<pid>/status. macOS: getpeereid() and LOCAL_PEERPID on
 * libSystem (rendered and unit-tested here; never run on macOS in this repository's CI).
 */
import { readFileSync } from "node:fs";
import { execSync } from "../host/exec.ts";

/** Who is on the other end of a connection. */
export interface Peer {
  pid: number | null;
  uid: number;
  gid: number;
  groups: number[];
}

/** FFI symbol specs per platform (kept as data so the macOS variant is testable on Linux). */
export const FFI_SPECS = {
  linux: {
    library: "libc.so.6",
    symbols: { getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" } },
    /**
     * SOL_SOCKET, SO_PEERCRED (struct ucred { pid_t pid; uid_t uid; gid_t gid; }), and
     * SO_PEERGROUPS (Linux 4.13+: the peer's groups as they were at connect).
     */
    constants: { SOL_SOCKET: 1, SO_PEERCRED: 17, UCRED_SIZE: 12, SO_PEERGROUPS: 59 },
  },
  darwin: {
    library: "/usr/lib/libSystem.B.dylib",
    symbols: {
      getpeereid: { args: ["i32", "ptr", "ptr"], returns: "i32" },
      getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
    },
    /** SOL_LOCAL, LOCAL_PEERPID (sys/un.h). */
    constants: { SOL_LOCAL: 0, LOCAL_PEERPID: 2 },
  },
} as const;

/** Supplementary groups of a process from /proc/<pid>/status (Linux). */
export function procGroups(pid: number, read = (p: string) => readFileSync(p, "utf8")): number[] | null {
  try {
    const line = read(`/proc/${pid}/status`)
      .split("\n")
      .find((l) => l.startsWith("Groups:"));
    if (!line) return null;
    return line.slice(7).trim().split(/\s+/).filter(Boolean).map(Number).filter(Number.isInteger);
  } catch {
    return null;
  }
}

type Reader = (fd: number) => Peer | null;

/** Groups of a uid on macOS (`id -G`), cached: there is no /proc to ask. */
const groupCache = new Map<number, { at: number; groups: number[] }>();
function macGroups(uid: number, gid: number): number[] {
  const hit = groupCache.get(uid);
  if (hit && Date.now() - hit.at < 60_000) return hit.groups;
  const r = execSync("/usr/bin/id", ["-G", String(uid)], { timeoutMs: 5000, nothrow: true });
  const groups = r.code === 0 ? r.stdout.trim().split(/\s+/).map(Number).filter(Number.isInteger) : [gid];
  groupCache.set(uid, { at: Date.now(), groups });
  return groups;
}

/** Build the peer reader for this platform; null when the platform has none. */
export async function peerReader(platform = process.platform): Promise<Reader | null> {
  const { dlopen, FFIType, ptr } = await import("bun:ffi");
  const t = (s: string) => FFIType[s as keyof typeof FFIType];
  const conv = (syms: Record<string, { args: readonly string[]; returns: string }>) =>
    Object.fromEntries(Object.entries(syms).map(([k, v]) => [k, { args: v.args.map(t), returns: t(v.returns) }]));
  if (platform === "linux") {
    const spec = FFI_SPECS.linux;
    const lib = dlopen(spec.library, conv(spec.symbols) as never) as unknown as {
      symbols: { getsockopt: (...a: unknown[]) => number };
    };
    const buf = new Int32Array(3);
    const len = new Uint32Array(1);
    let groupBuf = new Uint32Array(64);
    /** Groups captured at connect; /proc is only a fallback (a pid may be reused once its process exits). */
    const peerGroups = (fd: number): number[] | null => {
      for (let attempt = 0; attempt < 2; attempt++) {
        len[0] = groupBuf.byteLength;
        if (
          lib.symbols.getsockopt(
            fd,
            spec.constants.SOL_SOCKET,
            spec.constants.SO_PEERGROUPS,
            ptr(groupBuf),
            ptr(len),
          ) === 0
        ) {
          return Array.from(groupBuf.subarray(0, (len[0] as number) / 4));
        }
        if ((len[0] as number) <= groupBuf.byteLength) return null; // unsupported, not ERANGE
        groupBuf = new Uint32Array(Math.ceil((len[0] as number) / 4));
      }
      return null;
    };
    return (fd) => {
      len[0] = spec.constants.UCRED_SIZE;
      if (lib.symbols.getsockopt(fd, spec.constants.SOL_SOCKET, spec.constants.SO_PEERCRED, ptr(buf), ptr(len)) !== 0) {
        return null;
      }
      const [pid, uid, gid] = [buf[0] as number, buf[1] as number, buf[2] as number];
      const groups = peerGroups(fd) ?? (pid > 0 ? procGroups(pid) : null) ?? [gid];
      return { pid: pid > 0 ? pid : null, uid, gid, groups };
    };
  }
  if (platform === "darwin") {
    const spec = FFI_SPECS.darwin;
    const lib = dlopen(spec.library, conv(spec.symbols) as never) as unknown as {
      symbols: { getpeereid: (...a: unknown[]) => number; getsockopt: (...a: unknown[]) => number };
    };
    const uid = new Uint32Array(1);
    const gid = new Uint32Array(1);
    const pid = new Int32Array(1);
    const len = new Uint32Array(1);
    return (fd) => {
      if (lib.symbols.getpeereid(fd, ptr(uid), ptr(gid)) !== 0) return null;
      len[0] = 4;
      const okPid =
        lib.symbols.getsockopt(fd, spec.constants.SOL_LOCAL, spec.constants.LOCAL_PEERPID, ptr(pid), ptr(len)) === 0;
      const u = uid[0] as number;
      const g = gid[0] as number;
      return { pid: okPid ? (pid[0] as number) : null, uid: u, gid: g, groups: macGroups(u, g) };
    };
  }
  return null;
}

/** The fd of a node:net socket (Bun exposes it on the handle). */
export function socketFd(socket: unknown): number | null {
  const fd = (socket as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : null;
}

/** The path a listening Unix socket fd is bound to (getsockname through FFI), or null. */
export async function boundPath(fd: number, platform = process.platform): Promise<string | null> {
  const { dlopen, FFIType, ptr } = await import("bun:ffi");
  const lib = dlopen(platform === "darwin" ? FFI_SPECS.darwin.library : FFI_SPECS.linux.library, {
    getsockname: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  });
  const addr = new Uint8Array(112);
  const len = new Uint32Array([addr.length]);
  try {
    if (lib.symbols.getsockname(fd, ptr(addr), ptr(len)) !== 0) return null;
  } finally {
    lib.close();
  }
  return sockaddrPath(addr, len[0] as number, platform);
}

/**
 * The path in a `struct sockaddr_un` of `len` bytes (pure). Linux: sa_family (2 bytes, host
 * order) then sun_path; macOS: sun_len, sun_family (1 byte each) then sun_path.
 */
export function sockaddrPath(addr: Uint8Array, len: number, platform: NodeJS.Platform): string | null {
  const family = platform === "darwin" ? (addr[1] as number) : (addr[0] as number) | ((addr[1] as number) << 8);
  if (family !== 1) return null; // AF_UNIX
  const path = addr.subarray(2, Math.min(len, addr.length));
  const end = path.indexOf(0);
  const text = Buffer.from(end < 0 ? path : path.subarray(0, end)).toString();
  return text || null;
}
