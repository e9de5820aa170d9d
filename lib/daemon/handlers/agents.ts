/** The agents (#16): the list, the watch stream, and reports from hooks (lib/agents/observer.ts). */
import { canSee, checkReport } from "../../agents/access.ts";
import type { AgentList, AgentReportResult, AgentWatchLine } from "../../agents/model.ts";
import type { Routes } from "../../api/routes.ts";
import type { Context } from "../context.ts";
import { ok, type Reply, type Req } from "../router.ts";

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
