/**
 * Agents (#16): the shared model of an observed AI coding agent — its kinds, states, the
 * runtime identity that names one agent in one pane, and the events that report on it. Every
 * producer (hooks of a planter job, hooks installed in a user's agent settings, Codex's notify,
 * the pane poller) hands `AgentEventIn` to the observer's ingest; every reader sees `Agent`.
 * plans/agents.md has the design.
 */
import * as v from "valibot";

/** The agent CLIs planter knows. */
export const AGENT_KINDS = ["claude", "codex", "gemini"] as const;
export type AgentKind = (typeof AGENT_KINDS)[number];

/**
 * States, in precedence order: when sources of equal standing disagree, the earlier one wins
 * (an error outranks a pending approval, which outranks waiting for input, …).
 */
export const AGENT_STATES = [
  "error",
  "waiting_approval",
  "waiting_input",
  "running",
  "completed",
  "idle",
  "unknown",
] as const;
export type AgentState = (typeof AGENT_STATES)[number];

/** Why a state is `unknown` (a code scripts can test). */
export const UNKNOWN_REASONS = [
  "no_signal", // nothing said anything yet
  "stale", // the last signal is too old to trust and the poller cannot tell
  "unrecognised_screen", // the poller saw a screen it has no rule for
  "pane_gone", // the pane or its process went away
  "target_unreachable", // the tmux server (or target) did not answer
] as const;
export type UnknownReason = (typeof UNKNOWN_REASONS)[number];

/** Who said it. Hooks beat notify beat the poller; the poller takes over when hook data is older than 3 s. */
export const SOURCES = ["hook", "notify", "poller"] as const;
export type Source = (typeof SOURCES)[number];

/** Hook data older than this no longer outranks the poller. */
export const HOOK_FRESH_MS = 3000;
/** `completed` turns `idle` after this long with nothing new. */
export const COMPLETED_TO_IDLE_MS = 120_000;

/**
 * What identifies one agent run: the tmux server (its socket path and the server's start, so a
 * restarted server's `%3` is another pane), the pane id, and the pane process's start time (a
 * pane reused for a new agent is a new runtime). A planter job's agent also names its job.
 * `runtime_id` is a stable hash of those parts (`runtimeId`).
 */
export const RuntimeRef = v.strictObject({
  /** tmux server socket path, or null for a planter job with no tmux (its own terminal). */
  tmux_socket: v.nullable(v.pipe(v.string(), v.maxLength(4096))),
  /** The tmux server's pid and start time (`#{pid}` and /proc/PID/stat field 22), as "PID:START". */
  server: v.nullable(v.pipe(v.string(), v.maxLength(64))),
  /** `#{pane_id}` such as `%3`. */
  pane_id: v.nullable(v.pipe(v.string(), v.regex(/^%\d+$/))),
  /** The pane's (or the job's) agent process: "PID:START". */
  process: v.pipe(v.string(), v.regex(/^\d+:\d+$/)),
  /** The planter job the agent runs in, if any. */
  job_id: v.nullable(v.pipe(v.string(), v.maxLength(64))),
});
export type RuntimeRef = v.InferOutput<typeof RuntimeRef>;

/** A stable id for a runtime: `rt-` and 16 hex digits of a SHA-256 of its parts. */
export function runtimeId(r: RuntimeRef): string {
  const h = new Bun.CryptoHasher("sha256");
  h.update(JSON.stringify([r.tmux_socket, r.server, r.pane_id, r.process, r.job_id]));
  return `rt-${h.digest("hex").slice(0, 16)}`;
}

/**
 * One report about an agent, as producers hand it in. `kind` is the producer's own name for what
 * happened (Claude Code's hook event names such as `PreToolUse`, `Notification`, `Stop`; Codex's
 * notify `agent-turn-complete`; the poller's rule name). `state` is what it means, decided by the
 * producer's adapter. `source_seq` orders events of one source for one runtime (a hook counter,
 * the poller's tick); `dedupe_key` drops repeats (a hook fired twice, an event replayed).
 */
export const AgentEventIn = v.strictObject({
  agent: v.picklist(AGENT_KINDS),
  source: v.picklist(SOURCES),
  runtime: RuntimeRef,
  kind: v.pipe(v.string(), v.minLength(1), v.maxLength(128)),
  state: v.picklist(AGENT_STATES),
  /** With state unknown. */
  reason: v.optional(v.picklist(UNKNOWN_REASONS)),
  /** When it happened at the source, ms since the epoch (the observer's clock decides freshness). */
  at: v.pipe(v.number(), v.integer(), v.minValue(0)),
  source_seq: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  dedupe_key: v.optional(v.pipe(v.string(), v.maxLength(256))),
  /** A short human summary (the tool asked for, the last line): at most 1 KiB, never secrets. */
  detail: v.optional(v.pipe(v.string(), v.maxLength(1024))),
});
export type AgentEventIn = v.InferOutput<typeof AgentEventIn>;

/** An agent as `GET /v1/agents` shows it. */
export interface Agent {
  runtime_id: string;
  runtime: RuntimeRef;
  agent: AgentKind;
  state: AgentState;
  reason: UnknownReason | null;
  /** When the state began, and when anything last confirmed it. */
  since: number;
  updated_at: number;
  /** Which source decided the state. */
  source: Source;
  detail: string | null;
  /** tmux's names for the pane, where it is one: session, window index, pane index, title. */
  pane: { session: string; window: number; index: number; title: string } | null;
  /** The cell of the job, when the agent runs in one. */
  cell: string | null;
  /** Bumped on every change of state: the guard `if_state` and watchers use it. */
  state_version: number;
}

/** What a change did to an agent: it appeared or changed (`upsert`), or was forgotten (`remove`). */
export type AgentChangeOp = "upsert" | "remove";

/** `GET /v1/agents`: the agents the caller may see, and the cursor a watch resumes from. */
export interface AgentList {
  agents: Agent[];
  cursor: string;
}

/**
 * One line of `GET /v1/agents/watch`: a `snapshot` of every agent first (unless a valid cursor was
 * given), then a `delta` per change; a cursor that cannot be resumed (another planterd's, pruned,
 * ahead of the newest change) gets a `reset` saying why, then a snapshot. Every snapshot and
 * delta carries the cursor to resume after it.
 */
export type AgentWatchLine =
  | { type: "snapshot"; cursor: string; agents: Agent[] }
  | { type: "delta"; cursor: string; op: AgentChangeOp; agent: Agent }
  | { type: "reset"; reason: "foreign" | "expired" | "ahead"; message: string };

/** What `ingest` (and `POST /v1/agents/events`) did with an event, and the agent as it is now. */
export interface AgentReportResult {
  /** `applied`: taken (the state may or may not have changed); `duplicate`, `older`: dropped. */
  outcome: "applied" | "duplicate" | "older";
  changed: boolean;
  agent: Agent;
}
