/**
 * Target health as a client sees it, reported to the local planterd (lib/targets/health.ts;
 * plans/design.md "Targets"). The commands that reach several targets — `--all`/`--targets` reads,
 * `events -f` over targets, `target check`, `doctor` — each turn what they saw into an observation
 * per target; an observation that differs from the last one this user's clients reported (kept in
 * `health.json` of the user's 0700 target directory) is sent to the local planterd, which records
 * a change as a `target.health` event. So a command that sees nothing new sends nothing, and a
 * report that fails (no local planterd, a budget spent) is tried again by the next command. The
 * local target itself is not reported: its health is that planterd's own.
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import type { Client } from "../api/client.ts";
import type { PlanterError } from "../api/errors.ts";
import { ROUTES } from "../api/routes.ts";
import type { TargetResult } from "../targets/fanout.ts";
import { HEALTHS, type Health } from "../targets/health.ts";
import { clientOf, registered, sshDir } from "./target.ts";

type Env = Record<string, string | undefined>;

/** What one command saw of one target. */
export interface Observation {
  target: string;
  health: Health;
  /**
   * Whether the command saw every way to the target: false for one request to an https target of
   * several endpoints (the endpoints it did not try may still fail), whose ok does not end a
   * degraded (only `target check`, which tries each, or a failure does).
   */
  complete: boolean;
  error?: { code: string; message: string };
  endpoint?: string;
}

/** Errors that say the target did not answer (anything else: it answered, with an error). */
const UNREACHED = new Set(["E_DAEMON_UNREACHABLE", "E_UNAVAILABLE", "E_UNTRUSTED_DAEMON"]);
/** Errors of this side (a bad name, a file that cannot be read): no observation of the target. */
const OURS = new Set(["E_USAGE", "E_CONFIG", "E_STATE"]);

const errorOf = (e: PlanterError) => ({ code: e.code, message: e.message.slice(0, 1024) });

/** The target's URLs when it has one way there (its endpoint in an observation), and whether it has several. */
function waysOf(target: string, env: Env): { single: string | undefined; several: boolean } {
  const urls = registered(target, env)?.urls ?? [];
  return { single: urls.length === 1 ? urls[0] : undefined, several: urls.length > 1 };
}

/**
 * What a fan-out's result says of its target: down when it did not answer, degraded when it
 * answered after a failure (`client.trouble()`), else ok. Null for local and for errors of this
 * side (the target was never asked).
 */
export function observe(
  r: TargetResult<unknown>,
  client: Client | undefined,
  env: Env = process.env,
): Observation | null {
  if (r.target === "local") return null;
  const ways = waysOf(r.target, env);
  const complete = !ways.several;
  if (!r.ok) {
    if (OURS.has(r.error.code)) return null;
    const down = UNREACHED.has(r.error.code);
    return {
      target: r.target,
      health: down ? "down" : "degraded",
      complete,
      error: errorOf(r.error),
      ...(ways.single ? { endpoint: ways.single } : {}),
    };
  }
  const t = client?.trouble() ?? null;
  if (!t) return { target: r.target, health: "ok", complete };
  const endpoint = t.endpoint ?? ways.single;
  return {
    target: r.target,
    health: "degraded",
    complete,
    error: { code: "E_UNAVAILABLE", message: t.error.slice(0, 1024) },
    ...(endpoint ? { endpoint } : {}),
  };
}

const Cache = v.record(v.string(), v.picklist(HEALTHS));

/** The last health this user's clients reported of each target (`health.json`; missing: ok). */
function readCache(path: string): Record<string, Health> {
  try {
    const r = v.safeParse(Cache, JSON.parse(readFileSync(path, "utf8")));
    return r.success ? r.output : {};
  } catch {
    return {};
  }
}

/** How long reporting may take at most (the command's own answer is already out). */
const REPORT_MS = 1500;

/**
 * Send the observations that change what was last reported to the local planterd (in parallel,
 * within REPORT_MS), and remember those it took. Never fails: health is a record, not the command.
 */
export async function reportHealth(observations: (Observation | null)[], env: Env = process.env): Promise<void> {
  const dir = sshDir(env);
  const path = join(dir, "health.json");
  const cache = readCache(path);
  const changed = observations.filter(
    (o): o is Observation =>
      o !== null &&
      o.target !== "local" &&
      (cache[o.target] ?? "ok") !== o.health &&
      // One request's ok does not end a degraded of a target with several endpoints.
      !(o.health === "ok" && !o.complete && cache[o.target] === "degraded"),
  );
  if (!changed.length) return;
  let local: Client;
  try {
    local = clientOf("local", env);
  } catch {
    return;
  }
  const signal = AbortSignal.timeout(REPORT_MS);
  const taken = await Promise.all(
    changed.map((o) =>
      local
        .call(
          ROUTES.reportTargetHealth,
          {
            body: {
              target: o.target,
              health: o.health,
              ...(o.error ? { error: o.error } : {}),
              ...(o.endpoint ? { endpoint: o.endpoint } : {}),
            },
          },
          signal,
        )
        .then(
          () => o,
          () => null,
        ),
    ),
  );
  let dirty = false;
  for (const o of taken)
    if (o) {
      cache[o.target] = o.health;
      dirty = true;
    }
  if (!dirty) return;
  try {
    const { privateDir } = await import("../targets/dir.ts");
    privateDir(dir);
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(cache), { mode: 0o600 });
    renameSync(tmp, path);
  } catch {
    // Without the file the next command reports again; planterd records no change twice.
  }
}
