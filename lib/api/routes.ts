/**
 * The /v1 route table: every route once — method, path, path parameters, query (valibot schemas
 * over the query string), body (valibot), reply (a type, and how it is sent). planterd's router
 * registers its handlers against these entries (lib/daemon/routes.ts) and the client's methods
 * are typed from them (lib/api/client.ts); `planter api openapi` prints them as an OpenAPI
 * document. Loaded by every client command: nothing here imports daemon code.
 */
import * as v from "valibot";
import { type ActionResult, KillBody, SendBody } from "../agents/actions.ts";
import {
  AGENT_KINDS,
  AGENT_STATES,
  AgentEventIn,
  type AgentList,
  type AgentReportResult,
  type AgentWatchLine,
} from "../agents/model.ts";
import { TargetHealthIn, type TargetHealthResult } from "../targets/health.ts";
import {
  type Cell,
  CellCreate,
  CellUpdate,
  type EventRecord,
  JOB_STATES,
  type Job,
  JobCreate,
  KillRequest,
  type LogChunk,
  type ReadyInfo,
  type ScreenInfo,
  StdinWrite,
  type VersionInfo,
} from "./contract.ts";
import { FRAMES_TYPE } from "./frames.ts";

export type Method = "GET" | "POST" | "PATCH" | "DELETE";

/** How a reply travels: one JSON value, JSON lines, or a byte stream of a content type. */
export type ReplyKind = "json" | "lines" | "bytes" | "fd" | "upgrade";

/** The names of a path pattern's `:parameters`. */
type ParamNames<P extends string> = P extends `${string}:${infer N}/${infer Rest}`
  ? N | ParamNames<`/${Rest}`>
  : P extends `${string}:${infer N}`
    ? N
    : never;
/** A path pattern's parameters as an object. */
export type PathParams<P extends string> = { [K in ParamNames<P>]: string };

/** A query string's schema: an object of values parsed from the strings. */
type QueryEntries = Record<string, v.GenericSchema<string | undefined, unknown>>;

/** One route of the table. `R` is the reply's type (a JSON value, or one JSON line). */
export interface Route<
  P extends string = string,
  Q extends QueryEntries = QueryEntries,
  B extends v.GenericSchema | null = v.GenericSchema | null,
  R = unknown,
> {
  method: Method;
  path: P;
  query: Q;
  body: B;
  /** What the body is, in errors: "invalid job: …". */
  bodyName?: string;
  /** A content type whose body is taken as bytes, as they are, instead of the JSON body (Req.bytes). */
  bytesBody?: string;
  reply: ReplyKind;
  /** Content types of byte replies, for the document. */
  types?: string[];
  /** Also answered while the database is found damaged (reads always are). */
  whileDamaged?: boolean;
  /** One line for the document and `--help`. */
  summary: string;
  /** Statuses a success may have, first the usual one. */
  ok: number[];
  /** The reply's type (null at run time: `reply<T>()`). */
  returns: R;
}

export type RouteQuery<T extends Route> = { [K in keyof T["query"]]: v.InferOutput<T["query"][K]> };
/** What a client passes: every query value optional, in its parsed type. */
export type RouteQueryIn<T extends Route> = { [K in keyof T["query"]]?: v.InferOutput<T["query"][K]> };
export type RouteBody<T extends Route> = T["body"] extends v.GenericSchema ? v.InferOutput<T["body"]> : undefined;
export type RouteBodyIn<T extends Route> = T["body"] extends v.GenericSchema ? v.InferInput<T["body"]> : undefined;
export type RouteReply<T extends Route> = T["returns"];
export type RouteParams<T extends Route> = PathParams<T["path"]>;

function route<P extends string, Q extends QueryEntries, B extends v.GenericSchema | null, R>(
  r: Omit<Route<P, Q, B, R>, "ok"> & { ok?: number[] },
): Route<P, Q, B, R> {
  return { ...r, ok: r.ok ?? [200] };
}
/** The reply type of a route, as a type argument: `reply<Job>()`. */
const reply = <R>() => null as unknown as R;

