/**
 * Each job's processes, without scanning the host. A job in a cgroup has its group's members (read
 * again when the group's task count says they changed). A job without one (planterd unprivileged,
 * `[monitor] cgroup = "off"`) is followed from its root: a process joins it once, when it is first
 * seen among the processes created since the last look (`PidCursor`), if
 *   - its parent is one of the job's processes (alive, with the start time it was seen with), or
 *   - it is in the session or process group of one of them, led by it (a double fork that did not
 *     call setsid keeps both: the recorder leads the job's session and group), or
 *   - its parent is where orphans go (pid 1, planterd's ancestors, an adopted recorder's parent)
 *     and its stdout or stderr is a file or pipe of a job's dir (what `setsid cmd &` keeps, and
 *     bwrap's init keeps when its outer process died before the init set PDEATHSIG).
 * Once in, it stays in until it dies, wherever it is reparented: a job's processes are sampled,
 * signalled and swept from its own list, so a look costs what the host created since, and a
 * sample what the job has. Each process is held open by its /proc statm and task dir (within a
 * budget): a sample costs a read and an fstat, and a process reads as gone once it is, even when
 * its pid is reused.
 *
 * Not caught: a process that leaves both the session and the group, and its stdout and stderr,
 * within one interval of the monitor, after its parent has died (a daemon's double fork, done fast).
 * /proc/PID/task/TID/children would not catch it either (it is gone from the tree by then); where
 * that matters, cgroups do (`lib/jobs/cgroup.ts`). An adopted job's processes are found once by
 * one scan of the host at the next look after its adoption (they predate the cursor).
 */
import { closeSync, fstatSync, openSync, readlinkSync, readSync } from "node:fs";
import { join } from "node:path";
import { PidCursor, type PidSource, procPidSource } from "./pidcursor.ts";
import { heldFiles, type ProcId, type ProcInfo, type ProcTable, parseStat, tableOf } from "./proc.ts";

export type { ProcInfo };

/** What the tracker reads of the kernel; tests hand in a fake host. */
export interface ProcSource extends PidSource {
  /**
   * The process's stat, or null when it is gone (a zombie counts as gone unless `zombie`) or, with
   * `start`, its pid is another process's now.
   */
  stat(pid: number, start?: string, zombie?: boolean): ProcInfo | null;
  /** Resident pages and (with `threads`, else 0) threads of the process that started at `start`; null when it is gone. */
  usage(pid: number, start: string, threads?: boolean): Usage | null;
  /** Keep the process open if it still started at `start` (within a budget): later reads cost less and never see a reused pid. */
  hold(pid: number, start: string): void;
  /** Let go of a process held open (with `start`: only if that is the process held). */
  release(pid: number, start?: string): void;
  /** Where the process's stdout and stderr point (unreadable ones left out). */
  stdio(pid: number): string[];
  /** planterd's own pid. */
  self: number;
}

interface Tracked {
  id: string;
  root: number;
  rootStart: string | null;
  /** The job's processes but the root: pid → start time. */
  members: Map<number, string>;
  /** Its cgroup, where the kernel keeps its processes together, else null. */
  group: GroupSource | null;
}

/** A job's cgroup as the tracker reads it. */
export interface GroupSource {
  /** Tasks (processes and threads) in the group now. */
  tasks(): number | null;
  /** Processes in the group now. */
  members(): number[];
}

/** What a sample reads of one process. */
export interface Usage {
  rssPages: number;
  threads: number;
}

/** A job's processes at one sample. */
export interface TreeSample {
  /** Resident pages summed over the processes (the root not counted). */
  rssPages: number;
  /** Threads summed over them. */
  tasks: number;
  procs: ProcId[];
  /** Whether its processes changed since the last sample (one ended, or its group's list was read again). */
  changed: boolean;
}

