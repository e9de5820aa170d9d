/** Jobs: submit, list, show, kill, wait, remove. */
import { rmSync } from "node:fs";
import { EGRESS_PRESETS, REPORT_ENV, REPORT_IN_SANDBOX } from "../../agents/hooks.ts";
import type { AgentKind } from "../../agents/model.ts";
import { agentFifo } from "../../agents/report.ts";
import { FINAL_STATES, type Job, type SandboxBackend, type SandboxMode } from "../../api/contract.ts";
import { badRequest, conflict, PlanterError } from "../../api/errors.ts";
import { FRAME_HEADER, FRAME_KIND, FRAMES_TYPE, jobFrame, putHeader } from "../../api/frames.ts";
import type { Routes } from "../../api/routes.ts";
import { jobFiles } from "../../jobs/recorder.ts";
import { stdinClosed } from "../../jobs/stdin.ts";
import type { LaunchContext } from "../../jobs/supervisor.ts";
import { pumpLogs } from "../../logs/stream.ts";
import { ceilingLimits, ceilingPolicy, checkCeilingMode, type McpCeiling } from "../../mcp/ceiling.ts";
import { proxyEnv } from "../../net/env.ts";
import { jobDir } from "../../paths.ts";
import type { Backend } from "../../sandbox/backend.ts";
import { effectiveMode, lowersMode } from "../../sandbox/backend.ts";
import type { Identity } from "../../sandbox/identity.ts";
import { platformBackend } from "../../sandbox/index.ts";
import { noneBackend } from "../../sandbox/none.ts";
import { canonical, canonicalAs, type Resolver } from "../../sandbox/paths.ts";
import {
  capNetwork,
  complete,
  type EffectivePolicy,
  isWidening,
  narrow,
  type Policy,
  resolvePolicy,
  unsafePolicy,
} from "../../sandbox/policy.ts";
import { type Mount, sandboxView, visibleIn } from "../../sandbox/view.ts";
import { vmMemoryMb } from "../../sandbox/vm.ts";
import { type CellRow, getCell } from "../../state/cells.ts";
import { recordRef } from "../../state/idempotency.ts";
import {
  deleteJob,
  getJob,
  insertJob,
  iterJobs,
  type JobRow,
  jobView,
  liveJobs,
  type NewJob,
  newJobId,
} from "../../state/jobs.ts";
import type { Context } from "../context.ts";
import {
  cellPolicy,
  checkCellAccess,
  checkJobAccess,
  checkPeerPaths,
  checkRequest,
  daemonIsRoot,
  holdMissingDeny,
  identityFor,
  jobOwner,
  launchContext,
  ownsJob,
  protectedPaths,
  runAsOf,
  snapshotWorkspace,
  writableTrees,
} from "../launch.ts";
import type { Peer } from "../peer.ts";
import { ok, type Reply, type Req, STOPPING } from "../router.ts";
import { checkMode, defaultCellName, ensureCell, goneResult, requestRef, requireCell, requireJob } from "./common.ts";
import { jobOver } from "./logs.ts";
import { endInput } from "./stdin.ts";

/**
 * The environment a job starts with: the documented minimal set from the daemon, the daemon
 * variables the sandbox policy passes, then cell env, job env and the policy's `set`.
 */
export function jobEnv(
  ctx: Context,
  cellEnv: Record<string, string>,
  requested: Record<string, string> | undefined,
  id: string,
  cell: string,
  policy: EffectivePolicy | null,
  home: string,
  egress = false,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of [...ctx.config.jobs.env_pass, ...(policy?.env.pass ?? [])]) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  // The job's home is its cell's own, whatever planterd's is; --env HOME=… may still move it.
  env.HOME = home;
  if (!env.PATH) env.PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  Object.assign(env, cellEnv, requested ?? {}, policy?.env.set ?? {});
  // A list job reaches out through its proxy only: what tools read to find it (lib/net/env.ts).
  if (egress) Object.assign(env, proxyEnv());
  env.PLANTER_JOB_ID = id;
  env.PLANTER_CELL = cell;
  return env;
}

/** An agent's egress preset as a network list. */
function agentNetwork(kind: AgentKind): { allow: string[]; deny: string[]; allow_local: boolean } {
  return { allow: [...EGRESS_PRESETS[kind]], deny: [], allow_local: false };
}

