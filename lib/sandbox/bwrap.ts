/** The bubblewrap backend (Linux): read-only host, private /tmp, /proc and pid namespace, planter hidden. */
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, type Stats } from "node:fs";
import { dirname } from "node:path";
import { REPORT_IN_SANDBOX } from "../agents/hooks.ts";
import { PlanterError } from "../api/errors.ts";
import type { Backend, PlanInput, PlanRequest, Probe, SpawnPlan } from "./backend.ts";
import { HOST_ENV } from "./env.ts";
import { dropArgv, type Identity } from "./identity.ts";
import { permsOf, type Resolver, within } from "./paths.ts";
import { hardLinked } from "./policy.ts";
import { seccompProgram } from "./seccomp.ts";
import { fsKind, guardedEntries, type Lstat, type Mount, sandboxView } from "./view.ts";

/** Size of /dev/shm in every sandbox: POSIX shared memory for the job, not a second /tmp. */
export const SHM_BYTES = 64 * 1024 * 1024;
/** Size of the tmpfs covers that hide host paths: room for mountpoints, nothing else. */
const COVER_BYTES = 1024 * 1024;

/** Extra pieces of a bwrap plan: the seccomp program (bytes), or none. */
export interface BwrapExtras {
  seccomp?: Uint8Array | null;
  /** Host devices shown in the sandbox's /dev (the vm backend's /dev/kvm). */
  devices?: string[];
  /**
   * What runs in the sandbox instead of the job (the vm backend's QEMU): more arguments for bwrap
   * and the argv, given the fd allocator of the plan's inputs and the view.
   */
  wrap?: (fd: (input: PlanInput) => string, view: Mount[]) => { args: string[]; argv: string[] };
}

/**
 * The bwrap plan for a request, as a pure function of it (and of what exists). Everything but
 * the job's argv travels in an fd (`--args 3`): the job's environment and the host paths it binds
 * never show in a process listing. Bind sources are fds the supervisor opens and checks.
 */
