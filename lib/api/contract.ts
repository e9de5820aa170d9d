/**
 * The API contract: request bodies, query parameters and response shapes shared by
 * planterd and its clients. Every boundary is validated here with valibot.
 */
import * as v from "valibot";
import { AGENT_KINDS } from "../agents/model.ts";
import { type EffectivePolicy, Network, Policy } from "../sandbox/policy.ts";
import { EnvMap, SafeString, summarizeIssues } from "./strings.ts";

export { EnvMap, EnvName, SafeString, summarizeIssues } from "./strings.ts";

import { badRequest } from "./errors.ts";

/** API version served under /v1. */
export const API_VERSION = 1;

/** Cell names: lowercase, digits, `.`, `_`, `-`; 1-63 chars; never `.` or `..`. */
export const CELL_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const CellName = v.pipe(
  v.string(),
  v.regex(CELL_NAME_RE, "a cell name is 1-63 characters of a-z 0-9 . _ - starting with a letter or digit"),
);

/** Longest timeout a job may have: 30 days. */
export const MAX_DURATION_MS = 30 * 24 * 3600 * 1000;
/** Largest process limit: the kernel's own pid_max ceiling. */
export const MAX_PIDS = 4_194_304;
/** Largest byte limit a job may have: 1 PiB. */
export const MAX_BYTES = 2 ** 50;
const positiveInt = (max: number, what: string) =>
  v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(max, `${what} is at most ${max}`));

/** Resource limits of a job (enforced by the limits monitor). */
export const Limits = v.strictObject({
  timeout_ms: v.optional(positiveInt(MAX_DURATION_MS, "timeout_ms")),
  max_rss_bytes: v.optional(positiveInt(MAX_BYTES, "max_rss_bytes")),
  max_log_bytes: v.optional(positiveInt(MAX_BYTES, "max_log_bytes")),
  /** Processes and threads the job may have at once. */
  max_pids: v.optional(positiveInt(MAX_PIDS, "max_pids")),
});
export type Limits = v.InferOutput<typeof Limits>;

export const SANDBOX_MODES = ["disabled", "permissive", "enforced"] as const;
export const SandboxMode = v.picklist(SANDBOX_MODES);
export type SandboxMode = v.InferOutput<typeof SandboxMode>;

/** Backends a cell or job may name: the platform's own, or `vm` (each job in a KVM virtual machine). */
export const SANDBOX_BACKENDS = ["bwrap", "seatbelt", "vm"] as const;
export const SandboxBackend = v.picklist(SANDBOX_BACKENDS);
export type SandboxBackend = v.InferOutput<typeof SandboxBackend>;

/** Sandbox settings of a cell or job: the mode, the backend and the policy (lib/sandbox/policy.ts). */
export const SandboxSpec = v.strictObject({
  mode: v.optional(SandboxMode),
  /** The backend (unset: the platform's). A job of a `vm` cell may not name another. */
  backend: v.optional(SandboxBackend),
  policy: v.optional(Policy),
});
export type SandboxSpec = v.InferOutput<typeof SandboxSpec>;

const RequestRef = v.pipe(SafeString, v.minLength(1), v.maxLength(200));
const AbsPath = v.pipe(
  SafeString,
  v.minLength(1),
  v.maxLength(4096),
  v.check((p) => p.startsWith("/"), "must be an absolute path"),
);

/** POST /v1/cells */
export const CellCreate = v.strictObject({
  name: CellName,
  dir: v.optional(AbsPath),
  env: v.optional(EnvMap),
  limits: v.optional(Limits),
  sandbox: v.optional(SandboxSpec),
  request_ref: v.optional(RequestRef),
});
export type CellCreate = v.InferOutput<typeof CellCreate>;
/** A cell request as a client builds it. */
export type CellCreateIn = v.InferInput<typeof CellCreate>;

/**
 * PATCH /v1/cells/{name}: what changes of a cell's sandbox. `mode` replaces its mode, `policy`
 * replaces its whole policy, `network` replaces only its policy's network (of the policy given
 * beside it, else of the cell's current one). Jobs already running keep the policy they started with.
 */
