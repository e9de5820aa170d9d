/**
 * Job supervision: spawn each job under the exit-status recorder in its own session, kill
 * whole trees, re-adopt live jobs after a restart, and record how every job ended, once.
 */
import {
  closeSync,
  existsSync,
  type FSWatcher,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  watch,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Reason } from "../api/contract.ts";
import { conflict, PlanterError } from "../api/errors.ts";
import type { Context, PendingEvent } from "../daemon/context.ts";
import { planRequest, runAsOf } from "../daemon/launch.ts";
import { jobDir } from "../paths.ts";
import type { Backend } from "../sandbox/backend.ts";
import { HOST_ENV } from "../sandbox/env.ts";
import { dropArgv, type Identity } from "../sandbox/identity.ts";
import { openInputs } from "../sandbox/inputs.ts";
import { complete, type EffectivePolicy } from "../sandbox/policy.ts";
import { readOnlyPaths, review, type WorkspaceSnapshot } from "../sandbox/workspace.ts";
import {
  type Finish,
  getJob,
  type JobRow,
  liveJobs,
  markFinished,
  markKillRequested,
  markLimitHit,
  markRunning,
  markWorkspace,
} from "../state/jobs.ts";
import { isLegacyJobId } from "../state/legacy.ts";
import { cgroupArgv, JobCgroups } from "./cgroup.ts";
import { freshSessionKeyring } from "./keyring.ts";
import { LIMIT_REASONS } from "./limits.ts";
import { Monitor } from "./monitor.ts";
import { holdersOf, isAlive, type ProcId, signalName, signalTree, startedProcs, startTime } from "./proc.ts";
import { jobFiles, makePipes, readStatus, recorderArgv } from "./recorder.ts";

/** Signals that ask a job to end: they start the grace period before SIGKILL. */
const TERMINATING = new Set(["TERM", "INT", "HUP", "QUIT", "KILL"]);

export interface KillOptions {
  signal?: string;
  force?: boolean;
  reason?: Reason;
  audit?: Record<string, unknown>;
  /** SIGTERM → SIGKILL grace (default jobs.kill_grace_ms). */
  graceMs?: number;
  /** Processes the caller knows belong to the job's tree (the monitor's last sample). */
  tree?: ProcId[];
  /** Recorded in the kill's own transaction, before the kill record (the monitor's limit hit). */
  record?: (events: PendingEvent[]) => void;
}

/** Where and as whom a job runs: what the daemon worked out from its cell and its peer. */
export interface LaunchContext {
  cellDir: string;
  home: string;
  protect: string[];
  hiddenHomes: string[];
  credentialHomes: string[];
  otherCells: string[];
  tmpBytes: number;
  identity: Identity | null;
  /** The peer the job runs for (its owner), when known. */
  peerUid: number | null;
  /** Each writable tree's workspace before the job (none: not protected). */
  workspace: { root: string; before: WorkspaceSnapshot }[];
}

function readOnlyWorkspace(where: LaunchContext, policy: EffectivePolicy): string[] {
  if (!where.workspace.length || policy.workspace_config === "allow") return [];
  // Tool config that packages ship under node_modules is left to the review after the job: a
  // read-only bind there would make `rm -rf node_modules` (npm ci) fail with EBUSY.
  return where.workspace
    .flatMap((w) => readOnlyPaths(w.before))
    .filter((p) => !p.split("/").includes("node_modules") || /\/\.git(\/|$)/.test(p));
}

export class Supervisor {
  private readonly own = new Map<string, Subprocess>();
  private readonly adopted = new Map<string, { pid: number; start: string | null; watcher: FSWatcher | null }>();
  private readonly graceTimers = new Map<string, Timer>();
  private readonly resendTimers = new Map<string, Timer>();
  /** Processes of each job's tree seen at its last signal: orphans stay reachable for SIGKILL. */
  private readonly signalled = new Map<string, ProcId[]>();
  private pollTimer: Timer | null = null;
  /** Samples running jobs and stops those that exceed their limits. */
  readonly monitor: Monitor;

  constructor(private readonly ctx: Context) {
    this.monitor = new Monitor(ctx, (id, opts) => this.kill(id, opts));
  }

