/**
 * The new-pid cursor and the per-job process tracker against a fake host that behaves like the
 * kernel: pids handed out in order from the last one, wrapping at pid_max to 300, skipping pids
 * in use (a session's or group's number stays in use while it has members); orphans reparented to
 * pid 1; a process seen once is read by pid afterwards, so a reused pid shows another start time.
 * The real /proc is used at the end: this host's cursor finds what it spawns.
 */
import { describe, expect, test } from "bun:test";
import { PidCursor, procPidSource } from "../../lib/jobs/pidcursor.ts";
import { parseStat } from "../../lib/jobs/proc.ts";
import { type ProcInfo, type ProcSource, ProcTracker, procSource } from "../../lib/jobs/tracker.ts";

interface FakeProc {
  ppid: number;
  pgid: number;
  sid: number;
  start: number;
  rss: number;
  threads: number;
  stdio: string[];
}

/** A kernel's process table in miniature (see the file comment). */
class FakeHost implements ProcSource {
  readonly procs = new Map<number, FakeProc>();
  private last: number;
  private clock = 1000;
  private made = 0;
  /** Pids handed out but whose process is not attached yet (a fork under way). */
  readonly unattached = new Set<number>();
  self: number;

  constructor(
    readonly max = 1000,
    start = 400,
  ) {
    this.procs.set(1, { ppid: 0, pgid: 1, sid: 1, start: 1, rss: 10, threads: 1, stdio: [] });
    this.last = start;
    this.self = this.spawn(1);
  }

  private inUse(pid: number): boolean {
    if (this.procs.has(pid) || this.unattached.has(pid)) return true;
    for (const p of this.procs.values()) if (p.sid === pid || p.pgid === pid) return true;
    return false;
  }

  /** The pid the next fork gets. */
  private peek(): number {
    let pid = this.last;
    do {
      pid = pid + 1 >= this.max ? 300 : pid + 1;
    } while (this.inUse(pid));
    return pid;
  }

  private alloc(): number {
    this.last = this.peek();
    this.made++;
    return this.last;
  }

  /** A child of `parent` in its session and group (stdout inherited), optionally reading as not there yet. */
  spawn(parent: number, opts: { attach?: boolean; stdio?: string[]; rss?: number } = {}): number {
    const pid = this.alloc();
    const p = this.procs.get(parent);
    const proc: FakeProc = {
      ppid: parent,
      pgid: p?.pgid ?? pid,
      sid: p?.sid ?? pid,
      start: this.clock++,
      rss: opts.rss ?? 100,
      threads: 1,
      stdio: opts.stdio ?? p?.stdio ?? [],
    };
    if (opts.attach === false) {
      this.unattached.add(pid);
      this.pending.set(pid, proc);
    } else this.procs.set(pid, proc);
    return pid;
  }

  private readonly pending = new Map<number, FakeProc>();

  /** The fork of `pid` completes: it shows in /proc from now on. */
  attach(pid: number): void {
    this.unattached.delete(pid);
    this.procs.set(pid, this.pending.get(pid) as FakeProc);
  }

  /** planterd restarts: a new process of its own, later than everything there. */
  restart(): void {
    this.exit(this.self);
    this.self = this.spawn(1);
  }

  /** A new session and group led by `pid`. */
  setsid(pid: number, stdio?: string[]): void {
    const p = this.procs.get(pid) as FakeProc;
    p.sid = pid;
    p.pgid = pid;
    if (stdio) p.stdio = stdio;
  }

  /** `pid` exits (and is reaped); its children go to pid 1. */
  exit(pid: number): void {
    this.procs.delete(pid);
    for (const p of this.procs.values()) if (p.ppid === pid) p.ppid = 1;
  }

  /** Fork and reap until the allocator hands out `pid` next (a reused pid). */
  churnTo(pid: number): void {
    while (this.peek() !== pid) {
      this.alloc();
      if (this.made > 100_000) throw new Error(`pid ${pid} is never handed out`);
    }
  }

  forks = () => this.made;
  lastPid = () => this.last;
  pidMax = () => this.max;
  list = (from: number, to: number) => [...this.procs.keys()].filter((p) => p >= from && p <= to).sort((a, b) => a - b);
  stat(pid: number, start?: string): ProcInfo | null {
    const p = this.procs.get(pid);
    if (!p || (start !== undefined && String(p.start) !== start)) return null;
    return {
      pid,
      ppid: p.ppid,
      pgid: p.pgid,
      sid: p.sid,
      startTime: String(p.start),
      rssPages: p.rss,
      threads: p.threads,
    };
  }
  usage(pid: number, start: string) {
    const p = this.stat(pid, start);
    return p && { rssPages: p.rssPages, threads: p.threads };
  }
  hold(): void {}
  release(): void {}
  stdio(pid: number): string[] {
    return this.procs.get(pid)?.stdio ?? [];
  }
}

