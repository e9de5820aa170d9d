/**
 * planter's MCP tools (docs/mcp.md): each one is one or a few /v1 routes called through
 * planterd's dispatcher as the caller (lib/daemon/dispatch.ts), so authorization, validation,
 * the sandbox and the audit are the API's own. Inputs are valibot schemas (their JSON Schema is
 * what tools/list shows); results are structured, with a text rendering for models.
 *
 * The file tools run as short jobs in the cell (sh, cat, head, tail, find): what they may read
 * or write is exactly what a job of that cell may — the sandbox confines them, not a second set
 * of path rules here. Their paths are relative to the cell dir and never climb out lexically.
 */
import * as v from "valibot";
import type { Job, LogChunk } from "../api/contract.ts";
import { FINAL_STATES, Limits, SANDBOX_MODES, SandboxBackend, SIGNALS, TtySize } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import { ROUTES } from "../api/routes.ts";
import type { Dispatch } from "../daemon/dispatch.ts";
import { Network, Policy } from "../sandbox/policy.ts";

/** What a tool runs with. */
export interface ToolContext {
  api: Dispatch;
  signal: AbortSignal;
  /** Bytes of each stream a run answers with (config [mcp] max_output_bytes). */
  maxOutput: number;
  /** Tell the caller a wait goes on (when its request carried a progress token). */
  progress?: (progress: number, message: string) => Promise<void>;
}

/** How often a wait says it goes on, to a caller that asked for progress. */
export const PROGRESS_MS = 2000;

/** A tool's result: structured content, and the text a model reads. */
export interface ToolResult {
  structured: Record<string, unknown>;
  text: string;
}

export interface Tool {
  name: string;
  title: string;
  description: string;
  input: v.GenericSchema;
  /** The structured result's schema (its JSON Schema is the tool's outputSchema). */
  output: v.GenericSchema;
  annotations: { readOnlyHint?: boolean; destructiveHint?: boolean; idempotentHint?: boolean; openWorldHint?: boolean };
  /** Whether a `tasks`-augmented call may run it as a task (the task is the job). */
  task?: boolean;
  run(args: never, t: ToolContext): Promise<ToolResult>;
}

const tool = <S extends v.GenericSchema>(
  t: Omit<Tool, "run" | "input"> & { input: S; run(args: v.InferOutput<S>, t: ToolContext): Promise<ToolResult> },
): Tool => t as unknown as Tool;

const json = (structured: Record<string, unknown>): ToolResult => ({
  structured,
  text: JSON.stringify(structured, null, 1),
});

// ---- shapes ------------------------------------------------------------------------------------

const JobId = v.pipe(v.string(), v.minLength(1), v.maxLength(64), v.description("a job id (from run or job_list)"));
const CellArg = v.optional(
  v.pipe(v.string(), v.maxLength(63), v.description("the cell (default: the caller's default cell)")),
);

const JobOut = v.looseObject({
  id: v.string(),
  cell: v.string(),
  state: v.string(),
  exit_code: v.nullable(v.number()),
  reason: v.nullable(v.string()),
});
const StreamOut = v.object({
  text: v.string(),
  bytes: v.number(),
  truncated: v.boolean(),
});

/** The parts of a job a tool shows (its env stays out: it may hold secrets). */
function jobView(j: Job) {
  return {
    id: j.id,
    cell: j.cell,
    argv: j.argv,
    state: j.state,
    exit_code: j.exit_code,
    signal: j.signal,
    reason: j.reason,
    message: j.message,
    created_at: j.created_at,
    started_at: j.started_at,
    finished_at: j.finished_at,
    limits: j.limits,
    limit_exceeded: j.limit_exceeded,
    log_truncated: j.log_truncated,
    sandbox: { mode: j.sandbox.mode, backend: j.sandbox.backend, network: j.sandbox.policy?.network ?? null },
    tty: j.tty,
    stdin: j.stdin,
    run_as: j.run_as,
  };
}

// ---- output ------------------------------------------------------------------------------------

const utf8 = new TextDecoder("utf-8", { fatal: false });
const bytesOf = (c: LogChunk) => Buffer.from(c.data, "base64");

async function chunk(t: ToolContext, id: string, stream: "stdout" | "stderr", offset: number, max: number) {
  return t.api.call(ROUTES.logs, { params: { id }, query: { stream, offset, max_bytes: max } }, t.signal);
}

