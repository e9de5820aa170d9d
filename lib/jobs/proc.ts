/**
 * Process facts from the kernel: start times (so a reused pid is never mistaken), liveness, trees.
 * The one reader of /proc's process files: every part of planter that parses a stat line, reads a
 * process's small files or lists the pids goes through here.
 */
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, readSync } from "node:fs";
import { constants } from "node:os";
import { execSync } from "../host/exec.ts";

/** The fields of a /proc/<pid>/stat line planter uses (proc(5)). */
export interface StatFields {
  /** R, S, D, T, Z (zombie), X (dead), … */
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  /** Clock ticks since boot (field 22): with the pid, names one process for good. */
  startTime: string;
  /** Resident set size in pages (field 24). */
  rssPages: number;
  /** Threads (field 20), 1 where unknown. */
  threads: number;
}

/**
 * Parse a /proc/<pid>/stat text; null when it is cut short. The command name may hold spaces and
 * parentheses: the fields start after the last ')'.
 */
export function statFields(text: string): StatFields | null {
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ", 24);
  const startTime = f[19];
  if (f.length < 22 || startTime === undefined || startTime === "") return null;
  return {
    state: f[0] ?? "?",
    ppid: Number(f[1]),
    pgid: Number(f[2]),
    sid: Number(f[3]),
    startTime,
    rssPages: Number(f[21]) || 0,
    threads: Number(f[17]) || 1,
  };
}

/** Zombies and dead processes have ended: their pid only waits to be reaped. */
export const ended = (st: { state: string }): boolean => st.state === "Z" || st.state === "X";

/** A small file of a process (`stat`, `status`, `cmdline`, `comm`, …), or null when unreadable. */
export function procText(pid: number | string, file: string, encoding: "utf8" | "latin1" = "utf8"): string | null {
  try {
    return readFileSync(`/proc/${pid}/${file}`, encoding);
  } catch {
    return null;
  }
}

/** Every pid /proc lists now, in its order (ascending); [] where there is no /proc. */
export function listPids(): number[] {
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const name of names) {
    const c = name.charCodeAt(0);
    if (c >= 48 && c <= 57) out.push(Number(name));
  }
  return out;
}

/** The stat of `pid` (zombies included); null when the process is gone. */
export function procStat(pid: number): StatFields | null {
  const text = procText(pid, "stat");
  return text === null ? null : statFields(text);
}

/** The process's start time as an opaque token (clock ticks since boot on Linux). */
export function startTime(pid: number): string | null {
  if (process.platform !== "linux") return psStartTime(pid);
  return procStat(pid)?.startTime ?? null;
}

function psStartTime(pid: number): string | null {
  // LC_ALL=C: the same process must give the same token whoever asks (planterd, migrate).
  const r = execSync("ps", ["-o", "lstart=", "-p", String(pid)], {
    env: { LC_ALL: "C" },
    timeoutMs: 5000,
    nothrow: true,
  });
  const out = r.stdout.trim();
  return r.code === 0 && out ? out : null;
}

/** True when `pid` is a live (non-zombie) process that started at `start`. */
export function isAlive(pid: number, start: string | null): boolean {
  if (process.platform !== "linux") {
    const s = psStartTime(pid);
    return s !== null && (start === null || s === start);
  }
  const st = procStat(pid);
  if (!st || ended(st)) return false;
  return start === null || st.startTime === start;
}

/** One live process as a /proc scan sees it. */
export interface ProcEntry {
  pid: number;
  ppid: number;
  pgid: number;
  startTime: string;
  /** Resident set size in pages (field 24 of /proc/<pid>/stat). */
  rssPages: number;
  /** Threads of the process (field 20), 1 where unknown. */
  threads: number;
}

/** One live process with its session: what the tracker follows. */
export interface ProcInfo extends ProcEntry {
  sid: number;
}

/**
 * A live process's entry from its stat text; null for a dead process or a cut line, and for a
 * zombie unless `zombie`: then it counts as it does to the kernel, one task (its own, until
 * reaped) and no memory.
 */
export function parseStat(pid: number, text: string, zombie = false): ProcInfo | null {
  const st = statFields(text);
  if (st === null || st.state === "X" || (st.state === "Z" && !zombie)) return null;
  const isZombie = st.state === "Z";
  return {
    pid,
    ppid: st.ppid,
    pgid: st.pgid,
    sid: st.sid,
    startTime: st.startTime,
    rssPages: isZombie ? 0 : st.rssPages,
    threads: isZombie ? 1 : st.threads,
  };
}

