/**
 * Where and as whom a job runs: its identity (never host root), its cell's canonical dir and
 * private home, what stays hidden (planter, homes, other cells, credentials) and the workspace
 * snapshot the review compares against after the job.
 */
import { chownSync, lstatSync, mkdirSync, realpathSync, rmSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import type { RunAs } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import { configSecrets, daemonSecrets } from "../config.ts";
import type { LaunchContext } from "../jobs/supervisor.ts";
import { jobDir, socketDir, stateFiles } from "../paths.ts";
import type { PlanRequest } from "../sandbox/backend.ts";
import { homesShown } from "../sandbox/credentials.ts";
import { type Identity, jobIdentity, lookupUser, parsePasswd, read } from "../sandbox/identity.ts";
import { isSystemDir, overlaps, permsOf, type Resolver, resolveAs, unsafeCellDir, within } from "../sandbox/paths.ts";
import {
  createPlaceholder,
  isPlaceholder,
  type Placeholder,
  placeholderFile,
  placeholderFor,
  readPlaceholders,
  removePlaceholder,
  writePlaceholders,
} from "../sandbox/placeholders.ts";
import { complete, type EffectivePolicy, type Policy, resolvePolicy, resolvePolicyPaths } from "../sandbox/policy.ts";
import { sandboxView, visibleIn } from "../sandbox/view.ts";
import { type GlobalGit, readGlobalGit, snapshotAsync, TreeTooLarge } from "../sandbox/workspace.ts";
import { type CellRow, getCell, listCellDirs } from "../state/cells.ts";
import { type JobRow, liveJobs } from "../state/jobs.ts";
import type { Context } from "./context.ts";
import type { Peer } from "./peer.ts";

let ownUser: string | null | undefined;
/**
 * planterd's own user name, looked up once by uid (passwd, then NSS). Not os.userInfo(): Bun's
 * takes the name from $USER, which a planterd started without it lacks ("unknown") and any
 * environment can set to another name.
 */
function ownUserName(): string | null {
  if (ownUser === undefined) {
    const uid = process.getuid?.();
    ownUser = uid === undefined ? null : (lookupUser(uid)?.name ?? null);
  }
  return ownUser;
}

/** Who a job with `identity` runs as, for its record and events (null identity: planterd's own user). */
export function runAsOf(identity: Identity | null, forUid: number | null = null): RunAs {
  if (identity) return { uid: identity.uid, gid: identity.gid, user: identity.user, for_uid: forUid };
  return { uid: process.getuid?.() ?? null, gid: process.getgid?.() ?? null, user: ownUserName(), for_uid: forUid };
}

/** Whether planterd runs as root: then no job runs as this process's uid. */
export const daemonIsRoot = () => process.getuid?.() === 0;

/**
 * planter's own paths: state dir, socket dir, config dir, and every secret the config names
 * elsewhere: the MCP token file, `[api.tcp]`'s TLS key and its identities' token files. A token
 * opens planterd over TCP, the key speaks as planterd to its clients: no job may read them,
 * wherever they lie (a user's planterd runs its jobs as the user who owns them).
 */
export function protectedPaths(ctx: Context, secrets: "all" | "daemon" = "all"): string[] {
  const config = dirname(ctx.paths.configPath);
  const out = [ctx.paths.stateDir, socketDir(ctx.paths.socketPath)];
  // A config dir that is a system dir (/etc when the file is /etc/planter.toml) is not hidden whole.
  if (!isSystemDir(config) && config !== "/") out.push(config);
  for (const file of secrets === "all" ? configSecrets(ctx.config) : daemonSecrets(ctx.config)) {
    if (!out.some((p) => file === p || file.startsWith(`${p}/`))) out.push(file);
  }
  return out;
}

/** Trees jobs can write: every cell's dir and home (a symlink found there may be a job's). */
export function writableTrees(ctx: Context): string[] {
  return [...listCellDirs(ctx.db).map((c) => c.dir), join(ctx.paths.stateDir, "homes")];
}

/**
 * A home as the sandbox and the path checks see it: canonical. A home named through a symlink
 * (`HOME=/home/alice` with `/home → /var/home` on Fedora Atomic and other ostree hosts, a home moved
 * to another disk) would otherwise be hidden and searched for credentials at a path that is a
 * symlink, while the job reads the real directory through the read-only root.
 */
export function canonicalHome(h: string): string {
  try {
    return realpathSync(h);
  } catch {
    return h;
  }
}

/** Whether a (canonical) home is a real user's home, not `/` or a system dir. */
const isHome = (h: string) => h.startsWith("/") && h !== "/" && !isSystemDir(h);

/** Real home directories on this host (passwd entries with a home that is not a system dir), canonical. */
export function realHomes(): string[] {
  const text = read("/etc/passwd");
  const homes = new Set<string>();
  for (const e of parsePasswd(text)) {
    if (!isHome(e.home)) continue;
    const h = canonicalHome(e.home);
    if (isHome(h)) homes.add(h);
  }
  const own = canonicalHome(homedir());
  if (isHome(own)) homes.add(own);
  return [...homes];
}

/** The homes' roots every job has hidden, canonical where they are symlinks (`/home → /var/home`). */
const HOME_ROOTS = ["/home", "/root", "/Users"];

/** The identity a job of `peer` in `cell` runs as; null in user mode (the daemon's own). */
export function identityFor(ctx: Context, peer: Peer | null, cell: CellRow): Identity | null {
  if (!daemonIsRoot()) return null;
  return jobIdentity({ peer, cellOwner: cell.owner_uid, rootPeer: ctx.rootPeer.identity });
}

/** Who owns a new cell: a non-root peer itself; for root, a custom dir's non-root owner, else the job user. */
export function ownerFor(ctx: Context, peer: Peer | null, dir: string | null): number | null {
  if (!daemonIsRoot()) return process.getuid?.() ?? null;
  if (peer && peer.uid !== 0) return peer.uid;
  if (dir) {
    const uid = lstatSync(dir).uid;
    if (uid !== 0) return uid;
  }
  return ctx.rootPeer.identity.uid;
}

/**
 * Refuse a peer acting on a cell it does not own (planterd root only): a member of group
 * `planter` runs jobs in its own cells, never as another user.
 */
export function checkCellAccess(ctx: Context, peer: Peer | null, cell: CellRow): void {
  if (!daemonIsRoot() || !peer || peer.uid === 0) return;
  const owner = cell.owner_uid ?? ctx.rootPeer.identity.uid;
  if (owner === peer.uid) return;
  throw new PlanterError(
    "E_UNAUTHORIZED_PEER",
    `cell ${cell.name} belongs to uid ${owner}, not to you (uid ${peer.uid})`,
    {
      hint: "create a cell of your own: planter cell create NAME",
    },
  );
}

/** The uid a job belongs to: who it ran as, else its cell's owner, else the root-peer user. */
export function jobOwner(ctx: Context, job: JobRow): number {
  // Whose job it is: the peer that asked for it (root's jobs are root's, whoever they run as).
  return job.run_as?.for_uid ?? job.run_as?.uid ?? getCell(ctx.db, job.cell)?.owner_uid ?? ctx.rootPeer.identity.uid;
}

/** Whether `peer` is the job's own user. */
export function ownsJob(ctx: Context, peer: Peer, job: JobRow): boolean {
  return jobOwner(ctx, job) === peer.uid;
}

/**
 * Refuse a peer acting on (killing, removing, reading the logs of) another user's job (planterd
 * root only). Listing and status stay open to every allowed peer, like `ps`.
 */
export function checkJobAccess(ctx: Context, peer: Peer | null, job: JobRow): void {
  if (!daemonIsRoot() || !peer || peer.uid === 0 || ownsJob(ctx, peer, job)) return;
  const owner = jobOwner(ctx, job);
  throw new PlanterError("E_UNAUTHORIZED_PEER", `job ${job.id} runs as uid ${owner}, not as you (uid ${peer.uid})`, {
    hint: "only the job's own user (or root) may kill it, remove it or read its logs",
  });
}

/**
 * Refuse paths a peer names (a cell dir, a cwd, policy paths) that lie behind a directory the peer
 * cannot search, with one answer whether they exist or not: planterd (root) resolves paths with
 * its own rights, and any later message (does not exist, is not a directory, is a symlink, has
 * hard links) would otherwise tell the peer what it may not look at. Root and planterd's own user
 * are not asked (they could look themselves).
 */
export function checkPeerPaths(
  peer: Peer | null,
  named: { dir?: string; cwd?: string; policy?: Policy | undefined },
): void {
  if (!peer || peer.uid === 0 || peer.uid === process.getuid?.()) return;
  const p = named.policy;
  const all: [string, string][] = [
    ...(named.dir !== undefined ? [["cell dir", named.dir] as [string, string]] : []),
    ...(named.cwd !== undefined ? [["cwd", named.cwd] as [string, string]] : []),
    ...(["read_write", "read_only", "unix_sockets", "deny"] as const).flatMap((f) =>
      (p?.[f] ?? []).map((x) => [`sandbox ${f} path`, x] as [string, string]),
    ),
  ];
  for (const [what, path] of all) {
    if ("hidden" in resolveAs(path, peer)) {
      throw new PlanterError(
        "E_BAD_REQUEST",
        `${what} ${path} is not a path you can reach (uid ${peer.uid}): it lies in a directory you cannot search, or does not exist there`,
        { hint: "name a path you can reach yourself (check with ls as your own user)" },
      );
    }
  }
}

/** Why `dir` breaks the path rules for a cell dir on this host (`unsafeCellDir`), or null. */
export function cellPathProblem(ctx: Context, dir: string): string | null {
  // A directory right under /home or /Users is a home, passwd line or not (a directory service's user).
  const byPlace = homesShown([dir]).filter((h) => h === dir);
  // The user's target keys are hidden from jobs, but a cell may hold one (a project's own).
  return unsafeCellDir(dir, { protect: protectedPaths(ctx, "daemon"), homes: [...realHomes(), ...byPlace] });
}

/** Why `dir` may not be a new cell's dir: the path rules, then any overlap with a custom cell's. */
export function cellDirProblem(ctx: Context, dir: string): string | null {
  const why = cellPathProblem(ctx, dir);
  if (why) return why;
  const other = listCellDirs(ctx.db).find((c) => !c.managed && overlaps(c.dir, dir));
  return other ? `it overlaps another cell's dir (${other.dir})` : null;
}

/** A cell dir checked again now (it may have been swapped for a symlink since the cell was made). */
export function checkedCellDir(ctx: Context, cell: CellRow): string {
  let real: string;
  try {
    real = lstatSync(cell.dir).isSymbolicLink() ? "" : cell.dir;
  } catch {
    real = "";
  }
  if (real !== cell.dir) {
    throw new PlanterError("E_SANDBOX_UNAVAILABLE", `cell dir ${cell.dir} is missing or was replaced by a symlink`, {
      hint: `check ${cell.dir}; remove the cell and create it again`,
    });
  }
  // A managed cell's dir is planter's own (under the state dir), made by planterd.
  const why = cell.managed ? null : cellPathProblem(ctx, cell.dir);
  if (why) throw new PlanterError("E_SANDBOX_UNAVAILABLE", `cell dir ${cell.dir} is unsafe: ${why}`);
  return cell.dir;
}

/**
 * A cell's policy (the config's default under it), with its paths resolved and checked for planted
 * symlinks. `as`: whose rights the cell's own paths are resolved with (planterd root: the user its
 * job runs as, who is the only one bwrap binds anything for); the config's are root's.
 */
export function cellPolicy(ctx: Context, policy: Policy | undefined, as: Resolver | null = null): EffectivePolicy {
  const writable = writableTrees(ctx);
  const defaults = complete(ctx.config.sandbox.policy);
  if (!as || !policy) return resolvePolicyPaths(complete(policy, defaults), writable);
  return complete(resolvePolicy(policy, writable, as), resolvePolicyPaths(defaults, writable));
}

/**
 * Why `id` cannot reach `dir` (a directory it lacks search permission on, on the way), or null.
 * bwrap resolves every bind as the job's user: a 0700 home above planter's state (root's own,
 * say) would otherwise fail the job with bwrap's "Can't find source path".
 */
export function unreachable(dir: string, id: Identity): string | null {
  const parts = dir.split("/").filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const a = `/${parts.slice(0, i).join("/")}`;
    const st = statSync(a, { throwIfNoEntry: false });
    if (!st) return `${a} does not exist`;
    const bits =
      st.uid === id.uid
        ? (st.mode >> 6) & 7
        : st.gid === id.gid || id.groups.includes(st.gid)
          ? (st.mode >> 3) & 7
          : st.mode & 7;
    if (!(bits & 1))
      return `${a} (mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")}, uid ${st.uid}) is not searchable by it`;
  }
  return null;
}