export function bwrapPlan(
  req: PlanRequest,
  bwrap = "bwrap",
  kind: Lstat = fsKind,
  extras: BwrapExtras = {},
): {
  argv: string[];
  inputs: PlanInput[];
  guard: [string, string][];
  view: Mount[];
  planned: string[];
  nproc?: number;
} {
  const p = req.policy;
  const inputs: PlanInput[] = [];
  const fd = (input: PlanInput) => String(3 + inputs.push(input) - 1);
  const args: string[] = [];
  // fd 3 is the argument list itself: reserve it first.
  inputs.push({ data: new Uint8Array() });
  args.push("--unshare-user", "--disable-userns");
  args.push("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try");
  // Anything but the host's network gets its own namespace: an allow list reaches out only through
  // planter's egress proxy, and an unknown value fails closed.
  if (p.network !== "host") args.push("--unshare-net");
  args.push("--new-session", "--die-with-parent");
  args.push("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc");
  // Every writable tmpfs is capped: what a job keeps there is memory no RSS sample counts.
  for (const d of extras.devices ?? []) args.push("--dev-bind", d, d);
  args.push("--size", String(SHM_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev");
  args.push("--size", String(req.tmpBytes), "--tmpfs", "/tmp");
  // An agent job's report channel: its FIFO, the one thing of the job's dir it sees.
  if (req.agentReport) args.push("--bind-fd", fd({ path: req.agentReport }), REPORT_IN_SANDBOX);
  const covers: string[] = [];
  const view = sandboxView(req, kind);
  for (const m of view) {
    if (m.op === "bind") {
      args.push(m.write ? "--bind-fd" : "--ro-bind-fd", fd({ path: m.path }), m.path);
      // A bind of the cover's own path shadows it: remounting that path would hit the bind.
      const i = covers.indexOf(m.path);
      if (i >= 0) covers.splice(i, 1);
    } else if (m.kind === "dir") {
      args.push("--size", String(COVER_BYTES), "--tmpfs", m.path);
      covers.push(m.path);
    } else args.push("--ro-bind", "/dev/null", m.path);
  }
  // Covers are read-only once everything under them is mounted: no writing into a hidden home.
  for (const c of covers) args.push("--remount-ro", c);
  const wrapped = extras.wrap?.(fd, view);
  if (wrapped) args.push(...wrapped.args);
  if (extras.seccomp) args.push("--seccomp", fd({ data: extras.seccomp }));
  // bwrap tells planterd the sandbox's pid and waits, before anything of the job runs, until
  // planterd has compared the sandbox's mounts with the plan (lib/sandbox/gate.ts) and, for a
  // network allow list, made the proxy's listeners in its namespace (lib/net/listen.ts). The block
  // pipe's second write end (--sync-fd: kept by bwrap's init, closed by the job's process) keeps
  // it waiting if planterd is gone before it answers: never on unchecked.
  args.push("--info-fd", fd({ pipe: "info" }), "--block-fd", fd({ pipe: "block" }), "--sync-fd", fd({ pipe: "hold" }));
  const planned = plannedMounts(args);
  // The job's environment and nothing else (bwrap adds PWD, the --chdir). bwrap applies --setenv
  // in its own process as it parses these arguments, but execs nothing before the job's program
  // (the process limit is set from outside: gate.ts), so an LD_PRELOAD of the job's loads nowhere
  // else, and nothing of the job's runs before the gate let it go.
  args.push("--clearenv");
  for (const [k, v] of Object.entries(req.env)) {
    if (!SH_NAME.test(k))
      throw new Error(`bwrap plan: environment variable name ${JSON.stringify(k)} is no shell name`);
    args.push("--setenv", k, v);
  }
  args.push("--chdir", req.cwd);
  // One argument per NUL-ended string: an argument holding a NUL would end early and hand bwrap
  // what follows as options of its own (a value "x\0--bind\0/\0/mnt"). The API refuses NUL in
  // every string; this is the last place it could cross, so it is refused here too.
  const nul = args.find((a) => a.includes("\0"));
  if (nul !== undefined)
    throw new Error(`bwrap plan: an argument holds a NUL byte: ${JSON.stringify(nul.slice(0, 80))}`);
  inputs[0] = { data: new TextEncoder().encode(args.map((a) => `${a}\0`).join("")) };
  // The process limit (req.nproc) is set by the gate on the sandbox's first process, from outside,
  // while it waits (gate.ts): after bwrap made the user namespace, where the kernel counts the
  // job's own tasks only, and before anything runs with the job's environment. (A prlimit run
  // first inside the sandbox ran with it: an LD_PRELOAD of the job's ran its code before the limit.)
  const argv = wrapped?.argv ?? req.argv;
  return {
    argv: [bwrap, "--args", "3", "--", ...argv],
    inputs,
    guard: guardedEntries(view),
    view,
    planned,
    ...(req.nproc !== undefined ? { nproc: req.nproc } : {}),
  };
}

/** What a variable's name may be (the API admits no other): a name past it is refused, never dropped. */
const SH_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A path as /proc/self/mountinfo writes it: space, tab, newline and backslash in octal. */
export const mountinfoPath = (p: string) =>
  p.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);

/** bwrap options that take this many values and mount nothing (as of bubblewrap 0.8). */
const NO_MOUNT: Record<string, number> = {
  "--unshare-user": 0,
  "--disable-userns": 0,
  "--unshare-pid": 0,
  "--unshare-ipc": 0,
  "--unshare-uts": 0,
  "--unshare-cgroup-try": 0,
  "--unshare-net": 0,
  "--new-session": 0,
  "--die-with-parent": 0,
  "--size": 1,
  "--seccomp": 1,
  "--info-fd": 1,
  "--block-fd": 1,
  "--sync-fd": 1,
  "--perms": 1,
  "--dir": 1,
  "--file": 2,
  "--symlink": 2,
  "--chmod": 2,
};
/** bwrap options that mount at their last value: how many values, and whether it is read-only. */
const MOUNTS: Record<string, [values: number, ro: boolean]> = {
  "--ro-bind": [2, true],
  "--bind": [2, false],
  "--dev-bind": [2, false],
  "--ro-bind-fd": [2, true],
  "--bind-fd": [2, false],
  "--tmpfs": [1, false],
  "--dev": [1, false],
  "--proc": [1, false],
};

/**
 * The mounts a bwrap argument list makes, as the gate (gate.ts) reads them from the sandbox's
 * mountinfo: `PATH ro` or `PATH rw` (the mode each ends with: `--remount-ro` makes the last one at
 * its path read-only). An option not known here throws: the gate must never be blind to a mount.
 */
export function plannedMounts(args: readonly string[]): string[] {
  const out: [path: string, ro: boolean][] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    const skip = NO_MOUNT[a];
    if (skip !== undefined) {
      i += skip;
      continue;
    }
    if (a === "--remount-ro") {
      const path = args[++i] as string;
      const last = out.findLast(([p]) => p === path);
      if (!last) throw new Error(`bwrap plan: --remount-ro ${path} with nothing mounted there`);
      last[1] = true;
      continue;
    }
    const m = MOUNTS[a];
    if (!m) throw new Error(`bwrap plan: the gate does not know ${a}`);
    i += m[0];
    out.push([args[i] as string, m[1]]);
  }
  return out.map(([p, ro]) => `${mountinfoPath(p)} ${ro ? "ro" : "rw"}`);
}

