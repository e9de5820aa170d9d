/** The agents (#16): the list, the watch stream, and reports from hooks (lib/agents/observer.ts). */
import { existsSync, statSync } from "node:fs";
import { canSee, checkReport } from "../../agents/access.ts";
import {
  type ActionResult,
  type ActionType,
  actionId,
  checkGuards,
  type Guards,
  sendBytes,
} from "../../agents/actions.ts";
import { type AgentRecord, toAgent } from "../../agents/engine.ts";
import type { AgentList, AgentReportResult, AgentWatchLine } from "../../agents/model.ts";
import { type Socket, tmux } from "../../agents/tmux.ts";
import { FINAL_STATES, type ScreenInfo } from "../../api/contract.ts";
import { PlanterError } from "../../api/errors.ts";
import type { Routes } from "../../api/routes.ts";
import { startTime } from "../../jobs/proc.ts";
import { jobDir } from "../../paths.ts";
import { bodyHash, lookupRef, recordRef } from "../../state/idempotency.ts";
import { HolderConnection } from "../../tty/controller.ts";
import { holderSocket } from "../../tty/start.ts";
import type { Context } from "../context.ts";
import { checkJobAccess } from "../launch.ts";
import type { Peer } from "../peer.ts";
import { ok, type Reply, type Req } from "../router.ts";
import { requireJob } from "./common.ts";
import { screen } from "./tty.ts";

export function list(ctx: Context, req: Req<Routes["listAgents"]>): Reply<AgentList> {
  const { state, agent, job } = req.query;
  return ok(ctx.agents.list(canSee(req.peer), { state, agent, job }));
}

export function watch(ctx: Context, req: Req<Routes["watchAgents"]>): Reply<AgentWatchLine> {
  return { status: 200, lines: ctx.agents.watch(req.query.cursor, canSee(req.peer)) };
}

export function report(ctx: Context, req: Req<Routes["reportAgent"]>): Reply<AgentReportResult> {
  const owner = checkReport(ctx, req.peer, req.body);
  return ok(ctx.agents.ingest(req.body, { owner_uid: owner }));
}

/**
 * The agent `id` names (a runtime id) as `peer` may act on it: one it may not see is not found
 * (no oracle of others' agents). Its guards checked against it as it is now.
 */
function actionable(ctx: Context, peer: Peer | null, id: string, guards: Guards) {
  const rec = ctx.agents.record(id);
  const visible = rec && canSee(peer)(rec.owner_uid) ? rec : null;
  if (!visible && guards.if_runtime === undefined)
    throw new PlanterError("E_NOT_FOUND", `no agent ${id}`, { hint: "list them: planter agents ls" });
  const agent = checkGuards(visible ? toAgent(visible) : null, guards, Date.now(), id);
  return { rec: visible as AgentRecord, agent };
}

/** The tmux server of a pane agent, as the user who owns its socket (tmux runs as that user). */
function socketOf(rec: AgentRecord): Socket {
  const path = rec.runtime.tmux_socket as string;
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st?.isSocket())
    throw new PlanterError("E_RUNTIME_STALE", `agent ${rec.runtime_id}'s tmux server is gone (${path})`);
  return { path, uid: st.uid, gid: st.gid };
}

/** An action's record (its id, who, what), and the idempotency entry for its request_ref. */
function recordAction(
  ctx: Context,
  req: { peer: Peer | null; raw: unknown },
  type: ActionType,
  rec: AgentRecord,
  ref: string | undefined,
  data: Record<string, unknown>,
): string {
  const id = actionId();
  ctx.write((ev) => {
    if (ref) recordRef(ctx.db, "agent-actions", ref, bodyHash(req.raw as Record<string, unknown>), id);
    ev.push({
      kind: "agent.action",
      subject: `agent/${rec.runtime_id}`,
      data: {
        action_id: id,
        type,
        runtime_id: rec.runtime_id,
        job: rec.runtime.job_id,
        by_uid: req.peer?.uid ?? null,
        ...data,
      },
    });
  });
  return id;
}

/** A request_ref seen before with this body: the first action's id (nothing is done again). */
function replayOf(ctx: Context, raw: unknown, ref: string | undefined): string | null {
  return ref ? lookupRef(ctx.db, "agent-actions", ref, bodyHash(raw as Record<string, unknown>)) : null;
}

