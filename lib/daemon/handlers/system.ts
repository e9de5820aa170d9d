/** Liveness, readiness and version. */
import { API_VERSION, type VersionInfo } from "../../api/contract.ts";
import { BUILD } from "../../version.ts";
import type { Context } from "../context.ts";
import { allowQuery, ok, type Reply, type Req } from "../router.ts";

export function health(_ctx: Context, req: Req): Reply {
  allowQuery(req.query, []);
  return ok({ ok: true });
}

export function ready(ctx: Context, req: Req): Reply {
  allowQuery(req.query, []);
  let stateOk = true;
  try {
    ctx.db.query("SELECT 1").get();
  } catch {
    stateOk = false;
  }
  const body = {
    ready: stateOk,
    state: stateOk ? "ok" : "unavailable",
    jobs_watched: ctx.supervisor.watching,
    requests_in_flight: ctx.inflight(),
    limits: limitsStatus(ctx),
    sandbox: {
      mode: ctx.defaultMode,
      backend: ctx.sandbox.backend?.name ?? "none",
      ok: ctx.sandbox.probe.ok,
      version: ctx.sandbox.probe.version ?? null,
      userns: ctx.sandbox.probe.userns ?? null,
      message: ctx.sandbox.probe.message ?? null,
      hint: ctx.sandbox.probe.hint ?? null,
    },
  };
  return ok(body, stateOk ? 200 : 503);
}

/** How limits are enforced: "monitor" or "cgroup v2", why not cgroups, and the monitor's figures. */
function limitsStatus(ctx: Context) {
  const m = ctx.supervisor.monitor;
  return {
    enforcement: m.enforcement.mode,
    cgroup_unavailable: m.enforcement.why,
    interval_ms: m.intervalMs,
    grace_ms: m.graceMs,
    jobs_sampled: m.watching,
    ticks: m.last.count,
    last_tick_ms: Number(m.last.ms.toFixed(3)),
  };
}

export function version(ctx: Context, req: Req): Reply {
  allowQuery(req.query, []);
  const info: VersionInfo = {
    version: BUILD.version,
    commit: BUILD.commit,
    api: API_VERSION,
    backend: ctx.sandbox.backend?.name ?? "none",
    sandbox_mode: ctx.defaultMode,
  };
  return ok(info);
}