/**
 * A stream of a job for a model: whole when it fits `most` bytes, else its head and tail with a
 * note of what was left out and how to read it (job_output with an offset).
 */
export async function outputOf(t: ToolContext, id: string, stream: "stdout" | "stderr", most: number) {
  const first = await chunk(t, id, stream, 0, most);
  if (first.size <= most && first.eof) {
    return { text: utf8.decode(bytesOf(first)), bytes: first.size, truncated: false };
  }
  const headLen = Math.floor(most / 4);
  const tailLen = most - headLen;
  const head = bytesOf(first).subarray(0, headLen);
  const size = first.size;
  const tailFrom = Math.max(headLen, size - tailLen);
  const tail = bytesOf(await chunk(t, id, stream, tailFrom, tailLen));
  const omitted = tailFrom - headLen;
  const note = `\n[… ${omitted} bytes of ${stream} not shown: job_output {"job": "${id}", "stream": "${stream}", "offset": ${headLen}} reads them …]\n`;
  return { text: utf8.decode(head) + note + utf8.decode(tail), bytes: size, truncated: true };
}

/** Wait for a job's end at most `seconds` (0: not at all). */
async function waitFor(t: ToolContext, id: string, seconds: number): Promise<{ job: Job; timed_out: boolean }> {
  if (seconds <= 0) {
    const job = await t.api.call(ROUTES.getJob, { params: { id } }, t.signal);
    return { job, timed_out: !FINAL_STATES.has(job.state) };
  }
  const total = Math.round(seconds * 1000);
  if (!t.progress) return t.api.call(ROUTES.waitJob, { params: { id }, query: { timeout_ms: total } }, t.signal);
  // In slices, each followed by a progress notification: a client's request timeout that progress
  // resets never fires while the job runs.
  const start = Date.now();
  for (;;) {
    const left = total - (Date.now() - start);
    const r = await t.api.call(
      ROUTES.waitJob,
      { params: { id }, query: { timeout_ms: Math.max(0, Math.min(PROGRESS_MS, left)) } },
      t.signal,
    );
    if (!r.timed_out || left <= PROGRESS_MS) return r;
    const s = Math.round((Date.now() - start) / 1000);
    await t.progress(s, `job ${id} still ${r.job.state} after ${s} s`);
  }
}

/** A run's answer: the job, whether it ended, the head and tail of its output (the screen of a terminal job). */
export async function runResult(t: ToolContext, job: Job, timedOut: boolean): Promise<ToolResult> {
  const stdout = await outputOf(t, job.id, "stdout", t.maxOutput);
  const stderr = job.tty ? null : await outputOf(t, job.id, "stderr", t.maxOutput);
  let screen: string[] | null = null;
  if (job.tty) {
    try {
      screen = (await t.api.call(ROUTES.screen, { params: { id: job.id } }, t.signal)).lines;
    } catch {
      screen = null;
    }
  }
  const done = FINAL_STATES.has(job.state);
  const structured = { job: jobView(job), done, timed_out: timedOut, stdout, stderr, screen };
  const status = done
    ? job.state === "exited"
      ? `exit ${job.exit_code}`
      : `${job.state} (${job.reason ?? "?"}${job.message ? `: ${job.message}` : ""})`
    : `still ${job.state}: job_wait or job_output {"job": "${job.id}"} later`;
  const parts = [`job ${job.id} in cell ${job.cell}: ${status}`];
  if (screen) parts.push(`--- screen ---\n${screen.join("\n")}`);
  else {
    if (stdout.bytes) parts.push(`--- stdout (${stdout.bytes} bytes) ---\n${stdout.text}`);
    if (stderr?.bytes) parts.push(`--- stderr (${stderr.bytes} bytes) ---\n${stderr.text}`);
  }
  return { structured, text: parts.join("\n") };
}

/** Whether a run's job counts as an error for the model: it did not exit 0. */
export const failedRun = (job: Job) => FINAL_STATES.has(job.state) && !(job.state === "exited" && job.exit_code === 0);

// ---- helpers for the file tools ----------------------------------------------------------------