/** POST /v1/agents/{id}/send */
export async function send(ctx: Context, req: Req<Routes["agentSend"]>): Promise<Reply<ActionResult>> {
  const body = req.body;
  const prior = replayOf(ctx, req.raw, body.request_ref);
  if (prior) return ok({ action_id: prior, runtime_id: req.params.id, type: "send", replayed: true });
  const { rec } = actionable(ctx, req.peer, req.params.id, body);
  const bytes = sendBytes(body);
  if (!bytes) throw new PlanterError("E_BAD_REQUEST", "nothing to send: give text, keys or both");
  if (rec.runtime.job_id) {
    const job = requireJob(ctx, rec.runtime.job_id);
    const socket = holderSocket(jobDir(ctx.paths.stateDir, job.id));
    if (!job.tty || FINAL_STATES.has(job.state) || !existsSync(socket))
      throw new PlanterError("E_RUNTIME_STALE", `agent ${rec.runtime_id}'s job ${job.id} has no terminal now`);
    const conn = await HolderConnection.connect(socket);
    try {
      conn.input(Buffer.from(bytes));
      // A holder that closes instead had the input and is ending with its job (a typed exit).
      await conn.snapshot().catch((e: Error) => {
        if (!/closed/.test(e.message)) throw e;
      });
    } finally {
      conn.close();
    }
  } else {
    const sock = socketOf(rec);
    const pane = rec.runtime.pane_id as string;
    const args = [
      ...(body.text ? ["send-keys", "-t", pane, "-l", "--", body.text] : []),
      ...(body.text && body.keys?.length ? [";"] : []),
      ...(body.keys?.length ? ["send-keys", "-t", pane, ...body.keys] : []),
    ];
    const r = await tmux(sock, ["-S", sock.path, ...args]);
    if (r.code !== 0) throw new PlanterError("E_RUNTIME_STALE", `tmux could not type into ${pane}: ${r.stderr.trim()}`);
  }
  const id = recordAction(ctx, req, "send", rec, body.request_ref, { bytes: Buffer.byteLength(bytes) });
  return ok({
    action_id: id,
    runtime_id: rec.runtime_id,
    type: "send",
    replayed: false,
    written: Buffer.byteLength(bytes),
  });
}

/** POST /v1/agents/{id}/kill */
export function kill(ctx: Context, req: Req<Routes["agentKill"]>): Reply<ActionResult> {
  const body = req.body;
  const prior = replayOf(ctx, req.raw, body.request_ref);
  if (prior) return ok({ action_id: prior, runtime_id: req.params.id, type: "kill", replayed: true });
  const { rec } = actionable(ctx, req.peer, req.params.id, body);
  if (rec.runtime.job_id) {
    const job = requireJob(ctx, rec.runtime.job_id);
    checkJobAccess(ctx, req.peer, job);
    ctx.supervisor.kill(job.id, {
      force: Boolean(body.force),
      reason: body.force ? "forced_kill" : "terminated_by_user",
    });
  } else {
    // The agent's own process, exactly the one observed (pid and start time), not its pane.
    const [pid, start] = rec.runtime.process.split(":");
    if (startTime(Number(pid)) !== start)
      throw new PlanterError("E_RUNTIME_STALE", `agent ${rec.runtime_id}'s process ${pid} is gone`);
    try {
      process.kill(Number(pid), body.force ? "SIGKILL" : "SIGTERM");
    } catch (e) {
      throw new PlanterError("E_RUNTIME_STALE", `agent ${rec.runtime_id}'s process ${pid}: ${(e as Error).message}`);
    }
  }
  const id = recordAction(ctx, req, "kill", rec, body.request_ref, { force: Boolean(body.force) });
  return ok({ action_id: id, runtime_id: rec.runtime_id, type: "kill", replayed: false });
}

/** GET /v1/agents/{id}/output */
export async function output(ctx: Context, req: Req<Routes["agentOutput"]>): Promise<Reply<ActionResult>> {
  const n = req.query.lines ?? 40;
  const { rec } = actionable(ctx, req.peer, req.params.id, { if_runtime: req.query.if_runtime });
  let lines: string[];
  if (rec.runtime.job_id) {
    const r = await screen(ctx, { ...req, params: { id: rec.runtime.job_id } } as unknown as Req<Routes["screen"]>);
    lines = ("json" in r ? (r.json as ScreenInfo).lines : []) as string[];
  } else {
    const sock = socketOf(rec);
    const r = await tmux(sock, ["-S", sock.path, "capture-pane", "-p", "-t", rec.runtime.pane_id as string]);
    if (r.code !== 0)
      throw new PlanterError("E_RUNTIME_STALE", `tmux could not read ${rec.runtime.pane_id}: ${r.stderr.trim()}`);
    lines = r.stdout.split("\n");
  }
  while (lines.length && lines.at(-1)?.trim() === "") lines.pop();
  lines = lines.slice(-n);
  const id = recordAction(ctx, req, "view-output", rec, undefined, { lines: lines.length });
  return ok({ action_id: id, runtime_id: rec.runtime_id, type: "view-output", replayed: false, lines });
}