/** The cell's private home (state/homes/NAME), made on first use and owned by the job's uid. */
export function cellHome(ctx: Context, cell: CellRow, identity: Identity | null): string {
  const home = join(ctx.paths.stateDir, "homes", cell.name);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  if (identity) chownOwn(home, identity);
  if (identity && cell.managed) chownOwn(cell.dir, identity);
  return home;
}

function chownOwn(dir: string, id: Identity): void {
  const st = lstatSync(dir);
  if (st.isDirectory() && (st.uid !== id.uid || st.gid !== id.gid)) chownSync(dir, id.uid, id.gid);
}

/**
 * The global and system git config of the users a job's cell is worked in by (the user it runs
 * for, planterd's own): read as files, never by running git. `$XDG_CONFIG_HOME` is known for
 * planterd's own user only; others get `~/.config`. `GIT_CONFIG_GLOBAL` and `GIT_CONFIG_SYSTEM`
 * in a user's shell are not known to planterd.
 */
export function globalGit(homes: string[]): GlobalGit {
  const files: { path: string; home: string | null; owner: number }[] = [];
  for (const h of homes) {
    let owner: number;
    try {
      owner = statSync(h).uid;
    } catch {
      continue;
    }
    const xdg =
      h === homedir() && process.env.XDG_CONFIG_HOME?.startsWith("/") ? process.env.XDG_CONFIG_HOME : `${h}/.config`;
    files.push({ path: `${h}/.gitconfig`, home: h, owner }, { path: `${xdg}/git/config`, home: h, owner });
  }
  for (const path of ["/etc/gitconfig", "/usr/local/etc/gitconfig"]) files.push({ path, home: null, owner: 0 });
  return readGlobalGit(files);
}