/** A path inside the cell: relative, no `..`, no NUL; returned as `./path` (never read as an option). */
export function cellPath(p: string, allowDot = false): string {
  const bad = (why: string) =>
    new PlanterError("E_BAD_REQUEST", `path ${JSON.stringify(p)} ${why}`, {
      hint: 'paths are relative to the cell dir, e.g. "src/main.ts" ("." for the cell dir itself)',
    });
  if (p.includes("\0")) throw bad("contains a NUL byte");
  if (p.startsWith("/")) throw bad("is absolute");
  const parts = p.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.includes("..")) throw bad('climbs out with ".."');
  if (parts.length === 0) {
    if (allowDot) return ".";
    throw bad("names the cell dir itself, not a file in it");
  }
  return `./${parts.join("/")}`;
}

/** The most of a file tool's output planterd reads (a read's 1 MiB and more). */
const IN_CELL_OUTPUT = 4 * 1024 * 1024;

/** Run a small program as a job in the cell, wait for it, read its output, remove it. */
async function inCell(
  t: ToolContext,
  cell: string | undefined,
  argv: string[],
  input?: Uint8Array,
): Promise<{ job: Job; stdout: Buffer; stderr: string; more: boolean }> {
  const job = await t.api.call(
    ROUTES.createJob,
    { body: { cell, argv, limits: { timeout_ms: 60_000 }, ...(input ? { stdin: true } : {}) } },
    t.signal,
  );
  try {
    if (input) {
      const step = 512 * 1024;
      for (let at = 0; at < input.length || at === 0; at += step) {
        const part = input.subarray(at, at + step);
        const last = at + step >= input.length;
        await t.api.call(
          ROUTES.writeStdin,
          { params: { id: job.id }, body: { data: Buffer.from(part).toString("base64"), eof: last } },
          t.signal,
        );
        if (last) break;
      }
    }
    const { job: end } = await t.api.call(
      ROUTES.waitJob,
      { params: { id: job.id }, query: { timeout_ms: 70_000 } },
      t.signal,
    );
    // At most IN_CELL_OUTPUT bytes are read into planterd (a listing of a huge directory says it was cut).
    const out: Buffer[] = [];
    let offset = 0;
    let more = false;
    for (;;) {
      const c = await chunk(t, job.id, "stdout", offset, Math.min(1 << 20, IN_CELL_OUTPUT - offset));
      out.push(bytesOf(c));
      if (c.next_offset === offset || c.eof) break;
      offset = c.next_offset;
      if (offset >= IN_CELL_OUTPUT) {
        more = c.size > offset;
        break;
      }
    }
    const err = await chunk(t, job.id, "stderr", 0, 16 * 1024);
    return { job: end, stdout: Buffer.concat(out), stderr: utf8.decode(bytesOf(err)).trim(), more };
  } finally {
    // The job's events stay in the audit; its row and logs are of no use to anyone.
    await t.api.call(ROUTES.removeJob, { params: { id: job.id } }, t.signal).catch(() => undefined);
  }
}

function fileError(what: string, r: { job: Job; stderr: string }): PlanterError {
  const j = r.job;
  const why =
    r.stderr ||
    (j.state === "exited" ? `exit ${j.exit_code}` : `${j.state}: ${j.reason ?? ""} ${j.message ?? ""}`.trim());
  return new PlanterError("E_BAD_REQUEST", `${what}: ${why}`, {
    hint: "the file tools see the cell as its jobs do (the sandbox decides what is readable and writable)",
    details: { job: j.id, state: j.state, exit_code: j.exit_code, reason: j.reason },
  });
}

const READ_SH = `f=$1
[ -e "$f" ] || [ -L "$f" ] || { printf 'no such file: %s\\n' "\${f#./}" >&2; exit 3; }
[ -f "$f" ] || { printf 'not a regular file: %s\\n' "\${f#./}" >&2; exit 4; }
wc -c < "$f" >&2 || exit 5
tail -c +"$2" -- "$f" | head -c "$3"`;

const WRITE_SH = `f=$1
if [ "$3" = 1 ]; then mkdir -p -- "$(dirname -- "$f")" || exit 6; fi
if [ "$2" = append ]; then cat >> "$f"; else cat > "$f"; fi`;

