/** The /v1 route table. */
import * as cells from "./handlers/cells.ts";
import * as events from "./handlers/events.ts";
import * as jobs from "./handlers/jobs.ts";
import * as logs from "./handlers/logs.ts";
import * as system from "./handlers/system.ts";
import { Router } from "./router.ts";

export function routes(): Router {
  return new Router()
    .add("GET", "/v1/health", system.health)
    .add("GET", "/v1/ready", system.ready)
    .add("GET", "/v1/version", system.version)
    .add("POST", "/v1/cells", cells.create, true)
    .add("GET", "/v1/cells", cells.list)
    .add("GET", "/v1/cells/:name", cells.show)
    .add("DELETE", "/v1/cells/:name", cells.remove)
    .add("POST", "/v1/jobs", jobs.create, true)
    .add("GET", "/v1/jobs", jobs.list)
    .add("GET", "/v1/jobs/:id", jobs.show)
    .add("DELETE", "/v1/jobs/:id", jobs.remove)
    .add("POST", "/v1/jobs/:id/kill", jobs.kill, true)
    .add("GET", "/v1/jobs/:id/wait", jobs.wait)
    .add("GET", "/v1/jobs/:id/logs", logs.read)
    .add("GET", "/v1/jobs/:id/logs/raw", logs.raw)
    .add("GET", "/v1/events", events.stream);
}