/**
 * What an agent job asks of its cell's policy: its own network when it names one; else under a
 * cell with the host's network the agent's egress preset (its API hosts only); under a list cell
 * the cell's list (the cell allows more, or less: its owner decided); under `none`, a refusal.
 */
function agentPolicy(
  ctx: Context,
  cell: CellRow,
  kind: AgentKind,
  asked: Policy | undefined,
  as: Resolver | null,
): Policy | undefined {
  if (asked?.network !== undefined) return asked;
  const network = cellPolicy(ctx, cell.sandbox.policy, as).network;
  if (network === "none") {
    throw badRequest(
      `cell ${cell.name} has no network, and the ${kind} agent needs its API (${EGRESS_PRESETS[kind].join(", ")})`,
      `run it without --cell (its own cell agent-${kind} allows exactly those hosts), or in a cell whose policy allows them`,
    );
  }
  return network === "host" ? { ...asked, network: agentNetwork(kind) } : asked;
}

/**
 * The job's effective policy (cell policy narrowed by the job's), resolved to canonical paths
 * first, then checked for safety. `visible` says what the cell's sandbox shows.
 */
export function effectivePolicy(
  ctx: Context,
  cell: CellRow,
  job: Policy | undefined,
  visible: (path: string) => boolean = () => true,
  as: Resolver | null = null,
): EffectivePolicy {
  const base = cellPolicy(ctx, cell.sandbox.policy, as);
  const requested = job ? resolvePolicy(job, [...writableTrees(ctx), ...base.read_write], as) : undefined;
  // The job's own paths first: an unsafe one is refused for what it is, not as a widening.
  const unsafe = requested ? unsafePolicy(complete(requested, EMPTY_POLICY), protectedPaths(ctx, "daemon")) : null;
  if (unsafe)
    throw badRequest(unsafe, "jobs can never reach planterd or write system directories; choose another path");
  const narrowed = narrow(base, requested, cell.dir, visible);
  // The config's ceiling over whatever the cell and job say (a cell made before it was lowered too).
  const network = capNetwork(ctx.config.network, narrowed.network);
  if (isWidening(network)) throw badRequest(`the job's ${network.what}`, network.hint);
  const p = { ...narrowed, network };
  const why = unsafePolicy(p, protectedPaths(ctx, "daemon"));
  if (why) throw badRequest(why, "jobs can never reach planterd or write system directories; choose another path");
  return p;
}

const EMPTY_POLICY: EffectivePolicy = { ...complete(undefined), read_write: [], read_only: [], deny: [] };

/**
 * A job as `peer` may see it: another user's job keeps its environment to itself (it may hold
 * that user's secrets); everything else is open to every allowed peer, like `ps`.
 */
export function viewFor(ctx: Context, peer: Peer | null, job: JobRow): Job {
  const v = jobView(job);
  if (v.tty) v.tty = { ...v.tty, clients: ctx.terminals.attached(job.id).clients };
  if (v.stdin?.open && stdinClosed(jobDir(ctx.paths.stateDir, job.id))) v.stdin = { open: false };
  if (!daemonIsRoot() || !peer || peer.uid === 0 || ownsJob(ctx, peer, job)) return v;
  return { ...v, env: Object.fromEntries(Object.keys(v.env).map((k) => [k, "(hidden: another user's job)"])) };
}

/**
 * POST /v1/jobs?attach=1: the job as created, its output as it is written and the job as it
 * ended, in one response (lib/api/frames.ts). Output is read from the stored logs, from their
 * start, as `GET …/logs/raw?follow=1` reads them. A job with stdin that this request created
 * (`holdsStdin`) has its input ended when the client goes away before the job ends, as `docker
 * run -i` does: nobody is left to send it or to end it. planterd stopping ends nothing.
 */
