/**
 * The limits monitor: samples every running job that has limits and stops a job that exceeds one
 * through the supervisor's kill (SIGTERM, grace, SIGKILL) with the limit's reason. Its cost is the
 * jobs' processes, not the host's: a job in a cgroup (v2 delegated, or v1 as root) has its memory
 * and processes enforced by the kernel, and a tick reads the group's counters through files held
 * open; a job without one has its processes followed by the `ProcTracker` (what the host created
 * since the last tick, then one read per process of the job). Log growth is checked on every write
 * the kernel reports (inotify on the job dir), so a flood is caught between ticks; ticks re-measure
 * each job's logs about once a second besides.
 *
 * Each tick also measures the state dir's disk: below the log reserve (`[logs] min_free_bytes`)
 * a job whose output still grows is stopped the same way, with reason `disk_full`, so that the
 * space left stays for planter's own state (job ends, events).
 */
import { existsSync, type FSWatcher, realpathSync, watch } from "node:fs";
import { dirname, join } from "node:path";
import type { Enforcement, Limits } from "../api/contract.ts";
import type { Context } from "../daemon/context.ts";
import { fileSize, truncateLog } from "../logs/read.ts";
import { jobDir } from "../paths.ts";
import { hostLimits } from "../sandbox/vm.ts";
import { clearCgroup, endedWithCgroup, getJob, type JobRow, markLimitHit, markLogTruncated } from "../state/jobs.ts";
import { type DiskSpace, diskSpace, reserveBytes } from "../state/storage.ts";
import {
  detectHostCgroup,
  detectHostCgroupV1,
  GroupFiles,
  groupPeak,
  JobCgroups,
  JobCgroupsV1,
  type JobGroups,
  removeGroup,
} from "./cgroup.ts";
import {
  type Breach,
  breach,
  decideAct,
  hardCap,
  LOG_GRACE_BYTES,
  type LogSizes,
  quotaCut,
  RESERVE_LIMIT,
} from "./limits.ts";
import { descendants, isAlive, type ProcId, type ProcTable, pageSize, procTable } from "./proc.ts";
import { jobFiles, readStatus } from "./recorder.ts";
import type { KillOptions } from "./supervisor.ts";
import { ProcTracker, procSource } from "./tracker.ts";

/** How this daemon enforces limits, and why not with cgroups when it does not. */
export interface EnforcementInfo {
  mode: Enforcement;
  /** Why cgroups are not used (null when they are). */
  why: string | null;
  cgroups: JobGroups | null;
}

/**
 * Decide the enforcement mode at startup: a cgroup v2 group per job where a delegated subtree
 * works, else cgroup v1 groups where planterd may make them (root on a v1 or hybrid host), else
 * the monitor alone.
 */
export function chooseEnforcement(setting: "auto" | "off", pidsMax: number): EnforcementInfo {
  if (setting === "off") return { mode: "monitor", why: 'config [monitor] cgroup = "off"', cgroups: null };
  const probe = detectHostCgroup();
  const why: string[] = [];
  if (probe.ok) {
    const r = prepared(new JobCgroups(probe, pidsMax), probe.base);
    if (r.cgroups) return r;
    why.push(r.why as string);
  } else why.push(probe.why);
  const v1 = detectHostCgroupV1();
  if (v1.ok) {
    const r = prepared(new JobCgroupsV1(v1.own, pidsMax), v1.own.pids as string);
    if (r.cgroups) return r;
    why.push(r.why as string);
  } else why.push(v1.why);
  return { mode: "monitor", why: why.join("; "), cgroups: null };
}

function prepared(groups: JobGroups, where: string): EnforcementInfo {
  try {
    groups.prepare(process.pid);
    return { mode: groups.mode, why: null, cgroups: groups };
  } catch (e) {
    return { mode: "monitor", why: `cannot set up job groups under ${where}: ${(e as Error).message}`, cgroups: null };
  }
}

/**
 * Why a job is checked: a tick; its tick of the second (logs re-measured, its cgroup's task count
 * compared); a burst of log writes.
 */