const JOBS = "/state/jobs";
const start = (h: FakeHost, pid: number) => String(h.procs.get(pid)?.start);

/** A recorder planterd spawned (its own session and group), and the tracker following it. */
function launched(h: FakeHost, t: ProcTracker, id = "j1") {
  const root = h.spawn(h.self, { stdio: [`${JOBS}/${id}/stdout`, `${JOBS}/${id}/stderr`] });
  h.setsid(root);
  t.track(id, root, start(h, root));
  return root;
}

const pids = (t: ProcTracker, id = "j1") =>
  t
    .members(id)
    .map((p) => p.pid)
    .sort((a, b) => a - b);

describe("the new-pid cursor", () => {
  test("lists what was created since the last look, and only that", () => {
    const h = new FakeHost();
    const c = new PidCursor(h);
    c.reset();
    const a = h.spawn(h.self);
    const b = h.spawn(a);
    expect(c.next()).toEqual({ pids: [a, b], all: false });
    const d = h.spawn(h.self);
    expect(c.next()).toEqual({ pids: [d], all: false });
    expect(c.next()).toEqual({ pids: [], all: false });
  });

  test("a fork not yet visible at one look is found at the next", () => {
    const h = new FakeHost();
    const c = new PidCursor(h);
    c.reset();
    const late = h.spawn(h.self, { attach: false });
    const seen = h.spawn(h.self);
    expect(c.next().pids).toEqual([seen]);
    h.attach(late);
    expect(c.next().pids).toEqual([late]);
  });

  test("the pid space wraps: new pids below the last are found", () => {
    const h = new FakeHost(1000, 990);
    const c = new PidCursor(h);
    c.reset();
    const made = [h.spawn(h.self), h.spawn(h.self), h.spawn(h.self), h.spawn(h.self)];
    for (let i = 0; i < 12; i++) made.push(h.spawn(h.self));
    expect(made.some((p) => p < 990)).toBe(true);
    expect(c.next().pids.sort((x, y) => x - y)).toEqual([...made].sort((x, y) => x - y));
  });

  test("more forks since the last look than half the pid space: everything is listed once", () => {
    const h = new FakeHost(1000, 400);
    const c = new PidCursor(h);
    c.reset();
    const kept = h.spawn(h.self);
    for (let i = 0; i < 400; i++) h.exit(h.spawn(h.self));
    const r = c.next();
    expect(r.all).toBe(true);
    expect(r.pids).toContain(kept);
    expect(r.pids).toContain(1);
  });

  test("without a fork count (a /proc/stat that has none), a moved last pid still lists what is new", () => {
    const h = new FakeHost();
    h.forks = () => 0;
    const c = new PidCursor(h);
    c.reset();
    const a = h.spawn(h.self);
    expect(c.next().pids).toEqual([a]);
    expect(c.next().pids).toEqual([]);
  });

  test("reset(after): a just-spawned process's children made before the reset are still new", () => {
    const h = new FakeHost();
    const c = new PidCursor(h);
    const root = h.spawn(h.self);
    const early = h.spawn(root);
    c.reset(root);
    expect(c.next().pids).toEqual([early]);
  });
});