  /** Number of jobs this daemon watches. */
  get watching(): number {
    return this.own.size + this.adopted.size;
  }

  /**
   * Spawn a pending job through `backend`. On failure the job ends `failed` with reason
   * `spawn_error` (or `sandbox_error`) and a message; nothing is left running.
   */
  launch(job: JobRow, backend: Backend, fallback: boolean, where: LaunchContext): void {
    const dir = jobDir(this.ctx.paths.stateDir, job.id);
    const files = jobFiles(dir);
    let out = -1;
    let err = -1;
    let fds: number[] = [];
    let cgroup: string | null = null;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // Append mode: a file handed to Bun.spawn as Bun.file() would be truncated.
      out = openSync(files.stdout, "a", 0o600);
      err = openSync(files.stderr, "a", 0o600);
      const program = resolveProgram(job.argv[0] as string, job.env.PATH, job.cwd);
      const policy = job.sandbox_policy ?? complete(undefined);
      const protect = backend.name === "none" ? [] : readOnlyWorkspace(where, policy);
      const plan = backend.plan(
        planRequest(where, {
          argv: [program, ...job.argv.slice(1)],
          env: job.env,
          cwd: job.cwd,
          policy,
          workspaceReadOnly: protect,
          jobDir: dir,
          scratch: scratchDir(job.id),
        }),
      );
      for (const d of plan.dirs ?? []) mkdirSync(d, { recursive: true, mode: 0o700 });
      for (const f of plan.files ?? []) writeFileSync(f.path, f.content, { mode: 0o600 });
      fds = openInputs(plan.inputs ?? [], dir, where.identity);
      if (where.workspace.length) {
        writeFileSync(join(dir, "workspace.json"), JSON.stringify(where.workspace), { mode: 0o600 });
      }
      cgroup = this.jobCgroup(job);
      let argv = where.identity ? [...dropArgv(where.identity), ...plan.argv] : plan.argv;
      argv = cgroup ? cgroupArgv(join(cgroup, "cgroup.procs"), argv) : argv;
      const quota = plan.pipes && job.limits.max_log_bytes !== undefined ? job.limits.max_log_bytes + 1 : 0;
      if (plan.pipes) makePipes(files.status);
      freshSessionKeyring();
      const proc = Bun.spawn(recorderArgv(files.status, argv, plan.pipes ?? false, quota), {
        cwd: plan.cwd,
        env: HOST_ENV,
        stdio: ["ignore", out, err, ...fds],
        detached: true,
      });
      const start = startTime(proc.pid);
      this.own.set(job.id, proc);
      const enforcement = cgroup ? "cgroup v2" : "monitor";
      const runAs = runAsOf(where.identity, where.peerUid);
      this.ctx.write((ev) => {
        markRunning(this.ctx.db, job.id, proc.pid, start, fallback, Date.now(), enforcement, cgroup, runAs);
        ev.push({
          kind: "job.started",
          subject: `job/${job.id}`,
          data: { pid: proc.pid, backend: backend.name, run_as: runAs },
        });
      });
      if (Object.keys(job.limits).length) this.monitor.track(getJob(this.ctx.db, job.id) as JobRow);
      proc.exited.then(() => this.ownExited(job.id, proc));
    } catch (e) {
      if (cgroup) JobCgroups.remove(cgroup);
      const pe = e instanceof PlanterError ? e : null;
      const reason: Reason = pe?.code === "E_SANDBOX_UNAVAILABLE" ? "sandbox_error" : "spawn_error";
      this.finish(job.id, {
        state: "failed",
        reason,
        exit_code: null,
        signal: null,
        message: pe
          ? `${pe.message}${pe.hint && reason === "sandbox_error" ? ` (${pe.hint})` : ""}`
          : spawnMessage(e, job),
        at: Date.now(),
      });
    } finally {
      if (out >= 0) closeSync(out);
      if (err >= 0) closeSync(err);
      for (const fd of fds) closeSync(fd);
    }
  }

  /**
   * A cgroup v2 group for the job when the host delegates one (null otherwise). A group that
   * cannot be made leaves the job to the monitor, with an event saying why.
   */
  private jobCgroup(job: JobRow): string | null {
    const cgroups = this.monitor.enforcement.cgroups;
    if (!cgroups) return null;
    try {
      return cgroups.create(job.id, job.limits.max_rss_bytes);
    } catch (e) {
      this.ctx.write((ev) =>
        ev.push({ kind: "job.cgroup_failed", subject: `job/${job.id}`, data: { message: (e as Error).message } }),
      );
      return null;
    }
  }

  /** Deliver a signal to a job's tree; terminating signals record a kill and escalate after the grace. */
  kill(id: string, opts: KillOptions = {}): JobRow {
    const job = getJob(this.ctx.db, id);
    if (!job) throw new PlanterError("E_NOT_FOUND", `no job ${id}`);
    if (job.state !== "running" || job.pid === null) {
      throw conflict(`job ${id} is not running (state ${job.state})`, "nothing to kill; see `planter job status`");
    }
    const signal = opts.force ? "KILL" : (opts.signal ?? "TERM");
    if (!TERMINATING.has(signal)) {
      this.send(id, job, `SIG${signal}` as NodeJS.Signals);
      this.ctx.write((ev) => ev.push({ kind: "job.signaled", subject: `job/${id}`, data: { signal, ...opts.audit } }));
      return job;
    }
    const force = signal === "KILL";
    const reason: Reason = opts.reason ?? (force ? "forced_kill" : "terminated_by_user");
    this.ctx.write((ev) => {
      opts.record?.(ev);
      markKillRequested(this.ctx.db, id, signal, force, reason, Date.now());
      ev.push({ kind: "job.kill_requested", subject: `job/${id}`, data: { signal, force, reason, ...opts.audit } });
    });
    if (opts.tree?.length) this.signalled.set(id, [...(this.signalled.get(id) ?? []), ...opts.tree]);
    this.signal(id, job, `SIG${signal}` as NodeJS.Signals);
    if (!force) this.scheduleEscalation(id, job.pid, opts.graceMs ?? this.ctx.config.jobs.kill_grace_ms);
    return getJob(this.ctx.db, id) as JobRow;
  }

  private signal(id: string, job: JobRow, sig: NodeJS.Signals): void {
    this.signalled.set(id, this.send(id, job, sig, this.signalled.get(id)));
    // SIGKILL through the group too: it reaches processes that left the tree unseen.
    if (sig === "SIGKILL" && job.cgroup) this.monitor.enforcement.cgroups?.kill(job.cgroup);
  }

  /**
   * `signalTree`, and for a job that has not exec'd its program yet, the signal again to its
   * processes once they appear: the recorder's fork can consume it (its trap), and a sandbox
   * that is still being set up gets nothing (see `signalTree`).
   */
  private send(id: string, job: JobRow, sig: NodeJS.Signals, known: ProcId[] = []): ProcId[] {
    const pid = job.pid as number;
    const early = sig !== "SIGKILL" && process.platform === "linux" && !startedProcs(pid, sandboxed(job)).length;
    const tree = signalTree(pid, sig, known, sandboxed(job));
    if (early && !this.resendTimers.has(id)) this.resendOnStart(id, job, sig);
    return tree;
  }

  /** Send `sig` once to the job's processes when they have started, polling briefly (see `send`). */
  private resendOnStart(id: string, job: JobRow, sig: NodeJS.Signals, tries = 100): void {
    const t = setTimeout(() => {
      this.resendTimers.delete(id);
      const now = getJob(this.ctx.db, id);
      if (now?.state !== "running" || !isAlive(job.pid as number, job.start_time)) return;
      const started = startedProcs(job.pid as number, sandboxed(job));
      if (!started.length) {
        if (tries > 1) this.resendOnStart(id, job, sig, tries - 1);
        return;
      }
      for (const p of started) {
        try {
          if (isAlive(p.pid, p.start)) process.kill(p.pid, sig);
        } catch {
          // raced with its exit
        }
      }
    }, 20);
    this.resendTimers.set(id, t);
  }

  private scheduleEscalation(id: string, pid: number, ms: number): void {
    if (this.graceTimers.has(id)) return;
    const t = setTimeout(() => {
      this.graceTimers.delete(id);
      const job = getJob(this.ctx.db, id);
      if (!job || (job.state !== "running" && job.state !== "pending")) return;
      this.ctx.write((ev) => {
        markKillRequested(this.ctx.db, id, "KILL", true, job.kill_reason ?? "terminated_by_user", Date.now());
        ev.push({ kind: "job.kill_escalated", subject: `job/${id}`, data: { signal: "KILL", grace_ms: ms } });
      });
      this.signal(id, { ...job, pid }, "SIGKILL");
    }, ms);
    this.graceTimers.set(id, t);
  }

  /** Re-adopt every job a previous daemon left: live ones are watched, ended ones recorded. */
  adoptAll(): { adopted: number; finished: number; lost: number } {
    const counts = { adopted: 0, finished: 0, lost: 0 };
    for (const job of liveJobs(this.ctx.db)) {
      if (job.pid === null || job.state === "pending") {
        this.finish(job.id, lostFinish("planterd stopped while starting this job; whether it ran is unknown"));
        counts.lost++;
        continue;
      }
      if (isAlive(job.pid, job.start_time)) {
        this.adopt(job);
        counts.adopted++;
      } else {
        const f = this.deadFinish(job, null);
        this.finish(job.id, f);
        if (f.state === "lost") counts.lost++;
        else counts.finished++;
      }
    }
    return counts;
  }

  private adopt(job: JobRow): void {
    const pid = job.pid as number;
    let watcher: FSWatcher | null = null;
    try {
      // The recorder writes its status file just before it exits: inotify wakes us at once.
      watcher = watch(jobDir(this.ctx.paths.stateDir, job.id), () => this.checkAdopted(job.id));
    } catch {
      watcher = null; // the poll below still notices the end
    }
    this.adopted.set(job.id, { pid, start: job.start_time, watcher });
    this.ctx.write((ev) => ev.push({ kind: "job.adopted", subject: `job/${job.id}`, data: { pid } }));
    if (job.kill_requested_at !== null && !job.kill_force) {
      const limit = job.kill_reason !== null && LIMIT_REASONS.has(job.kill_reason);
      const grace = limit ? this.monitor.graceMs : this.ctx.config.jobs.kill_grace_ms;
      this.scheduleEscalation(job.id, pid, Math.max(0, job.kill_requested_at + grace - Date.now()));
    }
    // Limits hold after a restart too; elapsed time counts from the job's real start.
    this.monitor.track(job);
    if (!this.pollTimer) {
      this.pollTimer = setInterval(() => {
        for (const id of [...this.adopted.keys()]) this.checkAdopted(id);
      }, this.ctx.config.jobs.adopt_poll_ms);
    }
  }

  private checkAdopted(id: string): void {
    const a = this.adopted.get(id);
    if (!a) return;
    // The status file is written when the job has ended; the recorder exits a moment later.
    const recorded = readStatus(jobFiles(jobDir(this.ctx.paths.stateDir, id)).status) !== null;
    if (!recorded && isAlive(a.pid, a.start)) return;
    const job = getJob(this.ctx.db, id);
    if (job) this.finish(id, this.deadFinish(job, null));
    else this.forget(id);
  }

  private ownExited(id: string, proc: Subprocess): void {
    const job = getJob(this.ctx.db, id);
    if (!job) {
      this.forget(id);
      return;
    }
    const sig = typeof proc.signalCode === "string" ? proc.signalCode.replace(/^SIG/, "") : null;
    this.finish(id, this.deadFinish(job, sig, sig ? null : proc.exitCode));
  }

  /** How a job whose recorder is gone ended, from its status file and its kill record. */
  private deadFinish(job: JobRow, recorderSignal: string | null, recorderCode: number | null = null): Finish {
    // The recorder exits with the job's code: it stands in if the status file could not be written.
    const code = readStatus(jobFiles(jobDir(this.ctx.paths.stateDir, job.id)).status) ?? recorderCode;
    if (job.kill_requested_at === null && job.cgroup) this.cgroupOom(job);
    return endOf(getJob(this.ctx.db, job.id) ?? job, code, recorderSignal, Date.now());
  }

  /**
   * The kernel OOM-killed the job's cgroup (memory.max): record it as the memory limit, with
   * the group's peak as the observed value.
   */
  private cgroupOom(job: JobRow): void {
    const end = JobCgroups.end(job.cgroup as string);
    const max = job.limits.max_rss_bytes;
    if (end.oomKills === 0 || max === undefined) return;
    const value = end.peakBytes ?? max;
    this.ctx.write((ev) => {
      markKillRequested(this.ctx.db, job.id, "KILL", true, "memory_limit", Date.now());
      if (markLimitHit(this.ctx.db, job.id, { limit: "max_rss_bytes", value, max, at: Date.now() })) {
        ev.push({
          kind: "job.limit_exceeded",
          subject: `job/${job.id}`,
          data: { limit: "max_rss_bytes", reason: "memory_limit", value, max, enforcement: "cgroup v2" },
        });
      }
    });
  }

  /** Record the end of a job (once) and wake its waiters. */
  finish(id: string, f: Finish): void {
    const ended = this.ctx.write((ev) => {
      if (!markFinished(this.ctx.db, id, f)) return false;
      ev.push({
        kind: "job.finished",
        subject: `job/${id}`,
        data: { state: f.state, reason: f.reason, exit_code: f.exit_code, signal: f.signal, message: f.message },
      });
      return true;
    });
    const under = this.monitor.untrack(id);
    this.forget(id);
    const job = ended ? getJob(this.ctx.db, id) : null;
    // A killed job leaves nothing running: bwrap killed before its init had set PDEATHSIG leaves
    // a namespace that no tree walk finds (reparented to pid 1), but it still holds the job's pipes.
    if (job?.state === "killed") {
      for (const p of holdersOf(jobDir(this.ctx.paths.stateDir, id))) {
        try {
          if (isAlive(p.pid, p.start)) process.kill(p.pid, "SIGKILL");
        } catch {
          // raced with its exit
        }
      }
    }
    if (ended) this.reviewWorkspace(id);
    // The tree is dead now: the stored log can be cut to its quota.
    if (job) this.monitor.settle(job, under);
    this.ctx.bus.jobEnded(id);
  }

  /**
   * After a job: what it added or changed in its cell that the host would execute (git hooks and
   * config, tool config) is set aside, the earlier version restored, and each one recorded.
   */
  private reviewWorkspace(id: string): void {
    const file = join(jobDir(this.ctx.paths.stateDir, id), "workspace.json");
    if (!existsSync(file)) return;
    try {
      // One snapshot per writable tree the job had.
      const trees = JSON.parse(readFileSync(file, "utf8")) as LaunchContext["workspace"];
      const extra = this.ctx.config.sandbox.workspace_config_extra;
      const findings = trees.flatMap((t) => review(t.root, t.before, { jobId: id, extra }));
      if (!findings.length) return;
      this.ctx.write((ev) => {
        markWorkspace(this.ctx.db, id, findings);
        for (const f of findings) ev.push({ kind: "job.workspace_set_aside", subject: `job/${id}`, data: { ...f } });
      });
    } catch (e) {
      this.ctx.write((ev) =>
        ev.push({
          kind: "job.workspace_review_failed",
          subject: `job/${id}`,
          data: { message: (e as Error).message },
        }),
      );
    } finally {
      rmSync(file, { force: true });
    }
  }

  private forget(id: string): void {
    this.monitor.untrack(id);
    this.own.delete(id);
    rmSync(scratchDir(id), { recursive: true, force: true });
    const orphans = this.signalled.get(id);
    this.signalled.delete(id);
    // A killed job's tree dies whole: orphans that outlived the recorder get SIGKILL too.
    if (orphans) for (const p of orphans) if (isAlive(p.pid, p.start)) process.kill(p.pid, "SIGKILL");
    const a = this.adopted.get(id);
    if (a) {
      a.watcher?.close();
      this.adopted.delete(id);
    }
    const t = this.graceTimers.get(id);
    if (t) clearTimeout(t);
    this.graceTimers.delete(id);
    clearTimeout(this.resendTimers.get(id));
    this.resendTimers.delete(id);
    if (this.adopted.size === 0 && this.pollTimer) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
  }

  /** Stop watching (daemon shutdown); jobs keep running under their recorders. */
  close(): void {
    this.monitor.close();
    for (const id of [...this.own.keys(), ...this.adopted.keys()]) this.forget(id);
    for (const t of [...this.graceTimers.values(), ...this.resendTimers.values()]) clearTimeout(t);
    this.graceTimers.clear();
    this.resendTimers.clear();
  }
}

