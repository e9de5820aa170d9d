/**
 * Path safety, in one place: canonical forms, comparison by components, the directories a cell
 * or a bind may never be, and opening a bind source so that what is bound is what was checked.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, isAbsolute, join, normalize, relative } from "node:path";
import { badRequest, PlanterError } from "../api/errors.ts";

/** True when `child` is `parent` or lies below it (by path components, never by string prefix). */
export function within(child: string, parent: string): boolean {
  // Two normal absolute paths (the usual case: canonical ones) compare as strings by components;
  // anything else goes through path.relative (~10× slower: the view asks this per mount pair).
  if (normal(child) && normal(parent)) {
    return child === parent || parent === "/" || (child.startsWith(parent) && child.charCodeAt(parent.length) === 47);
  }
  const r = relative(parent, child);
  return r === "" || (!r.startsWith("..") && !isAbsolute(r));
}

/** An absolute path with no empty, `.` or `..` component and no trailing slash (but "/"). */
const normal = (p: string) => p === "/" || (p.startsWith("/") && !p.endsWith("/") && !ABNORMAL.test(p));
const ABNORMAL = /\/\/|\/\.\.?(\/|$)/;

/** True when either path contains the other. */
export function overlaps(a: string, b: string): boolean {
  return within(a, b) || within(b, a);
}

/** Directories of the system itself: never a cell, never writable by a policy. */
export const SYSTEM_DIRS: readonly string[] = [
  "/",
  "/bin",
  "/boot",
  "/dev",
  "/etc",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/opt",
  "/proc",
  "/run",
  "/sbin",
  "/srv",
  "/sys",
  "/usr",
  "/usr/local",
  "/var",
  "/var/lib",
  "/var/log",
  "/var/run",
  "/home",
  "/root",
  "/tmp",
  "/var/tmp",
  "/mnt",
  "/media",
  "/nix",
  "/snap",
  "/System",
  "/Library",
  "/Applications",
  "/Users",
  "/private",
  "/private/tmp",
  "/private/var",
  "/private/etc",
];

/** Kernel interfaces a bind may never show (nor contain). */
export const KERNEL_DIRS: readonly string[] = ["/proc", "/sys", "/dev"];

/**
 * Runtime dirs: every service's and every user's sockets, locks and session state (`/run/user/UID`,
 * whose `systemd/` the user's manager reads units from). Nothing there may be a job's to write.
 */
export const RUNTIME_DIRS: readonly string[] = ["/run", "/var/run"];

/** Whether `p` is a system directory itself (not a path inside one). */
export function isSystemDir(p: string): boolean {
  return SYSTEM_DIRS.includes(p);
}

/**
 * The canonical form of an existing path: absolute, symlinks resolved, no `.`/`..`/trailing
 * slash. Throws E_BAD_REQUEST naming `what` when it does not exist.
 */
export function canonical(p: string, what: string): string {
  try {
    return realpathSync(normalize(p));
  } catch {
    throw badRequest(`${what} ${p} does not exist`, "create it, or name another path");
  }
}

/**
 * A symlink on the way to `given` that a job (or another local user) could have planted: one that
 * lies in a `writable` tree (cell dirs, read_write paths) or in a directory others may write.
 * Following it would bind whatever it points at (a job plants `data → ~/.ssh`, a later policy
 * names `data`). Returns the link and its target, or null.
 */
export function plantedSymlink(given: string, writable: string[]): string | null {
  const parts = normalize(given).split("/").filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const q = `/${parts.slice(0, i).join("/")}`;
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(q);
    } catch {
      return null;
    }
    if (!st.isSymbolicLink()) continue;
    let parent: string;
    try {
      parent = realpathSync(dirname(q));
    } catch {
      continue;
    }
    const at = join(parent, basename(q));
    const open = (statSync(parent).mode & 0o002) !== 0;
    if (open || writable.some((w) => within(at, w))) {
      return `${q} is a symlink (to ${readlinkSync(q)}) in ${open ? "a directory anyone may write" : "a tree jobs can write"}`;
    }
  }
  return null;
}

/** Why a directory may not be a cell, or null when it may. `homes` are real home dirs. */
export function unsafeCellDir(dir: string, o: { protect: string[]; homes: string[] }): string | null {
  if (dir === "/") return "it is the root directory";
  if (isSystemDir(dir)) return "it is a system directory";
  for (const s of SYSTEM_DIRS) if (s !== "/" && within(s, dir)) return `it contains the system directory ${s}`;
  if (o.homes.includes(dir)) return "it is a home directory itself; use a project directory inside it";
  for (const g of o.protect) if (overlaps(dir, g)) return `it overlaps planter's own state, socket or config (${g})`;
  // A cell dir is a writable bind: the rules of a read_write path hold for it too.
  for (const k of KERNEL_DIRS) if (within(dir, k)) return `it lies in ${k}, which the sandbox provides itself`;
  for (const r of RUNTIME_DIRS) if (within(dir, r)) return `it lies in ${r}, the host's runtime dir`;
  return null;
}

/**
 * Why a policy path may not be bound (`write`: read_write), or null when it may. A read-only bind
 * may contain planter's dirs (the view hides them again inside it); a writable one may not: a job
 * could rename a directory above them.
 */
