/**
 * What every check knows: paths (as planterd resolves them), the config (or why it is bad),
 * whether systemd runs here, the version to compare the daemon with, and the commands a fix
 * should say to start or restart planterd on this host. Everything a test needs to vary is a
 * field, filled from the host by default.
 */
import { accessSync, constants, existsSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { shellLine } from "../cli/output.ts";
import { type Config, loadConfig } from "../config.ts";
import { type InstallState, installStatePath, readInstallState } from "../host/install-state.ts";
import { agentPlistPath, launchdCommands } from "../host/launchd.ts";
import { systemdRunning } from "../host/systemd.ts";
import { type Paths, resolvePaths, stateFiles } from "../paths.ts";
import { SANDBOX_EXEC } from "../sandbox/seatbelt.ts";
import { BUILD } from "../version.ts";

type Env = Record<string, string | undefined>;

/** The config file: valid (maybe absent: all defaults), or the error that makes it unusable. */
export type ConfigState = { ok: true; config: Config; exists: boolean } | { ok: false; error: PlanterError };

/** install-state.json: absent (not installed with `install`), valid, or unreadable. */
export type InstallStateInfo =
  | {
      found: false;
      path: string /** The state dir cannot be read by this user (system mode without sudo). */;
      denied?: boolean;
    }
  | { found: true; path: string; state: InstallState }
  | { found: true; path: string; error: PlanterError };

/** The version a daemon is compared with. */
export interface Expected {
  version: string;
  commit: string;
}

/** Commands a fix names, right for this host (systemd units or a daemon started directly). */
export interface Commands {
  /** How to run planter: `planter`, the compiled binary's path, or `bun …/scripts/planter.ts`. */
  planter: string;
  start: string;
  stop: string;
  restart: string;
  /** `systemctl --user` or `sudo systemctl` or `systemctl`, for this mode. */
  systemctl: string;
  /** "sudo " when a system-mode fix needs root and doctor does not run as root, else "". */
  sudo: string;
}

export interface DoctorContext {
  env: Env;
  paths: Paths;
  config: ConfigState;
  install: InstallStateInfo;
  /** systemd runs as init here, so planterd's units can be used. */
  systemd: boolean;
  expected: Expected;
  uid: number;
  platform: NodeJS.Platform;
  /** /etc/group and /etc/passwd (tests hand in their own). */
  groupFile: string;
  passwdFile: string;
  commands: Commands;
  /** Per-check timeout; probes with their own deadline (API calls) use it too. */
  timeoutMs: number;
  /** macOS: the sandbox-exec planterd runs (tests hand in a shim). */
  sandboxExec: string;
}

/** What a caller may set; the rest comes from the host. */
export interface ContextOptions {
  env?: Env;
  /** --socket */
  socket?: string;
  systemd?: boolean;
  expected?: Expected;
  uid?: number;
  platform?: NodeJS.Platform;
  groupFile?: string;
  passwdFile?: string;
  timeoutMs?: number;
  sandboxExec?: string;
}

/** Read the config; a bad one is data for the `config` check, not a crash. */
export function readConfig(path: string): ConfigState {
  try {
    return { ok: true, config: loadConfig(path), exists: existsSync(path) };
  } catch (e) {
    if (e instanceof PlanterError) return { ok: false, error: e };
    return { ok: false, error: new PlanterError("E_CONFIG", `cannot read config ${path}: ${(e as Error).message}`) };
  }
}

/**
 * Paths the way planterd resolves them (lib/daemon/main.ts `daemonPaths`): environment over the
 * config's [daemon] keys over the mode's defaults; --socket over everything.
 */
export function doctorPaths(
  env: Env,
  config: ConfigState,
  socket?: string,
  uid?: number,
  platform: NodeJS.Platform = process.platform,
): Paths {
  const base = resolvePaths(env, platform, uid);
  const daemon = config.ok ? config.config.daemon : {};
  const moved = (one: string | undefined) => Boolean(one || env.PLANTER_HOME);
  return {
    mode: base.mode,
    configPath: base.configPath,
    stateDir: moved(env.PLANTER_STATE) ? base.stateDir : (daemon.state_dir ?? base.stateDir),
    socketPath: socket || (moved(env.PLANTER_SOCKET) ? base.socketPath : (daemon.socket ?? base.socketPath)),
  };
}

function readInstall(stateDir: string): InstallStateInfo {
  const path = installStatePath(stateDir);
  try {
    accessSync(stateDir, constants.X_OK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EACCES") return { found: false, path, denied: true };
  }
  try {
    const state = readInstallState(path);
    return state ? { found: true, path, state } : { found: false, path };
  } catch (e) {
    const error =
      e instanceof PlanterError ? e : new PlanterError("E_STATE", `cannot read ${path}: ${(e as Error).message}`);
    return { found: true, path, error };
  }
}

const ROOT = join(import.meta.dir, "..", "..");

/** Variables that move planter's paths: a fix must act on the same paths doctor checked. */
const PATH_VARS = [
  "PLANTER_HOME",
  "PLANTER_MODE",
  "PLANTER_STATE",
  "PLANTER_SOCKET",
  "PLANTER_CONFIG",
  "PLANTER_STATE_DIR",
  // Not a path, but it decides the socket's layout; kept when set empty (no group).
  "PLANTER_GROUP",
];

/** True when running as a `bun build --compile` binary rather than from source. */
export const compiledBinary = () => Bun.main.startsWith("/$bunfs/") || Bun.main.startsWith("B:/~BUN/");

/**
 * How a person runs this very planter with doctor's path variables: the compiled binary (or
 * `planter` when that is it on PATH), or the source entry through bun; `env K=V …` in front
 * when variables moved the paths, so a fix copied into another shell acts on the same paths.
 */
export function planterCommand(env: Env = process.env): string {
  const vars = PATH_VARS.filter((k) => env[k] || (k === "PLANTER_GROUP" && env[k] === "")).map((k) => `${k}=${env[k]}`);
  const prefix = vars.length ? `${shellLine(["env", ...vars])} ` : "";
  if (!compiledBinary()) {
    const bun = Bun.which("bun", { PATH: env.PATH ?? "" });
    const runner = bun && safeReal(bun) === safeReal(process.execPath) ? "bun" : process.execPath;
    return prefix + shellLine([runner, join(ROOT, "scripts", "planter.ts")]);
  }
  const self = safeReal(process.execPath);
  const onPath = Bun.which("planter", { PATH: env.PATH ?? "" });
  return prefix + (onPath && safeReal(onPath) === self ? "planter" : shellLine([process.execPath]));
}

function safeReal(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** Start/stop/restart commands: systemd units when install set them up, else a direct daemon. */
export function commandsFor(o: {
  mode: Paths["mode"];
  uid: number;
  stateDir: string;
  planter: string;
  viaSystemd: boolean;
}): Commands {
  const sudo = o.mode === "system" && o.uid !== 0 ? "sudo " : "";
  const systemctl = o.mode === "user" ? "systemctl --user" : `${sudo}systemctl`;
  if (o.viaSystemd) {
    return {
      planter: o.planter,
      sudo,
      systemctl,
      start: `${systemctl} start planterd.socket`,
      stop: `${systemctl} stop planterd.socket planterd.service`,
      restart: `${systemctl} restart planterd.service`,
    };
  }
  const pidFile = stateFiles(o.stateDir).pidFile;
  const dir = shellLine([o.stateDir]);
  // Backgrounded, with its log in the state dir; under sudo the redirect must happen as root.
  const inner = `mkdir -p ${dir} && nohup ${o.planter} daemon >> ${shellLine([join(o.stateDir, "planterd.log")])} 2>&1 &`;
  const start = sudo ? `sudo sh -c ${shellLine([inner])}` : inner;
  // Stop waits for the exit: a new daemon refuses to start while the old one holds the state dir.
  const kill = `p=$(cut -d' ' -f1 ${shellLine([pidFile])} 2>/dev/null) && kill $p && while kill -0 $p 2>/dev/null; do sleep 0.1; done`;
  const stop = sudo ? `sudo sh -c ${shellLine([kill])}` : kill;
  return { planter: o.planter, sudo, systemctl, start, stop, restart: `${stop}; ${start}` };
}

/** Build the context from the host, with `opts` overriding what tests vary. */
export function createContext(opts: ContextOptions = {}): DoctorContext {
  const env = opts.env ?? process.env;
  const uid = opts.uid ?? process.getuid?.() ?? 1000;
  const platform = opts.platform ?? process.platform;
  const first = resolvePaths(env, platform, uid);
  const config = readConfig(first.configPath);
  const paths = doctorPaths(env, config, opts.socket, uid, platform);
  const install = readInstall(paths.stateDir);
  const systemd = opts.systemd ?? systemdRunning();
  // A system install is unit-based wherever systemd runs; a user who cannot read its record assumes so.
  const recorded = install.found && "state" in install ? install.state.daemon.managed_by === "systemd" : false;
  const viaSystemd = systemd && (recorded || (!install.found && install.denied === true));
  const commands = commandsFor({
    mode: paths.mode,
    uid,
    stateDir: paths.stateDir,
    planter: planterCommand(env),
    viaSystemd,
  });
  // macOS: a recorded launchd agent is started, stopped and restarted through launchctl.
  if (platform === "darwin" && install.found && "state" in install && install.state.daemon.managed_by === "launchd") {
    const plist = install.state.files.find((f) => f.kind === "plist")?.path ?? agentPlistPath(env.HOME || "~");
    Object.assign(commands, launchdCommands(uid, plist, shellLine));
  }
  return {
    env,
    paths,
    config,
    install,
    systemd,
    expected: opts.expected ?? { version: BUILD.version, commit: BUILD.commit },
    uid,
    platform,
    groupFile: opts.groupFile ?? "/etc/group",
    passwdFile: opts.passwdFile ?? "/etc/passwd",
    commands,
    timeoutMs: opts.timeoutMs ?? 3000,
    sandboxExec: opts.sandboxExec ?? SANDBOX_EXEC,
  };
}