function attached(
  ctx: Context,
  req: Req<Routes["createJob"]>,
  id: string,
  status: number,
  holdsStdin = false,
): Reply<Job> {
  const dir = jobDir(ctx.paths.stateDir, id);
  const files = jobFiles(dir);
  return {
    status,
    bytes: {
      type: FRAMES_TYPE,
      headers: { "planter-job": id },
      body: async (sink, signal) => {
        await sink.write(jobFrame(viewFor(ctx, req.peer, requireJob(ctx, id))));
        await pumpLogs({
          logs: [
            { stream: "stdout", file: files.stdout, offset: 0 },
            { stream: "stderr", file: files.stderr, offset: 0 },
          ],
          follow: true,
          ended: () => jobOver(ctx, id),
          onEnd: (wake) => ctx.bus.onJobEnd(id, wake),
          watch: ctx.logWatch,
          header: FRAME_HEADER,
          frame: (buf, stream, length) => putHeader(buf, 0, FRAME_KIND[stream], length),
          sink,
          signal,
        });
        if (signal.aborted) {
          if (holdsStdin && signal.reason !== STOPPING && !FINAL_STATES.has(requireJob(ctx, id).state)) {
            ctx.stdins
              .run(id, async () => endInput(ctx, id, "client_gone", req.audit))
              .catch((e: unknown) =>
                console.error(`planterd: job ${id}: cannot end its stdin: ${(e as Error).message}`),
              );
          }
          return;
        }
        await sink.write(jobFrame(viewFor(ctx, req.peer, requireJob(ctx, id))));
      },
    },
  };
}

/**
 * Refuse a job past `[jobs] max_running_per_uid` of its owner's pending and running jobs: every
 * job holds processes, memory and planterd's attention, and one user (or one runaway agent) must
 * not take them from the others and the host.
 */
function checkRunningCap(ctx: Context, peer: Peer | null): void {
  const cap = ctx.config.jobs.max_running_per_uid;
  if (!cap) return;
  const uid = peer?.uid ?? process.getuid?.() ?? 0;
  const live = liveJobs(ctx.db).filter((j) => jobOwner(ctx, j) === uid).length;
  if (live < cap) return;
  throw new PlanterError(
    "E_UNAVAILABLE",
    `uid ${uid} already has ${live} jobs pending or running, the most one user may ([jobs] max_running_per_uid = ${cap})`,
    { hint: "wait for some to end (planter job ls --state running), kill some, or raise [jobs] max_running_per_uid" },
  );
}

/**
 * Whether a job runs in a VM: its own `backend`, else its cell's. A job of a vm cell may not name
 * another backend (a job narrows its cell's sandbox, never widens it).
 */
export function wantsVm(cell: SandboxBackend | undefined, job: SandboxBackend | undefined): boolean {
  if (cell === "vm" && job !== undefined && job !== "vm") {
    throw badRequest(
      `sandbox backend ${job} would leave its cell's vm backend`,
      "a job of a vm cell runs in a VM; use a cell without backend vm",
    );
  }
  if (job !== undefined && job !== "vm" && job !== platformBackend()?.name) {
    throw badRequest(
      `sandbox backend ${job} does not run on ${process.platform}`,
      `use ${platformBackend()?.name ?? "none"} or vm`,
    );
  }
  return (job ?? cell) === "vm";
}

/** The vm backend for a job, ready (its kernel fetched, its initramfs built), or why not. */
async function vmFor(ctx: Context, mode: SandboxMode, maxRss: number | undefined): Promise<Backend> {
  if (mode === "disabled") {
    throw badRequest("sandbox backend vm with sandbox mode disabled", "give the job mode enforced (or permissive)");
  }
  const vm = ctx.vm;
  const why = vm
    ? vm.problem()
    : { message: `vm jobs run on Linux only, not ${process.platform}`, hint: "use the platform's backend" };
  if (!vm || why)
    throw new PlanterError("E_SANDBOX_UNAVAILABLE", `the vm backend is unavailable: ${why?.message}`, {
      hint: why?.hint ?? "",
    });
  vmMemoryMb(maxRss);
  await vm.prepare();
  return vm;
}

/** What a vm job's policy cannot have yet: refused before anything is made. */
function checkVmPolicy(policy: EffectivePolicy): void {
  if (policy.network !== "none") {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      "a vm job runs without network: network host and allow lists are not built for the vm backend yet",
      { hint: 'give the job network "none" (--net none), or run it with the bwrap backend' },
    );
  }
  if (policy.unix_sockets.length) {
    throw new PlanterError("E_SANDBOX_UNAVAILABLE", "a vm job cannot reach host Unix sockets", {
      hint: "run the job with the bwrap backend",
    });
  }
}

/**
 * The job's sandbox mode (its own, else its cell's, else planterd's default), refused when the
 * config or an MCP ceiling does not allow it, or when it would lower its cell's.
 */