/**
 * Where the host keeps Unix sockets of its daemons: the runtime dirs (systemd, D-Bus, Docker,
 * containerd, Podman, libvirt, snapd, every user's XDG_RUNTIME_DIR under /run/user) and LXD's and
 * Incus's sockets, which give root. A job whose policy lists unix_sockets has AF_UNIX at all: every
 * socket found here that it could connect to is covered, but the listed ones. A socket elsewhere in
 * the read-only view (or in the cell dir) stays reachable (README).
 */
export const SOCKET_ROOTS = ["/run", "/var/run", "/var/lib/lxd", "/var/snap/lxd/common/lxd", "/var/lib/incus"];

/** Entries the socket walk reads before it refuses the job (a /run holds tens to hundreds). */
const SOCKET_WALK_LIMIT = 20_000;
/** Entries of one directory others may write that the walk reads (beyond: a socket there stays reachable). */
const OPEN_DIR_LIMIT = 1000;

/**
 * The Unix socket files under SOCKET_ROOTS that `identity` (null: this process's user) could connect
 * to: every directory on the way searchable by it, the socket writable by it. Symlinks are never
 * followed (a root that is one, like /var/run → /run, is walked where it points). Only directories
 * of root and of the job's user are walked, and of one others may write only the first entries, so
 * another local user cannot make the walk fail (or a socket there stays reachable: README).
 */
export function hostSockets(identity: Identity | null, roots: readonly string[] = SOCKET_ROOTS): string[] {
  const who: Resolver = identity ?? {
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    groups: process.getgroups?.() ?? [],
  };
  const found: string[] = [];
  const walk = { entries: 0, roots };
  const stack = [...new Set(roots.map(realOrNull).filter((r): r is string => r !== null))];
  for (let dir = stack.pop(); dir !== undefined; dir = stack.pop()) {
    for (const e of socketDirEntries(dir, who, walk)) {
      // Only root's directories and the job's user's own are walked: another user could fill theirs.
      if (e.st.isDirectory()) {
        if (e.st.uid === 0 || e.st.uid === who.uid) stack.push(e.path);
      } else if (e.st.isSocket() && permsOf(e.st, who) & 2) found.push(e.path);
    }
  }
  return found.sort();
}

function realOrNull(p: string): string | null {
  try {
    return realpathSync(p);
  } catch {
    return null; // not on this host
  }
}

/**
 * The entries of one directory of the socket walk (none when `who` cannot search it), counted
 * against SOCKET_WALK_LIMIT. A directory every user may write (/run/lock) could be filled to make
 * every such job fail: its entries past OPEN_DIR_LIMIT are not looked at, nor counted.
 */
