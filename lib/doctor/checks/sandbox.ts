/** The sandbox, probed for real: sandbox.backend (checkSandbox), sandbox.userns. */
import { readFileSync } from "node:fs";
import type { Probe } from "../../sandbox/backend.ts";
import { type CheckResult, checkSandbox } from "../../sandbox/check.ts";
import { platformBackend } from "../../sandbox/index.ts";
import { type Check, fail, type Linked, ok, type Result, skip } from "../check.ts";
import type { DoctorContext } from "../context.ts";
import { daemonProbe } from "./daemon.ts";

/** Run the platform backend's probe and the sandboxed write/network probe, once per doctor run. */
export function sandboxProbe(ctx: DoctorContext & Linked): Promise<CheckResult> {
  return ctx.once("sandbox", async (): Promise<CheckResult> => {
    const backend = platformBackend(ctx.platform);
    try {
      const probe: Probe = backend
        ? await backend.probe()
        : {
            ok: false,
            message: `no sandbox backend for ${ctx.platform}`,
            hint: "planter sandboxes on Linux (bubblewrap) and macOS (Seatbelt)",
          };
      return await checkSandbox(backend, probe);
    } catch (e) {
      // A probe that cannot even run is a finding about the sandbox, not a doctor bug.
      const message = `the sandbox probe could not run: ${(e as Error).message}`;
      return { ok: false, backend: backend?.name ?? null, version: null, userns: null, checks: [], message };
    }
  });
}

