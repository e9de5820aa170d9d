/** Liveness, readiness and version. */
import { API_VERSION, type ReadyInfo, type VersionInfo } from "../../api/contract.ts";
import type { Routes } from "../../api/routes.ts";
import { formatBytes } from "../../cli/units.ts";
import { spaceText } from "../../state/storage.ts";
import { BUILD } from "../../version.ts";
import type { Context } from "../context.ts";
import { ok, type Reply, type Req } from "../router.ts";

export function health(_ctx: Context, _req: Req<Routes["health"]>): Reply<{ ok: boolean }> {
  return ok({ ok: true });
}

export function ready(ctx: Context, _req: Req<Routes["ready"]>): Reply<ReadyInfo> {
  let stateOk = true;
  try {
    ctx.db.query("SELECT 1").get();
  } catch {
    stateOk = false;
  }
  if (stateOk && ctx.storageFailure && ctx.deferredWrites === 0) probeWrite(ctx);
  const disk = diskStatus(ctx);
  // Not ready while state writes fail or wait, or while the disk is below the log reserve (a
  // job that prints would be stopped at once).
  const full = ctx.storageFailure !== null || ctx.deferredWrites > 0 || disk.below_reserve;
  const damaged = ctx.damaged !== null;
  const ready = stateOk && !full && !damaged;
  const body: ReadyInfo = {
    ready,
    state: !stateOk ? "unavailable" : damaged ? "damaged" : full ? "disk_full" : "ok",
    integrity: { ...ctx.integrity, hint: ctx.damaged?.hint ?? null },
    disk,
    jobs_watched: ctx.supervisor.watching,
    // Workspace snapshots and reviews in progress (lib/daemon/walks.ts).
    workspace_walks: ctx.walks.list(),
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
  return ok(body, ready ? 200 : 503);
}

/** After a refused write with nothing waiting, one small write tells whether the disk takes writes again. */
function probeWrite(ctx: Context): void {
  try {
    ctx.write(() => {
      ctx.db.query("INSERT OR REPLACE INTO meta (key, value) VALUES ('disk_probe', ?)").run(String(Date.now()));
    });
  } catch {
    // still refused: ctx.storageFailure says why
  }
}

/**
 * The state dir's disk: free and total bytes, the log reserve, writes the disk refused (the last
 * one's message and hint) and those waiting to be recorded, with the ends among them.
 */
function diskStatus(ctx: Context) {
  const d = ctx.supervisor.monitor.measureDisk();
  const failure = ctx.storageFailure;
  const below = d !== null && d.reserve > 0 && d.free < d.reserve;
  let message: string | null = null;
  let hint: string | null = null;
  if (failure) {
    message = failure.error.message;
    hint = failure.error.hint ?? null;
  } else if (ctx.deferredWrites > 0) {
    message = `${ctx.deferredWrites} state writes wait for the disk (${d ? spaceText(d) : ctx.paths.stateDir})`;
    hint = "they are retried until they succeed; free space on that disk";
  } else if (below && d) {
    message = `the state disk is below planter's log reserve: ${spaceText(d)}, reserve ${formatBytes(d.reserve)}; jobs whose output grows are stopped (disk_full)`;
    hint = "free space there (`planter job rm ID` removes a finished job and its logs), or lower [logs] min_free_bytes";
  }
  return {
    path: d?.path ?? ctx.paths.stateDir,
    free_bytes: d?.free ?? null,
    total_bytes: d?.total ?? null,
    min_free_bytes: d?.reserve ?? null,
    below_reserve: below,
    write_failed_at: failure ? new Date(failure.at).toISOString() : null,
    writes_waiting: ctx.deferredWrites,
    ends_waiting: ctx.supervisor.endsWaiting,
    message,
    hint,
  };
}

/** The task share of jobs without a cgroup, where one applies (lib/jobs/tasks.ts). */
function taskShareStatus(ctx: Context) {
  if (ctx.supervisor.monitor.enforcement.cgroups) return null;
  const s = ctx.supervisor.taskShare;
  return s ? { own: s.own, recorders: s.recorders, jobs: s.jobs } : null;
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
    task_share: taskShareStatus(ctx),
  };
}

export function version(ctx: Context, _req: Req<Routes["version"]>): Reply<VersionInfo> {
  const info: VersionInfo = {
    version: BUILD.version,
    commit: BUILD.commit,
    api: API_VERSION,
    backend: ctx.sandbox.backend?.name ?? "none",
    sandbox_mode: ctx.defaultMode,
  };
  return ok(info);
}