/** Every live process at one moment, with the indexes a tree walk needs. */
export interface ProcTable {
  procs: Map<number, ProcEntry>;
  children: Map<number, number[]>;
  groups: Map<number, number[]>;
}

const statBuf = Buffer.allocUnsafe(1024);

/** Read /proc/<pid>/stat into a shared buffer (one open, one read: the scan runs every tick). */
function readStat(name: string): string | null {
  let fd = -1;
  try {
    fd = openSync(`/proc/${name}/stat`, "r");
    const n = readSync(fd, statBuf, 0, statBuf.length, 0);
    return statBuf.toString("latin1", 0, n);
  } catch {
    return null;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** One process's entry as a scan would give it, read now; null when it is gone or a zombie. */
export function procEntry(pid: number): ProcEntry | null {
  const text = readStat(String(pid));
  return text === null ? null : parseStat(pid, text);
}

/** Add `p` to the table: by pid, under its parent's children and in its group. */
function addEntry(table: ProcTable, p: ProcEntry): void {
  table.procs.set(p.pid, p);
  const kids = table.children.get(p.ppid);
  if (kids) kids.push(p.pid);
  else table.children.set(p.ppid, [p.pid]);
  const group = table.groups.get(p.pgid);
  if (group) group.push(p.pid);
  else table.groups.set(p.pgid, [p.pid]);
}

/**
 * One scan of /proc: every live (non-zombie) process with its parent, group, start time and
 * RSS. The limits monitor takes one per tick for all jobs; an empty table off Linux.
 */
export function procTable(): ProcTable {
  if (process.platform !== "linux") return psTable(psOutput());
  const table: ProcTable = { procs: new Map(), children: new Map(), groups: new Map() };
  for (const pid of listPids()) {
    const p = procEntry(pid);
    if (p) addEntry(table, p);
  }
  return table;
}

/**
 * Every process of `table` below any of `roots` by parent links, plus every member of group
 * `pgid` and their descendants. The roots themselves are not included.
 */
export function descendants(table: ProcTable, roots: number[], pgid: number): number[] {
  const found = new Set<number>();
  const queue = [...roots, ...(table.groups.get(pgid) ?? [])];
  for (const p of table.groups.get(pgid) ?? []) found.add(p);
  while (queue.length) {
    const p = queue.pop() as number;
    for (const c of table.children.get(p) ?? []) {
      if (found.has(c)) continue;
      found.add(c);
      queue.push(c);
    }
  }
  for (const r of roots) found.delete(r);
  return [...found];
}

/** Every live pid whose ancestry reaches `root`, plus every member of process group `pgid`. */
export function treePids(root: number, pgid: number): number[] {
  return descendants(procTable(), [root], pgid);
}

/** A process table of these processes only. */
export function tableOf(entries: Iterable<ProcEntry>): ProcTable {
  const table: ProcTable = { procs: new Map(), children: new Map(), groups: new Map() };
  for (const p of entries) if (!table.procs.has(p.pid)) addEntry(table, p);
  return table;
}

/**
 * A job's processes from one scan of the whole host: `root`, its descendants and its process
 * group. What planterd falls back to where it follows no job's processes itself (macOS, a job
 * not followed); O(the host's processes).
 */
export function hostTree(root: number): ProcTable {
  const table = procTable();
  const pids = [root, ...descendants(table, [root], root)];
  return tableOf(pids.flatMap((p) => table.procs.get(p) ?? []));
}

let pageBytes = 0;

/** The kernel's page size (RSS in /proc/<pid>/stat is in pages): 4 KiB, or 16/64 KiB on some arm64. */
export function pageSize(): number {
  if (pageBytes) return pageBytes;
  pageBytes = 4096;
  try {
    // statm counts pages, status counts kB: their ratio is the page size.
    const pages = Number(readFileSync("/proc/self/statm", "utf8").split(" ")[1]);
    const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1]);
    const ratio = (kb * 1024) / pages;
    for (const size of [4096, 16384, 65536]) if (Math.abs(ratio - size) / size < 0.25) pageBytes = size;
  } catch {
    // not Linux: 4 KiB
  }
  return pageBytes;
}