export const CellUpdate = v.strictObject({
  sandbox: v.pipe(
    v.strictObject({
      mode: v.optional(SandboxMode),
      policy: v.optional(Policy),
      network: v.optional(Network),
    }),
    v.check(
      (s) => s.mode !== undefined || s.policy !== undefined || s.network !== undefined,
      "name something to change: mode, policy or network",
    ),
    v.check(
      (s) => s.network === undefined || s.policy?.network === undefined,
      "give the network once: in policy or in network, not both",
    ),
  ),
});
export type CellUpdate = v.InferOutput<typeof CellUpdate>;
export type CellUpdateIn = v.InferInput<typeof CellUpdate>;

/** A terminal's size in character cells. */
const Cells = (what: string) =>
  v.pipe(v.number(), v.integer(), v.minValue(1, `${what} is at least 1`), v.maxValue(4096, `${what} is at most 4096`));
export const TtySize = v.strictObject({ cols: Cells("cols"), rows: Cells("rows") });
export type TtySize = v.InferOutput<typeof TtySize>;

const ArgvItem = v.pipe(SafeString, v.maxLength(128 * 1024));
/** POST /v1/jobs */
export const JobCreate = v.strictObject({
  cell: v.optional(CellName),
  argv: v.pipe(
    v.array(ArgvItem),
    v.minLength(1, "argv needs at least the program to run"),
    v.maxLength(4096, "argv has at most 4096 items"),
    v.check((a) => (a[0] ?? "").length > 0, "argv[0] must not be empty"),
  ),
  cwd: v.optional(AbsPath),
  env: v.optional(EnvMap),
  limits: v.optional(Limits),
  sandbox: v.optional(SandboxSpec),
  request_ref: v.optional(RequestRef),
  /** A pseudo-terminal of this size: an interactive job (attach, stdin, screen). */
  tty: v.optional(TtySize),
  /**
   * An agent job (#16): the agent CLI it runs. Its network is the agent's egress preset under a
   * cell with the host's network, and its hooks report through the job's channel.
   */
  agent: v.optional(v.strictObject({ kind: v.picklist(AGENT_KINDS) })),
  /**
   * The job reads a pipe that POST /v1/jobs/{id}/stdin writes, until it is closed (eof), instead
   * of /dev/null. A terminal job reads its terminal: there stdin changes nothing.
   */
  stdin: v.optional(v.boolean()),
});
export type JobCreate = v.InferOutput<typeof JobCreate>;
/** A job request as a client builds it. */
export type JobCreateIn = v.InferInput<typeof JobCreate>;

export const SIGNALS = ["TERM", "INT", "HUP", "KILL", "QUIT", "USR1", "USR2"] as const;
export type Signal = (typeof SIGNALS)[number];
/**
 * POST /v1/jobs/{id}/stdin: bytes for the job's input (typed into a terminal job, or into the
 * pipe of a job created with `stdin`), and/or its end of input.
 */
export const StdinWrite = v.strictObject({
  data: v.optional(
    v.pipe(
      v.string(),
      v.maxLength(1_400_000, "data is at most 1 MiB (base64)"),
      v.regex(/^[A-Za-z0-9+/]*={0,2}$/, "data must be base64"),
    ),
  ),
  eof: v.optional(v.boolean()),
});
export type StdinWriteIn = v.InferInput<typeof StdinWrite>;

/** GET /v1/jobs/{id}/screen */
export interface ScreenInfo {
  cols: number;
  rows: number;
  cursor: { x: number; y: number };
  /** The visible lines as text, trailing blanks trimmed. */
  lines: string[];
  /** Escape sequences that redraw the screen on a cleared terminal. */
  ansi: string;
  /** Output skipped under a flood (the screen is rebuilt from the newest bytes). */
  skipped_bytes: number;
  /** "live": from the running job's terminal; "log": rendered from its log after it ended. */
  source: "live" | "log";
}

/** POST /v1/jobs/{id}/kill */
export const KillRequest = v.strictObject({
  signal: v.optional(v.picklist(SIGNALS)),
  force: v.optional(v.boolean()),
});
export type KillRequest = v.InferOutput<typeof KillRequest>;
export type KillRequestIn = v.InferInput<typeof KillRequest>;

export const JOB_STATES = ["pending", "running", "exited", "failed", "killed", "lost"] as const;
export type JobState = (typeof JOB_STATES)[number];
export const FINAL_STATES: ReadonlySet<JobState> = new Set(["exited", "failed", "killed", "lost"]);