/** Default size of a job's private /tmp when it has no memory limit. */
export const DEFAULT_TMP_BYTES = 1024 * 1024 * 1024;

/** Everything the supervisor needs to spawn a job in `cell`, but its workspace snapshot (`snapshotWorkspace`). */
export function launchContext(
  ctx: Context,
  cell: CellRow,
  identity: Identity | null,
  policy: EffectivePolicy | null,
  limits: { max_rss_bytes?: number },
  _sandboxed: boolean,
  peerUid: number | null = null,
): LaunchContext {
  const cellDir = checkedCellDir(ctx, cell);
  const home = cellHome(ctx, cell, identity);
  if (identity) {
    for (const d of [cellDir, home]) {
      const why = unreachable(d, identity);
      if (why) {
        throw new PlanterError(
          "E_SANDBOX_UNAVAILABLE",
          `the job's user ${identity.user ?? identity.uid} (uid ${identity.uid}) cannot reach ${d}: ${why}`,
          {
            hint: "as root, planterd runs jobs as an unprivileged user: use a directory that user owns or can reach (chmod o+x the one named), and keep planter's state where it can be searched (system mode: /var/lib/planter)",
          },
        );
      }
    }
  }
  const own = [identity?.home, homedir()]
    .filter((h): h is string => !!h && isHome(h))
    .map(canonicalHome)
    .filter(isHome);
  const roots = HOME_ROOTS.map(canonicalHome).filter((h, i) => h !== HOME_ROOTS[i] && isHome(h));
  const binds = policy ? [...policy.read_write, ...policy.read_only] : [];
  const exposed = [...realHomes().filter((h) => binds.some((b) => overlaps(b, h))), ...homesShown(binds)];
  const otherCells = listCellDirs(ctx.db)
    .filter((c) => c.name !== cell.name && !within(c.dir, stateFiles(ctx.paths.stateDir).cells))
    .map((c) => c.dir)
    .filter((d) => !within(cellDir, d));
  return {
    cellDir,
    home,
    protect: protectedPaths(ctx),
    hiddenHomes: [...new Set([...roots, ...own])],
    credentialHomes: [...new Set([...own, ...exposed])],
    otherCells,
    tmpBytes: limits.max_rss_bytes ?? ctx.config.sandbox.tmp_bytes ?? DEFAULT_TMP_BYTES,
    identity,
    peerUid,
    // Filled by snapshotWorkspace before the job starts.
    workspace: [],
  };
}

