/**
 * Import of the first prototype's JSON state (`~/.planter/state`): `cells/<cell-id>/cell.json`,
 * `jobs/<job-id>.json`, `logs/<job-id>.stdout.log` / `.stderr.log`. One way (the legacy tree is
 * only read), idempotent (every imported item is recorded in `legacy_imports`), one transaction
 * per item with its log files copied before the row is committed. plans/design.md "migrate (#6)".
 */

export * from "./legacy/apply.ts";
export * from "./legacy/liveness.ts";
export * from "./legacy/map.ts";
export * from "./legacy/plan.ts";
export * from "./legacy/read.ts";
export * from "./legacy/schema.ts";
