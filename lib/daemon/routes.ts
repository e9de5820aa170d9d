/** planterd's handlers for the /v1 route table (lib/api/routes.ts): one per route, checked by the compiler. */
import { ROUTES, type RouteName, type Routes } from "../api/routes.ts";
import * as agents from "./handlers/agents.ts";
import * as cells from "./handlers/cells.ts";
import * as events from "./handlers/events.ts";
import * as jobs from "./handlers/jobs.ts";
import * as logs from "./handlers/logs.ts";
import * as stdin from "./handlers/stdin.ts";
import * as system from "./handlers/system.ts";
import * as targets from "./handlers/targets.ts";
import * as tty from "./handlers/tty.ts";
import { type Handler, Router } from "./router.ts";

const HANDLERS: { [K in RouteName]: Handler<Routes[K]> } = {
  health: system.health,
  ready: system.ready,
  version: system.version,
  createCell: cells.create,
  listCells: cells.list,
  getCell: cells.show,
  updateCell: cells.update,
  removeCell: cells.remove,
  createJob: jobs.create,
  listJobs: jobs.list,
  getJob: jobs.show,
  removeJob: jobs.remove,
  killJob: jobs.kill,
  waitJob: jobs.wait,
  logs: logs.read,
  logStream: logs.raw,
  logFd: logs.fd,
  events: events.stream,
  attach: tty.attach,
  writeStdin: stdin.write,
  screen: tty.screen,
  listAgents: agents.list,
  watchAgents: agents.watch,
  reportAgent: agents.report,
  agentSend: agents.send,
  agentKill: agents.kill,
  agentOutput: agents.output,
  reportTargetHealth: targets.reportHealth,
};

export function routes(): Router {
  const router = new Router();
  for (const name of Object.keys(ROUTES) as RouteName[]) router.add(ROUTES[name], HANDLERS[name] as Handler);
  return router;
}