type CheckWhy = "tick" | "second" | "write";

interface Watched {
  id: string;
  pid: number;
  start: string | null;
  startedAt: number;
  limits: Limits;
  files: ReturnType<typeof jobFiles>;
  /** The job's cgroup(s) as stored, when the kernel enforces its limits. */
  cgroup: string | null;
  /** Its counter files, held open while it runs. */
  counters: GroupFiles | null;
  /** Log sizes at the last check that found them within the quota. */
  under: LogSizes;
  /** Which ticks re-measure its logs besides inotify (spreads the work over the ticks of a second). */
  slot: number;
  /** The limit acted on (or found while another kill was under way). */
  hit: Breach | null;
  forced: boolean;
  watcher: FSWatcher | null;
  queued: boolean;
  /** stdout + stderr at the last check that found the disk near its reserve (null: not measured). */
  logBase: number | null;
  /** Each log's size when the job was stopped below the disk's reserve: what is kept of it. */
  reserveKeep?: LogSizes;
}

/** The state dir's disk at the last tick, and the log reserve on it. */
export interface DiskStatus extends DiskSpace {
  reserve: number;
  at: number;
}

/** Figures of the last tick (GET /v1/ready shows them; benchmarks read them). */
export interface TickStats {
  /** Ticks since the daemon started. */
  count: number;
  at: number;
  ms: number;
  jobs: number;
  /** Processes read: new ones on the host since the last tick, and the jobs' own. */
  procs: number;
}

const hasLimits = (l: Limits) =>
  l.timeout_ms !== undefined ||
  l.max_rss_bytes !== undefined ||
  l.max_log_bytes !== undefined ||
  l.max_pids !== undefined;

/**
 * Whether a job's processes are sampled: it has a memory limit (RSS summed over its processes: the
 * kernel's count in a cgroup leaves out file pages charged to other groups, such as a runtime's
 * binary), or a process limit the kernel does not enforce (no cgroup). In a cgroup, its processes
 * are its group's members; the kernel also enforces both limits itself and the monitor reads what
 * it did.
 */
const needsSample = (w: { limits: Limits; cgroup: string | null; forced: boolean }) =>
  !w.forced && (w.limits.max_rss_bytes !== undefined || (w.limits.max_pids !== undefined && w.cgroup === null));

/**
 * How often a tick reads what need not be read on every one: a job's logs (inotify reports every
 * write) and whether its cgroup holds a process the tracker did not see.
 */
const SECOND_MS = 1000;

/** Free space under which the disk counts as near its log reserve, besides twice the reserve. */
export const NEAR_RESERVE_MARGIN = 1024 ** 3;

/**
 * The disk when it is near its log reserve (null otherwise): under twice the reserve plus 1 GiB
 * free, what a flood of ~1 GB/s writes in a tick or so. Near it, logs are measured on every tick
 * and every write; away from it, nothing but one statfs per tick.
 */
export function nearOf(d: DiskStatus | null): DiskStatus | null {
  return d && d.reserve > 0 && d.free < 2 * d.reserve + NEAR_RESERVE_MARGIN ? d : null;
}

/** Sizes of a job's two logs (0 for a missing file). */
export function logSizes(files: { stdout: string; stderr: string }): LogSizes {
  return { stdout: fileSize(files.stdout), stderr: fileSize(files.stderr) };
}

export class Monitor {
  readonly enforcement: EnforcementInfo;
  private readonly jobs = new Map<string, Watched>();
  private readonly pendingGroups = new Map<string, Timer>();
  private timer: Timer | null = null;
  private slots = 0;
  /** The processes of running jobs without a cgroup (Linux; null elsewhere: kills scan the host). */
  readonly procs: ProcTracker | null;
  /** Whether the last measure found the disk near its log reserve (`nearOf`). */
  private nearReserve = false;
  /** The state dir's disk as last measured (null before the first measure, or when it cannot be). */
  disk: DiskStatus | null = null;
  last: TickStats = { count: 0, at: 0, ms: 0, jobs: 0, procs: 0 };

