/** Where planter keeps its state, socket and config, per mode and platform (PRODUCT.md "Paths"). */
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { PlanterError } from "./api/errors.ts";

export type InstallMode = "user" | "system";

export interface Paths {
  mode: InstallMode;
  stateDir: string;
  socketPath: string;
  configPath: string;
}

type Env = Record<string, string | undefined>;

/** Longest path a Unix socket address can hold (sun_path, 108 on Linux, 104 on macOS). */
export const SOCKET_PATH_MAX = process.platform === "darwin" ? 103 : 107;

/** The install mode: PLANTER_MODE, else system for root on Linux, else user. */
export function installMode(
  env: Env = process.env,
  uid = process.getuid?.() ?? 1000,
  platform = process.platform,
): InstallMode {
  const m = env.PLANTER_MODE;
  if (m === "user" || m === "system") return m;
  if (m) throw new PlanterError("E_USAGE", `PLANTER_MODE must be "user" or "system", not ${JSON.stringify(m)}`);
  return uid === 0 && platform === "linux" ? "system" : "user";
}

/**
 * Resolve every path. PLANTER_HOME moves all of them (tests); PLANTER_STATE, PLANTER_SOCKET
 * and PLANTER_CONFIG move one each.
 */
export function resolvePaths(
  env: Env = process.env,
  platform = process.platform,
  uid = process.getuid?.() ?? 1000,
): Paths {
  const mode = installMode(env, uid, platform);
  const home = env.HOME || homedir();
  let stateDir: string;
  let socketPath: string;
  let configPath: string;
  if (env.PLANTER_HOME) {
    stateDir = join(env.PLANTER_HOME, "state");
    socketPath = join(env.PLANTER_HOME, "run", "planterd.sock");
    configPath = join(env.PLANTER_HOME, "config.toml");
  } else if (platform === "darwin") {
    stateDir = join(home, "Library", "Application Support", "planter");
    socketPath = join(stateDir, "planterd.sock");
    configPath = join(stateDir, "config.toml");
  } else if (mode === "system") {
    stateDir = "/var/lib/planter";
    socketPath = "/run/planter/planterd.sock";
    configPath = "/etc/planter/config.toml";
  } else {
    stateDir = join(env.XDG_STATE_HOME || join(home, ".local", "state"), "planter");
    const runtime = env.XDG_RUNTIME_DIR || join(stateDir, "run");
    socketPath = join(runtime, "planter", "planterd.sock");
    configPath = join(env.XDG_CONFIG_HOME || join(home, ".config"), "planter", "config.toml");
  }
  if (env.PLANTER_STATE) stateDir = env.PLANTER_STATE;
  if (env.PLANTER_SOCKET) socketPath = env.PLANTER_SOCKET;
  if (env.PLANTER_CONFIG) configPath = env.PLANTER_CONFIG;
  return { mode, stateDir, socketPath, configPath };
}

/** Paths of the files inside a state dir. */
export const stateFiles = (stateDir: string) => ({
  db: join(stateDir, "planter.db"),
  jobs: join(stateDir, "jobs"),
  cells: join(stateDir, "cells"),
  pidFile: join(stateDir, "planterd.pid"),
});

/** Directory holding one job's logs and exit status. */
export const jobDir = (stateDir: string, id: string) => join(stateDir, "jobs", id);

export const socketDir = (socketPath: string) => dirname(socketPath);