function jobMode(
  ctx: Context,
  asked: SandboxMode | undefined,
  cell: CellRow,
  ceiling: McpCeiling | undefined,
): SandboxMode {
  const mode = effectiveMode(asked, cell.sandbox.mode, ctx.defaultMode);
  const where = asked ? "asked by the job" : cell.sandbox.mode ? `of cell ${cell.name}` : "the default";
  checkMode(ctx, mode, where);
  if (ceiling) checkCeilingMode(ceiling, mode, where);
  const base = cell.sandbox.mode ?? ctx.defaultMode;
  if (lowersMode(asked, base)) {
    throw badRequest(
      `sandbox mode ${asked} would lower the ${cell.sandbox.mode ? `cell ${cell.name}'s` : "default"} mode ${base}`,
      "a job may raise its cell's sandbox mode, never lower it; use a cell created with the mode you need",
    );
  }
  return mode;
}

/**
 * The host's backend for a job in `mode`: the platform's when its probe passed; else none, as a
 * fallback (permissive) or with the failure the job ends with (enforced).
 */
function hostBackend(
  ctx: Context,
  mode: SandboxMode,
): { backend: Backend; fallback: boolean; sandboxFailure: string | null } {
  const none = { backend: noneBackend, fallback: false, sandboxFailure: null };
  if (mode === "disabled") return none;
  const platform = ctx.sandbox.backend;
  if (platform && ctx.sandbox.probe.ok) return { ...none, backend: platform };
  if (mode === "permissive") return { ...none, fallback: true };
  const p = ctx.sandbox.probe;
  return {
    ...none,
    sandboxFailure: `sandbox unavailable: ${p.message ?? "no backend"}${p.hint ? ` (${p.hint})` : ""}`,
  };
}

/**
 * Whether the cell's own sandbox shows a path: it decides what a job's read_only may name. The
 * view is made only when asked (a job naming read_only paths): it costs a launch context of its own.
 */
function cellVisible(
  ctx: Context,
  cell: CellRow,
  identity: Identity | null,
  limits: { max_rss_bytes?: number },
  backend: Backend,
): (path: string) => boolean {
  let cellView: Mount[] | null = null;
  return (p: string) => {
    if (backend.name === "none") return true;
    if (!cellView) {
      const cp = cellPolicy(ctx, cell.sandbox.policy, identity);
      cellView = sandboxView(checkRequest(launchContext(ctx, cell, identity, cp, limits, false), cp, cell.dir));
    }
    return visibleIn(cellView, p, backend.name !== "seatbelt");
  };
}

/** The job's cwd, canonical as the user it runs as reaches it: the cell dir, which is always shown, or one its sandbox shows. */
function jobCwd(
  asked: string | undefined,
  identity: Identity | null,
  where: LaunchContext,
  policy: EffectivePolicy | null,
  backend: Backend,
): string {
  if (!asked) return where.cellDir;
  const cwd = identity ? canonicalAs(asked, identity, "cwd") : canonical(asked, "cwd");
  if (!policy || backend.name === "none") return cwd;
  if (!visibleIn(sandboxView(checkRequest(where, policy, cwd)), cwd, backend.name !== "seatbelt")) {
    throw badRequest(
      `cwd ${asked} does not exist inside the job's sandbox`,
      "use a directory under the cell dir, or add it to the policy's read_only or read_write paths",
    );
  }
  return cwd;
}

/** Refuse a job whose cell was removed, or its sandbox changed, while the job was being prepared. */
function checkCellUnchanged(ctx: Context, cell: CellRow): void {
  const now = getCell(ctx.db, cell.name);
  if (now?.dir !== cell.dir) {
    throw conflict(
      `cell ${cell.name} was removed while the job was being prepared`,
      "create it again, then run the job",
    );
  }
  // A policy changed meanwhile (planter cell update) is never run as it was: the update was answered first.
  if (JSON.stringify(now.sandbox) !== JSON.stringify(cell.sandbox)) {
    throw conflict(
      `cell ${cell.name}'s sandbox was changed while the job was being prepared`,
      "run the job again: it gets the cell's new sandbox",
    );
  }
}