function socketDirEntries(
  dir: string,
  who: Resolver,
  walk: { entries: number; roots: readonly string[] },
): { path: string; st: Stats }[] {
  let st: Stats;
  let names: string[];
  try {
    st = lstatSync(dir);
    if (!st.isDirectory() || !(permsOf(st, who) & 1)) return [];
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const open = (st.mode & 0o002) !== 0;
  if (open) names = names.slice(0, OPEN_DIR_LIMIT);
  else walk.entries += names.length;
  if (walk.entries > SOCKET_WALK_LIMIT) {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      `more than ${SOCKET_WALK_LIMIT} entries under ${walk.roots.join(", ")}: planter cannot find the host's Unix sockets to hide them from a job whose policy lists unix_sockets`,
      { hint: "run the job without unix_sockets" },
    );
  }
  const out: { path: string; st: Stats }[] = [];
  for (const name of names) {
    const path = `${dir === "/" ? "" : dir}/${name}`;
    try {
      out.push({ path, st: lstatSync(path) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * What to cover so that none of `sockets` is reachable: the directory holding each (an empty one
 * in the sandbox; what else it holds is a runtime dir's, no job's business), or the socket file
 * itself when it lies directly in a root (/run holds far more than sockets). Nested ones are left
 * to the outer cover.
 */
export function socketCovers(
  sockets: string[],
  roots: readonly string[] = SOCKET_ROOTS.map((r) => {
    try {
      return realpathSync(r);
    } catch {
      return r;
    }
  }),
): { path: string; kind: "dir" | "file" }[] {
  const covers = new Map<string, "dir" | "file">();
  for (const s of sockets) {
    const parent = dirname(s);
    if (roots.includes(parent)) covers.set(s, "file");
    else covers.set(parent, "dir");
  }
  const dirs = [...covers].filter(([, k]) => k === "dir").map(([p]) => p);
  return [...covers]
    .filter(([p]) => !dirs.some((d) => d !== p && within(p, d)))
    .map(([path, kind]) => ({ path, kind }))
    .sort((a, b) => a.path.localeCompare(b.path));
}

/** Entries of one credential dir the hard-link check reads (a browser profile holds tens of thousands). */
const CREDENTIAL_WALK_LIMIT = 2000;

/**
 * A covered credential the job could still open by another name: a file (or a file in a credential
 * dir, up to CREDENTIAL_WALK_LIMIT entries) with other hard links. Checked only where a policy shows
 * a home (a cover exists); a link elsewhere in the shown tree would bypass the cover.
 */
export function linkedCredential(view: Mount[]): { path: string; why: string } | null {
  for (const m of view) {
    if (m.op !== "hide" || m.why !== "credential") continue;
    let why: string | null;
    try {
      why = hardLinked(m.path, CREDENTIAL_WALK_LIMIT, "pass");
    } catch {
      why = null;
    }
    if (why) return { path: m.path, why };
  }
  return null;
}

/** The bwrap argument list of a plan as text (what `sandbox render` shows). */
export function renderArgs(plan: { argv: string[]; inputs: PlanInput[] }): string[] {
  const first = plan.inputs[0];
  const args = first && "data" in first ? new TextDecoder().decode(first.data).split("\0").slice(0, -1) : [];
  const named = args.map((a, i) => {
    const prev = args[i - 1];
    if (prev === "--bind-fd" || prev === "--ro-bind-fd" || prev === "--seccomp") {
      const input = plan.inputs[Number(a) - 3];
      return input && "path" in input
        ? `${a}=${input.path}`
        : `${a}=<${input && "data" in input ? input.data.length : 0} bytes>`;
    }
    if (prev === "--info-fd" || prev === "--block-fd" || prev === "--sync-fd") return `${a}=<pipe to planterd>`;
    return a;
  });
  const rest = plan.argv.slice(3);
  return [plan.argv[0] as string, ...named, ...rest];
}

/** Classify why bwrap could not start, with the fix. */
export function bwrapFailure(
  stderr: string,
  env: { restrictFile?: string } = {},
): { message: string; hint: string; userns: string } {
  const restrict = env.restrictFile ?? "/proc/sys/kernel/apparmor_restrict_unprivileged_userns";
  let restricted = false;
  try {
    restricted = readFileSync(restrict, "utf8").trim() === "1";
  } catch {
    restricted = false;
  }
  const text = stderr.trim().split("\n").slice(-1)[0] ?? "";
  if (restricted) {
    return {
      message: `bubblewrap cannot create namespaces: AppArmor restricts unprivileged user namespaces (${text})`,
      hint: "on Ubuntu 24.04+, allow bwrap with an AppArmor profile (see docs/sandbox.md), or: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0",
      userns: "restricted (AppArmor)",
    };
  }
  if (/namespace|uid map|Operation not permitted|Permission denied/i.test(text)) {
    return {
      message: `bubblewrap cannot create namespaces: user namespaces are disabled (${text})`,
      hint: "enable them: sudo sysctl kernel.unprivileged_userns_clone=1 (Debian) or raise user.max_user_namespaces",
      userns: "disabled",
    };
  }
  return {
    message: `bubblewrap failed: ${text || "no output"}`,
    hint: "run `planter sandbox check` for details",
    userns: "unknown",
  };
}

/** The install command for bubblewrap with this host's package manager. */
export function installHint(): string {
  const managers: [string, string][] = [
    ["apt-get", "sudo apt-get install bubblewrap"],
    ["dnf", "sudo dnf install bubblewrap"],
    ["pacman", "sudo pacman -S bubblewrap"],
    ["zypper", "sudo zypper install bubblewrap"],
    ["apk", "sudo apk add bubblewrap"],
  ];
  const system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const [bin, cmd] of managers) if (Bun.which(bin, { PATH: system })) return `install it: ${cmd}`;
  return "install bubblewrap with your package manager";
}

export class BwrapBackend implements Backend {
  readonly name = "bwrap";
  constructor(private readonly path: string | null = Bun.which("bwrap")) {}

  async probe(): Promise<Probe> {
    if (!this.path)
      return {
        ok: false,
        message: "bubblewrap (bwrap) is not installed or not on PATH",
        hint: installHint(),
        userns: "n/a",
      };
    // Both runs are awaited, not run synchronously: planterd opens its state meanwhile.
    const versionRun = run([this.path, "--version"]);
    // Probe the way jobs run: as an unprivileged user in a user namespace of its own (as root,
    // through setpriv as nobody), so a host that forbids those fails here, not in every job.
    let asUser: string[] = [];
    try {
      if (process.getuid?.() === 0)
        asUser = dropArgv({ uid: 65534, gid: 65534, groups: [], user: "nobody", home: null });
    } catch (e) {
      const pe = e as PlanterError;
      const version = (await versionRun).stdout.trim();
      return { ok: false, version, message: pe.message, hint: pe.hint, userns: "unknown" };
    }
    const [v, t] = await Promise.all([
      versionRun,
      run(
        [
          ...asUser,
          this.path,
          "--unshare-user",
          "--ro-bind",
          "/",
          "/",
          "--dev",
          "/dev",
          "--proc",
          "/proc",
          "--unshare-pid",
          "--unshare-net",
          "--",
          "/bin/true",
        ],
        HOST_ENV,
      ),
    ]);
    const version = v.stdout.trim();
    if (t.code === 0) return { ok: true, version, userns: "enabled" };
    const f = bwrapFailure(t.stderr);
    return { ok: false, version, message: f.message, hint: f.hint, userns: f.userns };
  }

  plan(req: PlanRequest): SpawnPlan {
    if (!this.path)
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", "bubblewrap (bwrap) is not installed", { hint: installHint() });
    if (!existsSync(req.cellDir))
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `cell dir ${req.cellDir} does not exist`);
    const allowUnix = req.policy.unix_sockets.length > 0;
    const seccomp = seccompProgram({ allowUnixSockets: allowUnix });
    if (allowUnix) {
      const others = hostSockets(req.identity).filter((x) => !req.policy.unix_sockets.includes(x));
      req = { ...req, socketCovers: socketCovers(others) };
    }
    const plan = bwrapPlan(req, this.path, fsKind, { seccomp });
    const linked = linkedCredential(plan.view);
    if (linked) {
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `credential ${linked.path} cannot be hidden: ${linked.why}`, {
        hint: `the job's policy shows the home it lies in; remove the other link (find / -xdev -samefile ${linked.path}), or name the credential in the policy's read_only if the job may read it`,
      });
    }
    return { ...spawnPlanOf(plan), egress: Boolean(req.egress) && req.policy.network !== "host" };
  }
}

/**
 * The spawn plan of a bwrap plan (the bwrap and vm backends'): bwrap starts in / with no
 * environment of the job's (it takes it as --setenv in its args fd), its pipes, the guard, the
 * gate's view and process limit.
 */
export function spawnPlanOf(plan: ReturnType<typeof bwrapPlan>): SpawnPlan {
  return {
    argv: plan.argv,
    env: HOST_ENV,
    cwd: "/",
    inputs: plan.inputs,
    pipes: true,
    guard: plan.guard,
    planned: plan.planned,
    ...(plan.nproc !== undefined ? { nproc: plan.nproc } : {}),
  };
}

/** Run a program to its end; its exit code and output. */
async function run(
  argv: string[],
  env?: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env });
  const [code, stdout, stderr] = await Promise.all([
    p.exited,
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
  ]);
  return { code, stdout, stderr };
}