const LIST_SH = `d=$1
[ -d "$d" ] || { printf 'not a directory: %s\\n' "\${d#./}" >&2; exit 4; }
if find "$d" -maxdepth 0 -printf '' >/dev/null 2>&1; then
  exec find "$d" -mindepth 1 -maxdepth 1 -printf '%y\\t%s\\t%f\\0'
fi
for f in "$d"/* "$d"/.[!.]* "$d"/..?*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -L "$f" ]; then y=l; elif [ -d "$f" ]; then y=d; elif [ -f "$f" ]; then y=f; else y=o; fi
  s=0; [ "$y" = f ] && s=$(wc -c < "$f" | tr -d ' ')
  printf '%s\\t%s\\t%s\\0' "$y" "$s" "\${f##*/}"
done`;

const KINDS: Record<string, string> = { f: "file", d: "dir", l: "link" };

/** Text when the bytes are UTF-8, else base64. */
function textOrBase64(b: Buffer): { text: string } | { base64: string } {
  const text = b.toString("utf8");
  return Buffer.from(text, "utf8").equals(b) ? { text } : { base64: b.toString("base64") };
}

// ---- the tools ---------------------------------------------------------------------------------

const RunArgs = v.pipe(
  v.strictObject({
    command: v.optional(v.pipe(v.string(), v.minLength(1), v.description("a shell command line, run with sh -c"))),
    argv: v.optional(
      v.pipe(v.array(v.string()), v.minLength(1), v.description("the program and its arguments (instead of command)")),
    ),
    cell: CellArg,
    cwd: v.optional(
      v.pipe(v.string(), v.description("an absolute directory inside the sandbox (default: the cell dir)")),
    ),
    env: v.optional(v.pipe(v.record(v.string(), v.string()), v.description("variables to set for the job"))),
    limits: v.optional(Limits),
    mode: v.optional(
      v.pipe(v.picklist(SANDBOX_MODES), v.description("sandbox mode (never below the cell's or the MCP ceiling's)")),
    ),
    policy: v.optional(v.pipe(Policy, v.description("a narrowing of the cell's sandbox policy (never a widening)"))),
    backend: v.optional(
      v.pipe(
        SandboxBackend,
        v.description('"vm": the job in its own virtual machine (Linux with KVM; docs/sandbox.md)'),
      ),
    ),
    tty: v.optional(
      v.pipe(TtySize, v.description("give the job a terminal of this size (read its screen with job_output)")),
    ),
    stdin: v.optional(v.pipe(v.string(), v.description("text for the job's standard input, closed after it"))),
    wait_s: v.optional(
      v.pipe(
        v.number(),
        v.minValue(0),
        v.maxValue(600),
        v.description("seconds to wait for the end (default 30; 0: answer at once with the job id)"),
      ),
    ),
  }),
  v.check((a) => (a.command === undefined) !== (a.argv === undefined), "give either command or argv"),
);

const run = tool({
  name: "run",
  title: "Run a command in a sandboxed cell",
  description:
    "Run a command in a planter cell's sandbox (limits, logs, kill, audit). Waits up to wait_s seconds (default 30) and answers its status and the head and tail of its output; a longer job goes on, and job_wait / job_output / job_kill reach it by its id. Give command (a shell line) or argv.",
  input: RunArgs,
  output: v.looseObject({
    job: JobOut,
    done: v.boolean(),
    timed_out: v.boolean(),
    stdout: StreamOut,
    stderr: v.nullable(StreamOut),
    screen: v.nullable(v.array(v.string())),
  }),
  annotations: { destructiveHint: true, openWorldHint: true },
  task: true,
  async run(a, t) {
    const job = await startRun(a, t);
    const { job: now, timed_out } = await waitFor(t, job.id, a.wait_s ?? 30);
    return runResult(t, now, timed_out);
  },
});

/** Start a run's job (and feed its stdin): the job as created. */
export async function startRun(a: v.InferOutput<typeof RunArgs>, t: ToolContext): Promise<Job> {
  const argv = a.argv ?? ["sh", "-c", a.command as string];
  const sandbox = a.mode || a.policy || a.backend ? { mode: a.mode, policy: a.policy, backend: a.backend } : undefined;
  const job = await t.api.call(
    ROUTES.createJob,
    {
      body: {
        cell: a.cell,
        argv,
        cwd: a.cwd,
        env: a.env,
        limits: a.limits,
        sandbox,
        tty: a.tty,
        ...(a.stdin !== undefined && !a.tty ? { stdin: true } : {}),
      },
    },
    t.signal,
  );
  if (a.stdin !== undefined) {
    await t.api.call(
      ROUTES.writeStdin,
      { params: { id: job.id }, body: { data: Buffer.from(a.stdin).toString("base64"), eof: !a.tty } },
      t.signal,
    );
  }
  return job;
}
export { RunArgs };