/** The answer to a request whose request_ref made job `prior` already (null: none did). */
function replay(ctx: Context, req: Req<Routes["createJob"]>, prior: string | null): Reply<Job> | null {
  if (!prior) return null;
  const job = getJob(ctx.db, prior);
  if (!job) throw goneResult(req.body.request_ref as string, `job ${prior}`);
  if (!req.query.attach) return ok(viewFor(ctx, req.peer, job), 200);
  // A replay that streams the job's output is a read of its logs: for its own user only.
  checkJobAccess(ctx, req.peer, job);
  return attached(ctx, req, job.id, 200);
}

/**
 * The cell a job runs in: the one it names, else the peer's default cell (made when missing). An
 * agent job without a cell runs in the agent's own default cell, made with its egress preset.
 */
function jobCell(ctx: Context, peer: Peer | null, named: string | undefined, agent: AgentKind | undefined): CellRow {
  const defaultCell = defaultCellName(ctx, peer, agent ? `agent-${agent}` : undefined);
  const cellName = named ?? defaultCell;
  if (cellName !== defaultCell) return requireCell(ctx, cellName);
  return ensureCell(ctx, cellName, peer, agent ? { policy: { network: agentNetwork(agent) } } : {});
}

/** A new job's environment (jobEnv); an agent job's also says where the agent's hooks report. */
function newJobEnv(
  ctx: Context,
  cell: CellRow,
  requested: Record<string, string> | undefined,
  id: string,
  policy: EffectivePolicy | null,
  home: string,
  backend: Backend,
  agent: boolean,
): Record<string, string> {
  const egress = backend.name === "bwrap" && typeof policy?.network === "object";
  const env = jobEnv(ctx, cell.env, requested, id, cell.name, policy, home, egress);
  if (!agent) return env;
  // The agent's hooks write here (bwrap: the FIFO's place in the sandbox; else its host path).
  return { ...env, [REPORT_ENV]: backend.name === "bwrap" ? REPORT_IN_SANDBOX : agentFifo(ctx.paths.stateDir, id) };
}

/** Store a new job, its request_ref, `job.created` and (when it runs unsandboxed in permissive mode) `sandbox.fallback`, in one transaction. */
function recordJob(
  ctx: Context,
  req: Req<Routes["createJob"]>,
  hash: string,
  job: NewJob,
  runAs: ReturnType<typeof runAsOf>,
  fallback: boolean,
): void {
  const { id, sandbox_mode: mode } = job;
  ctx.write((ev) => {
    insertJob(ctx.db, job);
    if (req.body.request_ref) recordRef(ctx.db, "jobs", req.body.request_ref, hash, id);
    ev.push({
      kind: "job.created",
      subject: `job/${id}`,
      data: {
        cell: job.cell,
        argv0: req.body.argv[0],
        sandbox_mode: mode,
        backend: job.backend,
        run_as: runAs,
        ...req.audit,
      },
    });
    if (fallback) {
      ev.push({
        kind: "sandbox.fallback",
        subject: `job/${id}`,
        data: { mode, reason: ctx.sandbox.probe.message ?? "no sandbox backend", hint: ctx.sandbox.probe.hint ?? null },
      });
    }
  });
}

/** End a job that cannot have the sandbox its mode demands: failed, never started. */
function failToSandbox(ctx: Context, id: string, message: string): void {
  ctx.supervisor.finish(id, {
    state: "failed",
    reason: "sandbox_error",
    exit_code: null,
    signal: null,
    message,
    at: Date.now(),
  });
}

