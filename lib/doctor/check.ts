/**
 * doctor's checks: the result type, and the runner that runs checks concurrently, each with a
 * timeout, letting one check await another's result (daemon.version-match waits for
 * daemon.reachable) without reporting checks that were not asked for.
 */
import { PlanterError } from "../api/errors.ts";

export const STATUSES = ["ok", "warn", "fail", "skip"] as const;
/** ok; warn (works, but look); fail (broken); skip (does not apply here, or a check it needs failed). */
export type Status = (typeof STATUSES)[number];

/** What a check found. Anything not ok carries a hint (why, what to do) and a copy-paste fix. */
export interface Result {
  status: Status;
  message: string;
  hint?: string;
  fix?: string;
}

/** One reported check, as `--json` prints it. */
export interface Outcome {
  id: string;
  status: Status;
  message: string;
  hint: string | null;
  fix: string | null;
}

/** A check: a stable id, one line saying what it checks, and the probe. */
export interface Check<C = unknown> {
  id: string;
  description: string;
  run(ctx: C & Linked): Promise<Result>;
}

/** What the runner adds to a check's context. */
export interface Linked {
  /** Another check's result (run on demand, once, even when it is not reported). */
  result(id: string): Promise<Result>;
  /** A probe shared by several checks, computed once per run. */
  once<T>(key: string, probe: () => Promise<T>): Promise<T>;
}

export const ok = (message: string): Result => ({ status: "ok", message });
export const skip = (message: string, hint?: string): Result => ({
  status: "skip",
  message,
  ...(hint ? { hint } : {}),
});
export const warn = (message: string, hint: string, fix: string): Result => ({ status: "warn", message, hint, fix });
export const fail = (message: string, hint: string, fix: string): Result => ({ status: "fail", message, hint, fix });

/** The report of one run. */
export interface Report {
  /** No check failed (warnings allowed) and doctor itself did not break. */
  ok: boolean;
  checks: Outcome[];
  /** A check threw: a bug in doctor, not a finding about the host (exit 2). */
  broken: boolean;
  /** What the broken checks threw, for --verbose. */
  errors: { id: string; error: unknown }[];
  elapsedMs: number;
}

/**
 * The checks `wanted` names: ids, or areas (`socket` → every `socket.*`), in the checks' order.
 * Nothing wanted means every check. An unknown name is a usage error.
 */
export function selectChecks<C>(all: Check<C>[], wanted: string[]): Check<C>[] {
  if (!wanted.length) return all;
  const picked = new Set<string>();
  for (const w of wanted) {
    const hits = all.filter((c) => c.id === w || c.id.startsWith(`${w}.`));
    if (!hits.length) {
      throw new PlanterError("E_USAGE", `unknown check ${JSON.stringify(w)}`, {
        hint: "`doctor --list-checks` lists the check ids",
      });
    }
    for (const h of hits) picked.add(h.id);
  }
  return all.filter((c) => picked.has(c.id));
}

const seconds = (ms: number) => (ms < 1000 ? `${ms} ms` : `${Number((ms / 1000).toFixed(1))} s`);

/**
 * Run `selected` concurrently against `ctx`. Each check gets `timeoutMs` (then it fails with
 * "timed out"); a check that throws is reported as failed and marks the report broken.
 */
export async function runChecks<C extends object>(
  all: Check<C>[],
  selected: Check<C>[],
  ctx: C,
  opts: { timeoutMs: number; now?: () => number /** How fixes name doctor (default "doctor"). */; command?: string },
): Promise<Report> {
  const now = opts.now ?? (() => performance.now());
  const doctor = opts.command ?? "doctor";
  const start = now();
  const byId = new Map(all.map((c) => [c.id, c]));
  const running = new Map<string, Promise<Result & { error?: unknown }>>();
  const probes = new Map<string, Promise<unknown>>();
  const timers: ReturnType<typeof setTimeout>[] = [];
  const linked: C & Linked = Object.assign(Object.create(ctx), {
    result: (id: string) => start1(id),
    once: <T>(key: string, probe: () => Promise<T>): Promise<T> => {
      let p = probes.get(key) as Promise<T> | undefined;
      if (!p) {
        p = probe();
        probes.set(key, p);
      }
      return p;
    },
  });
  function start1(id: string): Promise<Result & { error?: unknown }> {
    const known = running.get(id);
    if (known) return known;
    const check = byId.get(id);
    if (!check) throw new Error(`doctor: no check ${id}`);
    const timedOut = new Promise<Result>((resolve) => {
      timers.push(
        setTimeout(
          () =>
            resolve(
              fail(
                `timed out after ${seconds(opts.timeoutMs)}`,
                "the probe hung: what it talks to (planterd, the sandbox, the database, systemd) is stuck or slow",
                `${doctor} ${id} --timeout 30s`,
              ),
            ),
          opts.timeoutMs,
        ),
      );
    });
    const p = Promise.race([
      Promise.resolve()
        .then(() => check.run(linked))
        .catch((e: unknown): Result & { error: unknown } => ({
          ...fail(
            `doctor broke running this check: ${(e as Error)?.message ?? String(e)}`,
            "this is a bug in doctor, not a finding about the host; please report it with the stack",
            `${doctor} ${id} --verbose`,
          ),
          error: e ?? "error",
        })),
      timedOut,
    ]);
    running.set(id, p);
    return p;
  }
  try {
    const results = await Promise.all(selected.map((c) => start1(c.id)));
    const checks = selected.map((c, i): Outcome => {
      const r = results[i] as Result;
      return { id: c.id, status: r.status, message: r.message, hint: r.hint ?? null, fix: r.fix ?? null };
    });
    const errors = selected.flatMap((c, i) => {
      const e = results[i]?.error;
      return e === undefined ? [] : [{ id: c.id, error: e }];
    });
    const broken = errors.length > 0;
    return {
      ok: !broken && checks.every((c) => c.status !== "fail"),
      checks,
      broken,
      errors,
      elapsedMs: now() - start,
    };
  } finally {
    for (const t of timers) clearTimeout(t);
  }
}

/** Exit code of a report: 0 no failure (warnings allowed), 1 a failure, 2 doctor broke. */
export const exitCode = (r: Pick<Report, "ok" | "broken">): number => (r.broken ? 2 : r.ok ? 0 : 1);