/** Follows each job's processes (see the module comment). */
export class ProcTracker {
  private readonly jobs = new Map<string, Tracked>();
  /** Every tracked process (roots and members) → its job. */
  private readonly owner = new Map<number, Tracked>();
  private readonly cursor: PidCursor;
  /** Where an orphan may be reparented: pid 1, planterd's ancestors, adopted recorders' parents. */
  private readonly reapers = new Set<number>([1]);
  private readonly selfStart: number;
  /** Adopted jobs tracked since the last look: their processes are found by one scan of the host. */
  private scanAll = false;
  /** Liveness checked during one look (a parent of many new processes is read once). */
  private alive = new Map<number, boolean>();
  /** Processes read at the last look. */
  looked = 0;

  constructor(
    private readonly jobsDir: string,
    private readonly src: ProcSource,
  ) {
    this.cursor = new PidCursor(src);
    const me = src.stat(src.self);
    this.selfStart = Number(me?.startTime ?? 0);
    for (let p = me?.ppid ?? 0, i = 0; p > 1 && i < 64; i++) {
      this.reapers.add(p);
      p = src.stat(p)?.ppid ?? 0;
    }
  }

  /** Jobs followed. */
  get size(): number {
    return this.jobs.size;
  }

  /** Whether job `id` is followed. */
  has(id: string): boolean {
    return this.jobs.has(id);
  }

  /**
   * Follow job `id` from its root (the recorder), launched or adopted. With `group` (its cgroup),
   * the group's member list is the job's: the cursor takes in the group's new processes as they
   * come, and the list, read again now and then, has the last word.
   */
  track(id: string, root: number, rootStart: string | null, group?: GroupSource): void {
    if (this.jobs.has(id)) return;
    const t: Tracked = { id, root, rootStart, members: new Map(), group: group ?? null };
    // Nothing was followed: what the host made meanwhile cannot belong to this job, but for what
    // its root made since it started (pids after its own), or for an adopted one, which the scan
    // below (or its group's list) finds.
    if (this.jobs.size === 0) this.cursor.reset(root);
    this.jobs.set(id, t);
    this.owner.set(root, t);
    const st = this.src.stat(root, rootStart ?? undefined);
    if (!st) return;
    // A recorder older than this planterd is adopted: its processes predate the cursor.
    if (Number(st.startTime) < this.selfStart && !t.group) {
      this.scanAll = true;
      if (st.ppid !== this.src.self) this.reapers.add(st.ppid);
    }
  }

  /** Stop following job `id`. */
  untrack(id: string): void {
    const t = this.jobs.get(id);
    if (!t) return;
    this.jobs.delete(id);
    for (const pid of [t.root, ...t.members.keys()]) this.drop(t, pid);
  }

  /** Take in the processes created since the last look. */
  refresh(): void {
    if (this.jobs.size === 0) return;
    const found = this.cursor.next();
    let pids = found.pids;
    if (this.scanAll && !found.all) pids = this.src.list(1, 4 * 1024 * 1024);
    this.scanAll = false;
    this.looked = pids.length;
    if (!pids.length) return;
    this.alive = new Map();
    const fresh: ProcInfo[] = [];
    for (const pid of pids) {
      const known = this.owner.get(pid);
      if (known && this.isLive(known, pid)) continue;
      // A zombie is taken in too: until it is reaped the kernel counts it against the job's
      // process limits (RLIMIT_NPROC, pids.max). A bomb held at its task share ends that way:
      // its shells die as their forks fail, and where orphans are reaped late (an init that
      // reaps now and then) the share is all zombies, never seen alive at a tick.
      const st = this.src.stat(pid, undefined, true);
      if (st) fresh.push(st);
    }
    // A child may come before its parent (the pid space wrapped): take in until nothing changes.
    let pending = fresh;
    for (let changed = true; changed && pending.length; ) {
      changed = false;
      const rest: ProcInfo[] = [];
      for (const p of pending) {
        const t = this.kin(p);
        if (t) {
          this.add(t, p);
          changed = true;
        } else rest.push(p);
      }
      pending = rest;
    }
    for (const p of pending) {
      if (!this.reapers.has(p.ppid)) continue;
      const t = this.byStdio(p.pid);
      if (t) this.add(t, p);
    }
  }

