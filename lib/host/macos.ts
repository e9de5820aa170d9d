/**
 * install and uninstall on macOS: user mode only, planterd as a launchd user agent. install.ts
 * and uninstall.ts call these hooks when the platform is darwin; everything macOS-specific is
 * here and in launchd.ts. `sw_vers` and `uname` are called through their wrappers below.
 */
import { PlanterError } from "../api/errors.ts";
import type { InstallMode } from "../paths.ts";
import { describe, type Env, exec, type Run } from "./exec.ts";
import type { InstallState } from "./install-state.ts";
import {
  agentPlistPath,
  bootoutAndWait,
  bootstrap,
  guiDomain,
  LABEL,
  notLoaded,
  print,
  serviceTarget,
} from "./launchd.ts";

/** The one place planter calls `sw_vers`. */
function swVers(env: Env, ...args: string[]): Promise<Run> {
  return exec("sw_vers", args, { env, nothrow: true });
}

/** The one place planter calls `uname`. */
function uname(env: Env, ...args: string[]): Promise<Run> {
  return exec("uname", args, { env, nothrow: true });
}

/** macOS's product version (`sw_vers -productVersion`: "14.5"), or null. */
export async function productVersion(env: Env = {}): Promise<string | null> {
  const r = await swVers(env, "-productVersion");
  return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

/** The machine's architecture from `uname -m`, in Node's names (arm64, x64), or null. */
export async function machineArch(env: Env = {}): Promise<string | null> {
  const r = await uname(env, "-m");
  return r.code === 0 ? archName(r.stdout.trim()) : null;
}

/** `uname -m` → Node's arch names, as the release targets use them (darwin-arm64, darwin-x64). */
export function archName(machine: string): string | null {
  if (machine === "arm64" || machine === "aarch64") return "arm64";
  if (machine === "x86_64" || machine === "amd64") return "x64";
  return machine || null;
}

/** The platform block of install-state.json on macOS (os_release keys as on Linux). */
export async function macPlatform(env: Env, fallbackArch: string): Promise<InstallState["platform"]> {
  const [version, machine] = [await productVersion(env), await machineArch(env)];
  const brew = Bun.which("brew", { PATH: "/opt/homebrew/bin:/usr/local/bin" });
  return {
    os: "darwin",
    arch: machine ?? fallbackArch,
    os_release: version ? { id: "macos", version_id: version, pretty_name: `macOS ${version}` } : null,
    package_manager: brew ? "brew" : null,
    systemd: false,
  };
}

/** What install refuses on macOS: system mode, root, systemd units. */
export function refuseOnMac(o: { mode: InstallMode; uid: number; systemd?: string }): void {
  if (o.mode === "system")
    throw new PlanterError("E_USAGE", "system mode is not available on macOS: planterd runs as a launchd user agent", {
      hint: "install per user, without sudo: install --user",
    });
  if (o.uid === 0)
    throw new PlanterError("E_USAGE", "on macOS, install as the user who will run jobs, not as root", {
      hint: "run install without sudo: the agent is loaded into your login session (launchctl gui/<uid>)",
    });
  if (o.systemd === "yes")
    throw new PlanterError("E_USAGE", "--systemd yes: macOS has no systemd", {
      hint: "leave --systemd out: planterd runs under launchd",
    });
}

/** Plan lines of the launchd part. */
export function plannedAgent(o: { uid: number; plist: string; upgrade: boolean; staged: boolean }): [string, string][] {
  const steps: [string, string][] = [["plist", `write the launchd agent ${o.plist}`]];
  if (!o.staged)
    steps.push([
      "launchctl",
      `${o.upgrade ? `launchctl bootout ${serviceTarget(o.uid)}, then ` : ""}launchctl bootstrap ${guiDomain(o.uid)} ${o.plist}`,
    ]);
  return steps;
}

/**
 * Load the agent: a loaded one (an upgrade, or a leftover) is booted out first so that launchd
 * reads the new plist and runs the new binary. Throws with a hint when launchctl refuses.
 */
export async function loadAgent(uid: number, plist: string, waitMs: number, env: Env): Promise<void> {
  if ((await print(uid, LABEL, env)).code === 0) {
    const out = await bootoutAndWait(uid, waitMs, env);
    if (out.code !== 0)
      throw new PlanterError("E_UNAVAILABLE", describe("launchctl", ["bootout", serviceTarget(uid)], out), {
        hint: `see: launchctl print ${serviceTarget(uid)}`,
      });
  }
  const r = await bootstrap(uid, plist, env);
  if (r.code !== 0)
    throw new PlanterError("E_UNAVAILABLE", describe("launchctl", ["bootstrap", guiDomain(uid), plist], r), {
      hint: `check the plist (plutil -lint ${plist}) and that you are logged in to this Mac's GUI session (gui/${uid})`,
    });
}

/** Unload the agent; a failure is a warning (uninstall goes on with the files). */
export async function unloadAgent(uid: number, waitMs: number, env: Env): Promise<string | null> {
  const r = await bootoutAndWait(uid, waitMs, env);
  if (r.code === 0 || notLoaded(r)) return null;
  return `launchctl bootout ${serviceTarget(uid)} failed: ${r.stderr.trim() || `exit ${r.code}`}`;
}

export { agentPlistPath, LABEL };