export const REASONS = [
  "exited",
  "terminated_by_user",
  "forced_kill",
  "timeout",
  "memory_limit",
  "log_quota",
  "process_limit",
  "disk_full",
  "sandbox_error",
  "sandbox_changed",
  "spawn_error",
  "lost",
] as const;
export type Reason = (typeof REASONS)[number];

/** A job as the API returns it. */
export interface Job {
  id: string;
  cell: string;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  state: JobState;
  reason: Reason | null;
  exit_code: number | null;
  signal: string | null;
  message: string | null;
  pid: number | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  limits: Limits;
  /** How the limits are enforced: "monitor" (sampling), "cgroup v2" or "cgroup v1"; null if the job never ran. */
  enforcement: Enforcement | null;
  /** The limit that ended the job and the value observed when it was found exceeded. */
  limit_exceeded: LimitExceeded | null;
  /** True when the job wrote more than max_log_bytes: its log keeps the first max_log_bytes. */
  log_truncated: boolean;
  sandbox: { mode: SandboxMode; backend: string; fallback: boolean; policy: EffectivePolicy | null };
  kill: { signal: string; force: boolean; requested_at: string } | null;
  request_ref: string | null;
  /** Who the job ran as on the host; null before it started. */
  run_as: RunAs | null;
  /** What the workspace review set aside after the job (git hooks, tool config it added or changed). */
  workspace: WorkspaceFinding[];
  /** The job's terminal (its size when it started; clients attached now), or null: no terminal. */
  tty: (TtySize & { clients?: number }) | null;
  /** The job's own stdin (created with `stdin`, no terminal): whether it still takes input; null: /dev/null or a terminal. */
  stdin: { open: boolean } | null;
}

/** The host identity a job ran as. */
export interface RunAs {
  uid: number | null;
  gid: number | null;
  user: string | null;
  /** The peer the job was run for (its owner); null when none was known. */
  for_uid?: number | null;
}

/** One thing a job added or changed in its cell that the host would execute, and where it was set aside. */
export interface WorkspaceFinding {
  path: string;
  kind: string;
  detail: string;
  saved_as: string;
  restored: boolean;
}

export const ENFORCEMENTS = ["monitor", "cgroup v2", "cgroup v1"] as const;
/** How a job's limits are enforced. */
export type Enforcement = (typeof ENFORCEMENTS)[number];

/** A limit found exceeded: `value` was observed (ms for timeout_ms, bytes otherwise) against `max`. */
export interface LimitExceeded {
  /** A job limit, or `min_free_bytes`: the state disk's log reserve (value: bytes free then). */
  limit: keyof Limits | "min_free_bytes";
  value: number;
  max: number;
  at: string;
}

/** A cell as the API returns it. */
export interface Cell {
  name: string;
  dir: string;
  managed: boolean;
  env: Record<string, string>;
  limits: Limits;
  sandbox: SandboxSpec;
  created_at: string;
  /** The uid the cell belongs to; null for cells made before owners were kept. */
  owner_uid: number | null;
  jobs: { running: number; total: number };
  /**
   * What the cell's jobs get unless they narrow it: its mode (else the daemon's default) and its
   * policy over the config's default policy, the network under the config's ceiling. Paths are
   * as given (each job resolves them). `refused`: why its jobs are refused as it stands (a
   * ceiling lowered since the cell was made), else null.
   */
  effective_sandbox: { mode: SandboxMode; policy: EffectivePolicy; refused: string | null };
}

/** One chunk of a job log. */
export interface LogChunk {
  stream: "stdout" | "stderr";
  offset: number;
  next_offset: number;
  size: number;
  data: string;
  eof: boolean;
  complete: boolean;
}

/** One event of the event stream. */
export interface EventRecord {
  cursor: string;
  at: string;
  kind: string;
  subject: string;
  data: Record<string, unknown>;
}

/**
 * The data of a `net.connect` event (subject `job/ID`): one connection attempt of a job through
 * its egress proxy, recorded when it ended (lib/net/proxy.ts `ConnectRecord`). Loose: fields added
 * later pass through.
 */