export function unsafeBind(path: string, write: boolean, o: { protect: string[] }): string | null {
  if (write) {
    if (path === "/") return "the root directory cannot be writable";
    if (isSystemDir(path)) return "a system directory cannot be writable";
    for (const s of SYSTEM_DIRS) if (s !== "/" && within(s, path)) return `it contains the system directory ${s}`;
    for (const r of RUNTIME_DIRS) if (within(path, r)) return `it lies in ${r}, the host's runtime dir`;
  }
  // The sandbox has its own /proc, /dev and /sys: the host's would show host processes (and, through
  // /proc/PID/root, their whole filesystem), devices and kernel state. Binds are recursive, so a
  // bind of a directory above them (/) would bring them back too.
  for (const k of KERNEL_DIRS) {
    if (overlaps(path, k)) return `it overlaps ${k}, which the sandbox provides itself (the host's is never bound)`;
  }
  for (const g of o.protect) {
    if (write ? overlaps(path, g) : within(path, g)) return `it overlaps planter's own state, socket or config (${g})`;
  }
  return null;
}

/** O_PATH (Linux, the same on x86_64 and arm64): an fd naming a file without opening its contents. */
const O_PATH = 0o10000000;

/**
 * Open `path` for a bind without following a final symlink, and check that the fd names exactly
 * `path` (no component was swapped for a symlink since it was checked). The caller closes it.
 */
export function openChecked(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch (e) {
    throw changed(path, `cannot open it (${(e as NodeJS.ErrnoException).code})`);
  }
  try {
    const real = readlinkSync(`/proc/self/fd/${fd}`);
    if (real !== path) throw changed(path, `it now resolves to ${real}`);
    if (fstatSync(fd).isSymbolicLink()) throw changed(path, "it is now a symlink");
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

function changed(path: string, why: string): PlanterError {
  return new PlanterError("E_SANDBOX_UNAVAILABLE", `sandbox path ${path} changed since it was checked: ${why}`, {
    hint: "something replaced a path the policy binds (a job may have planted a symlink); check it and run the job again",
  });
}

/** Whose permissions a path is resolved with. */
export interface Resolver {
  uid: number;
  gid: number;
  groups: number[];
}

/** The permission bits (rwx as 4/2/1) `who` has on a file with this owner and mode; root has all. */
export function permsOf(st: { uid: number; gid: number; mode: number }, who: Resolver): number {
  if (who.uid === 0) return 7;
  if (st.uid === who.uid) return (st.mode >> 6) & 7;
  if (st.gid === who.gid || who.groups.includes(st.gid)) return (st.mode >> 3) & 7;
  return st.mode & 7;
}

/** Symlinks followed in one resolution, as the kernel allows. */
const MAX_LINKS = 40;

/**
 * Resolve `path` as `who` would: every directory looked into must be searchable by it, symlinks
 * are followed as the kernel follows them. `hidden` when a directory on the way is not
 * searchable by `who` (whatever lies below, existing or not: the answer must not tell), `missing`
 * when a component does not exist in a directory it may search, else the canonical path.
 * Mode bits only (ACLs are not read): a path an ACL opens is refused, never the reverse.
 */
export function resolveAs(path: string, who: Resolver): { path: string } | { hidden: true } | { missing: true } {
  const todo = normalize(path).split("/").filter(Boolean);
  let cur = "/";
  let links = 0;
  while (todo.length) {
    const c = todo.shift() as string;
    if (c === ".") continue;
    let dir: ReturnType<typeof statSync>;
    try {
      dir = statSync(cur);
    } catch {
      return { missing: true };
    }
    if (!dir.isDirectory()) return { missing: true };
    if (!(permsOf(dir, who) & 1)) return { hidden: true };
    if (c === "..") {
      cur = dirname(cur);
      continue;
    }
    const next = cur === "/" ? `/${c}` : `${cur}/${c}`;
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(next);
    } catch {
      return { missing: true };
    }
    if (!st.isSymbolicLink()) {
      cur = next;
      continue;
    }
    // /proc's links (self, cwd, root, exe, fd/N of planterd's or another user's processes) are
    // resolved by the kernel with ptrace checks this walk cannot make: none is followed for anyone.
    if (within(next, "/proc")) return { hidden: true };
    if (++links > MAX_LINKS) return { missing: true };
    const target = readlinkSync(next);
    todo.unshift(...target.split("/").filter(Boolean));
    if (target.startsWith("/")) cur = "/";
  }
  return { path: cur };
}

/**
 * The canonical form of `p` as `who` reaches it (`resolveAs`): refused with one answer when a
 * directory on the way is not searchable by `who`, whether or not anything lies below it.
 */
export function canonicalAs(p: string, who: Resolver, what: string): string {
  const r = resolveAs(p, who);
  if ("path" in r) return r.path;
  if ("missing" in r) throw badRequest(`${what} ${p} does not exist`, "create it, or name another path");
  throw badRequest(
    `${what} ${p} is not a path you can reach (uid ${who.uid}): it lies in a directory you cannot search, or does not exist there`,
    "name a path you can reach yourself (check with ls as your own user)",
  );
}