/**
 * The workspace snapshot of every tree the job can write (the cell dir when writable, and each
 * read_write path: a carve-out in a read-only cell, or another project, where the host's own tools
 * run too), which the review compares against after the job. Walked through `ctx.walks`: planterd
 * answers other requests meanwhile, and a tree over `[sandbox] workspace_max_entries` refuses the
 * job (a tree the review cannot walk whole cannot be protected).
 */
export async function snapshotWorkspace(
  ctx: Context,
  jobId: string,
  where: LaunchContext,
  policy: EffectivePolicy | null,
  sandboxed: boolean,
): Promise<LaunchContext["workspace"]> {
  const roots: string[] = [];
  if (sandboxed && policy && policy.workspace_config !== "allow") {
    const writable = [...(policy.fs_mode === "writable" ? [where.cellDir] : []), ...policy.read_write];
    for (const w of writable) if (!writable.some((o) => o !== w && within(w, o))) roots.push(w);
  }
  if (!roots.length) return [];
  // Root's own home (/root) is a system dir, yet its git config applies when root works in the cell.
  const gitHomes = [where.identity?.home, homedir()].filter((h): h is string => !!h && h !== "/");
  const global = globalGit([...new Set(gitHomes)]);
  const { workspace_config_extra: extra, workspace_max_entries: max } = ctx.config.sandbox;
  // The cells' homes are the trees jobs write that no review walks: a symlink into one is set aside.
  const unreviewed = [...new Set([join(ctx.paths.stateDir, "homes"), where.home].map(realOrSelf))];
  const out: LaunchContext["workspace"] = [];
  for (const root of roots) {
    try {
      // Held inside the walk: a review of the tree that comes after it passes on what it settles.
      const tree = await ctx.walks.run(jobId, "snapshot", root, max, async (budget, signal) => {
        const t = { root, before: { ...(await snapshotAsync(root, extra, global, budget, signal)), unreviewed } };
        ctx.walks.hold(jobId, t);
        return t;
      });
      out.push(tree);
    } catch (e) {
      if (!(e instanceof TreeTooLarge)) throw e;
      throw new PlanterError(
        "E_SANDBOX_UNAVAILABLE",
        `${root} holds more than ${max} entries: planter reviews every tree a job can write for git hooks and tool config the host would run, and does not walk one this large`,
        {
          hint:
            "remove what the tree need not hold (dependencies, build output) or keep it out of the cell; " +
            "raise [sandbox] workspace_max_entries in planterd's config; or give the cell a policy with " +
            'workspace_config = "allow" (no review: only for a tree whose tool config you trust)',
        },
      );
    }
  }
  return out;
}

