/** Run doctor: build the context from the host (tests override parts), select the checks, run them. */
import { type Report, runChecks, selectChecks } from "./check.ts";
import { CHECKS } from "./checks/index.ts";
import { type ContextOptions, createContext, type DoctorContext } from "./context.ts";

export { CHECKS };

/** Run the checks `ids` names (ids or areas; none: all) and return the report and the context used. */
export async function runDoctor(
  ids: string[] = [],
  opts: ContextOptions = {},
): Promise<Report & { ctx: DoctorContext }> {
  const selected = selectChecks(CHECKS, ids);
  const ctx = createContext(opts);
  const report = await runChecks(CHECKS, selected, ctx, {
    timeoutMs: ctx.timeoutMs,
    command: `${ctx.commands.planter} doctor`,
  });
  return { ...report, ctx };
}