const jobStatus = tool({
  name: "job_status",
  title: "A job's status",
  description: "A job's state, exit code or end reason, limits, sandbox and times.",
  input: v.strictObject({ job: JobId }),
  output: v.looseObject({ job: JobOut }),
  annotations: { readOnlyHint: true },
  async run(a, t) {
    return json({ job: jobView(await t.api.call(ROUTES.getJob, { params: { id: a.job } }, t.signal)) });
  },
});

const jobList = tool({
  name: "job_list",
  title: "List jobs",
  description: "Jobs, newest first, optionally of one cell or state; next_after pages on.",
  input: v.strictObject({
    cell: CellArg,
    state: v.optional(v.picklist(["pending", "running", "exited", "failed", "killed", "lost"])),
    limit: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(200))),
    after: v.optional(v.pipe(v.string(), v.description("next_after of the previous page"))),
  }),
  output: v.looseObject({ jobs: v.array(JobOut), next_after: v.nullable(v.string()) }),
  annotations: { readOnlyHint: true },
  async run(a, t) {
    const page = await t.api.call(
      ROUTES.listJobs,
      { query: { cell: a.cell, state: a.state, limit: a.limit ?? 50, after: a.after, order: "newest" } },
      t.signal,
    );
    return json({ jobs: page.jobs.map(jobView), next_after: page.next_after });
  },
});

const jobOutput = tool({
  name: "job_output",
  title: "Read a job's output",
  description:
    "Bytes of a job's stdout or stderr from an offset (text when UTF-8, else base64), or with screen=true the current screen of a terminal job. next_offset continues; complete says the job ended and all was read.",
  input: v.strictObject({
    job: JobId,
    stream: v.optional(v.picklist(["stdout", "stderr"])),
    offset: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
    max_bytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1024 * 1024))),
    screen: v.optional(v.boolean()),
  }),
  output: v.looseObject({}),
  annotations: { readOnlyHint: true },
  async run(a, t) {
    if (a.screen) {
      const s = await t.api.call(ROUTES.screen, { params: { id: a.job } }, t.signal);
      return {
        structured: { job: a.job, screen: s.lines, cursor: s.cursor, cols: s.cols, rows: s.rows, source: s.source },
        text: s.lines.join("\n"),
      };
    }
    const stream = a.stream ?? "stdout";
    const c = await chunk(t, a.job, stream, a.offset ?? 0, a.max_bytes ?? 64 * 1024);
    const body = textOrBase64(bytesOf(c));
    const structured = {
      job: a.job,
      stream,
      offset: c.offset,
      next_offset: c.next_offset,
      size: c.size,
      eof: c.eof,
      complete: c.complete,
      ...body,
    };
    const more = c.eof ? "" : `\n[${c.size - c.next_offset} more bytes: offset ${c.next_offset}]`;
    return { structured, text: ("text" in body ? body.text : `(binary, base64) ${body.base64}`) + more };
  },
});

const jobStdin = tool({
  name: "job_stdin",
  title: "Write to a job's input",
  description:
    "Type text into a terminal job, or write it into the input of a job run with stdin; eof=true ends the input. Waits while the job does not read (at most 10 s).",
  input: v.strictObject({
    job: JobId,
    text: v.optional(v.string()),
    base64: v.optional(v.string()),
    eof: v.optional(v.boolean()),
  }),
  output: v.looseObject({ written: v.number(), eof: v.boolean() }),
  annotations: { destructiveHint: false },
  async run(a, t) {
    const data =
      a.text !== undefined ? Buffer.from(a.text).toString("base64") : a.base64 !== undefined ? a.base64 : undefined;
    return json(
      await t.api.call(ROUTES.writeStdin, { params: { id: a.job }, body: { data, eof: a.eof ?? false } }, t.signal),
    );
  },
});

const jobKill = tool({
  name: "job_kill",
  title: "Signal or kill a job",
  description:
    "Send a signal to a job's whole process tree (default TERM, then KILL after the grace period); force=true kills at once.",
  input: v.strictObject({ job: JobId, signal: v.optional(v.picklist(SIGNALS)), force: v.optional(v.boolean()) }),
  output: v.looseObject({ job: JobOut }),
  annotations: { destructiveHint: true, idempotentHint: true },
  async run(a, t) {
    const job = await t.api.call(
      ROUTES.killJob,
      { params: { id: a.job }, body: { signal: a.signal, force: a.force } },
      t.signal,
    );
    return json({ job: jobView(job) });
  },
});

