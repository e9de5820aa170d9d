/** The bubblewrap backend (Linux): read-only host, private /tmp, /proc and pid namespace, planter hidden. */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import type { Backend, PlanRequest, Probe, SpawnPlan } from "./backend.ts";
import { within } from "./policy.ts";

/** Shell rc files that stay read-only even when the home dir is writable. */
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
];

type Exists = (p: string) => "dir" | "file" | null;
const fsExists: Exists = (p) => {
  try {
    return statSync(p).isDirectory() ? "dir" : "file";
  } catch {
    return null;
  }
};

/** Mount arguments that make `path` unreachable: an empty tmpfs over a dir, /dev/null over a file. */
function hide(path: string, kind: "dir" | "file" | null): string[] {
  if (kind === null) return [];
  return kind === "dir" ? ["--tmpfs", path] : ["--ro-bind", "/dev/null", path];
}

/**
 * The bwrap argv for a request, as a pure function of it (and of which paths exist).
 * Mount order matters: later mounts cover earlier ones.
 */
export function bwrapArgv(req: PlanRequest, bwrap = "bwrap", exists: Exists = fsExists): string[] {
  const p = req.policy;
  const a = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"];
  a.push("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try");
  if (p.network === "none") a.push("--unshare-net");
  a.push("--new-session", "--die-with-parent", "--cap-drop", "ALL");
  // planter's state and socket: hidden before anything is bound...
  for (const x of req.protect) a.push(...hide(x, exists(x)));
  const binds: string[] = [req.cellDir, ...p.read_write, ...p.read_only];
  a.push(p.fs_mode === "writable" ? "--bind" : "--ro-bind", req.cellDir, req.cellDir);
  for (const x of p.read_write) a.push("--bind", x, x);
  for (const x of p.read_only) a.push("--ro-bind", x, x);
  // ...and hidden again where a bind (a cell dir that contains them) exposed them.
  for (const x of req.protect) {
    if (binds.some((b) => within(x, b)) && !within(req.cellDir, x)) a.push(...hide(x, exists(x)));
  }
  const readOnly = [
    join(req.cellDir, ".git", "hooks"),
    join(req.cellDir, ".git", "config"),
    ...RC_FILES.map((f) => join(req.home, f)),
  ];
  for (const x of readOnly) if (exists(x)) a.push("--ro-bind", x, x);
  for (const x of p.deny) a.push(...hide(x, exists(x)));
  a.push("--clearenv");
  for (const [k, v] of Object.entries(req.env)) a.push("--setenv", k, v);
  a.push("--chdir", req.cwd, "--", ...req.argv);
  return a;
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
      hint: 'on Ubuntu 24.04+, allow bwrap with an AppArmor profile (see README "Sandbox"), or: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0',
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
    const version = Bun.spawnSync([this.path, "--version"], { stdout: "pipe", stderr: "pipe" })
      .stdout.toString()
      .trim();
    const t = Bun.spawnSync(
      [
        this.path,
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
      {
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    if (t.exitCode === 0) {
      return { ok: true, version, userns: process.getuid?.() === 0 ? "not needed (root)" : "enabled" };
    }
    const f = bwrapFailure(t.stderr.toString());
    return { ok: false, version, message: f.message, hint: f.hint, userns: f.userns };
  }

  plan(req: PlanRequest): SpawnPlan {
    if (!this.path)
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", "bubblewrap (bwrap) is not installed", { hint: installHint() });
    if (!existsSync(req.cellDir))
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `cell dir ${req.cellDir} does not exist`);
    // bwrap itself starts in the cell dir; the job's cwd is set inside with --chdir.
    return { argv: bwrapArgv(req, this.path), env: req.env, cwd: req.cellDir };
  }
}
