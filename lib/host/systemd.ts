/**
 * systemd: unit text rendered by pure functions (tested as literal text), and the one wrapper
 * through which planter calls `systemctl` (and `systemd-tmpfiles`).
 */
import { existsSync } from "node:fs";
import type { InstallMode } from "../paths.ts";
import { exec, type Run } from "./exec.ts";

export type { Run };

export interface UnitParams {
  mode: InstallMode;
  /** The installed binary. */
  binary: string;
  socketPath: string;
  configPath: string;
  stateDir: string;
  /** Group of the socket in system mode (null: root only). */
  group: string | null;
}

/** planterd.socket: systemd owns the listening socket and starts planterd on the first connection. */
export function renderSocketUnit(p: UnitParams): string {
  const system = p.mode === "system";
  const lines = [
    "[Unit]",
    "Description=planter daemon socket",
    "Documentation=https://github.com/planter/planter",
    "",
    "[Socket]",
    `ListenStream=${p.socketPath}`,
    `SocketMode=${system && p.group ? "0660" : "0600"}`,
    ...(system ? ["SocketUser=root", `SocketGroup=${p.group ?? "root"}`] : []),
    `DirectoryMode=${system && p.group ? "0750" : "0700"}`,
    "RemoveOnStop=yes",
    "",
    "[Install]",
    "WantedBy=sockets.target",
    "",
  ];
  return lines.join("\n");
}

/**
 * planterd.service: socket-activated, Type=simple. The hardening keeps what jobs and bubblewrap
 * need: no RestrictNamespaces, PrivateUsers, ProtectSystem or PrivateTmp (jobs inherit the
 * service's mount namespace, and bwrap must create user, pid, net and mount namespaces).
 */
export function renderServiceUnit(p: UnitParams): string {
  const system = p.mode === "system";
  const lines = [
    "[Unit]",
    "Description=planter daemon",
    "Documentation=https://github.com/planter/planter",
    "Requires=planterd.socket",
    "After=planterd.socket",
    "",
    "[Service]",
    "Type=simple",
    `ExecStart=${p.binary} daemon --config ${p.configPath}`,
    ...(system
      ? ["Environment=PLANTER_MODE=system", "StateDirectory=planter", "StateDirectoryMode=0700"]
      : ["Environment=PLANTER_MODE=user"]),
    `Environment=PLANTER_SOCKET=${p.socketPath}`,
    `Environment=PLANTER_STATE=${p.stateDir}`,
    // Jobs outlive the daemon: stopping planterd must not kill them.
    "KillMode=process",
    // A cgroup subtree of its own, so the limits monitor can put each job in a cgroup (memory.max, pids.max).
    "Delegate=yes",
    "Restart=on-failure",
    "RestartSec=1s",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectClock=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "",
    "[Install]",
    "Also=planterd.socket",
    "",
  ];
  return lines.join("\n");
}

/** tmpfiles.d entry: the system socket dir root:planter 0750, created at boot before the socket. */
export function renderTmpfiles(socketDir: string, group: string): string {
  return `# planter: the socket directory, reachable by group ${group} only\nd ${socketDir} 0750 root ${group} -\n`;
}

/**
 * The one place planter calls `systemctl` (PATH lookup, so tests put a recording shim first).
 * `scope` "user" adds --user. Never throws for a non-zero exit (the caller decides).
 */
export function systemctl(scope: InstallMode, ...args: string[]): Promise<Run> {
  return exec("systemctl", [...(scope === "user" ? ["--user"] : []), ...args], { nothrow: true });
}

/** `systemctl [--user] ARGS…`, thrown as E_UNAVAILABLE with systemctl's summary when it fails. */
export async function mustSystemctl(scope: InstallMode, ...args: string[]): Promise<void> {
  await exec("systemctl", [...(scope === "user" ? ["--user"] : []), ...args]);
}

/** `systemd-tmpfiles --create FILE`: make what a tmpfiles.d entry describes now rather than at the next boot. */
export async function tmpfilesCreate(file: string): Promise<void> {
  await exec("systemd-tmpfiles", ["--create", file]);
}

/** Whether systemd is running as init here (its runtime dir exists), so units can be used. */
export function systemdRunning(root = "/"): boolean {
  return existsSync(`${root === "/" ? "" : root}/run/systemd/system`);
}

/**
 * Whether `systemctl [--user] is-system-running` says a service manager answers: any state but
 * `offline` and `unknown` (systemctl prints those, or nothing but "Failed to connect to bus", where
 * no manager runs — a container, a chroot, a root shell without a user manager).
 */
export function managerAnswers(r: Run): boolean {
  const state = r.stdout.trim().split("\n")[0]?.trim() ?? "";
  return ["running", "degraded", "starting", "initializing", "maintenance"].includes(state);
}

/** Ask the mode's service manager whether it runs (through the systemctl wrapper, so tests' shims answer). */
export async function managerRunning(mode: InstallMode): Promise<boolean> {
  return managerAnswers(await systemctl(mode, "is-system-running"));
}

/**
 * How install sets up the units: "live" (systemctl enables and starts them now), "offline" (the
 * unit files and the `sockets.target.wants` link written as `systemctl enable` would, with no call
 * to the host's systemctl: a staging root, or `--systemd yes` where no manager runs, such as an
 * image build), or null (no units: planterd is started directly, or, staged, not at all).
 */
export function unitSetup(o: {
  systemd: "auto" | "yes" | "no";
  staged: boolean;
  running: boolean;
}): "live" | "offline" | null {
  if (o.systemd === "no") return null;
  if (o.staged) return "offline";
  if (o.running) return "live";
  return o.systemd === "yes" ? "offline" : null;
}

/** The link `systemctl enable planterd.socket` makes for the socket unit's WantedBy=sockets.target. */
export const wantsLink = (unitDir: string) => ({
  path: `${unitDir}/sockets.target.wants/planterd.socket`,
  target: `${unitDir}/planterd.socket`,
});