  constructor(
    private readonly ctx: Context,
    private readonly kill: (id: string, opts: KillOptions) => unknown,
    enforcement?: EnforcementInfo,
  ) {
    const m = ctx.config.monitor;
    this.enforcement = enforcement ?? chooseEnforcement(m.cgroup, m.cgroup_pids_max);
    const src = procSource();
    // As /proc shows a job's open files: without the symlinks of the configured path.
    const jobs = join(ctx.paths.stateDir, "jobs");
    this.procs = src ? new ProcTracker(existsSync(jobs) ? realpathSync(jobs) : jobs, src) : null;
  }

  /** SIGTERM → SIGKILL grace of a limit kill. */
  get graceMs(): number {
    return this.ctx.config.monitor.grace_ms ?? this.ctx.config.jobs.kill_grace_ms;
  }

  /** How often jobs with limits are sampled. */
  get intervalMs(): number {
    return this.ctx.config.monitor.interval_ms;
  }

  /** Jobs being sampled. */
  get watching(): number {
    return this.jobs.size;
  }

  /** Measure the state dir's disk now (every tick does; /v1/ready too). */
  measureDisk(): DiskStatus | null {
    const d = diskSpace(this.ctx.paths.stateDir);
    this.disk = d
      ? { ...d, reserve: reserveBytes(this.ctx.config.logs.min_free_bytes, d.total), at: Date.now() }
      : null;
    return this.disk;
  }

  /** Whether the log reserve is on (`[logs] min_free_bytes` is not 0). */
  private get reserveOn(): boolean {
    return this.ctx.config.logs.min_free_bytes !== 0;
  }