  /**
   * Sample job `id`: its live processes (the dead are let go) and their sums. Null when not
   * followed. A job in a cgroup has its group's task count compared too when `recount`.
   */
  sample(id: string, recount = true): TreeSample | null {
    const t = this.jobs.get(id);
    if (!t) return null;
    const s = this.read(t, !t.group || recount);
    if (!t.group) return s;
    // The cursor takes in a group's new processes as they come (children of its processes); the
    // member list is read again when one of them ended, when none is known, and, with `recount`
    // (the monitor: once a second), when the threads of those known, all alive, are not all of the
    // group's tasks (one the cursor did not see). Threads are read only then: the kernel enforces
    // the group's process limit.
    if (s.changed || t.members.size === 0 || (recount && t.group.tasks() !== s.tasks)) {
      this.sync(t, t.group.members());
      return { ...this.read(t, true), changed: true };
    }
    return s;
  }

  /** Read each process of `t` (`threads`: its threads too): sums over the live ones; the dead are let go. */
  private read(t: Tracked, threads: boolean): TreeSample {
    const procs: ProcId[] = [];
    let rssPages = 0;
    let tasks = 0;
    let changed = false;
    for (const [pid, start] of t.members) {
      const u = this.src.usage(pid, start, threads);
      if (!u) {
        this.drop(t, pid);
        changed = true;
        continue;
      }
      procs.push({ pid, start });
      rssPages += u.rssPages;
      tasks += u.threads;
    }
    return { rssPages, tasks, procs, changed };
  }

  /** Job `id`'s processes now, root included, as a process table (null when not followed). */
  table(id: string): ProcTable | null {
    const t = this.jobs.get(id);
    if (!t) return null;
    this.refresh();
    const procs = (this.sample(id)?.procs ?? []).flatMap((p) => this.src.stat(p.pid, p.start ?? undefined) ?? []);
    const root = this.src.stat(t.root, t.rootStart ?? undefined);
    return tableOf(root ? [root, ...procs] : procs);
  }

  /** Job `id`'s live processes but the root, after a look (what is left of it once it ended). */
  members(id: string, look = true): ProcId[] {
    if (look) this.refresh();
    return this.sample(id)?.procs ?? [];
  }

  /** The job a new process belongs to by its parent, session or group, or null. */
  private kin(p: ProcInfo): Tracked | null {
    // A session or group counts through its leader, a process of the job: while the leader lives,
    // the session or group is the one it made (one whose leader died is not trusted).
    for (const pid of [p.ppid, p.sid, p.pgid]) {
      const t = this.owner.get(pid);
      if (t && this.isLive(t, pid)) return t;
    }
    return null;
  }

  /** The job whose dir holds the process's stdout or stderr. */
  private byStdio(pid: number): Tracked | null {
    const prefix = `${this.jobsDir}/`;
    for (const target of this.src.stdio(pid)) {
      if (!target.startsWith(prefix)) continue;
      const t = this.jobs.get(target.slice(prefix.length).split("/")[0] as string);
      if (t) return t;
    }
    return null;
  }

  /** Whether tracked process `pid` of `t` is still the one seen (read once per look). */
  private isLive(t: Tracked, pid: number): boolean {
    const cached = this.alive.get(pid);
    if (cached !== undefined) return cached;
    const start = pid === t.root ? t.rootStart : t.members.get(pid);
    const live = start !== undefined && this.src.stat(pid, start ?? undefined) !== null;
    this.alive.set(pid, live);
    return live;
  }

  private add(t: Tracked, p: ProcInfo): void {
    const old = this.owner.get(p.pid);
    if (old && old !== t) old.members.delete(p.pid);
    t.members.set(p.pid, p.startTime);
    this.owner.set(p.pid, t);
    this.alive.set(p.pid, true);
    this.src.hold(p.pid, p.startTime);
  }

  /** A group's members now: the new ones taken in (and held), the gone let go. */
  private sync(t: Tracked, now: number[]): void {
    const live = new Set(now);
    for (const pid of t.members.keys()) if (!live.has(pid)) this.drop(t, pid);
    for (const pid of live) {
      if (t.members.has(pid)) continue;
      const st = this.src.stat(pid);
      if (st) this.add(t, st);
    }
  }

