/** Process facts from the kernel: start times (so a reused pid is never mistaken), liveness, trees. */
import { readdirSync, readFileSync } from "node:fs";
import { constants } from "node:os";

interface Stat {
  state: string;
  ppid: number;
  pgid: number;
  startTime: string;
}

/** Parse /proc/<pid>/stat; null when the process is gone. */
export function procStat(pid: number): Stat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses: fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: f[0] ?? "?", ppid: Number(f[1]), pgid: Number(f[2]), startTime: f[19] ?? "" };
}

/** The process's start time as an opaque token (clock ticks since boot on Linux). */
export function startTime(pid: number): string | null {
  if (process.platform !== "linux") return psStartTime(pid);
  return procStat(pid)?.startTime ?? null;
}

function psStartTime(pid: number): string | null {
  const r = Bun.spawnSync(["ps", "-o", "lstart=", "-p", String(pid)], { stdout: "pipe", stderr: "ignore" });
  const out = r.stdout.toString().trim();
  return r.exitCode === 0 && out ? out : null;
}

/** True when `pid` is a live (non-zombie) process that started at `start`. */
export function isAlive(pid: number, start: string | null): boolean {
  if (process.platform !== "linux") {
    const s = psStartTime(pid);
    return s !== null && (start === null || s === start);
  }
  const st = procStat(pid);
  if (!st || st.state === "Z" || st.state === "X") return false;
  return start === null || st.startTime === start;
}

/** Every live pid whose ancestry reaches `root`, plus every member of process group `pgid`. */
export function treePids(root: number, pgid: number): number[] {
  const children = new Map<number, number[]>();
  const found = new Set<number>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const st = procStat(pid);
    if (!st || st.state === "Z") continue;
    if (st.pgid === pgid) found.add(pid);
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const queue = [root];
  while (queue.length) {
    const p = queue.pop() as number;
    for (const c of children.get(p) ?? []) {
      if (!found.has(c)) found.add(c);
      queue.push(c);
    }
  }
  found.delete(root);
  return [...found];
}

/** Signal number of a signal name such as "TERM" or "SIGTERM". */
export function signalNumber(name: string): number | null {
  const key = (name.startsWith("SIG") ? name : `SIG${name}`) as keyof typeof constants.signals;
  return constants.signals[key] ?? null;
}

/** Signal name (without SIG) of a number, or null. */
export function signalName(n: number): string | null {
  for (const [k, v] of Object.entries(constants.signals)) if (v === n) return k.slice(3);
  return null;
}

/** A process identity that survives pid reuse: pid plus start time. */
export interface ProcId {
  pid: number;
  start: string | null;
}

/**
 * Send `signal` to a job's whole tree: its process group, and on Linux every descendant that
 * left the group (a grandchild that called setsid still dies). The tree is listed before the
 * signal, since a dying parent orphans its children. `known` adds processes seen at an earlier
 * signal (orphans no longer reachable by ancestry); each is checked by start time first.
 * Returns every process signalled, for the next call.
 */
export function signalTree(pid: number, signal: NodeJS.Signals, known: ProcId[] = []): ProcId[] {
  const tree: ProcId[] = [];
  if (process.platform === "linux") {
    for (const p of treePids(pid, pid)) tree.push({ pid: p, start: startTime(p) });
  }
  try {
    process.kill(-pid, signal);
  } catch {
    // the group may already be gone
  }
  const seen = new Set(tree.map((p) => p.pid));
  for (const k of known) {
    if (!seen.has(k.pid) && isAlive(k.pid, k.start)) {
      tree.push(k);
      seen.add(k.pid);
    }
  }
  for (const p of tree) {
    try {
      process.kill(p.pid, signal);
    } catch {
      // raced with its exit
    }
  }
  return tree;
}