export async function create(ctx: Context, req: Req<Routes["createJob"]>): Promise<Reply<Job>> {
  const { attach } = req.query;
  const body = req.body;
  const ref = requestRef(ctx, "jobs", body.request_ref, req.raw);
  const first = replay(ctx, req, ref.prior());
  if (first) return first;
  checkPeerPaths(req.peer, { cwd: body.cwd, policy: body.sandbox?.policy });
  const cell = jobCell(ctx, req.peer, body.cell, body.agent?.kind);
  checkCellAccess(ctx, req.peer, cell);
  checkRunningCap(ctx, req.peer);
  const id = newJobId();
  const mode = jobMode(ctx, body.sandbox?.mode, cell, req.ceiling);
  const identity = identityFor(ctx, req.peer, cell);
  let { backend, fallback, sandboxFailure } = hostBackend(ctx, mode);
  const limits = req.ceiling
    ? ceilingLimits(req.ceiling, body.limits, { ...ctx.config.limits, ...cell.limits })
    : { ...ctx.config.limits, ...cell.limits, ...body.limits };
  // A vm job (its own or its cell's choice): its own kernel, QEMU in the sandbox a bwrap job gets.
  if (wantsVm(cell.sandbox.backend, body.sandbox?.backend)) {
    backend = await vmFor(ctx, mode, limits.max_rss_bytes);
    fallback = false;
    sandboxFailure = null;
  }
  const sandboxed = backend.name !== "none";
  // Paths are resolved with the rights of the user the job runs as (planterd root): bwrap binds
  // nothing else for it, and root's own lookup must never answer for a path that user cannot reach.
  const asked = body.agent
    ? agentPolicy(ctx, cell, body.agent.kind, body.sandbox?.policy, identity)
    : body.sandbox?.policy;
  const cellsPolicy =
    mode === "disabled"
      ? null
      : effectivePolicy(ctx, cell, asked, cellVisible(ctx, cell, identity, limits, backend), identity);
  const policy = req.ceiling && cellsPolicy ? ceilingPolicy(req.ceiling, cellsPolicy) : cellsPolicy;
  if (backend.name === "vm" && policy) checkVmPolicy(policy);
  checkBackendFit(backend.name, limits.max_pids, body);
  const where = launchContext(ctx, cell, identity, policy, limits, sandboxed, req.peer?.uid ?? null);
  const cwd = jobCwd(body.cwd, identity, where, policy, backend);
  // The workspace walk lets other requests in (a huge tree must not stall planterd): what they
  // may have done meanwhile is looked at again — the same request_ref answered, the cell removed.
  where.workspace = await snapshotWorkspace(ctx, id, where, policy, sandboxed);
  const meanwhile = replay(ctx, req, ref.prior());
  if (meanwhile) return meanwhile;
  checkCellUnchanged(ctx, cell);
  // Deny paths missing now get placeholders before the job (bwrap: Seatbelt's rules hold by path).
  if (policy && (backend.name === "bwrap" || backend.name === "vm") && !sandboxFailure) {
    const forUser = daemonIsRoot() && req.peer && req.peer.uid !== 0 ? req.peer : null;
    where.placeholders = holdMissingDeny(ctx, id, where, policy, forUser);
  }
  const job = {
    id,
    cell: cell.name,
    argv: body.argv,
    cwd,
    env: newJobEnv(ctx, cell, body.env, id, policy, where.home, backend, body.agent !== undefined),
    limits,
    sandbox_mode: mode,
    sandbox_policy: policy,
    backend: backend.name,
    created_at: Date.now(),
    request_ref: body.request_ref ?? null,
    tty: body.tty ?? null,
    // A terminal job reads its terminal.
    stdin: Boolean(body.stdin) && !body.tty,
  };
  recordJob(ctx, req, ref.hash, job, runAsOf(identity, req.peer?.uid ?? null), fallback);
  if (body.agent) where.agent = body.agent.kind;
  if (sandboxFailure) failToSandbox(ctx, id, sandboxFailure);
  // A terminal job answers once its holder runs it (or it failed to start).
  else await ctx.supervisor.launch(getJob(ctx.db, id) as JobRow, backend, fallback, where);
  if (attach) return attached(ctx, req, id, 201, job.stdin);
  return ok(viewFor(ctx, req.peer, getJob(ctx.db, id) as JobRow), 201);
}

/** Most bytes of jobs in one page of GET /v1/jobs (the client follows `next_after`). */
export const PAGE_BYTES = 4 * 1024 * 1024;

export function list(ctx: Context, req: Req<Routes["listJobs"]>): Reply<{ jobs: Job[]; next_after: string | null }> {
  const { cell, state, limit, order, after: afterId } = req.query;
  let afterSeq: number | undefined;
  if (afterId) {
    const after = getJob(ctx.db, afterId);
    if (!after) throw badRequest(`after=${afterId} names no job`, "pass the next_after value of the previous page");
    afterSeq = after.seq;
  }
  const rows = iterJobs(ctx.db, {
    cell,
    state,
    limit: limit + 1,
    afterSeq,
    newest: order === "newest",
  });
  // A page ends at `limit` jobs or at PAGE_BYTES of them, whichever comes first (at least one job),
  // and rows are read only as far: a job's argv, env and findings may each be large, and 1000 jobs
  // of a 1 MiB argv made one answer of 1 GB, built in planterd's memory for whoever listed them.
  const jobs: Job[] = [];
  let bytes = 0;
  let more = false;
  for (const j of rows) {
    const view = viewFor(ctx, req.peer, j);
    const size = JSON.stringify(view).length;
    if (jobs.length === limit || (jobs.length && bytes + size > PAGE_BYTES)) {
      more = true;
      break;
    }
    jobs.push(view);
    bytes += size;
  }
  rows.return(undefined);
  return ok({ jobs, next_after: more ? (jobs[jobs.length - 1]?.id ?? null) : null });
}

