/** String schemas and issue summaries shared by the contract and the sandbox policy. */
import * as v from "valibot";

const noNul = (s: string) => !s.includes("\0");
/** A string without NUL bytes (they cannot cross into argv, env or paths). */
export const SafeString = v.pipe(v.string(), v.check(noNul, "NUL bytes are not allowed"));

/** Environment variable names accepted in env maps. */
export const EnvName = v.pipe(v.string(), v.regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an env name is [A-Za-z_][A-Za-z0-9_]*"));
export const EnvMap = v.pipe(
  v.custom<Record<string, string>>(
    (x) => typeof x === "object" && x !== null && !Array.isArray(x),
    "must be an object of NAME: value",
  ),
  v.record(EnvName, SafeString),
  v.check((m) => Object.keys(m).length <= 1024, "at most 1024 env entries"),
);

/** Summarise valibot issues the way people read them: `× message → at path`. */
export function summarizeIssues(issues: readonly v.BaseIssue<unknown>[]): string {
  return issues
    .slice(0, 3)
    .map((i) => {
      const path = v.getDotPath(i);
      return `× ${i.message}${path ? ` → at ${path}` : ""}`;
    })
    .join("; ");
}