  /**
   * Start sampling a running job (launched or adopted). With the log reserve on, every job is
   * sampled (its logs only near the reserve); without it, only jobs with limits.
   */
  track(row: JobRow): void {
    if (row.pid === null || row.started_at === null || this.jobs.has(row.id)) return;
    // A vm job's QEMU holds its guest's memory and its own beside it (lib/sandbox/vm.ts).
    const job = { ...row, pid: row.pid, started_at: row.started_at, limits: hostLimits(row.limits, row.backend) };
    // Every job without a cgroup has its processes followed, limits or not: a kill needs them.
    if (job.cgroup === null) this.procs?.track(job.id, job.pid, job.start_time);
    if (!hasLimits(job.limits) && !this.reserveOn) return;
    const counters = job.cgroup ? new GroupFiles(job.cgroup) : null;
    // A job in a cgroup with a memory limit has its group's members sampled.
    if (counters && job.limits.max_rss_bytes !== undefined) {
      this.procs?.track(job.id, job.pid, job.start_time, counters);
    }
    const dir = jobDir(this.ctx.paths.stateDir, job.id);
    const files = jobFiles(dir);
    const max = job.limits.max_log_bytes;
    const now = max === undefined ? { stdout: 0, stderr: 0 } : logSizes(files);
    const w: Watched = {
      id: job.id,
      pid: job.pid,
      start: job.start_time,
      startedAt: job.started_at,
      limits: job.limits,
      files,
      cgroup: job.cgroup,
      counters,
      under: max !== undefined && now.stdout + now.stderr <= max ? now : { stdout: 0, stderr: 0 },
      slot: this.slots++,
      hit: null,
      forced: false,
      watcher: null,
      queued: false,
      logBase: null,
    };
    if (max !== undefined || this.nearReserve) this.watchLogs(w);
    this.jobs.set(job.id, w);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      // A job adopted past its limits is stopped now, not an interval later.
      setTimeout(() => this.tick(), 0);
    }
  }

  /** Check a job's logs on every write the kernel reports (inotify on its dir). */
  private watchLogs(w: Watched): void {
    if (w.watcher || !this.ctx.config.monitor.log_watch) return;
    try {
      w.watcher = watch(dirname(w.files.stdout), (_event, name) => {
        if (name === "stdout" || name === "stderr" || name === null) this.queueLogCheck(w);
      });
      w.watcher.on("error", () => undefined);
    } catch {
      w.watcher = null; // the tick still checks the sizes
    }
  }

  /**
   * Near the reserve, every job's writes are watched (a flood crosses it well within a tick);
   * away from it, only jobs with a log quota are: a watch costs planterd CPU on every write.
   */
  private setNear(near: boolean): void {
    if (near === this.nearReserve) return;
    this.nearReserve = near;
    for (const w of this.jobs.values()) {
      if (near) this.watchLogs(w);
      else if (w.limits.max_log_bytes === undefined && w.watcher) {
        w.watcher.close();
        w.watcher = null;
      }
    }
  }

  /** Stop sampling a job; returns its last within-quota log sizes. */
  untrack(id: string): LogSizes | null {
    this.procs?.untrack(id);
    const w = this.jobs.get(id);
    if (!w) return null;
    w.watcher?.close();
    w.counters?.close();
    this.jobs.delete(id);
    if (this.jobs.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
    return w.under;
  }

  /** One sample of every watched job: first what the host created since the last tick, when any job's processes are sampled. */
  tick(): void {
    const t0 = performance.now();
    const now = Date.now();
    let looked = 0;
    this.hostTable = null;
    for (const w of this.jobs.values()) {
      if (!needsSample(w)) continue;
      if (this.procs) {
        this.procs.refresh();
        looked = this.procs.looked;
      } else {
        // No /proc to follow jobs by (macOS): one listing of the host per tick, as `ps` gives it.
        this.hostTable = procTable();
        looked = this.hostTable.procs.size;
      }
      break;
    }
    this.sampled = 0;
    const near = this.reserveOn ? nearOf(this.measureDisk()) : null;
    this.setNear(near !== null);
    // Each job has one tick of every SECOND_MS for what need not be read more often, spread over the ticks.
    const every = Math.max(1, Math.round(SECOND_MS / this.intervalMs));
    const turn = (this.last.count + 1) % every;
    for (const w of [...this.jobs.values()]) this.guarded(w, now, near, w.slot % every === turn ? "second" : "tick");
    this.last = {
      count: this.last.count + 1,
      at: now,
      ms: performance.now() - t0,
      jobs: this.jobs.size,
      procs: looked + this.sampled,
    };
  }

  /** Processes read by this tick's samples. */
  private sampled = 0;
  /** This tick's listing of the host, where there is no tracker. */
  private hostTable: ProcTable | null = null;

  /** A failure checking one job (a busy database, say) is reported and retried next tick. */
  private guarded(w: Watched, now: number, near: DiskStatus | null, why: CheckWhy): void {
    try {
      this.check(w, now, near, why);
    } catch (e) {
      console.error(`planterd: limits monitor: job ${w.id}: ${(e as Error).message}`);
    }
  }

  /**
   * Writes reach the log between ticks: check once per burst of inotify events (the quota, and
   * the disk's log reserve, measured afresh: a fast writer crosses it well within a tick).
   */
  private queueLogCheck(w: Watched): void {
    if (w.queued || w.forced) return;
    w.queued = true;
    setImmediate(() => {
      w.queued = false;
      if (this.jobs.get(w.id) !== w) return;
      const near = this.reserveOn ? nearOf(this.measureDisk()) : null;
      if (w.limits.max_log_bytes === undefined && !near && !w.hit) return;
      this.guarded(w, Date.now(), near, "write");
    });
  }

  /**
   * One check of a job: on a tick (the cgroup's counters and the job's processes are read then;
   * `logs`: its logs too), or on a burst of log writes, which come far more often and concern the
   * logs only. A job whose writes inotify does not report has its logs measured on every tick.
   */
  private check(w: Watched, now: number, near: DiskStatus | null, why: CheckWhy): void {
    const tick = why !== "write";
    // A job in a cgroup has its group's members listed again once a second, or when one ended:
    // a process new to the group is counted a second late at most (the kernel counts it at once).
    const tree = tick && needsSample(w) ? this.tree(w, why === "second") : null;
    const rss = tree && w.limits.max_rss_bytes !== undefined ? tree.rss : null;
    const quotaLogs = w.limits.max_log_bytes !== undefined && (why !== "tick" || w.watcher === null);
    const measureLogs = quotaLogs || near !== null || w.hit?.limit === RESERVE_LIMIT;
    const logs = measureLogs ? logSizes(w.files) : null;
    const logBytes = logs ? logs.stdout + logs.stderr : null;
    if (w.hit) {
      this.escalate(w, w.hit, rss, logBytes);
      return;
    }
    if (logs && logBytes !== null && logBytes <= (w.limits.max_log_bytes ?? Number.POSITIVE_INFINITY)) w.under = logs;
    const kernel = tick && w.cgroup ? this.kernelBreach(w, tree === null || tree.changed) : null;
    if (kernel) {
      this.act(w, kernel, logs, now, true);
      return;
    }
    const tasks = w.cgroup === null && tree ? tree.tasks : null;
    const b =
      breach(w.limits, {
        now,
        startedAt: w.startedAt,
        rssBytes: rss,
        logBytes: w.limits.max_log_bytes !== undefined ? logBytes : null,
        tasks,
      }) ?? this.reserveBreach(w, near, logBytes);
    // A tree at its process limit is a bomb or a runaway: it is killed at once, not asked to stop.
    if (b) this.act(w, b, logs, now, b.limit === "max_pids");
  }

  /** Already stopping: a job that keeps growing well past its limit gets SIGKILL now. */
  private escalate(w: Watched, hit: Breach, rss: number | null, logBytes: number | null): void {
    const reserve = hit.limit === RESERVE_LIMIT;
    // Below the disk's reserve, 1 MiB more output than when SIGTERM was sent (logBase then).
    const cap = reserve ? (w.logBase ?? 0) + LOG_GRACE_BYTES : hardCap(hit);
    const value = hit.limit === "max_rss_bytes" ? rss : hit.limit === "max_log_bytes" || reserve ? logBytes : null;
    if (!w.forced && cap !== null && value !== null && value > cap) {
      w.forced = true;
      this.stop(w.id, { force: true, reason: hit.reason, audit: { limit: hit.limit, value, hard_cap: cap } });
    }
  }

  /**
   * What the kernel found in the job's cgroup: an OOM kill (v1 kills one process of the tree, the
   * rest must follow) or forks refused at pids.max. Either stops the whole job at once.
   */
  private kernelBreach(w: Watched, changed: boolean): Breach | null {
    const stored = w.cgroup as string;
    const files = w.counters as GroupFiles;
    const mem = w.limits.max_rss_bytes;
    // An OOM kill ends a process of the job: a sample that found its processes as they were has
    // nothing to read in the OOM counter. Refused forks are read at every tick: a job whose shell
    // cannot fork ends by itself within milliseconds, and that end would stand.
    const c = files.counters(mem !== undefined && changed);
    if (c.oomKills > 0 && mem !== undefined) {
      return {
        limit: "max_rss_bytes",
        reason: "memory_limit",
        value: Math.max(groupPeak(stored) ?? mem, mem + 1),
        max: mem,
      };
    }
    // The ceiling may be the one all jobs share (planterd's own limit less its reserve) rather than
    // the job's own; where v1 counts the refusals depends on the kernel, so a job at or over the
    // lower of the two is the one to stop, with that ceiling as its limit.
    const shared = this.enforcement.cgroups?.sharedPidsMax ?? null;
    const ceiling = Math.min(w.limits.max_pids ?? Number.POSITIVE_INFINITY, shared ?? Number.POSITIVE_INFINITY);
    const full = shared !== null && ceiling === shared && (files.tasks() ?? 0) >= ceiling;
    if ((c.pidsHits > 0 || full) && Number.isFinite(ceiling)) {
      return { limit: "max_pids", reason: "process_limit", value: ceiling + 1, max: ceiling };
    }
    return null;
  }

  /**
   * Below the disk's log reserve, a job whose output grew since the last tick near it is
   * stopped (reason disk_full); near it, each tick notes the job's log size to compare with.
   */
  private reserveBreach(w: Watched, near: DiskStatus | null, logBytes: number | null): Breach | null {
    if (!near || logBytes === null) {
      if (!near) w.logBase = null;
      return null;
    }
    const grew = w.logBase !== null && logBytes > w.logBase;
    w.logBase = logBytes;
    if (!grew || near.free >= near.reserve) return null;
    return { limit: RESERVE_LIMIT, reason: "disk_full", value: near.free, max: near.reserve };
  }

  /**
   * RSS and tasks (processes and threads) summed over the job's processes (the recorder
   * excluded), as the tracker follows them: one that left the tree stays counted.
   */
  private tree(w: Watched, recount: boolean): { rss: number; tasks: number; changed: boolean } | null {
    if (this.hostTable) {
      const t = this.hostTable;
      const procs = descendants(t, [w.pid], w.pid).flatMap((p) => t.procs.get(p) ?? []);
      const pages = procs.reduce((n, p) => n + p.rssPages, 0);
      return { rss: pages * pageSize(), tasks: procs.reduce((n, p) => n + p.threads, 0), changed: true };
    }
    const s = this.procs?.sample(w.id, recount);
    if (!s) return null;
    this.sampled += s.procs.length;
    return { rss: s.rssPages * pageSize(), tasks: s.tasks, changed: s.changed };
  }

  /**
   * Stop a job that exceeded `b`. What happened first stands: a job whose exit status is
   * already written (or whose recorder is gone) ended on its own and keeps that end.
   */
  private act(w: Watched, b: Breach, logs: LogSizes | null, now: number, force = false): void {
    const exitRecorded = readStatus(w.files.status) !== null;
    const job = getJob(this.ctx.db, w.id);
    const decision = decideAct({
      exitRecorded,
      recorderAlive: !exitRecorded && isAlive(w.pid, w.start),
      running: job?.state === "running",
      killRequested: job?.kill_requested_at != null,
    });
    if (decision === "ended") return;
    w.hit = b;
    // A kill under way (the user's) keeps its reason; the hard cap above still applies.
    if (decision === "stopping") return;
    const keep = b.limit === "max_log_bytes" && logs ? quotaCut(w.under, logs, b.max) : undefined;
    // Without a cgroup, every process the tracker followed (the kill lists them again); with one, the group.
    const tree: ProcId[] = w.cgroup === null ? (this.procs?.members(w.id, false) ?? []) : [];
    if (force) w.forced = true;
    this.stop(w.id, {
      reason: b.reason,
      force,
      graceMs: this.graceMs,
      tree,
      audit: { limit: b.limit },
      // The limit, its event and the kill commit together, before the signal.
      record: (ev) => {
        if (!markLimitHit(this.ctx.db, w.id, { limit: b.limit, value: b.value, max: b.max, at: now, keep })) return;
        ev.push({
          kind: "job.limit_exceeded",
          subject: `job/${w.id}`,
          data: { limit: b.limit, reason: b.reason, value: b.value, max: b.max, enforcement: this.enforcement.mode },
        });
      },
    });
    if (b.limit === "max_log_bytes") {
      // The hard cap counts from the size once SIGTERM is sent, not from the (older) sample.
      const sent = logSizes(w.files);
      w.hit = { ...b, value: Math.max(b.value, sent.stdout + sent.stderr) };
    }
    if (b.limit === RESERVE_LIMIT) {
      const sent = logSizes(w.files);
      w.logBase = Math.max(w.logBase ?? 0, sent.stdout + sent.stderr);
      w.reserveKeep = logs ?? sent;
    }
  }

  /**
   * A job stopped below the disk's log reserve has ended: what it wrote after it was stopped is
   * cut from its logs (log writing stops at the reserve). Without this, a flood that overshot the
   * reserve to a full disk would keep the disk full, and with it the record of the job's own end
   * waiting. Returns what was written and kept, or null when nothing was cut.
   */
  cutAtReserve(id: string): { written: LogSizes; kept: LogSizes } | null {
    const w = this.jobs.get(id);
    if (w?.hit?.limit !== RESERVE_LIMIT || !w.reserveKeep) return null;
    const written = logSizes(w.files);
    const kept = {
      stdout: Math.min(written.stdout, w.reserveKeep.stdout),
      stderr: Math.min(written.stderr, w.reserveKeep.stderr),
    };
    if (kept.stdout === written.stdout && kept.stderr === written.stderr) return null;
    try {
      if (kept.stdout < written.stdout) truncateLog(w.files.stdout, kept.stdout);
      if (kept.stderr < written.stderr) truncateLog(w.files.stderr, kept.stderr);
    } catch {
      return null; // removed meanwhile
    }
    return { written, kept };
  }

  private stop(id: string, opts: KillOptions): void {
    try {
      this.kill(id, opts);
    } catch {
      // it ended meanwhile: its own end is recorded
    }
  }

  /**
   * After a job has ended and its tree is dead: cut a log that passed max_log_bytes down to
   * exactly that (the first bytes written), record the truncation, and remove its cgroup.
   */
  settle(job: JobRow, under: LogSizes | null): void {
    const max = job.limits.max_log_bytes;
    if (max !== undefined) {
      const dir = jobDir(this.ctx.paths.stateDir, job.id);
      const files = jobFiles(dir);
      const written = logSizes(files);
      if (written.stdout + written.stderr > max) {
        const keep = job.limit_hit?.keep ?? quotaCut(under ?? { stdout: 0, stderr: 0 }, written, max);
        const kept = quotaCut(
          { stdout: Math.min(keep.stdout, written.stdout), stderr: Math.min(keep.stderr, written.stderr) },
          written,
          max,
        );
        try {
          if (kept.stdout < written.stdout) truncateLog(files.stdout, kept.stdout);
          if (kept.stderr < written.stderr) truncateLog(files.stderr, kept.stderr);
        } catch {
          // a log removed meanwhile (job rm): nothing to cut
        }
        this.ctx.writeOrDefer((ev) => {
          markLogTruncated(this.ctx.db, job.id);
          ev.push({ kind: "job.log_truncated", subject: `job/${job.id}`, data: { max, written, kept } });
        });
      }
    }
    if (job.cgroup) this.removeGroups(job.id, job.cgroup);
  }

  /**
   * Remove a job's groups once the kernel has let go of its killed processes (a group whose last
   * members are still exiting refuses rmdir for a moment): retried for a few seconds, then again
   * at planterd's next start (`sweepGroups`), until the job's row forgets them.
   */
  removeGroups(id: string, stored: string, tries = 50): void {
    this.pendingGroups.delete(id);
    if (removeGroup(stored)) {
      try {
        this.ctx.write(() => clearCgroup(this.ctx.db, id));
      } catch {
        // a full disk: the row still names the group, and the next start's sweep finds it gone
      }
      return;
    }
    if (tries <= 1) return;
    this.pendingGroups.set(
      id,
      setTimeout(() => this.removeGroups(id, stored, tries - 1), 100),
    );
  }

  /** At startup: remove the groups of jobs that ended while planterd was down or before it could. */
  sweepGroups(): void {
    for (const j of endedWithCgroup(this.ctx.db)) this.removeGroups(j.id, j.cgroup, 1);
  }

  /** Stop sampling everything (daemon shutdown); jobs keep running. */
  close(): void {
    for (const id of [...this.jobs.keys()]) this.untrack(id);
    for (const t of this.pendingGroups.values()) clearTimeout(t);
    this.pendingGroups.clear();
    // Groups still emptying get a moment (their killed members exit within milliseconds); what
    // stays is swept at the next start.
    for (let i = 0; i < 10; i++) {
      this.sweepGroups();
      for (const t of this.pendingGroups.values()) clearTimeout(t);
      this.pendingGroups.clear();
      if (!endedWithCgroup(this.ctx.db).length) break;
      Bun.sleepSync(20);
    }
  }
}
