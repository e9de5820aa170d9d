/**
 * launchd (macOS): the user agent's plist rendered by a pure function (tested as literal text),
 * and the one wrapper through which planter calls `launchctl`.
 */
import { join } from "node:path";
import { type Env, exec, type Run } from "./exec.ts";

/** The agent's label, and the plist's file name. */
export const LABEL = "dev.planter.planterd";

export interface PlistParams {
  label: string;
  /** The installed binary. */
  binary: string;
  configPath: string;
  socketPath: string;
  stateDir: string;
  /** stdout and stderr of planterd. */
  logPath: string;
}

/** PATH of planterd under launchd (whose default is /usr/bin:/bin:/usr/sbin:/sbin): Homebrew first. */
export const AGENT_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/** XML text with the five predefined entities escaped. */
export function xmlEscape(s: string): string {
  return s
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&apos;");
}

const str = (s: string, indent: string) => `${indent}<string>${xmlEscape(s)}</string>`;
const key = (k: string, indent = "\t") => `${indent}<key>${xmlEscape(k)}</key>`;

/**
 * ~/Library/LaunchAgents/dev.planter.planterd.plist: started at login and kept alive.
 * AbandonProcessGroup is launchd's KillMode=process: jobs run in their own sessions and must
 * outlive a planterd that launchd stops or restarts.
 */
export function renderPlist(p: PlistParams): string {
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    "<dict>",
    key("Label"),
    str(p.label, "\t"),
    key("ProgramArguments"),
    "\t<array>",
    ...[p.binary, "daemon", "--config", p.configPath].map((a) => str(a, "\t\t")),
    "\t</array>",
    key("EnvironmentVariables"),
    "\t<dict>",
    // launchd's own PATH lacks Homebrew; jobs inherit planterd's PATH (jobs.env_pass).
    key("PATH", "\t\t"),
    str(AGENT_PATH, "\t\t"),
    key("PLANTER_MODE", "\t\t"),
    str("user", "\t\t"),
    key("PLANTER_SOCKET", "\t\t"),
    str(p.socketPath, "\t\t"),
    key("PLANTER_STATE", "\t\t"),
    str(p.stateDir, "\t\t"),
    "\t</dict>",
    key("RunAtLoad"),
    "\t<true/>",
    key("KeepAlive"),
    "\t<true/>",
    key("AbandonProcessGroup"),
    "\t<true/>",
    key("ProcessType"),
    str("Background", "\t"),
    key("StandardOutPath"),
    str(p.logPath, "\t"),
    key("StandardErrorPath"),
    str(p.logPath, "\t"),
    "</dict>",
    "</plist>",
    "",
  ];
  return lines.join("\n");
}

/** Where the user agent's plist lives. */
export const agentPlistPath = (home: string, label = LABEL) => join(home, "Library", "LaunchAgents", `${label}.plist`);

/** The per-user GUI domain launchd loads agents into. */
export const guiDomain = (uid: number) => `gui/${uid}`;

/** The service target of the agent in that domain. */
export const serviceTarget = (uid: number, label = LABEL) => `${guiDomain(uid)}/${label}`;

/**
 * The one place planter calls `launchctl` (PATH lookup in `env`, so tests put a recording shim
 * first; on a Mac it is /bin/launchctl).
 */
function launchctl(env: Env, ...args: string[]): Promise<Run> {
  return exec("launchctl", args, { env, nothrow: true });
}

/** `launchctl bootstrap gui/<uid> <plist>`: load the agent (RunAtLoad starts planterd). */
export const bootstrap = (uid: number, plistPath: string, env: Env = {}) =>
  launchctl(env, "bootstrap", guiDomain(uid), plistPath);

/** `launchctl bootout gui/<uid>/<label>`: stop planterd (SIGTERM; jobs keep running) and unload the agent. */
export const bootout = (uid: number, label = LABEL, env: Env = {}) =>
  launchctl(env, "bootout", serviceTarget(uid, label));

/** `launchctl print gui/<uid>/<label>`: exit 0 and the service's description while it is loaded. */
export const print = (uid: number, label = LABEL, env: Env = {}) => launchctl(env, "print", serviceTarget(uid, label));

/** What `launchctl print` says about a loaded service. */
export interface AgentStatus {
  /** "running", "not running", "spawn scheduled"… */
  state: string | null;
  pid: number | null;
  /** "(never exited)", "1", "(signal 9)"… */
  lastExit: string | null;
  /** The plist launchd loaded the service from. */
  path: string | null;
}

/** Parse `launchctl print` output (pure): the service block's own `key = value` lines only. */
export function parsePrint(stdout: string): AgentStatus {
  const top = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    // One tab: the service's own keys; deeper lines belong to nested blocks (arguments, endpoints…).
    const m = /^\t([a-z][a-z ]*?) = (.*)$/.exec(line);
    if (m && !top.has(m[1] as string)) top.set(m[1] as string, (m[2] as string).trim());
  }
  const pid = Number(top.get("pid"));
  return {
    state: top.get("state") ?? null,
    pid: Number.isInteger(pid) && pid > 0 ? pid : null,
    lastExit: top.get("last exit code") ?? null,
    path: top.get("path") ?? null,
  };
}

/** launchctl's answer for a service that is not loaded (113: "Could not find service"). */
export const notLoaded = (r: Run) =>
  r.code === 113 || /could not find service|no such process|not find/i.test(`${r.stderr}${r.stdout}`);

/**
 * Boot the agent out and wait until launchd no longer knows it (bootout may return while the
 * service is still being torn down, and a bootstrap then fails with "Input/output error").
 * Returns the bootout result; a service that was not loaded is not an error.
 */
export async function bootoutAndWait(uid: number, waitMs: number, env: Env = {}): Promise<Run> {
  const r = await bootout(uid, LABEL, env);
  if (r.code !== 0 && !notLoaded(r)) return r;
  const deadline = Date.now() + waitMs;
  while ((await print(uid, LABEL, env)).code === 0) {
    if (Date.now() > deadline)
      return { code: 1, stdout: "", stderr: `${serviceTarget(uid)} is still loaded ${waitMs} ms after bootout` };
    await Bun.sleep(25);
  }
  return { code: 0, stdout: r.stdout, stderr: "" };
}

/** Start/stop/restart commands for fixes, when launchd manages planterd. */
export function launchdCommands(uid: number, plistPath: string, quote: (argv: string[]) => string) {
  const target = serviceTarget(uid);
  return {
    start: `launchctl bootstrap ${guiDomain(uid)} ${quote([plistPath])}`,
    stop: `launchctl bootout ${target}`,
    restart: `launchctl kickstart -k ${target}`,
  };
}