/**
 * How a job whose recorder is gone ended, from its exit status (`code`, null when none was
 * written), the recorder's own signal and the job's kill record. Pure: the race of a job's own
 * exit against a limit is decided here and in `decideAct`.
 */
export function endOf(job: JobRow, code: number | null, recorderSignal: string | null, at: number): Finish {
  const killed = job.kill_requested_at !== null;
  if (code !== null) {
    const sig = code > 128 ? signalName(code - 128) : null;
    if (killed && sig) {
      return { state: "killed", reason: killReason(job, sig), exit_code: code, signal: sig, message: null, at };
    }
    // The monitor decided to stop the job before its exit status existed: the limit came
    // first, whatever code the job then exited with (a TERM handler may exit 0).
    if (job.limit_hit !== null && job.kill_reason !== null && LIMIT_REASONS.has(job.kill_reason)) {
      return { state: "killed", reason: job.kill_reason, exit_code: code, signal: null, message: null, at };
    }
    return {
      state: code === 0 ? "exited" : "failed",
      reason: "exited",
      exit_code: code,
      signal: null,
      message: null,
      at,
    };
  }
  // No status: the recorder itself was killed (SIGKILL to the group), or vanished unseen.
  if (killed) {
    const sig = recorderSignal ?? job.kill_signal ?? "KILL";
    return { state: "killed", reason: killReason(job, sig), exit_code: null, signal: sig, message: null, at };
  }
  if (recorderSignal) {
    return {
      state: "failed",
      reason: "exited",
      exit_code: null,
      signal: recorderSignal,
      message: `killed by SIG${recorderSignal} from outside planter`,
      at,
    };
  }
  if (isLegacyJobId(job.id)) {
    return lostFinish(
      "imported from the legacy prototype, which records no exit status: the job ended and its exit code is unknowable",
    );
  }
  return lostFinish("the job ended while planterd was down and left no exit status");
}

