/** planterd's systemd units: service.units (enabled), service.active (listening). */
import { type Run, systemctl } from "../../host/systemd.ts";
import { type Check, fail, ok, type Result, skip, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";

const UNIT = "planterd.socket";

const noSystemd = (ctx: DoctorContext) =>
  unitsRecorded(ctx)
    ? skip(
        "systemd is not running here: install enabled planterd.socket offline, so it starts once systemd runs (an image booted)",
        `until then, start planterd directly: ${ctx.commands.start}`,
      )
    : skip(
        "systemd is not running here (a container, or WSL without systemd): planterd is started directly, not by units",
        `start it with: ${ctx.commands.start}`,
      );

/** Whether install recorded planterd's units (so their absence is a fault, not a choice). */
const unitsRecorded = (ctx: DoctorContext) =>
  ctx.install.found && "state" in ctx.install && ctx.install.state.units.some((u) => u.name === UNIT);

const firstLine = (r: Run) => r.stdout.trim().split("\n")[0]?.trim() ?? "";

/** The unit file is missing: systemctl prints "not-found" (newer) or "No such file" (older). */
const notFound = (r: Run) => firstLine(r) === "not-found" || /No such file|not found|does not exist/i.test(r.stderr);

/** service.units from `systemctl is-enabled planterd.socket`. */
export function unitsResult(ctx: DoctorContext, r: Run): Result {
  const sc = ctx.commands.systemctl;
  const reinstall = `${ctx.commands.sudo}${ctx.commands.planter} install${ctx.paths.mode === "user" ? " --user" : ""}`;
  const state = firstLine(r);
  if (r.code === 127)
    return fail("systemctl is not on PATH although systemd runs", "add /usr/bin to PATH", "export PATH=/usr/bin:$PATH");
  if (state === "enabled" || state === "enabled-runtime")
    return ok(`${UNIT} is ${state}: planterd starts on the first connection`);
  if (notFound(r)) {
    if (!unitsRecorded(ctx))
      return skip(`no ${UNIT} unit: planter was not installed with \`install\``, `to install the units: ${reinstall}`);
    return fail(
      `${UNIT} is gone although install recorded it`,
      "the unit files were removed; re-running install writes them again",
      reinstall,
    );
  }
  if (state === "disabled")
    return fail(
      `${UNIT} is disabled: nothing listens after a reboot`,
      "enable and start it",
      `${sc} enable --now ${UNIT}`,
    );
  if (state === "masked")
    return fail(
      `${UNIT} is masked: it cannot start`,
      "unmask it, then enable and start it",
      `${sc} unmask ${UNIT} && ${sc} enable --now ${UNIT}`,
    );
  return warn(
    `systemctl is-enabled ${UNIT} answered ${JSON.stringify(state || r.stderr.trim())}`,
    "an unexpected unit state; look at the unit",
    `${sc} status ${UNIT}`,
  );
}

/** service.active from `systemctl is-active planterd.socket`. */
export function activeResult(ctx: DoctorContext, r: Run): Result {
  const sc = ctx.commands.systemctl;
  const state = firstLine(r);
  const journal = `journalctl ${ctx.paths.mode === "user" ? "--user " : ""}-u ${UNIT} -u planterd.service -n 50`;
  if (r.code === 127)
    return fail("systemctl is not on PATH although systemd runs", "add /usr/bin to PATH", "export PATH=/usr/bin:$PATH");
  if (state === "active") return ok(`${UNIT} is active: planterd starts on demand`);
  if (state === "failed") {
    return fail(
      `${UNIT} failed`,
      `see why: ${journal}`,
      `${sc} reset-failed ${UNIT} planterd.service && ${sc} start ${UNIT}`,
    );
  }
  if (state === "inactive" || state === "") {
    if (!unitsRecorded(ctx)) return skip(`${UNIT} is not active: planter was not installed with \`install\``);
    return fail(
      `${UNIT} is not active: nothing listens on ${ctx.paths.socketPath}`,
      "start the socket unit",
      `${sc} start ${UNIT}`,
    );
  }
  return warn(`${UNIT} is ${state}`, `it is changing state; if it stays so, see: ${journal}`, `${sc} restart ${UNIT}`);
}

const units: Check<DoctorContext> = {
  id: "service.units",
  description: "planterd.socket is installed and enabled (systemctl is-enabled)",
  async run(ctx) {
    if (!ctx.systemd) return noSystemd(ctx);
    return unitsResult(ctx, await systemctl(ctx.paths.mode, "is-enabled", UNIT));
  },
};

const active: Check<DoctorContext> = {
  id: "service.active",
  description: "planterd.socket is active, so planterd starts on the first connection (systemctl is-active)",
  async run(ctx) {
    if (!ctx.systemd) return noSystemd(ctx);
    return activeResult(ctx, await systemctl(ctx.paths.mode, "is-active", UNIT));
  },
};

export const serviceChecks = [units, active];
