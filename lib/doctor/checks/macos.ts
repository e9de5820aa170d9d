/** macOS: macos.sandbox-exec (the Seatbelt backend's probe), macos.launchd (the agent is loaded and running). */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { shellLine } from "../../cli/output.ts";
import type { InstallState } from "../../host/install-state.ts";
import { agentPlistPath, guiDomain, LABEL, notLoaded, parsePrint, print, serviceTarget } from "../../host/launchd.ts";
import type { Run } from "../../host/systemd.ts";
import type { Probe } from "../../sandbox/backend.ts";
import { SeatbeltBackend } from "../../sandbox/seatbelt.ts";
import { type Check, fail, ok, type Result, skip, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";

const notMac = (ctx: DoctorContext) => skip(`not macOS (${ctx.platform}): this check applies to macOS hosts only`);

/** macos.sandbox-exec from the Seatbelt backend's probe (sandbox-exec runs a trivial profile). */
export function sandboxExecResult(path: string, p: Probe): Result {
  if (p.ok) return ok(`${path} runs a trivial profile: jobs can be sandboxed with Seatbelt`);
  const trial = `${shellLine([path])} -p '(version 1)(allow default)' -- /usr/bin/true`;
  if (/not found/.test(p.message ?? ""))
    return fail(
      `${path} not found: native jobs cannot be sandboxed`,
      'sandbox-exec ships with macOS in /usr/bin; without it only sandbox mode "disabled" or "permissive" (unsandboxed) runs jobs',
      `ls -l ${shellLine([path])}`,
    );
  return fail(
    `${p.message ?? "sandbox-exec failed"}`,
    "sandbox-exec refuses even an allow-all profile: planter itself runs inside a sandbox (an app sandbox, another sandbox-exec), which macOS does not nest; run planterd outside it",
    trial,
  );
}

/** The plist install recorded, if any. */
const recordedPlist = (s: InstallState | null) => s?.files.find((f) => f.kind === "plist")?.path ?? null;

/** macos.launchd from `launchctl print gui/<uid>/dev.planter.planterd`. */
export function launchdResult(
  o: { uid: number; plist: string; recorded: boolean; plistExists: boolean; log: string; planter: string },
  r: Run,
): Result {
  const target = serviceTarget(o.uid);
  const load = `launchctl bootstrap ${guiDomain(o.uid)} ${shellLine([o.plist])}`;
  const reinstall = `${o.planter} install --user`;
  if (r.code === 127)
    return fail("launchctl is not on PATH", "launchctl is part of macOS, in /bin", "export PATH=/bin:/usr/bin:$PATH");
  if (r.code === 0) {
    const st = parsePrint(r.stdout);
    if (st.path && st.path !== o.plist)
      return warn(
        `${target} is loaded from ${st.path}, not ${o.plist}`,
        "another plist took the label: the agent may run another binary or paths",
        `launchctl bootout ${target} && ${load}`,
      );
    if (st.state === "running" && st.pid)
      return ok(`${target} is loaded and running (pid ${st.pid}); launchd starts it at login and keeps it alive`);
    return fail(
      `${target} is loaded but not running (state ${st.state ?? "unknown"}, last exit code ${st.lastExit ?? "unknown"})`,
      `planterd keeps exiting: see the log ${o.log}`,
      `launchctl kickstart -k ${target}`,
    );
  }
  if (notLoaded(r)) {
    if (!o.recorded)
      return skip(
        `no launchd agent ${LABEL}: planter was not installed with \`install\``,
        `to install it: ${reinstall}`,
      );
    if (!o.plistExists)
      return fail(
        `${target} is not loaded, and ${o.plist} is gone although install recorded it`,
        "re-running install writes the plist and loads it again",
        reinstall,
      );
    return fail(
      `${target} is not loaded: planterd does not start at login`,
      "load the agent (RunAtLoad starts planterd at once)",
      load,
    );
  }
  return warn(
    `launchctl print ${target} answered ${JSON.stringify(r.stderr.trim() || `exit ${r.code}`)}`,
    "an unexpected answer from launchd; look at the service",
    `launchctl print ${target}`,
  );
}

const sandboxExec: Check<DoctorContext> = {
  id: "macos.sandbox-exec",
  description: "macOS: sandbox-exec exists and runs a trivial profile (the Seatbelt backend's probe)",
  async run(ctx) {
    if (ctx.platform !== "darwin") return notMac(ctx);
    return sandboxExecResult(ctx.sandboxExec, await new SeatbeltBackend(ctx.sandboxExec).probe());
  },
};

const launchd: Check<DoctorContext> = {
  id: "macos.launchd",
  description: "macOS: the launchd agent dev.planter.planterd is loaded and running (launchctl print)",
  async run(ctx) {
    if (ctx.platform !== "darwin") return notMac(ctx);
    const state = ctx.install.found && "state" in ctx.install ? ctx.install.state : null;
    const recorded = recordedPlist(state);
    const plist = recorded ?? agentPlistPath(ctx.env.HOME || "~");
    const onHost = state && state.root !== "/" ? join(state.root, plist) : plist;
    return launchdResult(
      {
        uid: ctx.uid,
        plist,
        recorded: recorded !== null,
        plistExists: existsSync(onHost),
        log: join(ctx.paths.stateDir, "planterd.log"),
        planter: ctx.commands.planter,
      },
      await print(ctx.uid, LABEL, ctx.env),
    );
  },
};

export const macosChecks = [sandboxExec, launchd];
