/**
 * The Seatbelt backend (macOS): an SBPL profile rendered from the policy, run with
 * `/usr/bin/sandbox-exec -f PROFILE -- ARGV`. Deny by default; reads allowed; writes only where
 * the policy says; planter's state and socket denied. Never run on macOS from this repository's
 * CI: the profile is tested as literal text and the invocation through a recording shim.
 */
import { join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import type { Backend, PlanRequest, Probe, SpawnPlan } from "./backend.ts";
import { RC_FILES } from "./bwrap.ts";

export const SANDBOX_EXEC = "/usr/bin/sandbox-exec";

/** SBPL string literal. */
const lit = (s: string) => `"${s.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;

/** A path and its symlink-resolved variant: /tmp, /var and /etc live under /private on macOS. */
export function variants(path: string): string[] {
  const m = /^\/(tmp|var|etc)(\/.*)?$/.exec(path);
  return m ? [path, `/private${path}`] : [path];
}

const subpaths = (paths: string[]) => paths.flatMap(variants).map((p) => `(subpath ${lit(p)})`);
const literals = (paths: string[]) => paths.flatMap(variants).map((p) => `(literal ${lit(p)})`);

/** Render the SBPL profile for a request (pure). */
export function seatbeltProfile(req: PlanRequest): string {
  const p = req.policy;
  const writable = [...(p.fs_mode === "writable" ? [req.cellDir] : []), req.scratch, ...p.read_write];
  const lines = [
    "(version 1)",
    "(deny default)",
    "(allow process-exec)",
    "(allow process-fork)",
    "(allow signal (target same-sandbox))",
    "(allow sysctl-read)",
    "(allow mach-lookup)",
    "(allow ipc-posix-shm)",
    "(allow file-read*)",
    `(allow file-write* ${[...subpaths(writable), ...literals(["/dev/null", "/dev/tty", "/dev/zero", "/dev/dtracehelper"])].join(" ")})`,
    '(allow file-ioctl (literal "/dev/tty"))',
  ];
  if (p.network === "host") lines.push("(allow network*)");
  else lines.push('(allow network* (local unix-socket (path-regex #"^/private/var/folders/")))');
  const readOnly = [join(req.cellDir, ".git", "hooks"), join(req.cellDir, ".git", "config")];
  lines.push(
    `(deny file-write* ${[...subpaths(readOnly), ...literals(RC_FILES.map((f) => join(req.home, f)))].join(" ")})`,
  );
  if (p.fs_mode === "read_only") lines.push(`(deny file-write* ${subpaths([req.cellDir]).join(" ")})`);
  const denied = [...req.protect, ...p.deny];
  if (denied.length) lines.push(`(deny file-read* file-write* network* ${subpaths(denied).join(" ")})`);
  return `${lines.join("\n")}\n`;
}

export class SeatbeltBackend implements Backend {
  readonly name = "seatbelt";
  constructor(private readonly path: string = SANDBOX_EXEC) {}

  async probe(): Promise<Probe> {
    if (!Bun.which(this.path))
      return { ok: false, message: `${this.path} not found`, hint: "Seatbelt needs macOS", userns: "n/a" };
    const t = Bun.spawnSync([this.path, "-p", "(version 1)(allow default)", "--", "/usr/bin/true"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    if (t.exitCode === 0) return { ok: true, version: "macOS sandbox-exec", userns: "n/a" };
    return {
      ok: false,
      message: `sandbox-exec failed: ${t.stderr.toString().trim()}`,
      hint: "check that sandbox-exec works: sandbox-exec -p '(version 1)(allow default)' true",
      userns: "n/a",
    };
  }

  plan(req: PlanRequest): SpawnPlan {
    if (!Bun.which(this.path))
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `${this.path} not found`, { hint: "Seatbelt needs macOS" });
    const profile = join(req.jobDir, "sandbox.sb");
    return {
      argv: [this.path, "-f", profile, "--", ...req.argv],
      env: { ...req.env, TMPDIR: `${req.scratch}/` },
      cwd: req.cwd,
      files: [{ path: profile, content: seatbeltProfile(req) }],
      dirs: [req.scratch],
    };
  }
}
