/**
 * What a sandboxed job sees of the host, as one ordered list of mounts computed from the plan
 * request. The bwrap backend renders it; the daemon's checks (is this cwd visible?) ask the same
 * list, so a check and the sandbox never disagree. Order: shallower paths first, so a deeper
 * bind re-exposes part of a hidden tree (a cell dir inside a hidden home, a `read_write`
 * carve-out inside a `deny` path) and a deeper hide covers part of a bind.
 */
import { existsSync, lstatSync, readdirSync, realpathSync } from "node:fs";
import { dirname } from "node:path";
import { aliasesOf, hostMounts, type MountLine, strayKernelMounts } from "./aliases.ts";
import type { PlanRequest } from "./backend.ts";
import { credentialPaths } from "./credentials.ts";
import { isSystemDir, within } from "./paths.ts";

/** One mount: a bind of the host path onto itself (from a checked fd), or a cover that hides it. */
export type Mount =
  | { op: "bind"; path: string; write: boolean; why: string }
  | { op: "hide"; path: string; kind: "dir" | "file"; why: string };

/** What kind of thing is at a path, never following a final symlink. */
export type Kind = "dir" | "file" | "symlink" | null;
export type Lstat = (p: string) => Kind;
export const fsKind: Lstat = (p) => {
  try {
    // Most paths asked about are missing (credentials, rc files): no error made for those.
    const s = lstatSync(p, { throwIfNoEntry: false });
    if (!s) return null;
    return s.isSymbolicLink() ? "symlink" : s.isDirectory() ? "dir" : "file";
  } catch {
    return null;
  }
};

/**
 * A path's canonical form, or the path itself when it cannot be resolved (missing, a loop). A
 * path that does not resolve is found so first without an error made (most credential paths of a
 * home are missing: an error per path cost ~4 ms per plan).
 */
