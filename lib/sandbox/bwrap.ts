/** The bubblewrap backend (Linux): read-only host, private /tmp, /proc and pid namespace, planter hidden. */
import { existsSync, readFileSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";
import type { Backend, PlanInput, PlanRequest, Probe, SpawnPlan } from "./backend.ts";
import { HOST_ENV } from "./env.ts";
import { dropArgv } from "./identity.ts";
import { seccompProgram } from "./seccomp.ts";
import { fsKind, guardedEntries, type Lstat, sandboxView } from "./view.ts";

/** Size of /dev/shm in every sandbox: POSIX shared memory for the job, not a second /tmp. */
export const SHM_BYTES = 64 * 1024 * 1024;
/** Size of the tmpfs covers that hide host paths: room for mountpoints, nothing else. */
const COVER_BYTES = 1024 * 1024;

/** Extra pieces of a bwrap plan: the seccomp program (bytes), or none. */
export interface BwrapExtras {
  seccomp?: Uint8Array | null;
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
): { argv: string[]; inputs: PlanInput[]; guard: [string, string][] } {
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
  args.push("--size", String(SHM_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev");
  args.push("--size", String(req.tmpBytes), "--tmpfs", "/tmp");
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
  if (extras.seccomp) args.push("--seccomp", fd({ data: extras.seccomp }));
  args.push("--clearenv");
  for (const [k, v] of Object.entries(req.env)) args.push("--setenv", k, v);
  args.push("--chdir", req.cwd);
  inputs[0] = { data: new TextEncoder().encode(args.map((a) => `${a}\0`).join("")) };
  // The process limit, set after bwrap made the user namespace: there the kernel counts the job's
  // own tasks only (set before, it would count every process of the uid on the host).
  const limit = req.nproc !== undefined ? [PRLIMIT, `--nproc=${req.nproc}:${req.nproc}`, "--"] : [];
  return { argv: [bwrap, "--args", "3", "--", ...limit, ...req.argv], inputs, guard: guardedEntries(view) };
}

/** util-linux's prlimit, run inside the sandbox (the host's /usr is visible read-only there). */
export const PRLIMIT = "/usr/bin/prlimit";

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
    return a;
  });
  return [plan.argv[0] as string, ...named, ...plan.argv.slice(3)];
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
    const seccomp = seccompProgram({ allowUnixSockets: req.policy.unix_sockets.length > 0 });
    const plan = bwrapPlan(req, this.path, fsKind, { seccomp });
    // bwrap starts with no environment of the job's (it is set inside with --setenv) in /.
    return { argv: plan.argv, env: HOST_ENV, cwd: "/", inputs: plan.inputs, pipes: true, guard: plan.guard };
  }
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
