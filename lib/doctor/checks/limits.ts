/**
 * limits.cgroup: how job limits are enforced. planterd reports it in `GET /v1/ready` (`limits`);
 * without that (planterd down, or older), doctor looks at this host itself.
 *
 * Status: "monitor" is a complete enforcement (timeouts, RSS summed over the tree, log quota),
 * cgroup v2 only tightens it, so monitor-only is ok — except where systemd runs and planterd's
 * unit merely lacks `Delegate=yes`: that is fixable, so it warns with the fix.
 */
import { detectHostCgroup } from "../../jobs/cgroup.ts";
import { type Check, type Linked, ok, type Result, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";
import { daemonProbe } from "./daemon.ts";

/** A drop-in that gives planterd.service a delegated cgroup, then a restart. */
function delegateFix(ctx: DoctorContext): string {
  const dir =
    ctx.paths.mode === "user" ? "~/.config/systemd/user/planterd.service.d" : "/etc/systemd/system/planterd.service.d";
  const sc = ctx.commands.systemctl;
  const sudo = ctx.paths.mode === "user" ? "" : ctx.commands.sudo;
  return `${sudo}mkdir -p ${dir} && printf '[Service]\\nDelegate=yes\\n' | ${sudo}tee ${dir}/delegate.conf && ${sc} daemon-reload && ${sc} restart planterd.service`;
}

/** limits.cgroup from what planterd reports (or null) and the local detection. */
export function limitsResult(
  ctx: DoctorContext,
  reported: { enforcement: string; cgroup_unavailable: string | null; interval_ms?: number } | null,
  local: () => { ok: boolean; why: string },
): Result {
  if (reported) {
    if (reported.enforcement === "cgroup v2")
      return ok("cgroup v2: the kernel enforces memory and pids per job (planterd reports)");
    const sampling = reported.interval_ms ? ` (sampling every ${reported.interval_ms} ms)` : "";
    const why = reported.cgroup_unavailable ?? "no cgroup v2";
    const msg = `monitor only${sampling}: ${why}`;
    if (ctx.systemd && /Delegate=yes|not delegated/.test(why)) {
      return warn(
        msg,
        "limits are enforced by sampling; with a delegated cgroup the kernel also enforces memory and pids, and a kill reaches every process",
        delegateFix(ctx),
      );
    }
    return ok(msg);
  }
  if (ctx.platform !== "linux") return ok(`monitor only: cgroups exist on Linux only (${ctx.platform})`);
  if (ctx.config.ok && ctx.config.config.monitor.cgroup === "off")
    return ok('monitor only: config [monitor] cgroup = "off"');
  const l = local();
  return ok(`${l.ok ? "cgroup v2 available" : "monitor only"}: ${l.why}; local detection, planterd did not report`);
}

const cgroup: Check<DoctorContext> = {
  id: "limits.cgroup",
  description: "how job limits are enforced: cgroup v2 (kernel) or the sampling monitor",
  async run(ctx: DoctorContext & Linked) {
    const d = await daemonProbe(ctx);
    const reported = d.ok ? (d.ready?.limits ?? null) : null;
    // The daemon's own detection, when planterd cannot be asked.
    return limitsResult(ctx, reported, () => {
      const c = detectHostCgroup();
      return c.ok ? { ok: true, why: `delegated cgroup v2 group ${c.own} at ${c.mount}` } : c;
    });
  },
};

export const limitsChecks = [cgroup];