/** The copy-paste command inside a hint ("…: sudo apt-get install bubblewrap"), or null. */
export function commandInHint(hint: string | undefined): string | null {
  const m = /\bsudo [^(\n]*?(?=\s+\(|\s*$)/.exec(hint ?? "");
  return m ? m[0].trim() : null;
}

/** sandbox.backend from the local probe, and planterd's own probe when it answered. */
export function backendResult(
  r: CheckResult,
  opts: {
    mode: string | null;
    daemon: { ok: boolean; message: string | null; hint: string | null } | null;
    planter: string;
    restart: string;
  },
): Result {
  const check = `${opts.planter} sandbox check`;
  const name = `${r.backend ?? "none"}${r.version ? ` (${r.version})` : ""}`;
  if (!r.ok && !r.checks.length) {
    return fail(
      `${name}: ${r.message ?? "the sandbox cannot start"}`,
      r.hint ?? `see \`${check}\``,
      commandInHint(r.hint) ?? check,
    );
  }
  const bad = r.checks.filter((c) => !c.ok && BASIC.has(c.id)).map((c) => c.detail);
  if (bad.length) {
    return fail(
      `${name}: ${r.message ?? "the probe escaped"}: ${bad.join("; ")}`,
      r.hint ?? "report this",
      `${check} --json`,
    );
  }
  const mode = opts.mode
    ? ` · jobs run ${opts.mode === "disabled" ? "unsandboxed (mode disabled)" : `in mode ${opts.mode}`}`
    : "";
  if (opts.daemon && !opts.daemon.ok && opts.mode !== "disabled") {
    // Jobs then fail (enforced) or, worse, run unsandboxed (permissive): never a mere warning.
    return fail(
      `${name} works here, but planterd's own probe failed${opts.mode === "permissive" ? ", so its jobs run WITHOUT a sandbox" : ", so its jobs fail"}: ${opts.daemon.message ?? "unknown"}`,
      `${opts.daemon.hint ?? "planterd runs with another PATH or restrictions than this shell"}; restart planterd after fixing it (it probes at startup)`,
      opts.restart,
    );
  }
  return ok(`${name}: a sandboxed sh wrote its cell, and was denied $HOME and the host network${mode}`);
}

/** The probe's basic checks (sandbox.backend); the rest are containment (sandbox.containment). */
const BASIC = new Set(["write-inside", "write-outside", "network"]);

/** sandbox.containment: the job is not root, /proc/sys is read-only, host sockets and the real home are out of reach. */
export function containmentResult(r: CheckResult, planter: string): Result {
  const mine = r.checks.filter((c) => !BASIC.has(c.id));
  if (!mine.length) return skip(`the sandbox probe did not run (see sandbox.backend)`);
  const bad = mine.filter((c) => !c.ok);
  if (bad.length) {
    return fail(
      `containment broken: ${bad.map((c) => c.detail).join("; ")}`,
      "a sandboxed job reaches what it must not; do not run untrusted jobs until this is fixed",
      `${planter} sandbox check --json`,
    );
  }
  return ok(mine.map((c) => c.detail).join("; "));
}

const readSysctl = (path: string): string | null => {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
};

/** Kernel settings that decide whether unprivileged user namespaces may be created. */
export interface UsernsSysctl {
  /** kernel.unprivileged_userns_clone (Debian kernels): "0" disables. */
  clone: string | null;
  /** user.max_user_namespaces: "0" disables. */
  max: string | null;
  /** kernel.apparmor_restrict_unprivileged_userns (Ubuntu 23.10+): "1" restricts. */
  apparmor: string | null;
}

export function hostSysctl(): UsernsSysctl {
  return {
    clone: readSysctl("/proc/sys/kernel/unprivileged_userns_clone"),
    max: readSysctl("/proc/sys/user/max_user_namespaces"),
    apparmor: readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
  };
}

/** A sysctl set now and on every boot. */
const persist = (key: string, value: string) =>
  `echo '${key}=${value}' | sudo tee /etc/sysctl.d/60-planter-userns.conf && sudo sysctl -p /etc/sysctl.d/60-planter-userns.conf`;

/** sandbox.userns: from what the probe saw, else from the kernel settings. */
export function usernsResult(probed: string | null, s: UsernsSysctl): Result {
  if (probed === "enabled") return ok("enabled: bubblewrap created its namespaces");
  const restricted = probed === "restricted (AppArmor)" || (probed !== "disabled" && s.apparmor === "1");
  if (restricted) {
    return fail(
      "restricted: AppArmor forbids unprivileged user namespaces (Ubuntu 23.10+), so bubblewrap cannot start",
      "better: an AppArmor profile that allows bwrap (docs/sandbox.md); the sysctl below lifts the restriction for every program",
      persist("kernel.apparmor_restrict_unprivileged_userns", "0"),
    );
  }
  if (probed === "disabled" || s.clone === "0" || s.max === "0") {
    const [key, value] =
      s.clone === "0" ? ["kernel.unprivileged_userns_clone", "1"] : ["user.max_user_namespaces", "15000"];
    return fail(
      `disabled: the kernel refuses unprivileged user namespaces${s.clone === "0" ? " (kernel.unprivileged_userns_clone = 0)" : s.max === "0" ? " (user.max_user_namespaces = 0)" : ""}`,
      "bubblewrap needs them; enable them now and on every boot",
      persist(key, value),
    );
  }
  return ok(
    `allowed by the kernel settings (not probed: ${probed === "n/a" ? "bubblewrap is missing, see sandbox.backend" : "the probe could not tell"})`,
  );
}

const backend: Check<DoctorContext> = {
  id: "sandbox.backend",
  description: "a real sandboxed probe: sh writes its cell, and is denied $HOME and the host network",
  async run(ctx) {
    const [r, d] = await Promise.all([sandboxProbe(ctx), daemonProbe(ctx)]);
    const sb = d.ok ? d.ready?.sandbox : undefined;
    return backendResult(r, {
      mode: sb?.mode ?? (ctx.config.ok ? ctx.config.config.sandbox.mode : null),
      daemon: sb ? { ok: sb.ok, message: sb.message, hint: sb.hint } : null,
      planter: ctx.commands.planter,
      restart: ctx.commands.restart,
    });
  },
};

const containment: Check<DoctorContext> = {
  id: "sandbox.containment",
  description: "a sandboxed job is not root, cannot write /proc/sys, reach a host Unix socket or see the real home",
  async run(ctx) {
    if (ctx.platform !== "linux") return skip("probed on Linux only (Seatbelt: see plans/seatbelt-containment.md)");
    return containmentResult(await sandboxProbe(ctx), ctx.commands.planter);
  },
};

const userns: Check<DoctorContext> = {
  id: "sandbox.userns",
  description: "Linux: unprivileged user namespaces, which bubblewrap needs, are allowed",
  async run(ctx) {
    if (ctx.platform === "darwin") return skip("macOS: Seatbelt needs no user namespaces");
    if (ctx.platform !== "linux") return skip(`${ctx.platform} has no user namespaces planter uses`);
    const r = await sandboxProbe(ctx);
    return usernsResult(r.userns, hostSysctl());
  },
};

export const sandboxChecks = [backend, containment, userns];