describe("a job's processes, followed from its root", () => {
  test("children and grandchildren by parent; strangers are not taken", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    const root = launched(h, t);
    const child = h.spawn(root);
    const grandchild = h.spawn(child);
    h.spawn(h.self); // planterd's own, not the job's
    const stranger = h.spawn(1);
    h.setsid(stranger);
    expect(pids(t)).toEqual([child, grandchild]);
  });

  test("a double fork whose middle process died before the look is found by its session", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    const root = launched(h, t);
    const middle = h.spawn(root);
    const orphan = h.spawn(middle, { stdio: ["/dev/null", "/dev/null"] });
    h.exit(middle);
    expect(h.procs.get(orphan)?.ppid).toBe(1);
    expect(pids(t)).toEqual([orphan]);
  });

  test("a process that called setsid is found by its parent, and stays once that parent dies", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    const root = launched(h, t);
    const parent = h.spawn(root);
    const escaped = h.spawn(parent, { stdio: ["/dev/null", "/dev/null"] });
    h.setsid(escaped);
    expect(pids(t)).toEqual([parent, escaped]);
    h.exit(parent);
    expect(pids(t)).toEqual([escaped]);
    const its = h.spawn(escaped);
    expect(pids(t)).toEqual([escaped, its]);
  });

  test("setsid, and the parent gone before any look: found by its stdout in the job's dir", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    const root = launched(h, t);
    const parent = h.spawn(root);
    const kept = h.spawn(parent);
    h.setsid(kept);
    const hidden = h.spawn(parent, { stdio: ["/dev/null", "/dev/null"] });
    h.setsid(hidden);
    h.exit(parent);
    // `kept` still writes the job's log: taken. `hidden` left session, group and output: only a cgroup finds it.
    expect(pids(t)).toEqual([kept]);
  });

  test("a job's pipe held by a stranger's child is not enough: the parent must be where orphans go", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    launched(h, t);
    const shell = h.spawn(1);
    h.setsid(shell);
    h.spawn(shell, { stdio: [`${JOBS}/j1/exit.out`] });
    expect(pids(t)).toEqual([]);
  });

  test("a member's pid reused by another process is not taken, nor that process's children", () => {
    const h = new FakeHost(2000, 400);
    const t = new ProcTracker(JOBS, h);
    const root = launched(h, t);
    const child = h.spawn(root);
    expect(pids(t)).toEqual([child]);
    h.exit(child);
    expect(pids(t)).toEqual([]);
    h.churnTo(child);
    const stranger = h.spawn(1);
    expect(stranger).toBe(child);
    h.setsid(stranger);
    h.spawn(stranger);
    expect(pids(t)).toEqual([]);
  });

  test("a stale member entry never vouches for a process that took its pid", () => {
    const h = new FakeHost(2000, 400);
    const t = new ProcTracker(JOBS, h);
    const root = launched(h, t);
    const child = h.spawn(root);
    expect(pids(t)).toEqual([child]);
    // It dies and its pid is reused before any sample let go of it.
    h.exit(child);
    h.churnTo(child);
    const stranger = h.spawn(1);
    h.setsid(stranger);
    const its = h.spawn(stranger);
    expect(stranger).toBe(child);
    t.refresh();
    expect(pids(t)).toEqual([]);
    expect(t.members("j1").map((p) => p.pid)).not.toContain(its);
  });

  test("sampling sums RSS and threads over the live processes; the dead are let go", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    const root = launched(h, t);
    const a = h.spawn(root, { rss: 300 });
    const b = h.spawn(a, { rss: 500 });
    t.refresh();
    expect(t.sample("j1")).toMatchObject({ rssPages: 800, tasks: 2 });
    h.exit(a); // b is reparented to pid 1 and still counted
    expect(t.sample("j1")).toMatchObject({ rssPages: 500, tasks: 1 });
    expect(t.table("j1")?.procs.has(root)).toBe(true);
    expect([...(t.table("j1")?.procs.keys() ?? [])].sort((x, y) => x - y)).toEqual([root, b]);
  });

  test("an adopted job (older than planterd) is found by one scan of the host", () => {
    const h = new FakeHost();
    const root = launched(h, new ProcTracker(JOBS, h));
    const child = h.spawn(root);
    const middle = h.spawn(root);
    const orphan = h.spawn(middle);
    h.exit(middle);
    h.restart();
    const t = new ProcTracker(JOBS, h);
    t.track("j1", root, start(h, root));
    expect(pids(t)).toEqual([child, orphan]);
  });

  test("two jobs keep apart; untrack lets a job go", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    const r1 = launched(h, t, "j1");
    const r2 = launched(h, t, "j2");
    const c1 = h.spawn(r1);
    const c2 = h.spawn(r2);
    expect(pids(t, "j1")).toEqual([c1]);
    expect(pids(t, "j2")).toEqual([c2]);
    t.untrack("j1");
    expect(t.has("j1")).toBe(false);
    expect(t.members("j1")).toEqual([]);
    expect(pids(t, "j2")).toEqual([c2]);
  });
});