/**
 * Files held open to be read again cheaply (a job's processes, its cgroup counters), counted
 * against a share of planterd's open-file limit: past it, files are read by path (open, read,
 * close, start time compared), never refused.
 */
export const heldFiles = { open: 0, max: heldMax() };

/**
 * Half the soft open-file limit (Bun raises it to the hard limit), at most 65536: a job held open
 * takes 4–5 files (its process's statm and task dir, its group's counters), besides the pidfd Bun
 * keeps for each child; the other half is for connections, logs and the database.
 */
function heldMax(): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m) return Math.min(65_536, Math.floor(Number(m[1]) / 2));
  } catch {
    // not Linux: nothing is held open there
  }
  return 128;
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
 * Depth of `pid`'s pid namespace below the one /proc shows and its pid there, from the NSpid line
 * of /proc/<pid>/status ("NSpid: 4242 1": one level down, pid 1 there); null when unreadable.
 */
export function nsPid(pid: number): { depth: number; inner: number } | null {
  const text = procText(pid, "status");
  if (text === null) return null;
  const m = /^NSpid:\s+(.+)$/m.exec(text);
  if (!m) return null;
  const ids = (m[1] as string).trim().split(/\s+/);
  return { depth: ids.length - 1, inner: Number(ids[ids.length - 1]) };
}

/**
 * The processes of a sandboxed job inside its pid namespace, from one table: the shallowest
 * process below the recorder `root` that is pid 1 of a namespace of its own is bwrap's init (the
 * recorder runs bwrap, through setpriv or a wrapper); the job's processes are that init's
 * descendants, the init not included. Null when no init is there yet or any more (bwrap still
 * setting up, or gone).
 */
export function sandboxProcs(
  table: ProcTable,
  root: number,
  isInit = (p: number) => nsPid(p)?.inner === 1,
): number[] | null {
  // Breadth first: the outer levels are a handful of processes (pumps, wrappers, bwrap).
  let level = table.children.get(root) ?? [];
  while (level.length) {
    const init = level.find(isInit);
    if (init !== undefined) {
      const found: number[] = [];
      const queue = [init];
      while (queue.length) {
        for (const c of table.children.get(queue.pop() as number) ?? []) {
          found.push(c);
          queue.push(c);
        }
      }
      return found;
    }
    level = level.flatMap((p) => table.children.get(p) ?? []);
  }
  return null;
}

/**
 * Those of `procs` (still the same processes) whose stdout or stderr is a file under `dir` or one
 * of `files`: what is left of a job once its tree was cut (Linux; none elsewhere).
 */
export function holding(procs: ProcId[], where: { dir?: string; files?: string[] }): ProcId[] {
  if (process.platform !== "linux") return [];
  const prefix = where.dir === undefined ? null : `${where.dir}/`;
  const files = new Set(where.files ?? []);
  return procs.filter((p) => {
    for (const fd of [1, 2]) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${p.pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (files.has(target) || (prefix !== null && target.startsWith(prefix))) return isAlive(p.pid, p.start);
    }
    return false;
  });
}

function cmdline(pid: number): string | null {
  return procText(pid, "cmdline", "latin1");
}

/**
 * The job's processes that run its own program by now (Linux), for a kill that may have come too
 * early: in a sandbox, those inside it; otherwise the job's processes whose command line is no
 * longer the recorder's (a child of the recorder between fork and exec still shows it). `table`
 * holds the job's processes, `root` (the recorder) among them.
 */
export function startedProcs(root: number, sandboxed: boolean, table: ProcTable): ProcId[] {
  if (process.platform !== "linux") return [];
  const own = cmdline(root);
  const pids = sandboxed
    ? (sandboxProcs(table, root) ?? [])
    : [...table.procs.keys()].filter((p) => {
        if (p === root) return false;
        const c = cmdline(p);
        return c !== null && c !== own;
      });
  return pids.map((p) => ({ pid: p, start: table.procs.get(p)?.startTime ?? null }));
}

