/**
 * The planterd a host install runs without a service manager: started directly (detached, its log in
 * the state dir), found by the lock it holds on its state dir, stopped with SIGTERM (its jobs keep
 * running), and asked whether it answers through its socket.
 */
import { openSync } from "node:fs";
import { basename, join } from "node:path";
import { Client } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import { ended, procStat, procText } from "../jobs/proc.ts";
import { type InstallMode, stateFiles } from "../paths.ts";
import { lockHolder } from "../state/lock.ts";

/** Start planterd detached from this process (hosts without systemd). */
export function startDirect(
  bin: string,
  t: { stateDir: string; configPath: string; socketPath: string },
  mode: InstallMode,
): number {
  const log = openSync(join(t.stateDir, "planterd.log"), "a", 0o600);
  const p = Bun.spawn([bin, "daemon", "--config", t.configPath], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/",
      PLANTER_MODE: mode,
      PLANTER_SOCKET: t.socketPath,
      PLANTER_STATE: t.stateDir,
    },
    stdin: "ignore",
    stdout: log,
    stderr: log,
    detached: true,
  });
  p.unref();
  return p.pid;
}

/** Stop a planterd (SIGTERM; jobs keep running) and wait for it to go; false when `pid` was no running planterd. */
export async function stopDirect(pid: number, ms = 10_000): Promise<boolean> {
  if (!isPlanterd(pid)) return false;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return false;
  }
  const deadline = Date.now() + ms;
  while (isPlanterd(pid) && Date.now() < deadline) await Bun.sleep(20);
  if (isPlanterd(pid))
    throw new PlanterError("E_UNAVAILABLE", `planterd (pid ${pid}) did not stop within ${ms} ms of SIGTERM`, {
      hint: `stop it by hand: kill -KILL ${pid} (its jobs keep running), then run this again`,
    });
  return true;
}

/** True when `pid` is a running planterd (its command line says `daemon`, or it runs as `planterd`). */
export function isPlanterd(pid: number): boolean {
  const cmd = procText(pid, "cmdline")?.split("\0");
  const st = procStat(pid);
  if (cmd === undefined || st === null || ended(st)) return false;
  return cmd.includes("daemon") || basename(cmd[0] ?? "") === "planterd";
}

/**
 * The planterd serving a state dir, found by the lock it holds there (planterd.pid with its start
 * time, so a reused pid never counts) rather than by what install recorded: a daemon restarted by
 * hand has another pid. Null when none holds it.
 */
export function daemonOf(stateDir: string): number | null {
  const pid = lockHolder(stateFiles(stateDir).pidFile);
  return pid !== null && isPlanterd(pid) ? pid : null;
}

/**
 * Stop the planterd of a state dir: the one holding its lock, and the recorded pid of a direct
 * start if that still runs. Says what it found, so nothing is reported stopped that was not running.
 */
export async function stopDaemons(
  stateDir: string,
  recorded: number | null,
): Promise<{ stopped: number[]; notRunning: number | null }> {
  const stopped: number[] = [];
  const locked = daemonOf(stateDir);
  if (recorded !== null && recorded !== locked && (await stopDirect(recorded))) stopped.push(recorded);
  if (locked !== null && (await stopDirect(locked))) stopped.push(locked);
  return { stopped, notRunning: recorded !== null && !stopped.includes(recorded) ? recorded : null };
}

/** Wait until a real API call through the socket succeeds. */
export async function waitReady(socket: string, ms: number): Promise<boolean> {
  const c = new Client(socket);
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await c.version();
      return true;
    } catch {
      if (Date.now() > deadline) return false;
      await Bun.sleep(25);
    }
  }
}
