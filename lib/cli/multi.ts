/**
 * Commands over several targets at once (`planter --all CMD`, `--targets a,b`, `--all-targets`):
 * `job ls`, `agents ls` and `events`. Every row carries its target; a target that fails or passes its deadline gives a
 * partial answer — its error on stderr (in `--json`, under `errors`) and exit code 5.
 */
import type { Client } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import { resolvePaths } from "../paths.ts";
import { failureJson, fanOut, fanOutExit, type TargetResult, targetTimeoutMs } from "../targets/fanout.ts";
import { readClientConfig } from "../targets/registry.ts";
import { printable as p, write } from "./output.ts";
import { clientOf, type TargetArgs } from "./target.ts";

/** The options of a command that reads several targets. */
export interface MultiArgs extends TargetArgs {
  targets?: string;
  "all-targets"?: boolean;
}

/** Every target `--all-targets` means: local and the registered ones, by name (lima only when named). */
export function allTargets(env: Record<string, string | undefined> = process.env): string[] {
  return ["local", ...Object.keys(readClientConfig(resolvePaths(env).configPath).targets).sort()];
}

/**
 * The targets a command was asked to read, or null for one target as usual. Names are checked
 * (an unknown one is a usage error); `--target` and `--socket` do not go with them.
 */
export function targetsOf(args: MultiArgs, env: Record<string, string | undefined> = process.env): string[] | null {
  if (args["all-targets"] && args.targets !== undefined)
    throw new PlanterError("E_USAGE", "--all (--all-targets) and --targets both name the targets to read", {
      hint: "give one: --all for local and every registered target, --targets a,b for some",
    });
  const list = args["all-targets"] ? "all" : args.targets;
  if (list === undefined) return null;
  if (args.target || args.socket)
    throw new PlanterError(
      "E_USAGE",
      "--all, --targets and --all-targets read several targets: --target and --socket name one",
      {
        hint: "give one or the other",
      },
    );
  const names = list.split(",").map((n) => n.trim());
  const known = allTargets(env);
  const out: string[] = [];
  for (const n of names) {
    if (n === "all") out.push(...known);
    else if (n === "lima" || known.includes(n)) out.push(n);
    else
      throw new PlanterError("E_USAGE", `--targets: there is no target ${JSON.stringify(n)}`, {
        hint: `targets: ${[...known, "lima"].join(", ")} (planter target ls)`,
      });
  }
  return [...new Set(out)];
}

/**
 * `fn` on every target under the fan-out deadline; what it saw of each target's health is then
 * reported to the local planterd when it changed (lib/cli/health.ts: nothing is sent otherwise).
 */
export async function eachTarget<T>(
  targets: string[],
  fn: (client: Client, name: string, signal: AbortSignal) => Promise<T>,
): Promise<TargetResult<T>[]> {
  const clients = new Map<string, Client>();
  const made = (n: string) => {
    const c = clientOf(n);
    clients.set(n, c);
    return c;
  };
  // Loaded while the targets answer, not after.
  const health = import("./health.ts");
  const results = await fanOut(targets, made, fn, targetTimeoutMs());
  const { observe, reportHealth } = await health;
  await reportHealth(results.map((r) => observe(r, clients.get(r.target))));
  return results;
}

/** Say each failed target on stderr (message and hint); the fan-out's exit code. */
export function reportFailures(results: TargetResult<unknown>[]): number {
  for (const r of results)
    if (!r.ok) {
      write(2, `planter: target ${p(r.target)}: ${p(r.error.message)}\n`);
      if (r.error.hint) write(2, `hint: ${p(r.error.hint)}\n`);
    }
  return fanOutExit(results);
}

/** The `errors` of a `--json` answer over several targets. */
export function errorsJson(results: TargetResult<unknown>[]) {
  return results.filter((r): r is Extract<typeof r, { ok: false }> => !r.ok).map(failureJson);
}