const realOrSelf = (p: string) => {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
};

/** The plan request of a job in a launch context: `job` gives what is the job's own. */
export function planRequest(
  where: LaunchContext,
  job: Pick<PlanRequest, "argv" | "env" | "cwd" | "policy" | "workspaceReadOnly" | "jobDir" | "scratch" | "tty">,
): PlanRequest {
  return {
    ...job,
    cellDir: where.cellDir,
    protect: where.protect,
    home: where.home,
    hiddenHomes: where.hiddenHomes,
    credentialHomes: where.credentialHomes,
    otherCells: where.otherCells,
    tmpBytes: where.tmpBytes,
    identity: where.identity,
    placeholders: where.placeholders ?? [],
    ...(where.proxyPort !== undefined ? { proxyPort: where.proxyPort } : {}),
  };
}

/** A plan request for checks before launch (is the cwd visible?), from a launch context. */
export function checkRequest(where: LaunchContext, policy: EffectivePolicy, cwd: string): PlanRequest {
  const none = "/nonexistent";
  return planRequest(where, {
    argv: ["true"],
    env: {},
    cwd,
    policy,
    workspaceReadOnly: [],
    jobDir: none,
    scratch: none,
  });
}

/** Placeholders that live jobs other than `except` rely on. */
function livePlaceholders(ctx: Context, except: string | null): Placeholder[] {
  return liveJobs(ctx.db)
    .filter((j) => j.id !== except)
    .flatMap((j) => readPlaceholders(jobDir(ctx.paths.stateDir, j.id)));
}

const existence = (p: string): "dir" | "other" | null => {
  try {
    return lstatSync(p).isDirectory() ? "dir" : "other";
  } catch {
    return null;
  }
};

/**
 * Hold the job's deny paths that do not exist (yet): each gets an empty placeholder, made by
 * planterd and covered in the sandbox, so that what the host creates there while the job runs
 * stays hidden (lib/sandbox/placeholders.ts). Only where the job could see the path; made only in
 * the cell dir or a read_write path (the job's own trees), as a user who may create it there;
 * elsewhere the job is refused (a missing deny path in the host's read-only view could appear and
 * be read). Recorded in the job dir (for the release after the job, also by a restarted
 * planterd) and returned for the plan. `forUser`: whom the job runs for (the peer), null: planterd's user.
 */
