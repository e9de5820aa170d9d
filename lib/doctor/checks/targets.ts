/** targets.reachable: every registered target (`planter target add`) answers, as `planter target check` sees it. */
import type { Check } from "../check.ts";
import { fail, ok, skip, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";

export const targetsReachable: Check<DoctorContext> = {
  id: "targets.reachable",
  description: "every registered target answers (ok, degraded or down, as planter target check says)",
  async run(ctx) {
    const { readClientConfig } = await import("../../targets/registry.ts");
    const { resolvePaths } = await import("../../paths.ts");
    const path = resolvePaths(ctx.env).configPath;
    let names: string[];
    try {
      names = Object.keys(readClientConfig(path).targets).sort();
    } catch (e) {
      return fail(`cannot read the targets in ${path}: ${(e as Error).message}`, `fix ${path}`, `$EDITOR ${path}`);
    }
    if (!names.length) return skip("no targets are registered (planter target add NAME URL)");
    const { checkTargets } = await import("../../cli/lifecycle/target.ts");
    // Within the runner's 3 s a check has (doctor --timeout gives more): each target gets 2 s at most.
    const { targetTimeoutMs } = await import("../../targets/fanout.ts");
    const checks = await checkTargets(names, Math.min(2000, targetTimeoutMs()));
    const line = checks.map((c) => `${c.target} ${c.health}`).join(", ");
    const down = checks.filter((c) => c.health === "down");
    const degraded = checks.filter((c) => c.health === "degraded");
    const why = [...down, ...degraded].map((c) => `${c.target}: ${c.problems.join("; ")}`).join("; ");
    if (down.length)
      return fail(`targets: ${line}`, why, `planter target check ${(down[0] as { target: string }).target}`);
    if (degraded.length)
      return warn(`targets: ${line}`, why, `planter target check ${(degraded[0] as { target: string }).target}`);
    return ok(`targets: ${line}`);
  },
};