const jobWait = tool({
  name: "job_wait",
  title: "Wait for a job",
  description:
    "Wait up to timeout_s seconds (default 30, at most 600) for a job to end; answers like run (status, head and tail of the output).",
  input: v.strictObject({
    job: JobId,
    timeout_s: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(600))),
  }),
  output: v.looseObject({ job: JobOut, done: v.boolean(), timed_out: v.boolean() }),
  annotations: { readOnlyHint: true },
  async run(a, t) {
    const { job, timed_out } = await waitFor(t, a.job, a.timeout_s ?? 30);
    return runResult(t, job, timed_out);
  },
});

const cellList = tool({
  name: "cell_list",
  title: "List cells",
  description: "The cells (sandboxed workspaces) and their sandbox settings.",
  input: v.strictObject({}),
  output: v.looseObject({ cells: v.array(v.looseObject({ name: v.string(), dir: v.string() })) }),
  annotations: { readOnlyHint: true },
  async run(_a, t) {
    const { cells } = await t.api.call(ROUTES.listCells, {}, t.signal);
    return json({
      cells: cells.map((c) => ({ name: c.name, dir: c.dir, sandbox: c.sandbox, limits: c.limits })),
    });
  },
});

const cellCreate = tool({
  name: "cell_create",
  title: "Create a cell",
  description:
    "Create a cell: a directory its jobs run in, with a sandbox policy (default: its dir writable, no network). Within the MCP ceiling only.",
  input: v.strictObject({
    name: v.pipe(v.string(), v.description("1-63 of a-z 0-9 . _ -")),
    mode: v.optional(v.picklist(SANDBOX_MODES)),
    fs_mode: v.optional(v.picklist(["read_only", "writable"])),
    network: v.optional(Network),
    limits: v.optional(Limits),
  }),
  output: v.looseObject({ cell: v.looseObject({ name: v.string(), dir: v.string() }) }),
  annotations: { destructiveHint: false },
  async run(a, t) {
    const policy = a.fs_mode || a.network ? { fs_mode: a.fs_mode, network: a.network } : undefined;
    const cell = await t.api.call(
      ROUTES.createCell,
      { body: { name: a.name, limits: a.limits, sandbox: a.mode || policy ? { mode: a.mode, policy } : undefined } },
      t.signal,
    );
    return json({ cell: { name: cell.name, dir: cell.dir, sandbox: cell.sandbox, limits: cell.limits } });
  },
});

const fileList = tool({
  name: "file_list",
  title: "List a directory in a cell",
  description:
    'Entries of a directory in a cell (path relative to the cell dir; "." is the cell dir), as the cell\'s jobs see it.',
  input: v.strictObject({ cell: CellArg, path: v.optional(v.string()) }),
  output: v.looseObject({
    path: v.string(),
    entries: v.array(v.object({ name: v.string(), type: v.string(), size: v.number() })),
    truncated: v.boolean(),
  }),
  annotations: { readOnlyHint: true },
  async run(a, t) {
    const path = cellPath(a.path ?? ".", true);
    const r = await inCell(t, a.cell, ["sh", "-c", LIST_SH, "planter-file-list", path]);
    if (r.job.exit_code !== 0) throw fileError(`cannot list ${a.path ?? "."}`, r);
    const most = 10_000;
    const records = r.stdout.toString("utf8").split("\0");
    // Output cut short ends in a partial record: left out.
    if (r.more) records.pop();
    const all = records
      .filter(Boolean)
      .map((line) => {
        const [y = "", size = "0", ...name] = line.split("\t");
        return { name: name.join("\t"), type: KINDS[y] ?? "other", size: Number(size) || 0 };
      })
      .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
    const entries = all.slice(0, most);
    const text = entries.map((e) => `${e.type === "dir" ? `${e.name}/` : e.name}\t${e.type}\t${e.size}`).join("\n");
    const truncated = r.more || all.length > most;
    return {
      structured: { path: a.path ?? ".", entries, truncated },
      text: (text || "(empty)") + (truncated ? "\n[… more entries not listed]" : ""),
    };
  },
});