export function holdMissingDeny(
  ctx: Context,
  jobId: string,
  where: LaunchContext,
  policy: EffectivePolicy,
  forUser: Resolver | null,
): string[] {
  if (!policy.deny.length) return [];
  const missing = policy.deny.filter((d) => existence(d.replace(/(.)\/+$/, "$1")) === null);
  const live = livePlaceholders(ctx, jobId);
  const held: Placeholder[] = [];
  const dir = jobDir(ctx.paths.stateDir, jobId);
  // A placeholder another job made and still relies on is shared, not made again.
  for (const ph of live) {
    const used = policy.deny.some((d) => within(d, ph.path)) && isPlaceholder(ph.path, ph);
    if (used && !held.some((h) => h.path === ph.path && h.ino === ph.ino)) held.push(ph);
  }
  if (!missing.length) {
    if (held.length) writePlaceholders(dir, held);
    return held.map((h) => h.path);
  }
  const view = sandboxView(checkRequest(where, policy, where.cellDir));
  const jobUser: Resolver = where.identity ?? {
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    groups: process.getgroups?.() ?? [],
  };
  const own = [where.cellDir, ...policy.read_write];
  try {
    for (const d of missing) {
      const t = placeholderFor(d, existence);
      // Below a file, or hidden from the job anyway (a home, another cell, /tmp, an unreachable dir).
      if (!t || held.some((h) => within(t.path, h.path)) || !visibleIn(view, t.parent)) continue;
      if ("hidden" in resolveAs(t.parent, jobUser)) continue;
      held.push(makePlaceholder(d, t, own, forUser));
      writePlaceholders(dir, held);
    }
  } catch (e) {
    // The job is refused: it never existed, so neither does its dir.
    releasePlaceholders(ctx, jobId);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  if (held.length) writePlaceholders(dir, held);
  return held.map((h) => h.path);
}

/**
 * The placeholder `t` holding the missing deny path `d`, made in one of the job's own trees
 * (`own`) as a user who may create it there; refused elsewhere, or when it cannot be made.
 */
function makePlaceholder(
  d: string,
  t: { path: string; parent: string; kind: "file" | "dir" },
  own: string[],
  forUser: Resolver | null,
): Placeholder {
  if (!own.some((o) => within(t.parent, o))) {
    throw new PlanterError(
      "E_BAD_REQUEST",
      `sandbox deny path ${d} does not exist, and the job could read it if it appeared while the job runs: planter holds a missing deny path only in the cell dir or a read_write path`,
      { hint: `create it (an empty file, or a directory), or take it out of deny: ${d}` },
    );
  }
  const st = statSync(t.parent);
  if (forUser && !((permsOf(st, forUser) & 3) === 3)) {
    throw new PlanterError(
      "E_BAD_REQUEST",
      `sandbox deny path ${d} does not exist, and you (uid ${forUser.uid}) may not create it in ${t.parent} to hold it`,
      { hint: `create it yourself, or take it out of deny: ${d}` },
    );
  }
  const owner = daemonIsRoot() ? { uid: st.uid, gid: st.gid } : null;
  try {
    return { path: t.path, kind: t.kind, ...createPlaceholder(t.parent, basename(t.path), t.kind, owner) };
  } catch (e) {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      `sandbox deny path ${d} does not exist, and no placeholder could be made at ${t.path} to hold it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      { hint: `create it yourself, or take it out of deny: ${d}` },
    );
  }
}

/**
 * After a job (or a refused launch): remove the placeholders it recorded that no other live job
 * relies on, each only while it is still the empty entry planter made.
 */
export function releasePlaceholders(ctx: Context, jobId: string): void {
  const dir = jobDir(ctx.paths.stateDir, jobId);
  const mine = readPlaceholders(dir);
  if (!mine.length) return;
  const others = livePlaceholders(ctx, jobId);
  for (const ph of mine) {
    if (others.some((o) => o.path === ph.path && o.dev === ph.dev && o.ino === ph.ino)) continue;
    removePlaceholder(ph);
  }
  rmSync(placeholderFile(dir), { force: true });
}
