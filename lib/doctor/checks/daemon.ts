/** planterd over its API: daemon.reachable (`/v1/version`, `/v1/ready`), daemon.version-match. */
import { dirname, join } from "node:path";
import { Client } from "../../api/client.ts";
import { API_VERSION, type VersionInfo } from "../../api/contract.ts";
import { type ErrorBody, PlanterError } from "../../api/errors.ts";
import { shellLine } from "../../cli/output.ts";
import { type Check, fail, type Linked, ok, type Result, skip, warn } from "../check.ts";
import type { DoctorContext, Expected } from "../context.ts";
import { invokingUser } from "./socket.ts";

/** What `GET /v1/ready` answers (the parts doctor reads). */
export interface ReadyBody {
  ready: boolean;
  state: string;
  sandbox?: { mode: string; backend: string; ok: boolean; message: string | null; hint: string | null };
  /** The state dir's disk (present since planterd reports a full disk). */
  disk?: { path: string; message: string | null; hint: string | null; writes_waiting: number; ends_waiting: number };
  /** Present once planterd reports limit enforcement (#4). */
  limits?: { enforcement: string; cgroup_unavailable: string | null; interval_ms?: number };
}

/** The daemon as doctor found it: answering (with both bodies), or why not. */
export type DaemonProbe =
  | { ok: true; version: VersionInfo; readyStatus: number; ready: ReadyBody | null }
  | { ok: false; code: string; status?: number; error?: ErrorBody };

async function getJson(socket: string, path: string, signal: AbortSignal): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`http://planterd${path}`, { unix: socket, signal });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) };
  } catch {
    return { status: res.status, body: null };
  }
}

/**
 * The client's trust checks on the socket (lib/api/trust.ts): a probe that refuses it, or null.
 * Any other failure (nothing there, no answer in time) is left to the requests, which name it.
 */
async function untrusted(socket: string, ms: number): Promise<DaemonProbe | null> {
  let timer: Timer | undefined;
  try {
    await Promise.race([
      new Client(socket).verify(),
      new Promise((resolve) => {
        timer = setTimeout(resolve, ms);
      }),
    ]);
    return null;
  } catch (e) {
    if (!(e instanceof PlanterError) || e.code !== "E_UNTRUSTED_DAEMON") return null;
    return { ok: false, code: e.code, error: { code: e.code, message: e.message, hint: e.hint } as ErrorBody };
  } finally {
    clearTimeout(timer);
  }
}

/** Call `/v1/version` and `/v1/ready` once per doctor run. */
export function daemonProbe(ctx: DoctorContext & Linked): Promise<DaemonProbe> {
  return ctx.once("daemon", async (): Promise<DaemonProbe> => {
    const signal = AbortSignal.timeout(ctx.timeoutMs);
    // The client's own checks first: doctor asks nothing of a socket another user controls.
    const refused = await untrusted(ctx.paths.socketPath, ctx.timeoutMs);
    if (refused) return refused;
    try {
      const [v, r] = await Promise.all([
        getJson(ctx.paths.socketPath, "/v1/version", signal),
        getJson(ctx.paths.socketPath, "/v1/ready", signal),
      ]);
      const error = (v.body as { error?: ErrorBody } | null)?.error;
      if (v.status !== 200) return { ok: false, code: error?.code ?? `HTTP ${v.status}`, status: v.status, error };
      return { ok: true, version: v.body as VersionInfo, readyStatus: r.status, ready: r.body as ReadyBody | null };
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const code = err.name === "TimeoutError" || err.name === "AbortError" ? "TIMEOUT" : (err.code ?? err.message);
      return { ok: false, code };
    }
  });
}

/** daemon.reachable from the probe. */
export function reachableResult(ctx: DoctorContext, p: DaemonProbe): Result {
  return p.ok ? answeredResult(ctx, p) : unansweredResult(ctx, p);
}

/** daemon.reachable for a planterd that answered: ready, or why not. */
function answeredResult(ctx: DoctorContext, p: Extract<DaemonProbe, { ok: true }>): Result {
  const socket = ctx.paths.socketPath;
  if (p.ready?.state === "disk_full" && p.ready.disk) {
    const d = p.ready.disk;
    const waiting = d.writes_waiting
      ? ` (${d.writes_waiting} state writes waiting, ${d.ends_waiting} of them job ends)`
      : "";
    return fail(
      `planterd ${p.version.version} answers on ${socket} but is not ready: ${d.message ?? "the state disk is full"}${waiting}`,
      d.hint ?? "free space on the state dir's disk",
      `du -sh ${shellLine([join(ctx.paths.stateDir, "jobs")])}/* 2>/dev/null | sort -h | tail -20`,
    );
  }
  if (p.readyStatus !== 200 || !p.ready?.ready) {
    return fail(
      `planterd ${p.version.version} answers on ${socket} but is not ready (state: ${p.ready?.state ?? "unknown"})`,
      "its state database cannot be used; see state.integrity, and planterd's log",
      ctx.commands.restart,
    );
  }
  const sb = p.ready.sandbox;
  const sandbox = sb ? ` · sandbox ${sb.mode} (${sb.backend}${sb.ok ? "" : ", unavailable"})` : "";
  return ok(`planterd ${p.version.version} answers on ${socket}: ready${sandbox}`);
}

