/**
 * Job supervision: spawn each job under the exit-status recorder in its own session, kill
 * whole trees, re-adopt live jobs after a restart, and record how every job ended, once.
 */
import {
  chownSync,
  closeSync,
  existsSync,
  type FSWatcher,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  watch,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { AgentKind } from "../agents/model.ts";
import { REPORT_OPEN } from "../agents/report.ts";
import type { Enforcement, Reason, RunAs } from "../api/contract.ts";
import { conflict, PlanterError } from "../api/errors.ts";
import type { Context, PendingEvent } from "../daemon/context.ts";
import { planRequest, releasePlaceholders, runAsOf } from "../daemon/launch.ts";
import type { NetRules } from "../net/policy.ts";
import { jobDir } from "../paths.ts";
import type { Backend, PipeEnds, SpawnPlan } from "../sandbox/backend.ts";
import { HOST_ENV } from "../sandbox/env.ts";
import { closeEnds, GATE_HINT, openGate } from "../sandbox/gate.ts";
import { loadGuard, saveGuard, ViewGuard } from "../sandbox/guard.ts";
import { dropArgv, type Identity } from "../sandbox/identity.ts";
import { openInputs } from "../sandbox/inputs.ts";
import { complete, type EffectivePolicy } from "../sandbox/policy.ts";
import { DEFAULT_VM_MEMORY_MB, hostLimits, readVmStatus, VmBackend, withKvmGroup } from "../sandbox/vm.ts";
import {
  type Finding,
  passOn,
  readOnlyPaths,
  recordedFindings,
  reviewAsync,
  type WatchedEntry,
  type WorkspaceSnapshot,
} from "../sandbox/workspace.ts";
import { selfArgv } from "../self.ts";
import {
  type Finish,
  getJob,
  type JobRow,
  liveJobs,
  markFinished,
  markKillRequested,
  markLaunching,
  markLimitHit,
  markLogTruncated,
  markRunning,
  markWorkspace,
} from "../state/jobs.ts";
import { isLegacyJobId } from "../state/legacy.ts";
import { storageFault } from "../state/storage.ts";
import { HOLDER_FILE, LOG_WHOLE_FILE } from "../tty/holder.ts";
import { builtinSession, sessionArgv } from "../tty/session.ts";
import { CTTY_ARGV, holderSocket, type StartedHolder, startHolder } from "../tty/start.ts";
import { AgentChannels } from "./agents.ts";
import { groupEnd, groupMembers, groupProcs, killGroup, removeGroup, setGroupLimits } from "./cgroup.ts";
import { settleStart } from "./claim.ts";
import { Egress } from "./egress.ts";
import { freshSessionKeyring } from "./keyring.ts";
import { LIMIT_REASONS } from "./limits.ts";
import { type EnforcementInfo, Monitor } from "./monitor.ts";
import { ExitWatch } from "./pidfd.ts";
import {
  holding,
  hostTree,
  isAlive,
  type ProcId,
  type ProcTable,
  procEntry,
  signalName,
  signalTree,
  startedProcs,
  startTime,
  tableOf,
} from "./proc.ts";
import {
  jobFiles,
  makePipes,
  prepareStatus,
  readStatus,
  recorderArgv,
  STDIN_FIRST_FD,
  writeStatusInPlace,
} from "./recorder.ts";
import { prepareStdin } from "./stdin.ts";
import { recorderLimits, type TaskShare, taskShare } from "./tasks.ts";
import { shiftFds, WARM_SHELL, WarmPool, type WarmSandbox, warmScript } from "./warm.ts";

/** In a bwrap job's dir: its sandbox was spawned with a gate, and the gate let it go (lib/sandbox/gate.ts). */
export const VIEW_PENDING = "view.pending";
export const VIEW_OK = "view.ok";

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
  /** Placeholders holding missing deny paths (made by `holdMissingDeny`). */
  placeholders?: string[];
  /** Seatbelt with an allow list: the loopback port of the job's proxy (`PlanRequest.proxyPort`). */
  proxyPort?: number;
  /** An agent job: the agent CLI it runs (its report channel is made at launch). */
  agent?: AgentKind;
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
  private readonly adopted = new Map<
    string,
    { pid: number; start: string | null; watcher: FSWatcher | null; polled: boolean }
  >();
  /** Adopted recorders' exits (pidfds), made at the first adoption; null where the kernel has none. */
  private exits: ExitWatch | null | undefined;
  private readonly graceTimers = new Map<string, Timer>();
  private readonly resendTimers = new Map<string, Timer>();
  /** Processes of each job's tree seen at its last signal: orphans stay reachable for SIGKILL. */
  private readonly signalled = new Map<string, ProcId[]>();
  private pollTimer: Timer | null = null;
  /** Jobs that have ended but whose end waits for the state disk (ctx.writeOrDefer). */
  private readonly ending = new Set<string>();
  /** Jobs that have ended and whose workspace is being reviewed: their end is recorded after. */
  private readonly reviewing = new Set<string>();
  private closed = false;
  /** Samples running jobs and stops those that exceed their limits. */
  readonly monitor: Monitor;
  /**
   * The task share of jobs without a cgroup (lib/jobs/tasks.ts): computed at startup where cgroups
   * are not used for every job, else at the first job whose group could not be made.
   */
  private share: TaskShare | null | undefined;
  get taskShare(): TaskShare | null {
    if (this.share === undefined) this.share = taskShare();
    return this.share;
  }
  /** Stops a sandboxed job whose covers the host has replaced (lib/sandbox/guard.ts). */
  readonly guard = new ViewGuard((id, path) => this.viewChanged(id, path));
  /** Sandboxes made ahead for the next job of their kind (lib/jobs/warm.ts). */
  readonly warm: WarmPool;
  /** Running sandboxed jobs whose kind gets a warm sandbox when they end: their plans in warm form. */
  private readonly warmNext = new Map<string, { plan: () => SpawnPlan; identity: Identity | null }>();
  /** When each job this planterd launched started (until it is forgotten). */
  private readonly startedAt = new Map<string, number>();
  /** The job launched last. */
  private lastLaunched: string | null = null;
  /** Terminal jobs whose recorder has ended, waiting for their holder's log: since when. */
  private readonly draining = new Map<string, number>();
  private readonly drainTimers = new Map<string, Timer>();

  /** The egress proxies of running jobs with a network allow list (lib/jobs/egress.ts). */
  readonly egress: Egress;
  /** The report channels of running agent jobs (lib/jobs/agents.ts). */
  readonly agents: AgentChannels;

  /** `enforcement`: the cgroups chosen before planterd ran anything (lib/daemon/main.ts); else chosen now. */
  constructor(
    private readonly ctx: Context,
    enforcement?: EnforcementInfo,
  ) {
    this.agents = new AgentChannels({
      write: (fn) => ctx.write(fn),
      processOf: (id) => {
        const j = getJob(ctx.db, id);
        return j?.pid && j.start_time ? `${j.pid}:${j.start_time}` : null;
      },
      stateDir: ctx.paths.stateDir,
    });
    this.monitor = new Monitor(ctx, (id, opts) => this.kill(id, opts), enforcement);
    if (!this.monitor.enforcement.cgroups) this.share = taskShare();
    this.egress = new Egress({
      write: (fn) => ctx.write(fn),
      hosts: ctx.config.network.hosts,
      helper: selfArgv("net-listen"),
      maxPerUid: ctx.config.network.proxy_connections_per_uid,
    });
    this.warm = new WarmPool(ctx, {
      cgroup: (name) => this.monitor.enforcement.cgroups?.create(name, {}) ?? null,
      watch: (id, entries) => {
        try {
          this.guard.watch(id, entries);
          return true;
        } catch {
          return false;
        }
      },
      unwatch: (id) => this.guard.unwatch(id),
    });
  }

  /** The host replaced a path a cover of the job's hung on: the job cannot keep running unguarded. */
  private viewChanged(id: string, path: string | null, why?: string): void {
    // A warm sandbox waiting for a job: given up (a job would start in a view no longer its policy's).
    if (id.startsWith("warm:")) {
      this.warm.changed(id.slice(5));
      return;
    }
    try {
      this.kill(id, {
        force: true,
        reason: "sandbox_changed",
        record: (ev) =>
          ev.push({
            kind: "job.sandbox_changed",
            subject: `job/${id}`,
            data: {
              path,
              message:
                why ??
                `${path} was created, removed or renamed on the host while the job ran: a cover of its sandbox hung on it`,
              hint: "deny a directory rather than a file the host rewrites, and change what a cell denies while no job of it runs",
            },
          }),
      });
    } catch {
      // the job ended meanwhile
    }
  }

  /** Number of jobs this daemon watches. */
  get watching(): number {
    return this.own.size + this.adopted.size;
  }

  /**
   * Spawn a pending job through `backend`. On failure the job ends `failed` with reason
   * `spawn_error` (or `sandbox_error`) and a message; nothing is left running.
   */
  /**
   * Start a job. A terminal job (`tty`) starts under its holder (lib/tty): the promise settles
   * once the holder says the recorder runs (or the job has failed to start).
   */
  launch(job: JobRow, backend: Backend, fallback: boolean, where: LaunchContext): Promise<void> | undefined {
    const dir = jobDir(this.ctx.paths.stateDir, job.id);
    let started: Promise<void> | undefined;
    const files = jobFiles(dir);
    let out = -1;
    let err = -1;
    let fds: number[] = [];
    // The job's stdin pipe, read-write, for the recorder's fd 0 (a job created with stdin).
    let input = -1;
    // An agent job's report FIFO, read-write, for the recorder's fd 0 (a job without stdin).
    let report = -1;
    let cgroup: string | null = null;
    let spawned = false;
    // How to render the plan of a warm sandbox for this job (its job the shell that reads its
    // commands), when one may be made for it: bwrap with cgroups (the job's processes are its
    // group's). Rendered only when a warm sandbox waits, or when one is made at the job's end.
    let warmPlan: (() => SpawnPlan) | null = null;
    // planterd's ends of the sandbox's pipes (a network allow list: lib/net/listen.ts).
    const ends: PipeEnds = {};
    try {
      const policy = job.sandbox_policy ?? complete(undefined);
      const rules = egressRules(job, backend.name);
      // Seatbelt: the job's proxy listens on a host loopback port first; its profile names it.
      if (rules && backend.name === "seatbelt" && where.proxyPort === undefined) {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        return this.egress.listenLocal(job.id, rules, dir, jobUid(job)).then(
          (port) => this.launch(job, backend, fallback, { ...where, proxyPort: port }),
          (e) => this.finish(job.id, egressFailure(e)),
        );
      }
      const protect = backend.name === "none" ? [] : readOnlyWorkspace(where, policy);
      if (this.warmable(job, backend, rules, where)) {
        warmPlan = this.warmPlanOf(job, backend, where, policy, protect);
        if (this.runWarm(job, warmPlan, fallback, where)) {
          spawned = true;
          return;
        }
      }
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // Append mode: a file handed to Bun.spawn as Bun.file() would be truncated.
      out = openSync(files.stdout, "a", 0o600);
      err = openSync(files.stderr, "a", 0o600);
      prepareStatus(files.status);
      const agentReport = where.agent ? this.agents.prepare(job.id, dir, where.agent, where.identity) : undefined;
      const plan = this.jobPlan(job, backend, where, policy, protect, rules !== null, agentReport);
      writePlanFiles(plan, where.identity);
      fds = openInputs(plan.inputs ?? [], dir, where.identity, ends);
      if (where.workspace.length) {
        writeFileSync(join(dir, "workspace.json"), JSON.stringify(where.workspace), { mode: 0o600 });
      }
      cgroup = this.jobCgroup(job);
      // Before the spawn: from here on a host that replaces what a cover hangs on stops the job.
      this.watchGuard(job.id, dir, plan);
      input = makeFifos(job, plan, dir, where.identity);
      const { planArgv, gap } = clearOfStdin(plan, fds, dir, { input, tty: job.tty }, backend.name);
      const argv = runnerArgv(job, backend, where.identity, planArgv);
      const enforcement = this.enforcementOf(cgroup);
      const runAs = runAsOf(where.identity, where.peerUid);
      // Before the spawn: a planterd killed before `markRunning` below is followed by one that
      // finds the recorder through its pid file and adopts the job with these facts.
      this.ctx.write(() => markLaunching(this.ctx.db, job.id, fallback, enforcement, cgroup, runAs));
      freshSessionKeyring();
      const procs = cgroup ? groupProcs(cgroup) : [];
      // The allow list's proxy, where the sandbox has the pipes for it (lib/net/listen.ts).
      const proxied = ends.info !== undefined ? rules : null;
      // Before the spawn: a planterd gone before the gate answers leaves a mark a restarted one reads.
      markGated(dir, ends);
      const nproc = this.recorderNproc(cgroup);
      if (job.tty) {
        // The holder is spawned before startHolder's first await: the fds closed below are its.
        started = this.startTerminal(job, backend, fallback, {
          argv: recorderArgv(files.status, argv, false, procs, false, false, nproc),
          hold: agentReport ?? null,
          ttyName: plan.ttyName ?? null,
          cwd: plan.cwd,
          fds,
          err,
          enforcement,
          cgroup,
          runAs,
        });
        spawned = true;
        if (ends.info !== undefined) this.startGate(job.id, plan, proxied, ends, dir, jobUid(job), where.identity);
        return started;
      }
      // An agent job's report FIFO, held by the recorder while the job runs (not beside stdin:
      // the recorder's fd 0 is the job's input then; planterd's own reader holds it meanwhile).
      if (agentReport && input < 0) report = openSync(agentReport, REPORT_OPEN);
      const recorder = recorderArgv(files.status, argv, plan.pipes ?? false, procs, input >= 0, report >= 0, nproc);
      const proc = Bun.spawn(recorder, {
        cwd: plan.cwd,
        env: HOST_ENV,
        stdio: [recorderStdin(input, report), out, err, ...gap, ...fds],
        detached: true,
      });
      spawned = true;
      const start = startTime(proc.pid);
      this.own.set(job.id, proc);
      if (ends.info !== undefined) this.startGate(job.id, plan, proxied, ends, dir, jobUid(job), where.identity);
      // The job runs from here on: a disk that refuses this record delays it, never fails the job.
      this.ctx.writeOrDefer((ev) => {
        markRunning(this.ctx.db, job.id, proc.pid, start, fallback, Date.now(), enforcement, cgroup, runAs);
        ev.push({
          kind: "job.started",
          subject: `job/${job.id}`,
          data: { pid: proc.pid, backend: backend.name, run_as: runAs },
        });
      });
      this.monitor.track(getJob(this.ctx.db, job.id) as JobRow);
      proc.exited.then(() => this.ownExited(job.id, proc));
      this.startedAt.set(job.id, Date.now());
      this.lastLaunched = job.id;
      if (warmPlan) this.warmNext.set(job.id, { plan: warmPlan, identity: where.identity });
    } catch (e) {
      this.launchFailed(job, e, ends, cgroup, spawned);
    } finally {
      closeOpened(out, err, input, report);
      for (const fd of fds) closeSync(fd);
    }
  }

  /**
   * Whether a warm sandbox may run this job (and one be made for the next at its end): bwrap
   * with cgroups (the job's processes are its group's), warm sandboxes on.
   * Not with placeholders: they are the job's own, released at its end, and bwrap creates a
   * missing mount target in a writable bind (a later sandbox made with them would make one again).
   * Not for a terminal job: its recorder runs under its holder, on the PTY. Not for a job
   * with stdin: a warm recorder's fd 0 is planterd's pipe of orders.
   * Not with an allow list: its proxy's listeners are made in the sandbox as the job starts.
   * Not for an agent job: its report channel is its own.
   */
  private warmable(job: JobRow, backend: Backend, rules: NetRules | null, where: LaunchContext): boolean {
    return Boolean(
      !job.tty &&
        !job.stdin &&
        !rules &&
        !where.agent &&
        backend.name === "bwrap" &&
        this.warm.ms > 0 &&
        this.monitor.enforcement.cgroups &&
        !where.placeholders?.length,
    );
  }

  /** How to render the plan of a warm sandbox for this job: its job the shell that reads its commands. */
  private warmPlanOf(
    job: JobRow,
    backend: Backend,
    where: LaunchContext,
    policy: EffectivePolicy,
    protect: string[],
  ): () => SpawnPlan {
    const nproc = this.nprocLimit(job);
    const dir = jobDir(this.ctx.paths.stateDir, job.id);
    return () =>
      backend.plan({
        ...planRequest(where, {
          argv: WARM_SHELL,
          env: {},
          cwd: where.cellDir,
          policy,
          workspaceReadOnly: protect,
          jobDir: dir,
          scratch: scratchDir(job.id),
        }),
        nproc,
      });
  }

  /** Undo what a launch that failed made (its proxy's pipes, guard, cgroup), and end the job failed with why. */
  private launchFailed(job: JobRow, e: unknown, ends: PipeEnds, cgroup: string | null, spawned: boolean): void {
    closeEnds(ends);
    this.guard.unwatch(job.id);
    if (cgroup) removeGroup(cgroup);
    // Nothing ran: nothing to review (and the failed job is recorded before the answer).
    if (!spawned) rmSync(join(jobDir(this.ctx.paths.stateDir, job.id), "workspace.json"), { force: true });
    this.finish(job.id, launchFailure(e, job));
  }

  /** How the job's limits are enforced: by its cgroup's controllers (their mode), or by the monitor alone. */
  private enforcementOf(cgroup: string | null): Enforcement {
    return cgroup ? (this.monitor.enforcement.cgroups?.mode ?? "monitor") : "monitor";
  }

  /** Run the job in a warm sandbox made with its plan, when one waits: whether it runs there. */
  private runWarm(job: JobRow, warmPlan: () => SpawnPlan, fallback: boolean, where: LaunchContext): boolean {
    if (!this.warm.waiting) return false;
    const plan = warmPlan();
    const w = this.warm.take(plan, where.identity);
    if (!w || !this.launchWarm(job, w, plan, fallback, where)) return false;
    this.warmNext.set(job.id, { plan: () => plan, identity: where.identity });
    return true;
  }

  /** The plan that runs the job itself in a sandbox made for it. */
  /** Without a cgroup, the recorder and the job are held to planterd's task share (lib/jobs/tasks.ts). */
  private recorderNproc(cgroup: string | null): ReturnType<typeof recorderLimits> | undefined {
    const share = cgroup ? null : this.taskShare;
    return share ? recorderLimits(share) : undefined;
  }

  private jobPlan(
    job: JobRow,
    backend: Backend,
    where: LaunchContext,
    policy: EffectivePolicy,
    protect: string[],
    egress: boolean,
    agentReport: string | undefined,
  ): SpawnPlan {
    const program = resolveProgram(job.argv[0] as string, job.env.PATH, job.cwd);
    return backend.plan({
      ...planRequest(where, {
        // A terminal job's program leads a session of its own with the PTY as its controlling
        // terminal (plans/interactive.md): inside a bwrap sandbox through setsid(1); elsewhere
        // (outerSession) planter's own entry in front of the whole argv (runnerArgv).
        argv:
          job.tty && !outerSession(job, backend)
            ? [...CTTY_ARGV, program, ...job.argv.slice(1)]
            : [program, ...job.argv.slice(1)],
        tty: Boolean(job.tty),
        env: job.env,
        cwd: job.cwd,
        policy,
        workspaceReadOnly: protect,
        jobDir: jobDir(this.ctx.paths.stateDir, job.id),
        scratch: scratchDir(job.id),
      }),
      nproc: this.nprocLimit(job),
      egress,
      ...(backend.name === "vm" ? { vmMemoryBytes: job.limits.max_rss_bytes } : {}),
      ...(agentReport && backend.name === "bwrap" ? { agentReport } : {}),
    });
  }

  /**
   * Record and watch the host entries the job's covers hang on (its plan's guard), before it
   * runs: from then on a host that replaces one stops the job.
   */
  private watchGuard(id: string, dir: string, plan: SpawnPlan): void {
    if (!plan.guard?.length) return;
    saveGuard(dir, plan.guard);
    try {
      this.guard.watch(id, plan.guard);
    } catch (e) {
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", (e as Error).message, {
        hint: "raise fs.inotify.max_user_watches, or end other jobs",
      });
    }
  }

  /**
   * A bwrap job's gate (lib/sandbox/gate.ts): its sandbox waits until planterd has compared its
   * mounts with the plan (and made a list job's proxy), then runs the job; a view that is not the
   * one planned stops it before it runs (`sandbox_changed`, the event says which mount). Marked in
   * the job's dir before the spawn (`VIEW_PENDING`) and once released (`VIEW_OK`): a restarted
   * planterd ends a job whose sandbox still waits.
   */
  private startGate(
    id: string,
    plan: SpawnPlan,
    rules: NetRules | null,
    ends: PipeEnds,
    dir: string,
    uid: number,
    identity: Identity | null,
  ) {
    if (rules) this.egress.expect(id);
    const before = rules ? (pid: number) => this.egress.start(id, rules, pid, dir, uid) : undefined;
    const gate = openGate(ends, plan.planned, before, { nproc: plan.nproc, as: identity }).then(
      (r) => {
        if (r === "released") writeFileSync(join(dir, VIEW_OK), "", { mode: 0o600 });
      },
      (e) => {
        closeEnds(ends);
        if (rules && !(e instanceof PlanterError && e.hint === GATE_HINT)) this.egressFailed(id, e, true);
        else this.viewChanged(id, null, (e as Error).message);
      },
    );
    this.gates.add(gate);
    void gate.finally(() => this.gates.delete(gate));
  }

  /**
   * Before planterd stops: the gates under way answered (they take milliseconds), so that the jobs
   * they hold are let go or stopped now, not ended by the next planterd as never checked.
   */
  async settleGates(ms = 5000): Promise<void> {
    let timer: Timer | undefined;
    const all = Promise.allSettled([...this.gates, ...this.warm.gates]);
    await Promise.race([all, new Promise((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  /** A job whose proxy could not be made (`stop`: before it ran) or restored (after a restart). */
  private egressFailed(id: string, e: unknown, stop: boolean): void {
    const pe = e instanceof PlanterError ? e : null;
    const message = pe?.message ?? `the job's egress proxy could not be set up: ${(e as Error).message}`;
    const data = { message, hint: pe?.hint ?? null, stopped: stop };
    console.error(`planterd: job ${id}: ${message}`);
    if (!stop) {
      // Adopted: the job runs on with its namespace's loopback only (no way out), as it did while
      // planterd was down; the event says why its connections are refused.
      this.ctx.writeOrDefer((ev) => ev.push({ kind: "job.egress_failed", subject: `job/${id}`, data }));
      return;
    }
    try {
      this.kill(id, {
        force: true,
        reason: "sandbox_error",
        record: (ev) => ev.push({ kind: "job.egress_failed", subject: `job/${id}`, data }),
      });
    } catch {
      // the job ended meanwhile
    }
  }

  /**
   * A terminal job's start: its holder (lib/tty/holder.ts) makes the PTY and runs the recorder on
   * it; planterd follows the recorder as it follows an adopted one (it is the holder's child).
   */
  private async startTerminal(
    job: JobRow,
    backend: Backend,
    fallback: boolean,
    o: {
      argv: string[];
      /** An agent job's report FIFO, for the holder to hold open. */
      hold: string | null;
      /** The plan's file to name the PTY in (Seatbelt's profile). */
      ttyName: { file: string; marker: string } | null;
      cwd: string;
      fds: number[];
      err: number;
      enforcement: Enforcement;
      cgroup: string | null;
      runAs: RunAs | null;
    },
  ): Promise<void> {
    const dir = jobDir(this.ctx.paths.stateDir, job.id);
    const tty = job.tty as { cols: number; rows: number };
    const maxLog = job.limits.max_log_bytes;
    let holder: Promise<StartedHolder>;
    try {
      holder = startHolder(
        {
          argv: o.argv,
          cwd: o.cwd,
          env: HOST_ENV,
          cols: tty.cols,
          rows: tty.rows,
          log: jobFiles(dir).stdout,
          socket: holderSocket(dir),
          // A backstop: the monitor stops the job at its quota and cuts the log to it.
          log_limit: maxLog === undefined ? null : maxLog + TTY_LOG_SLACK,
          hold: o.hold,
          tty_name: o.ttyName,
        },
        { fds: o.fds, stderr: o.err },
      );
    } catch (e) {
      this.failStart(job, e, o.cgroup);
      return;
    }
    let ready: StartedHolder;
    try {
      ready = await holder;
    } catch (e) {
      this.failStart(job, e, o.cgroup);
      return;
    }
    const start = startTime(ready.pid);
    this.ctx.writeOrDefer((ev) => {
      markRunning(this.ctx.db, job.id, ready.pid, start, fallback, Date.now(), o.enforcement, o.cgroup, o.runAs);
      ev.push({
        kind: "job.started",
        subject: `job/${job.id}`,
        data: { pid: ready.pid, backend: backend.name, run_as: o.runAs, tty },
      });
    });
    this.follow(getJob(this.ctx.db, job.id) as JobRow);
  }

  /** A job that could not start: failed, spawn_error, with why. */
  private failStart(job: JobRow, e: unknown, cgroup: string | null): void {
    this.guard.unwatch(job.id);
    if (cgroup) removeGroup(cgroup);
    this.finish(job.id, {
      state: "failed",
      reason: "spawn_error",
      exit_code: null,
      signal: null,
      message: spawnMessage(e, job),
      at: Date.now(),
    });
  }

  /**
   * Start `job` in warm sandbox `w` (made for the same plan): the job's commands to its shell, its
   * dir renamed to the job's, the launch facts recorded, then the recorder told (it claims the job
   * and runs it). False when the sandbox could not be given (the job then starts cold); a failure
   * after the dir became the job's throws, as a cold launch's does.
   */
  private launchWarm(job: JobRow, w: WarmSandbox, plan: SpawnPlan, fallback: boolean, where: LaunchContext): boolean {
    const dir = jobDir(this.ctx.paths.stateDir, job.id);
    let program: string;
    try {
      program = resolveProgram(job.argv[0] as string, job.env.PATH, job.cwd);
    } catch (e) {
      this.warm.drop(w);
      throw e;
    }
    const script = warmScript({ argv: [program, ...job.argv.slice(1)], env: job.env, cwd: job.cwd });
    const cgroup = w.cgroup;
    const enforcement = cgroup ? (this.monitor.enforcement.cgroups?.mode ?? "monitor") : "monitor";
    const runAs = runAsOf(where.identity, where.peerUid);
    const given = this.warm.give(w, job.id, script, () => {
      if (where.workspace.length) {
        writeFileSync(join(dir, "workspace.json"), JSON.stringify(where.workspace), { mode: 0o600 });
      }
      this.watchGuard(job.id, dir, plan);
      if (cgroup) setGroupLimits(cgroup, job.limits, this.monitor.enforcement.cgroups?.pidsMax ?? 4096);
      this.ctx.write(() => markLaunching(this.ctx.db, job.id, fallback, enforcement, cgroup, runAs));
    });
    if (!given) return false;
    const proc = w.proc;
    this.own.set(job.id, proc);
    this.ctx.writeOrDefer((ev) => {
      markRunning(this.ctx.db, job.id, proc.pid, w.start, fallback, Date.now(), enforcement, cgroup, runAs);
      ev.push({
        kind: "job.started",
        subject: `job/${job.id}`,
        data: { pid: proc.pid, backend: "bwrap", run_as: runAs, warm: true },
      });
    });
    this.monitor.track(getJob(this.ctx.db, job.id) as JobRow);
    proc.exited.then(() => this.ownExited(job.id, proc));
    this.startedAt.set(job.id, Date.now());
    this.lastLaunched = job.id;
    return true;
  }

  /**
   * Make the next warm sandbox of an ended job's kind (its plan kept from its launch), once its
   * end is answered. Made at the end, not at the start: a sandbox being set up beside the running
   * job would be a second sandbox over the same writable tree while the job changes it (bwrap
   * makes a mount target that went missing).
   */
  private makeWarm(id: string): void {
    const next = this.warmNext.get(id);
    if (!next) return;
    this.warmNext.delete(id);
    // Jobs run side by side (a burst, several clients): the CPU is the limit, and a sandbox made
    // ahead is work added, not moved (bench 16: 2.5× bare instead of 2.1× with four clients). One
    // is made only when this was the last job launched and no other started in the last second
    // still runs: jobs one after another.
    if (this.lastLaunched !== id) return;
    const now = Date.now();
    for (const [other, at] of this.startedAt) if (other !== id && now - at < 1000) return;
    setImmediate(() => {
      if (this.closed) return;
      let plan: SpawnPlan;
      try {
        plan = next.plan();
      } catch {
        return; // the cell or its dir changed since: the next job starts cold
      }
      this.warm.make(plan, next.identity);
    });
  }

  /**
   * RLIMIT_NPROC for a job no cgroup limits (planterd unprivileged, or cgroups off): max_pids + 1,
   * set inside its user namespace, where only the job's own tasks count. The kernel refuses the
   * fork past it and the monitor, seeing max_pids + 1 tasks, stops the job (process_limit): a fork
   * bomb ends at the limit instead of at the host's pid_max. Never above the jobs' task share,
   * which bwrap already has (the limit cannot be raised past it).
   */
  private nprocLimit(job: JobRow): number | undefined {
    if (this.monitor.enforcement.cgroups || job.limits.max_pids === undefined) return undefined;
    return Math.min(job.limits.max_pids + 1, this.taskShare?.jobs ?? Number.POSITIVE_INFINITY);
  }

  /**
   * The job's cgroup(s) where planterd can make them (null otherwise). A group that
   * cannot be made leaves the job to the monitor, with an event saying why.
   */
  private jobCgroup(job: JobRow): string | null {
    const cgroups = this.monitor.enforcement.cgroups;
    if (!cgroups) return null;
    try {
      return cgroups.create(job.id, hostLimits(job.limits, job.backend));
    } catch (e) {
      this.ctx.write((ev) =>
        ev.push({ kind: "job.cgroup_failed", subject: `job/${job.id}`, data: { message: (e as Error).message } }),
      );
      return null;
    }
  }

  /** Deliver a signal to a job's tree; terminating signals record a kill and escalate after the grace. */
  kill(id: string, opts: KillOptions = {}): JobRow {
    if (this.reviewing.has(id)) {
      throw conflict(
        `job ${id} has ended; planterd is reviewing its workspace, and records its end when that is done`,
        `nothing to kill; wait for it: planter job wait ${id}`,
      );
    }
    if (this.ending.has(id)) {
      throw conflict(
        `job ${id} has ended; its end is not recorded yet because planterd cannot write its state (the disk is full)`,
        "nothing to kill; the end is recorded as soon as planterd can write again (see `planter doctor`)",
      );
    }
    const job = getJob(this.ctx.db, id);
    if (!job) throw new PlanterError("E_NOT_FOUND", `no job ${id}`);
    if (job.state !== "running" || job.pid === null) {
      throw conflict(`job ${id} is not running (state ${job.state})`, "nothing to kill; see `planter job status`");
    }
    const signal = opts.force ? "KILL" : (opts.signal ?? "TERM");
    if (!TERMINATING.has(signal)) {
      this.send(id, job, `SIG${signal}` as NodeJS.Signals);
      this.ctx.writeOrDefer((ev) =>
        ev.push({ kind: "job.signaled", subject: `job/${id}`, data: { signal, ...opts.audit } }),
      );
      return job;
    }
    const force = signal === "KILL";
    const reason: Reason = opts.reason ?? (force ? "forced_kill" : "terminated_by_user");
    // On a full disk the kill still happens; its record waits in memory and precedes the end.
    this.ctx.writeOrDefer((ev) => {
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
    if (sig === "SIGKILL" && job.cgroup) killGroup(job.cgroup);
  }

  /**
   * `signalTree`, and for a job that has not exec'd its program yet, the signal again to its
   * processes once they appear: the recorder's fork can consume it (its trap), and a sandbox
   * that is still being set up gets nothing (see `signalTree`).
   */
  private send(id: string, job: JobRow, sig: NodeJS.Signals, known: ProcId[] = []): ProcId[] {
    const pid = job.pid as number;
    const table = this.table(job);
    const early =
      sig !== "SIGKILL" && process.platform === "linux" && !startedProcs(pid, Boolean(sandboxed(job)), table).length;
    // A recorder that has not set its traps yet would die of the signal (a USR1 right after the
    // submit ended the job as "killed from outside planter" 8 times in 200). It sets them before
    // it claims the job (its `pid` file): until then the signal waits for the program to start.
    // (A job imported from the prototype has no recorder: nothing to wait for.)
    const recorderReady = () => isLegacyJobId(id) || existsSync(jobFiles(jobDir(this.ctx.paths.stateDir, id)).pid);
    if (early && !sandboxed(job) && !recorderReady()) {
      if (!this.resendTimers.has(id)) this.resendOnStart(id, job, sig);
      return known;
    }
    const tree = signalTree(pid, sig, table, known, sandboxed(job));
    if (early && !this.resendTimers.has(id)) this.resendOnStart(id, job, sig);
    return tree;
  }

  /** Send `sig` once to the job's processes when they have started, polling briefly (see `send`). */
  private resendOnStart(id: string, job: JobRow, sig: NodeJS.Signals, tries = 100): void {
    const t = setTimeout(() => {
      this.resendTimers.delete(id);
      const now = getJob(this.ctx.db, id);
      if (now?.state !== "running" || !isAlive(job.pid as number, job.start_time)) return;
      const started = startedProcs(job.pid as number, Boolean(sandboxed(job)), this.table(job));
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

  /**
   * The job's processes now, its recorder among them: the members of its cgroup, or those the
   * monitor's tracker follows; where neither is had (macOS), its tree in a scan of the host.
   */
  private table(job: JobRow): ProcTable {
    const pid = job.pid as number;
    if (process.platform === "linux") {
      if (job.cgroup) return tableOf([pid, ...groupMembers(job.cgroup)].flatMap((p) => procEntry(p) ?? []));
      const t = this.monitor.procs?.table(job.id);
      if (t) return t;
    }
    return hostTree(pid);
  }

  private scheduleEscalation(id: string, pid: number, ms: number): void {
    if (this.graceTimers.has(id)) return;
    const t = setTimeout(() => {
      this.graceTimers.delete(id);
      const job = getJob(this.ctx.db, id);
      if (!job || (job.state !== "running" && job.state !== "pending")) return;
      this.ctx.writeOrDefer((ev) => {
        markKillRequested(this.ctx.db, id, "KILL", true, job.kill_reason ?? "terminated_by_user", Date.now());
        ev.push({ kind: "job.kill_escalated", subject: `job/${id}`, data: { signal: "KILL", grace_ms: ms } });
      });
      this.signal(id, { ...job, pid }, "SIGKILL");
    }, ms);
    this.graceTimers.set(id, t);
  }

  /**
   * Re-adopt every job a previous daemon left: live ones are watched, ended ones recorded. A job
   * still `pending` was being launched: its pid file says whether its recorder started (then it
   * is recorded running and adopted like any other) or not (then it never will: `failed`).
   */
  adoptAll(): { adopted: number; finished: number; lost: number } {
    const counts = { adopted: 0, finished: 0, lost: 0 };
    // Sandboxes a previous planterd made ahead: their recorders saw its end and ran nothing.
    WarmPool.sweep(this.ctx.paths.stateDir);
    for (const row of liveJobs(this.ctx.db)) {
      const found = row.state === "pending";
      const job = found ? this.settlePending(row) : row;
      if (job === null) {
        counts.finished++; // never started: recorded failed
        continue;
      }
      if (job.pid === null) {
        this.finish(job.id, lostFinish("planterd stopped while starting this job; whether it ran is unknown"));
        counts.lost++;
        continue;
      }
      // A recorder found gone has no start time: its pid must not match whatever holds it now.
      // A terminal job whose recorder is gone while its holder still writes the log is followed
      // until the log is whole (`logWhole`), as it would have been.
      const live = (!found || job.start_time !== null) && isAlive(job.pid, job.start_time);
      if (live || (job.tty && holderWriting(jobDir(this.ctx.paths.stateDir, job.id)))) {
        this.adopt(job);
        counts.adopted++;
      } else {
        const f = this.deadFinish(job, null);
        this.finish(job.id, f);
        if (f.state === "lost") counts.lost++;
        else counts.finished++;
      }
    }
    this.monitor.sweepGroups();
    return counts;
  }

  /**
   * A job a previous planterd left `pending`: recorded `running` with its recorder's pid when
   * the recorder started (and returned), else ended `failed` — it never ran — and null.
   */
  private settlePending(job: JobRow): JobRow | null {
    const s = settleStart(jobDir(this.ctx.paths.stateDir, job.id));
    if (!s.started) {
      if (job.cgroup) removeGroup(job.cgroup);
      this.finish(job.id, {
        state: "failed",
        reason: "spawn_error",
        exit_code: null,
        signal: null,
        message: `${s.why}: the job never ran; submit it again (with a new request_ref if it had one)`,
        at: Date.now(),
      });
      return null;
    }
    this.ctx.write((ev) => {
      markRunning(
        this.ctx.db,
        job.id,
        s.pid,
        s.start,
        job.sandbox_fallback,
        s.at,
        job.enforcement ?? "monitor",
        job.cgroup,
        job.run_as,
      );
      ev.push({
        kind: "job.started",
        subject: `job/${job.id}`,
        data: { pid: s.pid, backend: job.backend, run_as: job.run_as, found_after_restart: true },
      });
    });
    return getJob(this.ctx.db, job.id);
  }

  private adopt(job: JobRow): void {
    this.follow(job, true);
  }

  /**
   * Follow a recorder planterd did not spawn: one found after a restart (`adopted`: an event, its
   * guard watched again, a kill it was asked for finished) or a terminal job's, the holder's child.
   */
  private follow(job: JobRow, adopted = false): void {
    const pid = job.pid as number;
    if (this.exits === undefined) this.exits = ExitWatch.create();
    // The recorder's exit wakes us at once (a pidfd); where there is none, inotify on its dir (it
    // writes its status file just before it exits) and a poll.
    const polled = !this.exits?.watch(pid, job.start_time, () => this.checkAdopted(job.id));
    let watcher: FSWatcher | null = null;
    if (polled) {
      try {
        watcher = watch(jobDir(this.ctx.paths.stateDir, job.id), () => this.checkAdopted(job.id));
      } catch {
        watcher = null; // the poll below still notices the end
      }
    }
    this.adopted.set(job.id, { pid, start: job.start_time, watcher, polled });
    if (!adopted) {
      this.monitor.track(job);
      this.startPoll(polled);
      return;
    }
    this.ctx.writeOrDefer((ev) => ev.push({ kind: "job.adopted", subject: `job/${job.id}`, data: { pid } }));
    // Its sandbox still waits at its gate (planterd went before it answered): it never ran, and
    // nothing compared its view; it is ended, not let go.
    const jd = jobDir(this.ctx.paths.stateDir, job.id);
    if (existsSync(join(jd, VIEW_PENDING)) && !existsSync(join(jd, VIEW_OK))) {
      queueMicrotask(() =>
        this.viewChanged(job.id, null, "planterd stopped before it had checked the job's sandbox: the job never ran"),
      );
    }
    try {
      this.guard.watch(job.id, loadGuard(jobDir(this.ctx.paths.stateDir, job.id)));
    } catch (e) {
      // What its covers hang on cannot be watched (gone while planterd was down, say): not run on unguarded.
      console.error(`planterd: job ${job.id}: ${(e as Error).message}; stopping it`);
      queueMicrotask(() => this.viewChanged(job.id, null, (e as Error).message));
    }
    // A forced kill whose SIGKILL the previous planterd may not have sent: sent now.
    if (job.kill_requested_at !== null && job.kill_force) this.signal(job.id, job, "SIGKILL");
    if (job.kill_requested_at !== null && !job.kill_force) {
      const limit = job.kill_reason !== null && LIMIT_REASONS.has(job.kill_reason);
      const grace = limit ? this.monitor.graceMs : this.ctx.config.jobs.kill_grace_ms;
      this.scheduleEscalation(job.id, pid, Math.max(0, job.kill_requested_at + grace - Date.now()));
    }
    // Limits hold after a restart too; elapsed time counts from the job's real start.
    this.monitor.track(job);
    this.startPoll(polled);
    // An agent job's report channel: read again (what its hooks wrote meanwhile waits in the FIFO).
    this.agents.watch(job.id, jobDir(this.ctx.paths.stateDir, job.id));
    // Its proxy's listeners went with the previous planterd: made again in its namespace.
    const rules = egressRules(job, job.backend);
    if (rules) {
      const id = job.id;
      this.egress
        .adopt(id, rules, jobDir(this.ctx.paths.stateDir, id), jobUid(job))
        .catch((e) => this.egressFailed(id, e, false));
    }
  }

  private startPoll(polled: boolean): void {
    if (polled && !this.pollTimer) {
      this.pollTimer = setInterval(() => {
        for (const [id, a] of [...this.adopted]) if (a.polled) this.checkAdopted(id);
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
    if (job?.tty && !this.logWhole(id)) return;
    if (job) this.finish(id, this.deadEnd(job, null));
    else this.forget(id);
  }

  /**
   * Whether a terminal job's log is whole: its holder has read the terminal to its end (its mark),
   * or is gone, or TTY_DRAIN_MS passed since the recorder's end was seen. Until then the end waits
   * (looked at again every DRAIN_POLL_MS): the holder reads the job's last bytes after the recorder
   * may have exited, and whoever waits for the end reads the log next.
   */
  private logWhole(id: string): boolean {
    const dir = jobDir(this.ctx.paths.stateDir, id);
    if (existsSync(join(dir, LOG_WHOLE_FILE))) return true;
    const holder = readHolder(dir);
    if (!holder || !isAlive(holder.pid, holder.start)) return true;
    const now = Date.now();
    const since = this.draining.get(id);
    if (since === undefined) this.draining.set(id, now);
    else if (now - since >= TTY_DRAIN_MS) {
      console.error(
        `planterd: job ${id}: its terminal holder has not finished the log ${TTY_DRAIN_MS} ms after the job's end; recorded without it`,
      );
      return true;
    }
    if (!this.drainTimers.has(id)) {
      this.drainTimers.set(
        id,
        setTimeout(() => {
          this.drainTimers.delete(id);
          this.checkAdopted(id);
        }, DRAIN_POLL_MS),
      );
    }
    return false;
  }

  private ownExited(id: string, proc: Subprocess): void {
    try {
      const job = getJob(this.ctx.db, id);
      if (!job) {
        this.forget(id);
        return;
      }
      const sig = typeof proc.signalCode === "string" ? proc.signalCode.replace(/^SIG/, "") : null;
      const status = jobFiles(jobDir(this.ctx.paths.stateDir, id)).status;
      // The recorder exits with the job's code: written down for a daemon that restarts before
      // the end is recorded, should the recorder itself have failed to write it.
      if (!sig && proc.exitCode !== null && readStatus(status) === null) writeStatusInPlace(status, proc.exitCode);
      this.finish(id, this.deadEnd(job, sig, sig ? null : proc.exitCode));
    } catch (e) {
      console.error(`planterd: job ${id} ended, and recording its end failed: ${(e as Error).message}`);
    }
  }

  /** How a job whose recorder is gone ended, from its status file and its kill record. */
  private deadFinish(job: JobRow, recorderSignal: string | null, recorderCode: number | null = null): Finish {
    return this.deadEnd(job, recorderSignal, recorderCode)();
  }

  /**
   * deadFinish, decided when it is recorded: an end that waits for the disk is decided after the
   * kill records that wait before it.
   */
  private deadEnd(job: JobRow, recorderSignal: string | null, recorderCode: number | null = null): () => Finish {
    // The recorder exits with the job's code: it stands in if the status file could not be written.
    const code = readStatus(jobFiles(jobDir(this.ctx.paths.stateDir, job.id)).status) ?? recorderCode;
    if (job.kill_requested_at === null && job.cgroup) this.cgroupOom(job);
    if (job.kill_requested_at === null && job.backend === "vm") this.vmOom(job);
    const at = Date.now();
    return () => endOf(getJob(this.ctx.db, job.id) ?? job, code, recorderSignal, at);
  }

  /**
   * A vm job whose guest kernel OOM-killed it (its status port says `oom`): the job met its memory
   * limit, the VM's memory. The value is the limit's (the guest's peak is not known here).
   */
  private vmOom(job: JobRow): void {
    const max = job.limits.max_rss_bytes;
    if (!readVmStatus(jobDir(this.ctx.paths.stateDir, job.id))?.oom) return;
    const limit = max ?? DEFAULT_VM_MEMORY_MB * 1024 * 1024;
    this.ctx.writeOrDefer((ev) => {
      markKillRequested(this.ctx.db, job.id, "KILL", true, "memory_limit", Date.now());
      if (markLimitHit(this.ctx.db, job.id, { limit: "max_rss_bytes", value: limit + 1, max: limit, at: Date.now() })) {
        ev.push({
          kind: "job.limit_exceeded",
          subject: `job/${job.id}`,
          data: { limit: "max_rss_bytes", reason: "memory_limit", value: limit + 1, max: limit, enforcement: "vm" },
        });
      }
    });
  }

  /**
   * The kernel OOM-killed in the job's group (its memory limit): record it as the memory limit,
   * with the group's peak as the observed value. Forks refused at pids.max are the monitor's to
   * act on while the job runs; a job that lived with them and ended keeps its own end.
   */
  private cgroupOom(job: JobRow): void {
    const end = groupEnd(job.cgroup as string);
    // Forks refused at pids.max: a bomb that gave up before the monitor looked (its shell exits
    // when a fork fails) was still stopped by its process limit.
    const pids = job.limits.max_pids;
    if (end.pidsHits > 0 && pids !== undefined && end.oomKills === 0) {
      this.ctx.writeOrDefer((ev) => {
        markKillRequested(this.ctx.db, job.id, "KILL", true, "process_limit", Date.now());
        const hit = { limit: "max_pids" as const, value: pids + 1, max: pids, at: Date.now() };
        if (markLimitHit(this.ctx.db, job.id, hit)) {
          ev.push({
            kind: "job.limit_exceeded",
            subject: `job/${job.id}`,
            data: {
              limit: "max_pids",
              reason: "process_limit",
              value: pids + 1,
              max: pids,
              enforcement: job.enforcement,
            },
          });
        }
      });
      return;
    }
    const max = job.limits.max_rss_bytes;
    if (end.oomKills === 0 || max === undefined) return;
    // The kernel's peak stops at the limit: what it refused is past it (as the monitor records it).
    const value = Math.max(end.peakBytes ?? max, max + 1);
    this.ctx.writeOrDefer((ev) => {
      markKillRequested(this.ctx.db, job.id, "KILL", true, "memory_limit", Date.now());
      if (markLimitHit(this.ctx.db, job.id, { limit: "max_rss_bytes", value, max, at: Date.now() })) {
        ev.push({
          kind: "job.limit_exceeded",
          subject: `job/${job.id}`,
          data: { limit: "max_rss_bytes", reason: "memory_limit", value, max, enforcement: job.enforcement },
        });
      }
    });
  }

  /**
   * Record the end of a job (once) and wake its waiters. When the state disk refuses the write,
   * the end waits in memory and is recorded as soon as a write succeeds (`ctx.writeOrDefer`);
   * the job's status file keeps it for a daemon that restarts before that.
   */
  finish(id: string, end: Finish | (() => Finish)): void {
    // Its end is recorded once the review under way is done.
    if (this.reviewing.has(id)) return;
    // The tree is dead: a job stopped at the disk's reserve gives back what it wrote past it first,
    // so the records below find room.
    const cut = this.monitor.cutAtReserve(id);
    if (cut) {
      this.ctx.writeOrDefer((ev) => {
        markLogTruncated(this.ctx.db, id);
        ev.push({ kind: "job.log_truncated", subject: `job/${id}`, data: { reason: "disk_full", ...cut } });
      });
    }
    // What is left of a job without a cgroup: the processes the tracker followed, after one more look.
    const group = getJob(this.ctx.db, id)?.cgroup;
    const left = group ? [] : (this.monitor.procs?.members(id) ?? []);
    const under = this.monitor.untrack(id);
    // A job ends with all of its processes: what it left running in its cgroup dies now, before
    // the review looks at its workspace (a bwrap job's pid namespace already took them).
    if (group) killGroup(group);
    this.egress.stop(id);
    this.agents.close(id, true);
    this.forget(id);
    this.sweepSandbox(id, left);
    // The workspace first, then the end: whoever waits for the end (`planter run`, `job wait`, a
    // log follower) may run git or an editor in the cell next. The review walks the tree without
    // holding up planterd, so the end is recorded when it is done; a planterd that stops
    // meanwhile leaves the job running in its state, and the next one reviews and records it.
    if (existsSync(join(jobDir(this.ctx.paths.stateDir, id), "workspace.json"))) {
      this.reviewing.add(id);
      // Nothing of a killed job may still write in the tree under review (see `recorded`).
      if (getJob(this.ctx.db, id)?.kill_requested_at != null) killLeft(left);
      // Placeholders first: the review must not take an empty one planter made for the job's work.
      releasePlaceholders(this.ctx, id);
      void this.reviewWorkspace(id).then((done) => {
        this.reviewing.delete(id);
        try {
          if (done && !this.closed) this.record(id, end, under, left);
        } catch (e) {
          console.error(`planterd: job ${id} ended, and recording its end failed: ${(e as Error).message}`);
        }
      });
      return;
    }
    this.record(id, end, under, left);
  }

  private record(
    id: string,
    end: Finish | (() => Finish),
    under: ReturnType<Monitor["untrack"]>,
    left: ProcId[],
  ): void {
    this.ending.add(id);
    let now: boolean;
    try {
      now = this.ctx.writeOrDefer(
        (ev) => {
          const f = typeof end === "function" ? end() : end;
          if (!markFinished(this.ctx.db, id, f)) return false;
          ev.push({
            kind: "job.finished",
            subject: `job/${id}`,
            data: { state: f.state, reason: f.reason, exit_code: f.exit_code, signal: f.signal, message: f.message },
          });
          return true;
        },
        (ended) => this.recorded(id, ended, under, left),
      );
    } catch (e) {
      this.ending.delete(id);
      throw e;
    }
    if (!now) console.error(`planterd: job ${id} ended; the disk is full, so its end is recorded once it can be`);
  }

  /** After a job's end is recorded (its workspace reviewed before): the log cut to its quota, its waiters. */
  private recorded(id: string, ended: boolean, under: ReturnType<Monitor["untrack"]>, left: ProcId[]): void {
    this.ending.delete(id);
    const job = ended ? getJob(this.ctx.db, id) : null;
    // A killed job leaves nothing running: whatever of it the tracker followed dies, however it
    // left the tree (bwrap killed before its init had set PDEATHSIG leaves a namespace reparented
    // to pid 1, found by the job's pipes it holds). A job in a cgroup had its group killed.
    if (job?.state === "killed") killLeft(left);
    // (The workspace was reviewed before the end was recorded: `finish`.)
    if (ended) releasePlaceholders(this.ctx, id);
    if (ended && job?.state !== "killed") this.makeWarm(id);
    this.warmNext.delete(id);
    // The tree is dead now: the stored log can be cut to its quota.
    if (job) this.monitor.settle(job, under);
    this.ctx.bus.jobEnded(id);
  }

  /** Whether the job has ended and its end waits for its workspace review (`finish`). */
  settling(id: string): boolean {
    return this.reviewing.has(id);
  }

  /** Jobs that have ended but whose end is not recorded yet (the state disk refused it). */
  get endsWaiting(): number {
    return this.ending.size;
  }

  /**
   * What is left of an ended job's sandbox is killed. A kill can end bwrap's outer process between
   * its clone of the inner one (pid 1 of the job's pid namespace) and the inner one's
   * PR_SET_PDEATHSIG; reparented to init, the inner one is outside the tree, but it still holds
   * the job's log pipes (only sandboxed jobs have them), which is how the tracker still finds it
   * among `left` (the job's processes it followed). Its death ends the whole namespace. A job
   * that ended by itself has no writer left (its pumps saw the end of both pipes). In a cgroup,
   * the inner one is in the job's group, killed before this.
   */
  private sweepSandbox(id: string, left: ProcId[]): void {
    const status = jobFiles(jobDir(this.ctx.paths.stateDir, id)).status;
    if (!left.length || !existsSync(`${status}.out`)) return;
    for (const p of holding(left, { files: [`${status}.out`, `${status}.err`] })) killQuietly(p.pid);
  }

  /**
   * After a job: what it added or changed in its cell that the host would execute (git hooks and
   * config, tool config) is set aside, the earlier version restored, and each one recorded.
   */
  private async reviewWorkspace(id: string): Promise<boolean> {
    const file = join(jobDir(this.ctx.paths.stateDir, id), "workspace.json");
    try {
      // One snapshot per writable tree the job had; each walked through ctx.walks (one walk per
      // tree at a time), up to twice the snapshot's limit (a job may grow its tree).
      const trees = JSON.parse(readFileSync(file, "utf8")) as LaunchContext["workspace"];
      const { workspace_config_extra: extra, workspace_max_entries: max } = this.ctx.config.sandbox;
      const findings: Finding[] = [];
      for (const t of trees) {
        const found = await this.ctx.walks.run(id, "review", t.root, 2 * max, async (budget, signal) => {
          const settled: [string, WatchedEntry | null][] = [];
          try {
            return await reviewAsync(t.root, t.before, {
              jobId: id,
              extra,
              budget,
              signal,
              settled: (rel, left) => settled.push([rel, left]),
            });
          } finally {
            // Still inside the walk: the next snapshot or review of this tree sees it done.
            if (settled.length) this.passOnSettled(id, t.root, settled);
          }
        });
        findings.push(...recordedFindings(found, t.root));
      }
      if (findings.length) {
        this.ctx.writeOrDefer((ev) => {
          markWorkspace(this.ctx.db, id, findings);
          for (const f of findings) {
            const kind = f.kind === "review-incomplete" ? "job.workspace_review_incomplete" : "job.workspace_set_aside";
            ev.push({ kind, subject: `job/${id}`, data: { ...f } });
          }
        });
      }
    } catch (e) {
      // planterd stops: the review is done again, whole, at the next start.
      if (this.closed) return false;
      this.ctx.writeOrDefer((ev) =>
        ev.push({
          kind: "job.workspace_review_failed",
          subject: `job/${id}`,
          data: { message: (e as Error).message },
        }),
      );
    }
    rmSync(file, { force: true });
    this.ctx.walks.held.delete(id);
    return true;
  }

  /**
   * What job `from`'s review of `root` settled, handed to every other job not yet reviewed with a
   * snapshot of that tree: each took its snapshot before this review, so it holds `from`'s
   * entries as "before", and a job that put one back after it was set aside (a concurrent job of
   * the cell, whose read-only bind of the file moved with the rename) would pass its own review.
   * Both its snapshot in memory (a job not spawned yet) and its workspace.json (one running, or
   * re-adopted after a restart) take it over.
   */
  private passOnSettled(from: string, root: string, settled: [string, WatchedEntry | null][]): void {
    const held = this.ctx.walks.held;
    const live = new Set(liveJobs(this.ctx.db).map((j) => j.id));
    const fileOf = (j: string) => join(jobDir(this.ctx.paths.stateDir, j), "workspace.json");
    for (const j of new Set([...held.keys(), ...live])) {
      if (j === from) continue;
      for (const t of held.get(j)?.trees ?? []) if (t.root === root) passOn(t.before, settled);
      const file = fileOf(j);
      if (!existsSync(file)) continue;
      try {
        const trees = JSON.parse(readFileSync(file, "utf8")) as LaunchContext["workspace"];
        const mine = trees.filter((t) => t.root === root);
        if (!mine.length) continue;
        for (const t of mine) passOn(t.before, settled);
        writeFileSync(`${file}.tmp`, JSON.stringify(trees), { mode: 0o600 });
        renameSync(`${file}.tmp`, file);
      } catch (e) {
        console.error(
          `planterd: job ${j}: its workspace snapshot could not take job ${from}'s review: ${(e as Error).message}`,
        );
      }
    }
    // Snapshots of jobs that never ran (refused after the snapshot) are let go after a while.
    for (const [j, h] of held) {
      if (Date.now() - h.at > 60_000 && !live.has(j) && !existsSync(fileOf(j))) held.delete(j);
    }
  }

  private forget(id: string): void {
    this.draining.delete(id);
    clearTimeout(this.drainTimers.get(id));
    this.drainTimers.delete(id);
    this.monitor.untrack(id);
    this.guard.unwatch(id);
    this.own.delete(id);
    this.startedAt.delete(id);
    // Seatbelt's TMPDIR only: no Linux backend makes it, and a tree under that predictable name in
    // a shared /tmp is another user's (planterd as root removed it, whatever it held or became).
    if (process.platform === "darwin") rmSync(scratchDir(id), { recursive: true, force: true });
    const orphans = this.signalled.get(id);
    this.signalled.delete(id);
    // A killed job's tree dies whole: orphans that outlived the recorder get SIGKILL too.
    if (orphans) for (const p of orphans) if (isAlive(p.pid, p.start)) killQuietly(p.pid);
    const a = this.adopted.get(id);
    if (a) {
      a.watcher?.close();
      this.exits?.unwatch(a.pid);
      this.adopted.delete(id);
    }
    const t = this.graceTimers.get(id);
    if (t) clearTimeout(t);
    this.graceTimers.delete(id);
    clearTimeout(this.resendTimers.get(id));
    this.resendTimers.delete(id);
    if (this.pollTimer && ![...this.adopted.values()].some((x) => x.polled)) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
  }

  /** Gates of sandboxes under way (startGate). */
  private readonly gates = new Set<Promise<unknown>>();

  /** Stop watching (daemon shutdown); jobs keep running under their recorders. */
  close(): void {
    this.closed = true;
    this.warm.close();
    this.egress.close();
    this.agents.closeAll();
    this.ctx.walks.stop();
    this.monitor.close();
    for (const id of [...this.own.keys(), ...this.adopted.keys()]) this.forget(id);
    for (const t of [...this.graceTimers.values(), ...this.resendTimers.values()]) clearTimeout(t);
    this.graceTimers.clear();
    this.resendTimers.clear();
    this.exits?.close();
  }
}

/** SIGKILL what is left of an ended job (the processes the tracker followed), each still the same process. */
function killLeft(left: ProcId[]): void {
  for (const p of left) if (isAlive(p.pid, p.start)) killQuietly(p.pid);
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

/** SIGKILL `pid`; one that has just exited is no error (an end must still be recorded). */
function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // raced with its exit
  }
}

/**
 * Whether the job runs in bwrap's pid namespace: then signals but SIGKILL go to its processes
 * inside, never to bwrap itself (see `signalTree`).
 */
function sandboxed(job: JobRow): false | "bwrap" | "vm" {
  // A vm job's QEMU runs in the same bwrap sandbox; its wrapper takes the signals to the guest.
  return job.backend === "bwrap" || job.backend === "vm" ? job.backend : false;
}

/** How long a terminal job's end waits for its holder to finish the log, at most. */
const TTY_DRAIN_MS = 3000;
/** How often it looks meanwhile. */
const DRAIN_POLL_MS = 10;

/** A terminal job's holder, from the file it writes first (lib/tty/holder.ts), or null. */
function readHolder(dir: string): { pid: number; start: string | null } | null {
  let text: string;
  try {
    text = readFileSync(join(dir, HOLDER_FILE), "utf8");
  } catch {
    return null;
  }
  const m = /^(\d+) (\S*)\n$/.exec(text);
  return m ? { pid: Number(m[1]), start: m[2] || null } : null;
}

/** Whether a terminal job's holder is still writing its log (alive, and not said it is whole). */
function holderWriting(dir: string): boolean {
  if (existsSync(join(dir, LOG_WHOLE_FILE))) return false;
  const h = readHolder(dir);
  return h !== null && isAlive(h.pid, h.start);
}

/** How far a terminal job's log may pass its quota before the holder stops writing it (the monitor cuts it after). */
const TTY_LOG_SLACK = 1 << 20;

/** The uid a job's processes run as (its proxy connections count against that user's budget). */
function jobUid(job: JobRow): number {
  return job.run_as?.uid ?? process.getuid?.() ?? 0;
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
  if (storageFault(e) === "full") return `cannot start ${job.argv[0]}: the state disk is full (${err.code})`;
  return `cannot start ${job.argv[0]}: ${err.message}`;
}

/** A plan's argv run as the job's user (dropped to it when planterd is root). */
function runnerArgv(job: JobRow, backend: Backend, identity: LaunchContext["identity"], argv: string[]): string[] {
  // A vm job's QEMU opens /dev/kvm: its group is added to the job's (lib/sandbox/vm.ts).
  const runner = backend instanceof VmBackend ? withKvmGroup(identity, backend.accel()) : identity;
  return [...(outerSession(job, backend) ? sessionArgv() : []), ...(runner ? dropArgv(runner) : []), ...argv];
}

/**
 * Whether a terminal job takes its session through `planter tty-session` in front of its whole
 * argv (where there is no setsid(1): macOS) rather than inside its bwrap sandbox.
 */
function outerSession(job: JobRow, backend: Backend): boolean {
  return Boolean(job.tty) && backend.name !== "bwrap" && builtinSession();
}

/**
 * The FIFOs in the job's dir: a piped plan's output (for the job's user when the plan
 * says so) and the stdin of a job created with it; returns that stdin pipe's fd (-1: none).
 */
function makeFifos(job: JobRow, plan: SpawnPlan, dir: string, identity: LaunchContext["identity"]): number {
  if (plan.pipes) makePipes(jobFiles(dir).status, plan.pipesForJob ? identity : null);
  return job.stdin && !job.tty ? prepareStdin(dir) : -1;
}

/** The recorder's fd 0: the job's stdin pipe, else an agent job's report FIFO, else nothing. */
function recorderStdin(input: number, report: number): number | "ignore" {
  return input >= 0 ? input : report >= 0 ? report : "ignore";
}

/**
 * A recorder with stdin opens fds 7-9 for itself (STDIN_OPEN), and bwrap inherits them: a plan's
 * inputs there would be replaced under it (a bind from the stdin FIFO, or "Can't find source
 * path"). They move to 10 and up (`fds[0]` replaced by the renumbered argument list); the gap is
 * what the spawn passes for 3-9.
 */
function clearOfStdin(
  plan: SpawnPlan,
  fds: number[],
  dir: string,
  job: { input: number; tty: unknown },
  backend: string,
): { planArgv: string[]; gap: "ignore"[] } {
  if (job.input < 0 || job.tty || 3 + fds.length <= STDIN_FIRST_FD) return { planArgv: plan.argv, gap: [] };
  const moved = shiftFds(plan, fds, dir, 10 - 3);
  if (!moved) {
    throw new PlanterError("E_SANDBOX_UNAVAILABLE", `a job with stdin cannot start in this ${backend} plan`, {
      hint: "run it without stdin",
    });
  }
  fds[0] = moved.args;
  return { planArgv: moved.argv, gap: Array<"ignore">(10 - 3).fill("ignore") };
}

/** Before a gated sandbox's spawn (it has the gate's pipes): the mark a restarted planterd reads. */
function markGated(dir: string, ends: PipeEnds): void {
  if (ends.info !== undefined) writeFileSync(join(dir, VIEW_PENDING), "", { mode: 0o600 });
}

/** Close those of `fds` that were opened (-1: not). */
function closeOpened(...fds: number[]): void {
  for (const fd of fds) if (fd >= 0) closeSync(fd);
}

/** The dirs and files a plan needs on the host before its spawn; those for the job owned by its user. */
function writePlanFiles(plan: SpawnPlan, identity: LaunchContext["identity"]): void {
  for (const d of plan.dirs ?? []) mkdirSync(d, { recursive: true, mode: 0o700 });
  for (const f of plan.files ?? []) {
    writeFileSync(f.path, f.content, { mode: 0o600 });
    if (f.forJob && identity) chownSync(f.path, identity.uid, identity.gid);
  }
}

/** A job that could not be started: failed, sandbox_error (with the hint) or spawn_error, with why. */
function launchFailure(e: unknown, job: JobRow): Finish {
  const pe = e instanceof PlanterError ? e : null;
  const reason: Reason = pe?.code === "E_SANDBOX_UNAVAILABLE" ? "sandbox_error" : "spawn_error";
  return {
    state: "failed",
    reason,
    exit_code: null,
    signal: null,
    message: pe ? `${pe.message}${pe.hint && reason === "sandbox_error" ? ` (${pe.hint})` : ""}` : spawnMessage(e, job),
    at: Date.now(),
  };
}

/** A job whose proxy could not be made before it started: failed, sandbox_error, with why. */
function egressFailure(e: unknown): Finish {
  const pe = e instanceof PlanterError ? e : null;
  return {
    state: "failed",
    reason: "sandbox_error",
    exit_code: null,
    signal: null,
    message: pe ? `${pe.message}${pe.hint ? ` (${pe.hint})` : ""}` : (e as Error).message,
    at: Date.now(),
  };
}

/** The job's network allow list when planterd enforces it (a bwrap or Seatbelt sandbox), else null. */
function egressRules(job: JobRow, backend: string): NetRules | null {
  const n = job.sandbox_policy?.network;
  if ((backend !== "bwrap" && backend !== "seatbelt") || typeof n !== "object" || n === null) return null;
  return { allow: n.allow ?? [], deny: n.deny ?? [], allow_local: n.allow_local ?? false };
}