/**
 * Send `signal` to a job's whole tree, once to each process: its process group, and every
 * process of the job that left the group (a grandchild that called setsid still dies). `table`
 * holds the job's processes (the root among them), listed before the signal, since a dying parent
 * orphans its children. `known` adds processes seen at an earlier signal; each is checked by
 * start time first. Returns every process signalled, for the next call.
 *
 * A `sandboxed` job (bwrap with its own pid namespace) gets every signal but SIGKILL only in its
 * own processes inside the namespace, and their process groups: bwrap's outer process dies of
 * SIGTERM and takes the namespace down at once (its init has PDEATHSIG SIGKILL), so signalling it
 * would never let the job's handler run. SIGKILL goes to everything, outer bwrap included. With
 * no job process inside yet (bwrap still setting up) nothing is sent: bwrap killed then can leave
 * its namespace running, orphaned (its init sets PDEATHSIG only once it runs); the supervisor
 * sends the signal when the job's processes are there (`startedProcs`). A vm job (`"vm"`) gets
 * them in its wrapper only, which hands them to the guest (lib/sandbox/vm.ts, VM_WRAPPER).
 */
export function signalTree(
  pid: number,
  signal: NodeJS.Signals,
  table: ProcTable,
  known: ProcId[] = [],
  sandboxed: false | "bwrap" | "vm" = false,
): ProcId[] {
  // The root itself too: an adopted process need not lead its own group.
  const tree: ProcId[] = [{ pid, start: table.procs.get(pid)?.startTime ?? startTime(pid) }];
  // Every process of the job, a grandchild that left the group or was reparented included.
  for (const p of table.procs.values()) if (p.pid !== pid) tree.push({ pid: p.pid, start: p.startTime });
  const seen = new Set(tree.map((p) => p.pid));
  for (const k of known) {
    if (!seen.has(k.pid) && isAlive(k.pid, k.start)) {
      tree.push(k);
      seen.add(k.pid);
    }
  }
  const inside = sandboxed && signal !== "SIGKILL" && process.platform === "linux" ? sandboxProcs(table, pid) : null;
  // Nothing of the job inside yet: signalling bwrap now could leave its namespace running (its
  // init sets PDEATHSIG only once started); the caller sends it when the job is there.
  if (sandboxed && signal !== "SIGKILL" && process.platform === "linux" && !inside?.length) return tree;
  const pgid = (p: number) => table.procs.get(p)?.pgid ?? null;
  // A vm job: only the sandbox's first process, the wrapper (lib/sandbox/vm.ts), which passes the
  // signal to the guest's job; QEMU itself stops the VM at once on TERM.
  if (sandboxed === "vm" && inside?.length) {
    const top = inside.filter((p) => !inside.includes(table.procs.get(p)?.ppid ?? -1));
    for (const target of top) {
      try {
        process.kill(target, signal);
      } catch {
        // raced with its exit
      }
    }
    return tree;
  }
  // Each process gets the signal once (a second TERM or USR1 would run its handler again): whole
  // groups first, so a process forking at this moment is still reached, then each process in none
  // of them (a descendant that left the group, an orphan seen earlier).
  const groups = new Set(inside?.length ? inside.map((p) => pgid(p) ?? p) : [pid]);
  const each = inside?.length ? [] : tree.map((p) => p.pid).filter((p) => !groups.has(pgid(p) ?? -1));
  for (const target of [...[...groups].map((g) => -g), ...each]) {
    try {
      process.kill(target, signal);
    } catch {
      // raced with its exit, or the group is already gone
    }
  }
  return tree;
}

/** `ps` listing of every process (no /proc: macOS): pid, ppid, pgid, rss in KiB, start time. */
function psOutput(): string {
  const r = execSync("ps", ["-axo", "pid=,ppid=,pgid=,rss=,lstart="], {
    env: { LC_ALL: "C" },
    timeoutMs: 10_000,
    nothrow: true,
  });
  return r.code === 0 ? r.stdout : "";
}

/** The process table from `ps -axo pid=,ppid=,pgid=,rss=,lstart=` output (pure, for tests). */
export function psTable(text: string, page = pageSize()): ProcTable {
  const table: ProcTable = { procs: new Map(), children: new Map(), groups: new Map() };
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.+?)\s*$/.exec(line);
    if (!m) continue;
    const p: ProcEntry = {
      pid: Number(m[1]),
      ppid: Number(m[2]),
      pgid: Number(m[3]),
      startTime: m[5] as string,
      rssPages: Math.ceil((Number(m[4]) * 1024) / page),
      threads: 1,
    };
    addEntry(table, p);
  }
  return table;
}