export function show(ctx: Context, req: Req<Routes["getJob"]>): Reply<Job> {
  return ok(viewFor(ctx, req.peer, requireJob(ctx, req.params.id)));
}

export function kill(ctx: Context, req: Req<Routes["killJob"]>): Reply<Job> {
  const body = req.body;
  checkJobAccess(ctx, req.peer, requireJob(ctx, req.params.id));
  const job = ctx.supervisor.kill(req.params.id, {
    signal: body.signal,
    force: body.force,
    audit: req.audit,
  });
  return ok(viewFor(ctx, req.peer, job), 202);
}

/** Wait for a job to end, at most timeout_ms; answers the job and whether the wait timed out. */
export async function wait(
  ctx: Context,
  req: Req<Routes["waitJob"]>,
): Promise<Reply<{ job: Job; timed_out: boolean }>> {
  const timeout = req.query.timeout_ms;
  const id = req.params.id;
  let job = requireJob(ctx, id);
  if (!FINAL_STATES.has(job.state) && timeout > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeout);
      const off = ctx.bus.onJobEnd(id, done);
      req.signal.addEventListener("abort", done, { once: true });
      function done() {
        clearTimeout(timer);
        off();
        resolve();
      }
    });
    job = requireJob(ctx, id);
  }
  return ok({ job: viewFor(ctx, req.peer, job), timed_out: !FINAL_STATES.has(job.state) });
}

export function remove(ctx: Context, req: Req<Routes["removeJob"]>): Reply<{ removed: string }> {
  const job = requireJob(ctx, req.params.id);
  checkJobAccess(ctx, req.peer, job);
  if (!FINAL_STATES.has(job.state)) {
    throw conflict(`job ${job.id} is still ${job.state}`, `kill it first: planter job kill ${job.id}`);
  }
  // The files go first: on a full disk they are the space the record (and waiting ends) need,
  // and the removal is recorded as soon as it fits.
  rmSync(jobDir(ctx.paths.stateDir, job.id), { recursive: true, force: true });
  ctx.writeOrDefer((ev) => {
    deleteJob(ctx.db, job.id);
    ev.push({ kind: "job.removed", subject: `job/${job.id}`, data: { ...req.audit } });
  });
  return ok({ removed: job.id });
}

/**
 * Processes a sandbox holds once its job's program runs: bwrap and its init, and the job's first
 * process (a vm job's QEMU, with a thread of its own at least). A lower `max_pids` could never
 * start the job.
 */
export const SANDBOX_START_PIDS: Record<string, { n: number; what: string }> = {
  bwrap: { n: 3, what: "bwrap, its init and the job's first process" },
  vm: { n: 4, what: "bwrap, its init, QEMU and its first thread" },
};

/**
 * Refuse what a job's backend cannot do, before anything is made: a `max_pids` no bwrap (or vm) job
 * could start under; stdin for a vm job (the guest's streams are serial ports QEMU opens by path:
 * no input FIFO is wired to one).
 */
function checkBackendFit(
  backend: string,
  maxPids: number | undefined,
  body: { stdin?: boolean | undefined; tty?: unknown },
): void {
  if (backend === "vm" && body.stdin && !body.tty) {
    throw badRequest(
      "a vm job takes no stdin yet (planter run -i, stdin: true)",
      "give it its input as a file in the cell dir, or run it with another backend",
    );
  }
  const start = SANDBOX_START_PIDS[backend];
  if (start === undefined || maxPids === undefined || maxPids >= start.n) return;
  throw badRequest(
    `limits.max_pids ${maxPids} is below the ${start.n} processes a ${backend} job needs to start (${start.what})`,
    `give it ${start.n} or more (--max-pids ${start.n}); bwrap's two count against it for the job's whole life`,
  );
}