// ---- query string values: absent or empty is the default ---------------------------------------

type Q<T> = v.GenericSchema<string | undefined, T>;

/** What the document says of a query value (JSON Schema), by its schema. */
export const PARAM_DOCS = new WeakMap<object, Record<string, unknown>>();
const documented = <S extends object>(schema: S, doc: Record<string, unknown>): S => {
  PARAM_DOCS.set(schema, doc);
  return schema;
};

/** An integer in [min, max]; absent → `dflt` (or undefined: the handler's config default). */
function int(min: number, max: number): Q<number | undefined>;
function int(min: number, max: number, dflt: number): Q<number>;
function int(min: number, max: number, dflt?: number): Q<number | undefined> {
  const doc = { type: "integer", minimum: min, maximum: max, ...(dflt === undefined ? {} : { default: dflt }) };
  return documented(
    v.pipe(
      v.optional(v.string()),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        const raw = dataset.value;
        if (raw === undefined) return dflt;
        if (!/^-?\d+$/.test(raw)) {
          addIssue({ message: `must be an integer, not ${JSON.stringify(raw)}` });
          return NEVER;
        }
        // Any number of digits is an integer; one too large to be exact is also beyond `max`.
        const n = Number(raw) || 0;
        if (n < min || n > max) {
          addIssue({ message: `must be between ${min} and ${max}, not ${raw}` });
          return NEVER;
        }
        return n;
      }),
    ),
    doc,
  );
}

/** A flag: 1/true/0/false; absent is false. */
function flag(): Q<boolean> {
  return documented(
    v.pipe(
      v.optional(v.string()),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        const raw = dataset.value;
        if (raw === undefined || raw === "0" || raw === "false") return false;
        if (raw === "1" || raw === "true") return true;
        addIssue({ message: `must be 1 or 0, not ${JSON.stringify(raw)}` });
        return NEVER;
      }),
    ),
    { type: "string", enum: ["1", "0", "true", "false"], default: "0" },
  );
}

/** One of `values`; absent → `dflt` (or undefined). */
function oneOf<const T extends string>(values: readonly T[]): Q<T | undefined>;
function oneOf<const T extends string>(values: readonly T[], dflt: NoInfer<T>): Q<T>;
function oneOf<const T extends string>(values: readonly T[], dflt?: T): Q<T | undefined> {
  const list = values.length === 2 ? `${values[0]} or ${values[1]}` : `one of ${values.join(", ")}`;
  const doc = { type: "string", enum: [...values], ...(dflt === undefined ? {} : { default: dflt }) };
  return documented(
    v.pipe(
      v.optional(v.string()),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        const raw = dataset.value;
        if (raw === undefined) return dflt;
        if ((values as readonly string[]).includes(raw)) return raw as T;
        addIssue({ message: `must be ${list}, not ${JSON.stringify(raw)}` });
        return NEVER;
      }),
    ),
    doc,
  );
}

/** Free text (a cell name, a job id, a cursor), checked by the handler. */
const text = (): Q<string | undefined> =>
  documented(v.optional(v.pipe(v.string(), v.maxLength(1024, "is too long"))), { type: "string", maxLength: 1024 });

/** Event kinds a reader wants: a comma list of kinds, each also naming the kinds under it. */
const KIND_RE = /^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*$/;
function kinds(): Q<string[] | undefined> {
  return documented(
    v.pipe(
      v.optional(v.string()),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        const raw = dataset.value;
        if (raw === undefined) return undefined;
        if (raw.length > 4096) {
          addIssue({ message: "is too long" });
          return NEVER;
        }
        const out: string[] = [];
        for (const item of raw.split(",")) {
          // `job`, `job.` and `job.*` all name the family: job.created, job.started, …
          const k = item.trim().replace(/\.\*?$/, "");
          if (!KIND_RE.test(k) || k.length > 100) {
            addIssue({
              message: `must be event kinds such as net.connect, or families such as job (job.*), comma-separated; not ${JSON.stringify(item)}`,
            });
            return NEVER;
          }
          if (!out.includes(k)) out.push(k);
        }
        if (out.length > 32) {
          addIssue({ message: `names at most 32 kinds, not ${out.length}` });
          return NEVER;
        }
        return out;
      }),
    ),
    { type: "string", maxLength: 4096 },
  );
}

