/** Argument fragments shared by commands, and parsing of repeated and K=V options. */
import type { ArgDef } from "citty";
import type { Client } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import { type TargetArgs, targetClient } from "./target.ts";

export { clientArgs, socketArg, targetArg } from "./client-config.ts";

/** --json, on every read command. */
export const jsonArg = {
  json: { type: "boolean", description: "print JSON for scripts instead of text for people" },
} as const satisfies Record<string, ArgDef>;

/** --raw, on the commands that write a job's output (`run`, `logs`). */
export const rawArg = {
  raw: {
    type: "boolean",
    description: "write the job's bytes unfiltered, terminal control sequences included",
  },
} as const satisfies Record<string, ArgDef>;

/** A client for the command's target: --socket, else --target / PLANTER_TARGET / config (see target.ts). */
export function client(args: TargetArgs): Client {
  return targetClient(args);
}

/** Usage error (exit 2). */
export const usage = (message: string, hint?: string) => new PlanterError("E_USAGE", message, { hint });

/** Every value of a repeatable option (`--env A=1 --env B=2`, `-e A=1`, `--env=A=1`) before `--`. */
export function repeated(rawArgs: string[], long: string, short?: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i] as string;
    if (a === "--") break;
    if (a === `--${long}` || (short && a === `-${short}`)) {
      const v = rawArgs[i + 1];
      if (v === undefined) throw usage(`--${long} needs a value`);
      out.push(v);
      i++;
    } else if (a.startsWith(`--${long}=`)) out.push(a.slice(long.length + 3));
  }
  return out;
}

/** Parse K=V pairs into a map; a bad pair is a usage error. */
export function envPairs(pairs: string[]): Record<string, string> | undefined {
  if (!pairs.length) return undefined;
  const env: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf("=");
    if (eq <= 0) throw usage(`--env takes NAME=VALUE, not ${JSON.stringify(p)}`);
    env[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return env;
}

/** Tokens after the first `--`. */
export function afterDashes(rawArgs: string[]): string[] | null {
  const i = rawArgs.indexOf("--");
  return i < 0 ? null : rawArgs.slice(i + 1);
}

/** A duration such as 500ms, 30s, 5m, 1h (bare numbers are milliseconds). */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw usage(`${what} must be a duration like 500ms, 30s, 5m or 1h, not ${JSON.stringify(text)}`);
  const n = Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "ms"] as number);
  return Math.round(n);
}

/** A non-negative integer option. */
export function parseCount(text: string, what: string): number {
  if (!/^\d{1,15}$/.test(text)) throw usage(`${what} must be a non-negative integer, not ${JSON.stringify(text)}`);
  return Number(text);
}