export const NetConnect = v.looseObject({
  job: v.string(),
  /** The destination as the job named it (canonical); "" when the request never named one. */
  host: v.string(),
  port: v.number(),
  decision: v.picklist(["allow", "deny"]),
  /** The entry that decided, or a keyword: unlisted, local:CLASS, metadata, bad-request, timeout, limit, … */
  rule: v.string(),
  /** The address connected to (allowed attempts that got that far). */
  address: v.optional(v.string()),
  protocol: v.string(),
  bytes_out: v.number(),
  bytes_in: v.number(),
  duration_ms: v.number(),
  /** Why an allowed attempt failed (resolution, connect, timeout), or a refusal's sentence. */
  error: v.optional(v.string()),
});
export type NetConnect = v.InferOutput<typeof NetConnect>;

/** The state database's integrity check, as `/v1/ready` shows it. */
export interface Integrity {
  /** "start": fully, before serving; "background": cheaply at start, fully in a process of its own after. */
  check: "start" | "background";
  /** "unchecked": the background check could not run (nothing is known; the next start checks first). */
  status: "ok" | "running" | "failed" | "unchecked";
  message: string | null;
  /** How long the full check took. */
  ms: number | null;
}

/** One workspace walk (snapshot or review), as `/v1/ready` shows it. */
export interface WalkStatus {
  job: string;
  phase: "snapshot" | "review";
  tree: string;
  /** "waiting": for a walk of an overlapping tree to end. */
  state: "waiting" | "walking";
  /** Entries listed so far. */
  entries: number;
  started_at: string;
}

/** GET /v1/ready (status 503 when `ready` is false). */
export interface ReadyInfo {
  ready: boolean;
  state: "ok" | "unavailable" | "damaged" | "disk_full";
  integrity: Integrity & { hint: string | null };
  disk: {
    path: string;
    free_bytes: number | null;
    total_bytes: number | null;
    min_free_bytes: number | null;
    below_reserve: boolean;
    write_failed_at: string | null;
    writes_waiting: number;
    ends_waiting: number;
    message: string | null;
    hint: string | null;
  };
  jobs_watched: number;
  workspace_walks: WalkStatus[];
  requests_in_flight: number;
  limits: {
    enforcement: string;
    cgroup_unavailable: string | null;
    interval_ms: number;
    grace_ms: number;
    jobs_sampled: number;
    ticks: number;
    last_tick_ms: number;
    /**
     * RLIMIT_NPROC of jobs without a cgroup and of their recorders, and planterd's own (null:
     * unlimited): all jobs together hold at most `jobs` tasks of their uid (lib/jobs/tasks.ts).
     * Null where every job gets a cgroup, or off Linux.
     */
    task_share: { own: number | null; recorders: number; jobs: number } | null;
  };
  sandbox: {
    mode: SandboxMode;
    backend: string;
    ok: boolean;
    version: string | null;
    userns: string | null;
    message: string | null;
    hint: string | null;
  };
}

export interface VersionInfo {
  version: string;
  commit: string;
  api: number;
  backend: string;
  sandbox_mode: SandboxMode;
}

/** Parse `input` with `schema`, throwing E_BAD_REQUEST with the first problems' paths. */
export function parseBody<S extends v.GenericSchema>(schema: S, input: unknown, what: string): v.InferOutput<S> {
  const r = v.safeParse(schema, input);
  if (r.success) return r.output;
  const first = r.issues[0];
  throw badRequest(`invalid ${what}: ${summarizeIssues(r.issues)}`, undefined, {
    path: first ? (v.getDotPath(first) ?? null) : null,
    expected: first?.expected ?? null,
    received: first?.received ?? null,
  });
}

const LIMIT_STOPS: ReadonlySet<Reason> = new Set([
  "timeout",
  "memory_limit",
  "log_quota",
  "process_limit",
  "disk_full",
]);

const SIGNAL_NUMBERS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, USR1: 10, USR2: 12, TERM: 15 };

/** Exit code a CLI passes through for a finished job: its code, or 128+N for signal N. */
export function passthroughCode(job: Pick<Job, "exit_code" | "signal" | "reason">): number {
  // A job a limit stopped never passes for a success, even if its TERM handler exited 0.
  if (job.exit_code === 0 && LIMIT_STOPS.has(job.reason as Reason)) return 1;
  if (job.exit_code !== null) return job.exit_code;
  if (job.signal) return 128 + (SIGNAL_NUMBERS[job.signal] ?? 0);
  if (job.reason === "spawn_error") return 127;
  return 1;
}