function realPath(p: string): string {
  if (!existsSync(p)) return p;
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** Shell rc files that stay read-only in any real home a job can see. */
export const RC_FILES = [
  ".bashrc",
  ".bash_profile",
  ".bash_login",
  ".bash_logout",
  ".profile",
  ".zshrc",
  ".zshenv",
  ".zprofile",
  ".zlogin",
  ".config/fish/config.fish",
  ".gitconfig",
  ".config/git/config",
];

const depth = (p: string) => (p === "/" ? 0 : p.split("/").length - 1);

/**
 * Sort shallow to deep. At one depth: the broad covers (homes, other cells) first, then binds (a
 * policy may pass a whole home), then the narrow covers (deny, credentials, planter's own), which
 * win over a bind of the same path.
 */
function order(ms: Mount[]): Mount[] {
  return ms
    .map((m, i) => ({ m, i }))
    .sort((a, b) => depth(a.m.path) - depth(b.m.path) || rank(a.m) - rank(b.m) || a.i - b.i)
    .map((x) => x.m);
}
const BROAD = new Set(["home", "other cell"]);
const rank = (m: Mount) => (m.op === "bind" ? 1 : BROAD.has(m.why) ? 0 : 2);

/** The mount deciding `path`: the last one in order that contains it. */
function decider(ms: Mount[], path: string): Mount | undefined {
  let found: Mount | undefined;
  for (const m of ms) if (within(path, m.path)) found = m;
  return found;
}

/** Whether `path` exists for the job (host / is visible read-only; /tmp is private). */
export function visibleIn(ms: Mount[], path: string, privateTmp = true): boolean {
  const m = decider(ms, path);
  if (m) return m.op === "bind";
  return !(privateTmp && within(path, "/tmp"));
}

/** Whether the job can write `path` on the host (through a writable bind). */
export function writableIn(ms: Mount[], path: string): boolean {
  const m = decider(ms, path);
  return m?.op === "bind" && m.write;
}

/** A cover hiding `path` when it exists (a dir or a file), else none. */
function hideIf(kind: Lstat, path: string, why: string): Mount[] {
  const k = kind(path);
  return k === "dir" || k === "file" ? [{ op: "hide", path, kind: k, why }] : [];
}

/** The ordered mounts of a request. `kind` tells what exists, `mounts` the host's mount table (tests pass fakes). */
export function sandboxView(
  req: PlanRequest,
  kind: Lstat = fsKind,
  mounts: readonly MountLine[] = hostMounts(),
): Mount[] {
  const p = req.policy;
  const hide = (path: string, why: string): Mount[] => hideIf(kind, path, why);
  const ms: Mount[] = [];
  for (const x of req.protect) ms.push(...hide(x, "planter"));
  // Every real home is hidden: the homes' roots, and the job's and planterd's own wherever they are.
  for (const h of ["/home", "/root", "/Users"]) ms.push(...hide(h, "home"));
  for (const h of req.hiddenHomes) if (h !== "/" && !isSystemDir(h)) ms.push(...hide(h, "home"));
  ms.push({ op: "bind", path: req.cellDir, write: p.fs_mode === "writable", why: "cell" });
  ms.push({ op: "bind", path: req.home, write: true, why: "cell home" });
  for (const x of p.read_write) ms.push({ op: "bind", path: x, write: true, why: "read_write" });
  for (const x of p.read_only) ms.push({ op: "bind", path: x, write: false, why: "read_only" });
  for (const x of p.unix_sockets) ms.push({ op: "bind", path: x, write: false, why: "unix_socket" });
  // Other cells are covered only where the job would see them: each cover's mount point names a
  // cell in the job's /proc/self/mountinfo, and one already hidden (a home, the private /tmp,
  // planter's state) needs none.
  const without = order(ms);
  for (const c of req.otherCells) if (visibleIn(without, c)) ms.push(...hide(c, "other cell"));
  const sorted = order(ms);
  const extra: Mount[] = [
    ...pins(req, sorted, kind),
    ...credentialCovers(req, sorted, kind),
    ...socketCovers(req, sorted),
    ...denyCovers(req, sorted, kind),
  ];
  // planter's own paths need no second cover where a bind (a cell holding them) shows them: their
  // cover is a narrow one, deeper than such a bind or after it at the same depth.
  return aliasCovers(order([...ms, ...extra]), kind, mounts);
}

/** Workspace config and rc files stay read-only wherever a writable bind (`sorted`) shows them. */
function pins(req: PlanRequest, sorted: Mount[], kind: Lstat): Mount[] {
  const p = req.policy;
  const out: Mount[] = [];
  const pin = [...req.workspaceReadOnly, ...req.credentialHomes.flatMap((h) => RC_FILES.map((f) => `${h}/${f}`))];
  // (Never inside a deny path: a deeper bind would show what the deny hides.)
  for (const x of pin) {
    const k = kind(x);
    if (p.deny.some((d) => within(x, d)) || (req.placeholders ?? []).some((d) => within(x, d))) continue;
    if ((k === "dir" || k === "file") && writableIn(sorted, x))
      out.push({ op: "bind", path: x, write: false, why: "protected" });
  }
  return out;
}

/**
 * Credentials: hidden wherever a bind shows them, unless a policy path names them (or a path in them).
 * Covered where they really are: a credential that is a symlink (a dotfile manager's `~/.npmrc →
 * dotfiles/npmrc`, a home-manager link into /nix/store) or lies below one (`~/.config → …`) is
 * hidden at its target, which the job could otherwise read by that name.
 */
function credentialCovers(req: PlanRequest, sorted: Mount[], kind: Lstat): Mount[] {
  const p = req.policy;
  const out: Mount[] = [];
  const named = [...p.read_write, ...p.read_only];
  for (const h of req.credentialHomes) {
    // What the home holds at its top, listed once: a credential whose first component is not
    // there is missing (nothing to hide), without a look at each of its ~35 paths.
    const top = kind === fsKind ? topNames(h) : null;
    for (const c of credentialPaths(h)) {
      if (top && !top.has(c.slice(h.length).replace(/^\/+/, "").split("/")[0] as string)) continue;
      const real = realPath(c);
      if (named.includes(c) || named.includes(real) || !visibleIn(sorted, real)) continue;
      out.push(...hideIf(kind, real, "credential"));
    }
  }
  return out;
}

/** The names directly in `dir`, or null when it cannot be listed (each path is then looked at). */
function topNames(dir: string): Set<string> | null {
  try {
    return new Set(readdirSync(dir));
  } catch {
    return null;
  }
}

/**
 * With AF_UNIX on (a policy lists unix_sockets), every other socket the job could reach is
 * covered: its directory (an empty one), or the socket itself under /dev/null (refuses connects).
 * A listed socket is bound again inside its covered directory.
 */
function socketCovers(req: PlanRequest, sorted: Mount[]): Mount[] {
  const out: Mount[] = [];
  for (const c of req.socketCovers ?? []) {
    if (req.policy.unix_sockets.includes(c.path) || !visibleIn(sorted, c.path)) continue;
    out.push({ op: "hide", path: c.path, kind: c.kind, why: "unix socket" });
  }
  return out;
}

/**
 * The deny covers. A deny in a writable area is pinned: each ancestor up to the bind becomes a
 * mountpoint, which cannot be renamed or removed, so the job cannot move the denied path from
 * under its cover. A deny path that is missing is held by its placeholder (the first missing
 * component, made empty by planterd before the job): the placeholder is covered in its place.
 */
function denyCovers(req: PlanRequest, sorted: Mount[], kind: Lstat): Mount[] {
  const out: Mount[] = [];
  const denied = req.policy.deny.flatMap((x) => {
    const d = x.replace(/(.)\/+$/, "$1");
    if (kind(d) !== null) return [d];
    const ph = (req.placeholders ?? []).find((h) => within(d, h));
    return ph ? [ph] : [];
  });
  for (const d of [...new Set(denied)]) {
    const w = decider(sorted, d);
    if (w?.op === "bind" && w.write) {
      for (let a = dirname(d); a !== w.path && within(a, w.path) && a !== "/"; a = dirname(a)) {
        out.push({ op: "bind", path: a, write: writableIn(sorted, a), why: "pins a deny path" });
      }
    }
    out.push(...hideIf(kind, d, "deny"));
  }
  return out;
}

/**
 * `all` with what its covers hide hidden under every other name the host's bind mounts give it too
 * (lib/sandbox/aliases.ts): the view shows the host's mounts, aliases and all.
 * So is the host's /tmp (the job's is private), and a host /proc or /dev mounted anywhere else.
 */
function aliasCovers(all: Mount[], kind: Lstat, mounts: readonly MountLine[]): Mount[] {
  const broad: Mount[] = [];
  for (const a of aliasesOf("/tmp", mounts)) if (visibleIn(all, a)) broad.push(...hideIf(kind, a, "host /tmp"));
  for (const k of strayKernelMounts(mounts)) if (visibleIn(all, k)) broad.push(...hideIf(kind, k, "host kernel fs"));
  const seen = broad.length ? order([...all, ...broad]) : all;
  const aliases: Mount[] = [];
  for (const m of all) {
    if (m.op !== "hide" || m.why === "unix socket") continue;
    for (const a of aliasesOf(m.path, mounts)) if (visibleIn(seen, a)) aliases.push(...hideIf(kind, a, m.why));
  }
  return aliases.length ? order([...seen, ...aliases]) : seen;
}

/**
 * The host directory entries whose replacement would change what a job sees under a cover:
 * `[dir, name]` pairs. The kernel detaches a mount when a process in *another* mount namespace
 * unlinks or renames over the dentry it sits on, so a host that replaces a denied path (an editor's
 * atomic save, `rm -rf` + `mkdir`) or one of its ancestors during a job would show the new one to
 * the job. For each cover, the path and each ancestor are listed while the dentry is the host's
 * (seen through a bind or the read-only root); the walk stops at a tmpfs (a cover, the private
 * /tmp), whose dentries are the job's own. planterd watches these and stops the job when one
 * changes (`lib/daemon/guard.ts`).
 */
export function guardedEntries(ms: Mount[], privateTmp = true): [string, string][] {
  const out = new Map<string, [string, string]>();
  for (const m of ms) {
    // Not socket covers: the host's runtime dirs change all the time (a service restarts, a user's
    // session makes sockets), and a job cannot make them change (README: a socket replaced while
    // the job runs is reachable).
    if (m.op !== "hide" || m.why === "unix socket") continue;
    for (let a = m.path; a !== "/"; a = dirname(a)) {
      const parent = dirname(a);
      const d = decider(ms, parent);
      if (d?.op === "hide") break;
      if (!d && privateTmp && within(parent, "/tmp")) break;
      const name = a.slice(parent === "/" ? 1 : parent.length + 1);
      out.set(`${parent}\0${name}`, [parent, name]);
    }
  }
  return [...out.values()];
}