const NONE = {};
const MAX_OFFSET = Number.MAX_SAFE_INTEGER;
const LogStream = ["stdout", "stderr"] as const;

/** The table. Names are the client's method names. */
export const ROUTES = {
  health: route({
    method: "GET",
    path: "/v1/health",
    query: NONE,
    body: null,
    reply: "json",
    summary: "liveness: planterd answers",
    returns: reply<{ ok: boolean }>(),
  }),
  ready: route({
    returns: reply<ReadyInfo>(),
    method: "GET",
    path: "/v1/ready",
    query: NONE,
    body: null,
    reply: "json",
    ok: [200, 503],
    summary: "readiness: state, disk, integrity, limits and sandbox (503 when not ready)",
  }),
  version: route({
    returns: reply<VersionInfo>(),
    method: "GET",
    path: "/v1/version",
    query: NONE,
    body: null,
    reply: "json",
    summary: "planterd's version, API version, backend and default sandbox mode",
  }),
  createCell: route({
    returns: reply<Cell>(),
    method: "POST",
    path: "/v1/cells",
    query: NONE,
    body: CellCreate,
    bodyName: "cell",
    reply: "json",
    ok: [201, 200],
    summary: "create a cell (200 when a request_ref replays the first result)",
  }),
  listCells: route({
    returns: reply<{ cells: Cell[] }>(),
    method: "GET",
    path: "/v1/cells",
    query: NONE,
    body: null,
    reply: "json",
    summary: "every cell",
  }),
  getCell: route({
    returns: reply<Cell>(),
    method: "GET",
    path: "/v1/cells/:name",
    query: NONE,
    body: null,
    reply: "json",
    summary: "one cell",
  }),
  updateCell: route({
    returns: reply<Cell>(),
    method: "PATCH",
    path: "/v1/cells/:name",
    query: NONE,
    body: CellUpdate,
    bodyName: "cell update",
    reply: "json",
    summary:
      "change a cell's sandbox: mode, the whole policy, or only its network (the owner's, within the config's ceiling; running jobs keep theirs)",
  }),
  removeCell: route({
    method: "DELETE",
    path: "/v1/cells/:name",
    query: { force: flag() },
    body: null,
    reply: "json",
    summary: "remove a cell, its jobs and their logs (force=1 kills its running jobs first)",
    returns: reply<{ removed: string; jobs_removed: number }>(),
  }),
  createJob: route({
    method: "POST",
    path: "/v1/jobs",
    query: { attach: flag() },
    body: JobCreate,
    bodyName: "job",
    reply: "json",
    types: ["application/json", FRAMES_TYPE],
    ok: [201, 200],
    summary:
      "submit a job (200 when a request_ref replays the first result); attach=1 answers frames: the job, its output as written, the job as it ended",
    returns: reply<Job>(),
  }),
  listJobs: route({
    method: "GET",
    path: "/v1/jobs",
    query: {
      cell: text(),
      state: oneOf(JOB_STATES),
      limit: int(1, 1000, 100),
      after: text(),
      order: oneOf(["oldest", "newest"], "oldest"),
    },
    body: null,
    reply: "json",
    summary: "a page of jobs, oldest first (order=newest: newest first); next_after names the next page",
    returns: reply<{ jobs: Job[]; next_after: string | null }>(),
  }),
  getJob: route({
    returns: reply<Job>(),
    method: "GET",
    path: "/v1/jobs/:id",
    query: NONE,
    body: null,
    reply: "json",
    summary: "one job",
  }),
  removeJob: route({
    method: "DELETE",
    path: "/v1/jobs/:id",
    query: NONE,
    body: null,
    reply: "json",
    summary: "remove a finished job and its logs",
    returns: reply<{ removed: string }>(),
  }),
  killJob: route({
    returns: reply<Job>(),
    method: "POST",
    path: "/v1/jobs/:id/kill",
    query: NONE,
    body: KillRequest,
    bodyName: "kill request",
    reply: "json",
    ok: [202],
    whileDamaged: true,
    summary: "signal a job's whole tree (TERM, grace, KILL; force=true: KILL now)",
  }),
  waitJob: route({
    method: "GET",
    path: "/v1/jobs/:id/wait",
    query: { timeout_ms: int(0, 3_600_000, 30_000) },
    body: null,
    reply: "json",
    summary: "wait for a job to end, at most timeout_ms",
    returns: reply<{ job: Job; timed_out: boolean }>(),
  }),
  logs: route({
    method: "GET",
    path: "/v1/jobs/:id/logs",
    query: {
      stream: oneOf(LogStream, "stdout"),
      offset: int(0, MAX_OFFSET, 0),
      max_bytes: int(0, MAX_OFFSET),
      follow: flag(),
      wait_ms: int(0, 3_600_000),
    },
    body: null,
    reply: "json",
    summary: "a chunk of a job's log from an offset (base64); follow=1 waits up to wait_ms for bytes or the end",
    returns: reply<LogChunk>(),
  }),
  logStream: route({
    method: "GET",
    path: "/v1/jobs/:id/logs/raw",
    query: { stream: oneOf(LogStream, "stdout"), offset: int(0, MAX_OFFSET, 0), follow: flag() },
    body: null,
    reply: "bytes",
    types: ["application/octet-stream"],
    summary: "a job's log as raw bytes from an offset; follow=1 until the job has ended",
    returns: reply<Uint8Array>(),
  }),
  logFd: route({
    method: "GET",
    path: "/v1/jobs/:id/logs/fd",
    query: { stream: oneOf(LogStream, "stdout") },
    body: null,
    reply: "fd",
    types: [
      "the log file as a read-only descriptor (SCM_RIGHTS) with an empty 200 answer; planterd's Unix socket on Linux only",
    ],
    summary:
      "a job's log file itself, passed as a read-only file descriptor with the answer's head (planter-size: its size now); the Unix socket on Linux only, else 400",
    returns: reply<never>(),
  }),
  attach: route({
    method: "GET",
    path: "/v1/jobs/:id/attach",
    query: { read_only: flag(), share_input: flag() },
    body: null,
    reply: "upgrade",
    ok: [101],
    types: ["websocket: one terminal frame per binary message (docs/api.md)"],
    summary:
      "a terminal job's screen and input over a WebSocket; read_only=1 only watches; one client writes at a time unless each writer says share_input=1",
    returns: reply<never>(),
  }),
  writeStdin: route({
    method: "POST",
    path: "/v1/jobs/:id/stdin",
    query: { wait_ms: int(0, 3_600_000, 10_000), eof: flag() },
    body: StdinWrite,
    bodyName: "stdin write",
    bytesBody: "application/octet-stream",
    reply: "json",
    ok: [202],
    summary:
      "input for a job (data: base64, or the body's bytes as they are with Content-Type application/octet-stream): typed into a terminal job, or written into the stdin pipe of a job created with stdin (answered once it is all in the pipe; a job that does not read keeps it waiting at most wait_ms, then 409 with details.written); eof (in the body or the query) ends the input after the data (^D on a terminal, the pipe's end otherwise)",
    returns: reply<{ written: number; eof: boolean }>(),
  }),
  screen: route({
    method: "GET",
    path: "/v1/jobs/:id/screen",
    query: NONE,
    body: null,
    reply: "json",
    summary: "a terminal job's screen: its lines as text, the cursor, escape sequences that redraw it",
    returns: reply<ScreenInfo>(),
  }),
  events: route({
    method: "GET",
    path: "/v1/events",
    query: { cursor: text(), follow: flag(), limit: int(1, 10_000), kind: kinds(), subject: text() },
    body: null,
    reply: "lines",
    types: ["application/x-ndjson"],
    summary:
      "events after a cursor as JSON lines (no cursor: from the oldest; cursor=now: only new ones); at most limit (default 1000, or no bound with follow=1); follow=1 waits for new ones; kind=K,… only those kinds (K and the kinds under it: job is job.*), subject=S only that subject (job/ID)",
    returns: reply<EventRecord>(),
  }),
  listAgents: route({
    method: "GET",
    path: "/v1/agents",
    query: { state: oneOf(AGENT_STATES), agent: oneOf(AGENT_KINDS), job: text() },
    body: null,
    reply: "json",
    summary:
      "the agents observed (in tmux panes, reported by hooks, in jobs) that the caller may see, and the cursor a watch resumes from",
    returns: reply<AgentList>(),
  }),
  watchAgents: route({
    method: "GET",
    path: "/v1/agents/watch",
    query: { cursor: text() },
    body: null,
    reply: "lines",
    types: ["application/x-ndjson"],
    summary:
      "agents as JSON lines: a snapshot, then a delta per change, live; with a cursor only the changes after it (a cursor that cannot be resumed: a reset, then a snapshot)",
    returns: reply<AgentWatchLine>(),
  }),
  agentSend: route({
    method: "POST",
    path: "/v1/agents/:id/send",
    query: NONE,
    body: SendBody,
    bodyName: "agent send",
    reply: "json",
    summary:
      "type text and named keys into an agent's pane or job terminal, only if the guards hold (if_runtime, if_state, if_state_version, if_updated_within: E_RUNTIME_STALE / E_STATE_CHANGED otherwise)",
    returns: reply<ActionResult>(),
  }),
  agentKill: route({
    method: "POST",
    path: "/v1/agents/:id/kill",
    query: NONE,
    body: KillBody,
    bodyName: "agent kill",
    reply: "json",
    summary: "end an agent (its job, or its process: TERM, force: KILL), only if the guards hold",
    returns: reply<ActionResult>(),
  }),
  agentOutput: route({
    method: "GET",
    path: "/v1/agents/:id/output",
    query: { lines: int(1, 10_000), if_runtime: text() },
    body: null,
    reply: "json",
    summary: "the last lines of an agent's pane (or its job's screen)",
    returns: reply<ActionResult>(),
  }),
  reportAgent: route({
    method: "POST",
    path: "/v1/agents/events",
    query: NONE,
    body: AgentEventIn,
    bodyName: "agent event",
    reply: "json",
    summary:
      "report an agent's state (a hook, Codex's notify): only about processes, tmux servers and jobs of the caller's own",
    returns: reply<AgentReportResult>(),
  }),
  reportTargetHealth: route({
    method: "POST",
    path: "/v1/targets/health",
    query: NONE,
    body: TargetHealthIn,
    bodyName: "target health",
    reply: "json",
    summary:
      "report what the caller saw of one of its targets (ok, degraded, down): a change is stored as a target.health event under the caller's uid; at most 20 changes at once per uid, then one per 3 s",
    returns: reply<TargetHealthResult>(),
  }),
} as const;

export type Routes = typeof ROUTES;
export type RouteName = keyof Routes;

/** A path from a pattern and its parameters, each encoded. */
export function pathOf(pattern: string, params: Record<string, string>): string {
  return pattern.replace(/:([a-z_]+)/g, (_, name: string) => encodeURIComponent(params[name] ?? ""));
}

/** A query string from the values a client passes: flags as 1 (false left out), lists comma-joined, absent left out. */
export function queryOf(q: Record<string, unknown> | undefined): string {
  if (!q) return "";
  const p = new URLSearchParams();
  for (const [k, val] of Object.entries(q)) {
    if (val === undefined || val === "" || val === false || val === null) continue;
    if (Array.isArray(val)) {
      if (val.length) p.set(k, val.join(","));
      continue;
    }
    p.set(k, val === true ? "1" : String(val));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}
