import * as v from "valibot";
/** Legacy cell ids: `cell-<n>`. */
export const LEGACY_CELL_ID = /^cell-\d{1,18}$/;
/** Legacy job ids: `job-<n>`, kept on import; planter's own start with `j-`, so they never collide. */
export const LEGACY_JOB_ID = /^job-\d{1,18}$/;

/** True for a job imported from the prototype (its id kept): such a job has no exit-status recorder. */
export const isLegacyJobId = (id: string) => LEGACY_JOB_ID.test(id);

const Millis = v.pipe(v.number(), v.integer(), v.minValue(0));
const Text = v.pipe(
  v.string(),
  v.check((s) => !s.includes("\0"), "NUL bytes are not allowed"),
);
const StringMap = v.record(Text, Text);

/** `cells/<cell-id>/cell.json` */
export const LegacyCellFile = v.object({
  id: v.pipe(v.string(), v.regex(LEGACY_CELL_ID, "a legacy cell id is cell-<n>")),
  spec: v.object({ name: Text, env: v.optional(v.nullable(StringMap)) }),
  created_at_ms: Millis,
  dir: v.pipe(
    Text,
    v.check((p) => p.startsWith("/"), "must be an absolute path"),
  ),
});
export type LegacyCellFile = v.InferOutput<typeof LegacyCellFile>;

/** `jobs/<job-id>.json` */
export const LegacyJobFile = v.object({
  id: v.pipe(v.string(), v.regex(LEGACY_JOB_ID, "a legacy job id is job-<n>")),
  cell_id: v.pipe(v.string(), v.regex(LEGACY_CELL_ID, "a legacy cell id is cell-<n>")),
  command: v.object({
    argv: v.pipe(v.array(Text), v.minLength(1, "argv needs a program")),
    cwd: Text,
    env: v.optional(v.nullable(StringMap)),
    limits: v.optional(v.nullable(v.record(v.string(), v.unknown()))),
  }),
  stdout_path: v.optional(v.nullable(Text)),
  stderr_path: v.optional(v.nullable(Text)),
  started_at_ms: Millis,
  finished_at_ms: v.optional(v.nullable(Millis)),
  pid: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1)))),
  status: v.variant("type", [
    v.object({ type: v.literal("running") }),
    v.object({ type: v.literal("exited"), code: v.optional(v.nullable(v.pipe(v.number(), v.integer()))) }),
  ]),
  termination_reason: v.optional(v.nullable(v.string())),
});
export type LegacyJobFile = v.InferOutput<typeof LegacyJobFile>;

/** A legacy file that could not be read: its path and what is wrong, for people. */
export interface Malformed {
  path: string;
  message: string;
}

/** What the legacy tree holds: valid cells and jobs (ordered by number), and every malformed file. */
export interface LegacyTree {
  root: string;
  cells: { path: string; cell: LegacyCellFile }[];
  jobs: { path: string; job: LegacyJobFile }[];
  malformed: Malformed[];
}
