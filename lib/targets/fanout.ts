/**
 * Several targets at once (`--targets a,b`, `--all-targets`, `target check`, `doctor`): each
 * target's call runs in parallel under its own deadline, and the answer is partial rather than
 * failed when some targets fail — each failure kept with its target and error. Exit code 5
 * (EXIT.partial) says "some targets answered, some did not".
 */
import type { Client } from "../api/client.ts";
import { EXIT, PlanterError } from "../api/errors.ts";

/** One target's answer or failure. */
export type TargetResult<T> =
  | { target: string; ok: true; value: T; ms: number }
  | { target: string; ok: false; error: PlanterError; ms: number };

/** How long one target may take in a fan-out (PLANTER_TARGET_TIMEOUT_MS, default 10 s). */
export function targetTimeoutMs(env: Record<string, string | undefined> = process.env): number {
  const n = Number(env.PLANTER_TARGET_TIMEOUT_MS);
  return Number.isInteger(n) && n > 0 ? n : 10_000;
}

/**
 * `fn` for every target, in parallel; a target whose client cannot be made, whose call fails or
 * that passes `timeoutMs` gives its error (the call's signal is aborted then). Results in the
 * order of `targets`.
 */
export async function fanOut<T>(
  targets: readonly string[],
  clientFor: (name: string) => Client,
  fn: (client: Client, name: string, signal: AbortSignal) => Promise<T>,
  timeoutMs: number,
): Promise<TargetResult<T>[]> {
  return Promise.all(
    targets.map(async (name): Promise<TargetResult<T>> => {
      const t0 = performance.now();
      const stop = new AbortController();
      let timer: Timer | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          stop.abort();
          reject(
            new PlanterError("E_UNAVAILABLE", `target ${name} did not answer within ${timeoutMs} ms`, {
              hint: `planter target check ${name} says more`,
            }),
          );
        }, timeoutMs);
      });
      try {
        const value = await Promise.race([(async () => fn(clientFor(name), name, stop.signal))(), late]);
        return { target: name, ok: true, value, ms: performance.now() - t0 };
      } catch (e) {
        const error =
          e instanceof PlanterError
            ? e
            : new PlanterError("E_INTERNAL", `target ${name}: ${(e as Error)?.message ?? String(e)}`);
        return { target: name, ok: false, error, ms: performance.now() - t0 };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
}

/** The exit code of a fan-out: 0 when every target answered, 5 when some did, the first failure's when none did. */
export function fanOutExit(results: readonly TargetResult<unknown>[]): number {
  const failed = results.filter((r) => !r.ok);
  if (!failed.length) return 0;
  if (failed.length < results.length) return EXIT.partial;
  return (failed[0] as { error: PlanterError }).error.exitCode;
}

/** A failed target as `--json` shows it. */
export function failureJson(r: Extract<TargetResult<unknown>, { ok: false }>) {
  return { target: r.target, error: r.error.toBody() };
}