  private drop(t: Tracked, pid: number): void {
    const start = t.members.get(pid);
    t.members.delete(pid);
    if (this.owner.get(pid) === t) this.owner.delete(pid);
    if (start !== undefined) this.src.release(pid, start);
  }
}

/** A process held open: its statm (resident pages; fails once the process is gone) and its task dir (threads). */
interface Held {
  statm: number;
  task: number;
  /** The start time of the process they were opened on. */
  start: string;
}

/** This host's /proc as a ProcSource (Linux only; null elsewhere). */
export function procSource(): ProcSource | null {
  const pids = procPidSource();
  if (!pids) return null;
  const held = new Map<number, Held>();
  const buf = Buffer.allocUnsafe(1024);
  const readAt = (fd: number): string => buf.toString("latin1", 0, readSync(fd, buf, 0, buf.length, 0));
  const release = (pid: number, start?: string) => {
    const h = held.get(pid);
    if (h === undefined || (start !== undefined && h.start !== start)) return;
    held.delete(pid);
    closeSync(h.statm);
    closeSync(h.task);
    heldFiles.open -= 2;
  };
  const stat = (pid: number, start?: string, zombie = false): ProcInfo | null => {
    let text: string;
    let fd = -1;
    try {
      fd = openSync(`/proc/${pid}/stat`, "r");
      text = readAt(fd);
    } catch {
      return null;
    } finally {
      if (fd >= 0) closeSync(fd);
    }
    const st = parseStat(pid, text, zombie);
    return st && (start === undefined || st.startTime === start) ? st : null;
  };
  /** Resident pages (statm's second field) and threads (the task dir's link count less 2). */
  const usageOf = (h: Held, threads = true): Usage => {
    const text = readAt(h.statm);
    const from = text.indexOf(" ") + 1;
    const rssPages = Number(text.slice(from, text.indexOf(" ", from))) || 0;
    return { rssPages, threads: threads ? fstatSync(h.task).nlink - 2 : 0 };
  };
  return {
    ...pids,
    self: process.pid,
    stat,
    usage(pid, start, threads) {
      const h = held.get(pid);
      // Held for this process (a pid reused since is held for its new process, if at all).
      if (h && h.start === start) {
        try {
          // Held files read the process they were opened on, and fail once it is gone.
          return usageOf(h, threads);
        } catch {
          release(pid);
          return null;
        }
      }
      const st = stat(pid, start);
      return st && { rssPages: st.rssPages, threads: st.threads };
    },
    hold(pid, start) {
      const h = held.get(pid);
      if (h) {
        try {
          if (h.start === start) {
            usageOf(h);
            return;
          }
        } catch {
          // gone
        }
        // Open on a process that died unseen, whose pid this one took: opened again below.
        release(pid);
      }
      // Past the budget, the process is read by path, its start time compared.
      if (heldFiles.open + 2 > heldFiles.max) return;
      let statm = -1;
      let task = -1;
      try {
        statm = openSync(`/proc/${pid}/statm`, "r");
        task = openSync(`/proc/${pid}/task`, "r");
        // Opened before this check, so on the process seen, not on one that took its pid since
        // (a zombie's pid is not reused before it is reaped, and its files fail from then on).
        if (stat(pid, undefined, true)?.startTime === start) {
          held.set(pid, { statm, task, start });
          heldFiles.open += 2;
          statm = -1;
          task = -1;
        }
      } catch {
        // gone already: its next read says so
      } finally {
        if (statm >= 0) closeSync(statm);
        if (task >= 0) closeSync(task);
      }
    },
    release,
    stdio(pid) {
      const out: string[] = [];
      for (const fd of [1, 2]) {
        try {
          out.push(readlinkSync(join("/proc", String(pid), "fd", String(fd))));
        } catch {
          // closed, or not ours to read
        }
      }
      return out;
    },
  };
}
