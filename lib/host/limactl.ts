/**
 * limactl: the one wrapper through which planter calls it, and `limactl list --json` read through a
 * valibot schema. Apart from lima.ts (templates, provisioning) so that a client command that needs
 * the VM's mounts (`--target lima`) loads this and lima-paths.ts only, never the installer.
 */
import { join } from "node:path";
import * as v from "valibot";
import { PlanterError } from "../api/errors.ts";
import { summarizeIssues } from "../api/strings.ts";
import { exec, type Run } from "./exec.ts";
import type { LimaMount } from "./lima-paths.ts";

const DEFAULT_TIMEOUT_MS = 60_000;

/**
 * The one place planter calls `limactl` (PATH lookup, so tests put the fake first). Never throws
 * for a non-zero exit; a call past `timeoutMs` is killed and answers code 124.
 */
export function limactlWithin(timeoutMs: number, ...args: string[]): Promise<Run> {
  return exec("limactl", args, { timeoutMs, nothrow: true });
}

/** `limactl` with the default time limit (60 s). */
export function limactl(...args: string[]): Promise<Run> {
  return limactlWithin(DEFAULT_TIMEOUT_MS, ...args);
}

const LimaMountEntry = v.object({
  location: v.optional(v.string()),
  mountPoint: v.optional(v.nullable(v.string())),
  writable: v.optional(v.nullable(v.boolean())),
});

/** One instance as `limactl list --json` reports it: the fields planter reads are checked, the others kept as they are. */
export const LimaInstance = v.looseObject({
  name: v.string(),
  /** Running, Stopped, Broken… */
  status: v.string(),
  /** x86_64, aarch64… */
  arch: v.string(),
  /** The instance's directory (its lima.yaml, its sockets). */
  dir: v.string(),
  /** The instance's effective configuration (Lima fills in defaults); planter reads its mounts. */
  config: v.optional(v.nullable(v.looseObject({ mounts: v.optional(v.nullable(v.array(LimaMountEntry))) }))),
});
export type LimaInstance = v.InferOutput<typeof LimaInstance>;

/**
 * Parse `limactl list --json` (one JSON object per line). Throws E_UNAVAILABLE naming the line and
 * the field when limactl printed something else (another Lima version, a wrapper's noise).
 */
export function parseList(stdout: string): LimaInstance[] {
  const lines = stdout.split("\n").filter((l) => l.trim());
  return lines.map((line, i) => {
    const bad = (why: string) =>
      new PlanterError("E_UNAVAILABLE", `limactl list --json, line ${i + 1}: ${why}`, {
        hint: "check `limactl list --json` (planter reads name, status, arch, dir and config.mounts of each line)",
      });
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (e) {
      throw bad(`not JSON (${(e as Error).message})`);
    }
    const r = v.safeParse(LimaInstance, raw);
    if (!r.success) throw bad(summarizeIssues(r.issues));
    return r.output;
  });
}

/** An instance's mounts as `limactl list --json` reports them (`~` expanded, mountPoint defaulting to the location, as Lima does). */
export function instanceMounts(inst: LimaInstance, home: string): LimaMount[] {
  const out: LimaMount[] = [];
  for (const m of inst.config?.mounts ?? []) {
    if (!m.location) continue;
    const location =
      m.location === "~" ? home : m.location.startsWith("~/") ? join(home, m.location.slice(2)) : m.location;
    out.push({ location, mountPoint: m.mountPoint || location, writable: m.writable === true });
  }
  return out;
}