describe("a job in a cgroup: its processes are its group's", () => {
  test("the cursor takes in the group's new processes; the list is read when one ended or, once a second, when the threads known are not all its tasks", () => {
    const h = new FakeHost();
    const t = new ProcTracker(JOBS, h);
    const root = h.spawn(h.self);
    h.setsid(root);
    const inGroup = new Set<number>();
    let listed = 0;
    const group = {
      tasks: () => [...inGroup].reduce((n, p) => n + (h.procs.get(p)?.threads ?? 0), 0),
      members: () => {
        listed++;
        return [...inGroup].filter((p) => h.procs.has(p));
      },
    };
    /** A tick as the monitor makes it: a look, then the sample. */
    const tick = (recount = false) => {
      t.refresh();
      return t.sample("g", recount);
    };
    t.track("g", root, start(h, root), group);
    const a = h.spawn(root, { rss: 200 });
    inGroup.add(a);
    // The recorder's child: taken in by the cursor, the list not read.
    expect(tick()).toMatchObject({ rssPages: 200, tasks: 1 });
    expect(tick()).toMatchObject({ rssPages: 200 });
    // A fork: taken in at the next tick too.
    const c = h.spawn(a, { rss: 50 });
    inGroup.add(c);
    expect(tick()).toMatchObject({ rssPages: 250, changed: false });
    expect(listed).toBe(0);
    // In the group but out of every tree (it left session, group and output fast): the once-a-
    // second recount finds the group has more tasks than the threads known.
    const hidden = h.spawn(1, { rss: 25, stdio: ["/dev/null"] });
    h.setsid(hidden);
    inGroup.add(hidden);
    expect(tick()).toMatchObject({ rssPages: 250 });
    expect(tick(true)).toMatchObject({ rssPages: 275, changed: true });
    expect(listed).toBe(1);
    // One ends: the list is read again. A child the cursor took that the group does not hold (the
    // recorder's log pump) is let go then.
    const pump = h.spawn(root, { rss: 5 });
    expect(tick()).toMatchObject({ rssPages: 280 });
    h.exit(c);
    inGroup.delete(c);
    expect(tick()).toMatchObject({ rssPages: 225, changed: true });
    expect(listed).toBe(2);
    expect(t.sample("g")?.procs.map((p) => p.pid)).not.toContain(pump);
  });
});

describe("this host's /proc", () => {
  test("stat lines parse whatever the command name holds; zombies read as gone", () => {
    const line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 12345 1000 77 rest";
    expect(parseStat(4242, line)).toEqual({
      pid: 4242,
      ppid: 1,
      pgid: 4242,
      sid: 4242,
      startTime: "12345",
      rssPages: 77,
      threads: 3,
    });
    expect(parseStat(4242, line.replace(") S ", ") Z "))).toBeNull();
  });

  test("the cursor finds the processes spawned since its last look, the tracker a real tree", async () => {
    const src = procSource();
    if (!src || !procPidSource()) return; // not Linux
    const t = new ProcTracker("/nonexistent/jobs", src);
    const sh = Bun.spawn(["sh", "-c", "sleep 30 & (sleep 30 &); wait"], { detached: true });
    t.track("real", sh.pid, src.stat(sh.pid)?.startTime ?? null);
    try {
      let found: number[] = [];
      for (let i = 0; i < 200 && found.length < 2; i++) {
        await Bun.sleep(5);
        found = t.members("real").map((p) => p.pid);
      }
      // Both sleeps: one a child, one an orphan of a subshell that exited (same session).
      expect(found.length).toBe(2);
      for (const p of found) expect(src.stat(p)?.sid).toBe(sh.pid);
    } finally {
      process.kill(-sh.pid, "SIGKILL");
      t.untrack("real");
    }
  });
});

describe("a job's cgroup counters, held open", () => {
  test("OOM kills, refused forks and tasks are read again through the same files, v2 and v1 names", async () => {
    const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = await import("node:fs");
    const { GroupFiles } = await import("../../lib/jobs/cgroup.ts");
    const dir = mkdtempSync("/tmp/pt-counters-");
    try {
      writeFileSync(`${dir}/memory.events`, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
      writeFileSync(`${dir}/pids.events`, "max 2\n");
      writeFileSync(`${dir}/pids.current`, "5\n");
      const v2 = new GroupFiles(dir);
      expect([v2.counters(true), v2.tasks()]).toEqual([{ oomKills: 1, pidsHits: 2 }, 5]);
      expect(v2.counters(false)).toEqual({ oomKills: 0, pidsHits: 2 });
      writeFileSync(`${dir}/memory.events`, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 7\n");
      writeFileSync(`${dir}/pids.current`, "12\n");
      expect([v2.counters(true), v2.tasks()]).toEqual([{ oomKills: 7, pidsHits: 2 }, 12]);
      v2.close();
      for (const c of ["memory", "pids"]) mkdirSync(`${dir}/${c}`);
      writeFileSync(`${dir}/memory/memory.oom_control`, "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n");
      writeFileSync(`${dir}/pids/pids.events`, "max 0\n");
      const v1 = new GroupFiles(`v1:${JSON.stringify({ memory: `${dir}/memory`, pids: `${dir}/pids` })}`);
      expect([v1.counters(true), v1.tasks()]).toEqual([{ oomKills: 4, pidsHits: 0 }, null]);
      v1.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