/**
 * Whether the job runs in bwrap's pid namespace: then signals but SIGKILL go to its processes
 * inside, never to bwrap itself (see `signalTree`).
 */
function sandboxed(job: JobRow): boolean {
  return job.backend === "bwrap";
}

/** A job's private temp dir (Seatbelt's TMPDIR), outside planter's protected state dir. */
function scratchDir(id: string): string {
  return join(tmpdir(), `planter-${id}`);
}

function killReason(job: JobRow, endingSignal: string): Reason {
  const r = job.kill_reason ?? "terminated_by_user";
  return r === "terminated_by_user" && endingSignal === "KILL" && job.kill_signal === "KILL" ? "forced_kill" : r;
}

function lostFinish(message: string): Finish {
  return { state: "lost", reason: "lost", exit_code: null, signal: null, message, at: Date.now() };
}

/**
 * Resolve the program to an absolute path with the job's PATH. The recorder is a shell, so a
 * bare name like `exit` or `echo` would otherwise run a shell builtin.
 */
export function resolveProgram(name: string, path: string | undefined, cwd: string): string {
  if (name.includes("/")) {
    const abs = name.startsWith("/") ? name : `${cwd}/${name}`;
    const found = Bun.which(abs);
    if (!found) throw spawnError(`${name}: no such executable`, "check the path and that the file is executable");
    return abs;
  }
  const found = Bun.which(name, { PATH: path ?? "", cwd });
  if (!found) {
    throw spawnError(
      `${name}: command not found in the job's PATH (${path ?? "unset"})`,
      "give an absolute path, or set PATH with --env PATH=…",
    );
  }
  return found;
}

function spawnError(message: string, hint: string): PlanterError {
  return new PlanterError("E_BAD_REQUEST", message, { hint });
}

function spawnMessage(e: unknown, job: JobRow): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === "ENOENT") return `cannot start ${job.argv[0]}: working directory ${job.cwd} does not exist`;
  if (err.code === "EACCES") return `cannot start ${job.argv[0]}: permission denied`;
  return `cannot start ${job.argv[0]}: ${err.message}`;
}