/** daemon.reachable for a planterd that did not answer (or was not asked): why, and the fix. */
function unansweredResult(ctx: DoctorContext, p: Extract<DaemonProbe, { ok: false }>): Result {
  const socket = ctx.paths.socketPath;
  const start = ctx.commands.start;
  const usermod = `sudo usermod -aG planter ${invokingUser(ctx)}`;
  switch (p.code) {
    case "ENOENT":
      return fail(
        `cannot reach planterd: no socket at ${socket}`,
        "planterd is not running (see socket.present)",
        start,
      );
    case "ECONNREFUSED":
      return fail(
        `cannot reach planterd: nothing listens on ${socket}`,
        "planterd stopped or crashed and left its socket behind; starting it replaces the stale socket",
        start,
      );
    case "EACCES":
      return fail(
        `cannot reach planterd: permission denied opening ${socket}`,
        "in system mode only root and group planter may open the socket; log in again after being added",
        usermod,
      );
    case "E_UNTRUSTED_DAEMON":
      return fail(
        `not asking planterd: ${p.error?.message ?? "the socket is not trusted"}`,
        p.error?.hint ?? "whoever owns the socket would see what planter sends",
        `ls -ln ${shellLine([socket])} ${shellLine([dirname(socket)])}`,
      );
    case "TIMEOUT":
      return fail(
        `planterd did not answer on ${socket} within ${ctx.timeoutMs / 1000} s`,
        "it is hung or overloaded; restart it (jobs keep running across a restart)",
        ctx.commands.restart,
      );
    case "E_UNAUTHORIZED_PEER":
      return fail(
        `planterd refuses this user: ${p.error?.message ?? "unauthorized"}`,
        p.error?.hint ?? "ask an admin to allow you",
        ctx.paths.mode === "system" ? usermod : `\${EDITOR:-vi} ${ctx.paths.configPath}  # [authz] allowed_uids`,
      );
    default:
      return fail(
        `cannot reach planterd at ${socket}: ${p.error?.message ?? p.code}`,
        p.error?.hint ?? "something else answers on the socket, or planterd is broken; restart it",
        ctx.commands.restart,
      );
  }
}

const sameCommit = (a: string, b: string) => a === b || a === "unknown" || b === "unknown";

/** daemon.version-match: the daemon's API, version and commit against this binary's. */
export function versionResult(
  daemon: Pick<VersionInfo, "version" | "commit" | "api">,
  expected: Expected,
  restart: string,
): Result {
  const theirs = `${daemon.version} (${daemon.commit ?? "unknown"})`;
  const ours = `${expected.version} (${expected.commit})`;
  if (daemon.api !== API_VERSION) {
    return fail(
      `planterd speaks API v${daemon.api}, this planter v${API_VERSION} (planterd ${theirs}, this binary ${ours})`,
      "clients and daemon cannot understand each other; restart planterd so that it runs this version",
      restart,
    );
  }
  if (daemon.version !== expected.version || !sameCommit(daemon.commit ?? "unknown", expected.commit)) {
    return warn(
      `planterd runs ${theirs}, this binary is ${ours}`,
      "planterd was not restarted after an upgrade (or another planter started it); restart it to run this version",
      restart,
    );
  }
  return ok(`planterd runs ${theirs}, the same as this binary`);
}

const reachable: Check<DoctorContext> = {
  id: "daemon.reachable",
  description: "planterd answers GET /v1/version and /v1/ready on the socket, and is ready",
  async run(ctx) {
    return reachableResult(ctx, await daemonProbe(ctx));
  },
};

const versionMatch: Check<DoctorContext> = {
  id: "daemon.version-match",
  description: "planterd runs the same version and commit as this binary",
  async run(ctx) {
    const r = await ctx.result("daemon.reachable");
    const p = await daemonProbe(ctx);
    if (r.status === "fail" || !p.ok) return skip("planterd is not reachable (see daemon.reachable)");
    return versionResult(p.version, ctx.expected, ctx.commands.restart);
  },
};

export const daemonChecks = [reachable, versionMatch];