const fileRead = tool({
  name: "file_read",
  title: "Read a file in a cell",
  description:
    "A file's bytes in a cell (path relative to the cell dir), from offset, at most max_bytes (default 256 KiB, at most 1 MiB): text when UTF-8, else base64. Read as the cell's jobs would.",
  input: v.strictObject({
    cell: CellArg,
    path: v.string(),
    offset: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
    max_bytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1024 * 1024))),
  }),
  output: v.looseObject({
    path: v.string(),
    size: v.number(),
    offset: v.number(),
    bytes: v.number(),
    eof: v.boolean(),
  }),
  annotations: { readOnlyHint: true },
  async run(a, t) {
    const path = cellPath(a.path);
    const offset = a.offset ?? 0;
    const max = a.max_bytes ?? 256 * 1024;
    const r = await inCell(t, a.cell, [
      "sh",
      "-c",
      READ_SH,
      "planter-file-read",
      path,
      String(offset + 1),
      String(max),
    ]);
    if (r.job.exit_code !== 0) throw fileError(`cannot read ${a.path}`, r);
    const size = Number(r.stderr.split("\n")[0]?.trim());
    const body = textOrBase64(r.stdout);
    const eof = offset + r.stdout.length >= size;
    const structured = { path: a.path, size, offset, bytes: r.stdout.length, eof, ...body };
    const more = eof ? "" : `\n[${size - offset - r.stdout.length} more bytes: offset ${offset + r.stdout.length}]`;
    return { structured, text: ("text" in body ? body.text : `(binary, base64) ${body.base64}`) + more };
  },
});

const fileWrite = tool({
  name: "file_write",
  title: "Write a file in a cell",
  description:
    "Write (or append to) a file in a cell (path relative to the cell dir), as the cell's jobs would: refused where the sandbox makes it read-only. make_dirs creates missing parent directories.",
  input: v.pipe(
    v.strictObject({
      cell: CellArg,
      path: v.string(),
      text: v.optional(v.pipe(v.string(), v.maxLength(8 * 1024 * 1024))),
      base64: v.optional(v.pipe(v.string(), v.maxLength(11 * 1024 * 1024))),
      append: v.optional(v.boolean()),
      make_dirs: v.optional(v.boolean()),
    }),
    v.check((a) => (a.text === undefined) !== (a.base64 === undefined), "give either text or base64"),
  ),
  output: v.looseObject({ path: v.string(), bytes: v.number(), append: v.boolean() }),
  annotations: { destructiveHint: true },
  async run(a, t) {
    const path = cellPath(a.path);
    const data = a.text !== undefined ? Buffer.from(a.text) : Buffer.from(a.base64 as string, "base64");
    const r = await inCell(
      t,
      a.cell,
      ["sh", "-c", WRITE_SH, "planter-file-write", path, a.append ? "append" : "replace", a.make_dirs ? "1" : "0"],
      data,
    );
    if (r.job.exit_code !== 0) throw fileError(`cannot write ${a.path}`, r);
    return json({ path: a.path, bytes: data.length, append: a.append ?? false });
  },
});

const events = tool({
  name: "events",
  title: "Events since a cursor",
  description:
    "planter's audit events after a cursor (none: from the oldest kept), at most limit (default 100); kind filters (job, job.ended, net.connect, …), subject one thing (job/ID). next_cursor continues.",
  input: v.strictObject({
    cursor: v.optional(v.string()),
    limit: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
    kind: v.optional(v.array(v.string())),
    subject: v.optional(v.string()),
  }),
  output: v.looseObject({ events: v.array(v.looseObject({ cursor: v.string(), kind: v.string() })) }),
  annotations: { readOnlyHint: true },
  async run(a, t) {
    const limit = a.limit ?? 100;
    const list = await t.api.lines(
      ROUTES.events,
      { query: { cursor: a.cursor, limit, kind: a.kind, subject: a.subject } },
      t.signal,
      limit,
    );
    const next = list.length ? (list[list.length - 1] as { cursor: string }).cursor : (a.cursor ?? null);
    return json({ events: list, next_cursor: next });
  },
});

export const TOOLS: Tool[] = [
  run,
  jobStatus,
  jobList,
  jobOutput,
  jobStdin,
  jobKill,
  jobWait,
  cellList,
  cellCreate,
  fileList,
  fileRead,
  fileWrite,
  events,
];
