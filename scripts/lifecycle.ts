#!/usr/bin/env bun
/** Lifecycle client: `planter cell …`, `planter run`, `planter job …`, `planter events`. */
import { resolve as resolvePath } from "node:path";
import { defineCommand } from "citty";
import { type Cell, type Job, passthroughCode } from "../lib/api/contract.ts";
import { EXIT, PlanterError } from "../lib/api/errors.ts";
import type { FrameEvent } from "../lib/api/frames.ts";
import type { ByteStream } from "../lib/api/stream.ts";
import {
  afterDashes,
  client,
  clientArgs,
  envPairs,
  jsonArg,
  parseCount,
  parseDuration,
  rawArg,
  repeated,
  usage,
} from "../lib/cli/args.ts";
import { examples } from "../lib/cli/help.ts";
import { allowRest, runCli } from "../lib/cli/main.ts";
import {
  age,
  dim,
  onOutputGone,
  outcome,
  printable as p,
  print,
  printJson,
  shellLine,
  table,
  write,
} from "../lib/cli/output.ts";
import { pathForTarget } from "../lib/cli/target.ts";
import { isTerminal } from "../lib/cli/tty.ts";
import { formatBytes, limitArgs, limitsFromArgs, limitsLine, limitText } from "../lib/cli/units.ts";
import { copyLog, jobOutput, olderDaemon, runFrames } from "../lib/logs/follow.ts";
import { readPolicyFile } from "../lib/sandbox/policy.ts";

const common = {
  ...clientArgs,
  ...jsonArg,
  verbose: { type: "boolean", description: "print stacks with errors" },
} as const;

function cellLines(c: Cell): string {
  const env = Object.entries(c.env).map(([k, v]) => `${k}=${v}`);
  return [
    `name:     ${c.name}`,
    `dir:      ${c.dir}`,
    `created:  ${c.created_at}`,
    `jobs:     ${c.jobs.running} running, ${c.jobs.total} in all`,
    `env:      ${env.length ? env.join(" ") : "-"}`,
    `limits:   ${limitsLine(c.limits)}`,
    `sandbox:  ${c.sandbox.mode ?? "(daemon default)"}`,
  ]
    .map((line, i) => p(line) + (i === 1 && c.managed ? dim(" (managed by planter)") : ""))
    .join("\n");
}

const cellCreate = defineCommand({
  meta: {
    name: "create",
    description: "Create a cell: a named working directory with default env, limits and sandbox mode for its jobs",
  },
  args: {
    name: {
      type: "positional",
      description: "cell name: 1-63 of a-z 0-9 . _ - starting with a letter or digit",
      required: true,
    },
    dir: {
      type: "string",
      description: "use this existing directory instead of one under the state dir (never deleted by planter)",
      valueHint: "DIR",
    },
    env: {
      type: "string",
      alias: "e",
      description: "default environment for the cell's jobs, repeatable",
      valueHint: "NAME=VALUE",
    },
    sandbox: {
      type: "enum",
      options: ["disabled", "permissive", "enforced"],
      description: "sandbox mode for the cell's jobs",
    },
    policy: {
      type: "string",
      description: 'sandbox policy file for the cell\'s jobs (JSON, or .toml; see README "Sandbox")',
      valueHint: "FILE",
    },
    "request-ref": {
      type: "string",
      description: "idempotency key: repeating the same request returns the first result",
      valueHint: "REF",
    },
    ...limitArgs,
    ...common,
  },
  async run({ args, rawArgs }) {
    const api = client(args);
    const body: Record<string, unknown> = { name: args.name };
    if (args.dir) body.dir = await pathForTarget(args, resolvePath(args.dir), "--dir");
    const env = envPairs(repeated(rawArgs, "env", "e"));
    if (env) body.env = env;
    const limits = limitsFromArgs(args);
    if (limits) body.limits = limits;
    if (args.sandbox || args.policy) {
      body.sandbox = {
        ...(args.sandbox ? { mode: args.sandbox } : {}),
        ...(args.policy ? { policy: readPolicyFile(args.policy) } : {}),
      };
    }
    if (args["request-ref"]) body.request_ref = args["request-ref"];
    const cell = await api.createCell(body);
    if (args.json) printJson(cell);
    else print(`created cell ${p(cell.name)} at ${p(cell.dir)}`);
    return 0;
  },
});

const cellLs = defineCommand({
  meta: { name: "ls", description: "List cells" },
  args: { ...common },
  async run({ args }) {
    const { cells } = await client(args).listCells();
    if (args.json) printJson(cells);
    else
      print(
        table(
          ["NAME", "RUNNING", "JOBS", "DIR"],
          cells.map((c) => [c.name, String(c.jobs.running), String(c.jobs.total), c.dir]),
        ),
      );
    return 0;
  },
});

const cellShow = defineCommand({
  meta: { name: "show", description: "Show one cell" },
  args: { name: { type: "positional", description: "cell name", required: true }, ...common },
  async run({ args }) {
    const cell = await client(args).getCell(args.name);
    if (args.json) printJson(cell);
    else print(cellLines(cell));
    return 0;
  },
});

const cellRm = defineCommand({
  meta: {
    name: "rm",
    description:
      "Remove a cell with its jobs and their logs (and its directory when planter made it). Refuses while jobs run unless --force",
  },
  args: {
    name: { type: "positional", description: "cell name", required: true },
    force: { type: "boolean", alias: "f", description: "kill the cell's running jobs (SIGKILL) first" },
    ...common,
  },
  async run({ args }) {
    const r = await client(args).removeCell(args.name, Boolean(args.force));
    if (args.json) printJson(r);
    else print(`removed cell ${p(r.removed)} (${p(r.jobs_removed)} job(s))`);
    return 0;
  },
});

export const cell = defineCommand({
  meta: { name: "cell", description: "Manage cells (create, ls, show, rm)" },
  args: clientArgs,
  subCommands: { create: cellCreate, ls: cellLs, show: cellShow, rm: cellRm },
});

export const run = defineCommand({
  meta: {
    name: "run",
    description:
      "Run a command as a job. Streams its stdout and stderr and exits with its exit code (128+N when killed by signal N); " +
      "Ctrl-C sends SIGINT to the job, a second Ctrl-C kills it; SIGTERM, SIGHUP (a closed terminal) and SIGQUIT (Ctrl-\\) are sent on to the job. With --detach, prints the job id and returns at once.",
  },
  args: {
    cell: { type: "string", alias: "c", description: "cell to run in (default: the default cell)", valueHint: "NAME" },
    env: {
      type: "string",
      alias: "e",
      description: "set an environment variable, repeatable (the job does not inherit yours)",
      valueHint: "NAME=VALUE",
    },
    cwd: { type: "string", description: "working directory (default: the cell's directory)", valueHint: "DIR" },
    detach: { type: "boolean", alias: "d", description: "print the job id and return without waiting" },
    ...rawArg,
    sandbox: {
      type: "enum",
      options: ["disabled", "permissive", "enforced"],
      description: "sandbox mode for this job",
    },
    policy: {
      type: "string",
      description: "narrow the cell's sandbox policy for this job with a policy file (never widen it)",
      valueHint: "FILE",
    },
    "request-ref": {
      type: "string",
      description: "idempotency key: repeating the same request returns the first job",
      valueHint: "REF",
    },
    ...limitArgs,
    ...common,
  },
  async run({ args, rawArgs }) {
    const argv = afterDashes(rawArgs) ?? (args._ as string[]);
    if (!argv.length) throw usage("nothing to run", "planter run [options] -- COMMAND [ARGS…]");
    if (args.json && !args.detach)
      throw usage("--json goes with --detach (the job's own output is on stdout otherwise)");
    const api = client(args);
    const body: Record<string, unknown> = { argv };
    const limits = limitsFromArgs(args);
    if (limits) body.limits = limits;
    if (args.cell) body.cell = args.cell;
    const env = envPairs(repeated(rawArgs, "env", "e"));
    if (env) body.env = env;
    if (args.cwd) body.cwd = await pathForTarget(args, resolvePath(args.cwd), "--cwd");
    if (args.sandbox || args.policy) {
      body.sandbox = {
        ...(args.sandbox ? { mode: args.sandbox } : {}),
        ...(args.policy ? { policy: readPolicyFile(args.policy) } : {}),
      };
    }
    if (args["request-ref"]) body.request_ref = args["request-ref"];
    if (args.detach) return printDetached(warnFallback(await api.createJob(body)), Boolean(args.json));
    // From before the job exists: a Ctrl-C, SIGTERM, SIGHUP or SIGQUIT with the default action
    // would end planter and leave the job running.
    const proxy = new SignalProxy(api);
    proxy.listen();
    let stream: ByteStream | null = null;
    try {
      // One request: the job, its output and its end (lib/api/frames.ts).
      stream = await api.runJob(body).catch((e) => {
        if (olderDaemon(e)) return null;
        throw e;
      });
      if (!stream) {
        const job = warnFallback(await api.createJob(body));
        proxy.attach(job.id);
        return await Promise.race([attach(api, job, Boolean(args.raw)), proxy.closed.then(() => proxy.ended())]);
      }
      const frames = runFrames(api, stream);
      const first = (await frames.next()).value;
      if (first?.kind !== "job")
        throw new PlanterError("E_INTERNAL", "planterd's run stream did not begin with the job");
      const job = warnFallback(first.job);
      proxy.attach(job.id);
      // Output that is gone (a closed terminal, a reader that left) is not waited for: the job's
      // end gives the code.
      return await Promise.race([attached(job, frames, Boolean(args.raw)), proxy.closed.then(() => proxy.ended())]);
    } finally {
      stream?.close();
      proxy.stop();
    }
  },
});
allowRest(run);
examples(run, [
  "planter run -- make test",
  "planter run --cell build --timeout 30m --max-rss 2G -- make test",
  "planter run -d --env TOKEN=x -- ./long-task.sh   # prints the job id; see `planter logs -f ID`",
]);

/** A permissive job that fell back to no sandbox is said at once, on stderr, not only in its status. */
function warnFallback(job: Job): Job {
  if (job.sandbox.fallback) {
    write(
      2,
      `planter: warning: job ${p(job.id)} runs WITHOUT a sandbox (mode permissive, no sandbox backend works here); run \`planter doctor\`\n`,
    );
  }
  return job;
}

function printDetached(job: Job, json: boolean): number {
  if (json) printJson(job);
  else print(p(job.id));
  return 0;
}

/** Signals `planter run` passes on to its job while it waits for it. */
const PROXIED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const;

/**
 * Signals while `planter run` waits (docker's sig-proxy): the first Ctrl-C sends SIGINT to the job,
 * the next kills it; SIGTERM, SIGHUP (a closed terminal) and SIGQUIT go on to the job as they are, once each,
 * so it never runs on unattended (planterd's grace ends it if it ignores them). Signals that come before
 * the job id is known wait for it.
 */
class SignalProxy {
  private interrupts = 0;
  private id: string | null = null;
  private pending: NodeJS.Signals[] = [];
  private requests: Promise<unknown>[] = [];
  private forwarded = new Set<NodeJS.Signals>();
  private hangUp = () => {};
  /** Settles when the output is gone: SIGHUP on a terminal, or a write that failed. */
  readonly closed = new Promise<void>((resolve) => {
    this.hangUp = resolve;
  });
  private readonly handler = (sig: NodeJS.Signals) => {
    // A hung-up terminal: writes there fail (EIO), and nobody would read them.
    if (sig === "SIGHUP" && (isTerminal(1) || isTerminal(2))) this.hangUp();
    this.pending.push(sig);
    this.flush();
  };
  /**
   * The output's reader is gone (EPIPE: `| head` stopped reading; EIO: a closed terminal): as for
   * a closed terminal, the job gets SIGHUP (once) rather than running on with nobody attached.
   */
  private readonly outputError = () => {
    this.hangUp();
    this.handler("SIGHUP");
  };

  constructor(private readonly api: ReturnType<typeof client>) {}

  /** Take the signals from now on: one handler for the whole command, never a moment with the default action. */
  listen(): void {
    for (const sig of PROXIED) process.on(sig, this.handler);
    // Kept after stop(): a write still pending when planter exits fails quietly.
    onOutputGone(this.outputError);
  }

  stop(): void {
    for (const sig of PROXIED) process.off(sig, this.handler);
  }

  attach(id: string): void {
    this.id = id;
    this.flush();
  }

  private flush(): void {
    if (!this.id) return;
    for (const sig of this.pending.splice(0)) {
      const name = sig.slice(3);
      let body: { signal?: string; force?: boolean } = { signal: name };
      let note = `\nplanter: received ${sig}: sending it to job ${p(this.id)}\n`;
      // A closed terminal may send SIGHUP twice (the kernel, then the shell): the job gets each once.
      if (sig !== "SIGINT" && this.forwarded.has(sig)) continue;
      this.forwarded.add(sig);
      if (sig === "SIGINT") {
        if (++this.interrupts > 2) continue;
        const first = this.interrupts === 1;
        if (!first) body = { force: true };
        note = `\nplanter: ${first ? "sending SIGINT to" : "killing"} job ${p(this.id)}${first ? " (Ctrl-C again to kill)" : ""}\n`;
      }
      // After SIGHUP the terminal is gone: nothing to tell, and a write there may fail.
      if (sig !== "SIGHUP") write(2, note);
      this.requests.push(this.api.killJob(this.id, body).catch(() => undefined));
    }
  }

  /** The job's exit code once it has ended, after every signal passed on has reached planterd. */
  async ended(): Promise<number> {
    await Promise.all(this.requests);
    for (;;) {
      const r = await this.api.waitJob(this.id as string, 60_000);
      if (!r.timed_out) return passthroughCode(r.job);
    }
  }
}

/** A job that could not start is an error, with the job's code as the exit code. */
function checkStarted(job: Job): void {
  if (job.state === "failed" && job.reason !== "exited") {
    throw new PlanterError("E_BAD_REQUEST", `job ${job.id} could not start (${job.reason}): ${job.message}`, {
      hint:
        job.reason === "sandbox_error" ? "see `planter sandbox check`, or run with --sandbox permissive" : undefined,
    }).withExit(passthroughCode(job));
  }
}

/**
 * Copy an attached run's output frames until the job's final record; returns the job's exit
 * code. On a terminal the output goes through a TerminalFilter (README "Use") unless `raw`.
 */
async function attached(job: Job, frames: AsyncGenerator<FrameEvent>, raw: boolean): Promise<number> {
  checkStarted(job);
  const out = jobOutput(1, raw);
  const err = jobOutput(2, raw);
  for await (const f of frames) {
    if (f.kind !== "job") await (f.kind === "stdout" ? out : err).write(f.data);
    else {
      await Promise.all([out.end(), err.end()]);
      return ended(f.job);
    }
  }
  throw new PlanterError("E_INTERNAL", `planterd's run stream of job ${job.id} ended without the job's end`);
}

/**
 * Stream a job's output with JSON chunks (a planterd without attached runs) until it ends;
 * returns the job's exit code.
 */
async function attach(api: ReturnType<typeof client>, job: Job, raw: boolean): Promise<number> {
  checkStarted(job);
  const out = jobOutput(1, raw);
  const err = jobOutput(2, raw);
  await Promise.all([
    copyLog(api, job.id, "stdout", 0, out.write, { follow: true }).then(out.end),
    copyLog(api, job.id, "stderr", 0, err.write, { follow: true }).then(err.end),
  ]);
  return ended(await api.getJob(job.id));
}

/** Say how a job that planter stopped or that could not run ended; returns its exit code. */
function ended(done: Job): number {
  if (done.state === "failed" && done.reason !== "exited")
    write(2, `planter: job ${p(done.id)} ${p(outcome(done))}: ${p(done.message)}\n`);
  else if (done.state === "killed" || done.state === "lost") {
    const limit = limitText(done);
    write(2, `planter: job ${p(done.id)} ${p(outcome(done))}${limit ? ` — ${p(limit)}` : ""}\n`);
  }
  for (const f of done.workspace) {
    if (f.kind === "review-incomplete")
      write(
        2,
        `planter: warning: the workspace review after job ${p(done.id)} was INCOMPLETE in ${p(f.path)}; see \`planter job status ${p(done.id)}\`\n`,
      );
  }
  if (done.log_truncated) {
    const max = done.limits.max_log_bytes ?? 0;
    write(
      2,
      `planter: job ${p(done.id)} wrote more than its log quota; its stored log keeps the first ${formatBytes(max)}\n`,
    );
  }
  return passthroughCode(done);
}

function policyLine(p: NonNullable<Job["sandbox"]["policy"]>): string {
  const parts = [`fs ${p.fs_mode}`, `network ${p.network}`];
  if (p.read_write.length) parts.push(`rw ${p.read_write.join(",")}`);
  if (p.read_only.length) parts.push(`ro ${p.read_only.join(",")}`);
  if (p.deny.length) parts.push(`deny ${p.deny.join(",")}`);
  if (p.unix_sockets?.length) parts.push(`unix sockets ${p.unix_sockets.join(",")}`);
  if (p.workspace_config === "allow") parts.push("workspace config allowed");
  if (p.env.pass.length) parts.push(`env pass ${p.env.pass.join(",")}`);
  return parts.join(", ");
}

function jobLines(j: Job): string {
  const limit = limitText(j);
  return [
    `id:        ${j.id}`,
    `cell:      ${j.cell}`,
    `command:   ${shellLine(j.argv)}`,
    `cwd:       ${j.cwd}`,
    `state:     ${outcome(j)}`,
    `reason:    ${limit && j.state === "killed" ? limit : (j.reason ?? "-")}`,
    `exit code: ${j.exit_code ?? "-"}${j.signal ? ` (signal ${j.signal})` : ""}`,
    ...(j.message ? [`message:   ${j.message}`] : []),
    `pid:       ${j.pid ?? "-"}`,
    `created:   ${j.created_at}`,
    `started:   ${j.started_at ?? "-"}`,
    `finished:  ${j.finished_at ?? "-"}`,
    `sandbox:   ${j.sandbox.mode} (backend ${j.sandbox.backend}${j.sandbox.fallback ? ", fell back to no sandbox" : ""})`,
    ...(j.sandbox.policy ? [`policy:    ${policyLine(j.sandbox.policy)}`] : []),
    ...(j.run_as
      ? [`run as:    ${j.run_as.user ?? "-"} (uid ${j.run_as.uid ?? "-"}, gid ${j.run_as.gid ?? "-"})`]
      : []),
    ...j.workspace.map((f) =>
      f.kind === "review-incomplete"
        ? `review:    INCOMPLETE in ${f.path}: ${f.detail}`
        : f.kind === "more-set-aside"
          ? `set aside: in ${f.path}: ${f.detail}`
          : `set aside: ${f.path} (${f.kind}: ${f.detail}) → ${f.saved_as}${f.restored ? ", earlier version restored" : ""}`,
    ),
    `limits:    ${limitsLine(j.limits)}${j.enforcement && Object.keys(j.limits).length ? ` (enforced by ${j.enforcement})` : ""}`,
    ...(j.log_truncated
      ? [
          `log:       truncated: the job wrote more than ${formatBytes(j.limits.max_log_bytes ?? 0)}; the first are kept`,
        ]
      : []),
    ...(j.kill ? [`kill:      SIG${j.kill.signal}${j.kill.force ? " (forced)" : ""} at ${j.kill.requested_at}`] : []),
    ...(j.request_ref ? [`request:   ${j.request_ref}`] : []),
  ]
    .map(p)
    .join("\n");
}

/** How many jobs `planter job ls` shows people when neither --limit nor --all is given. */
export const LS_DEFAULT = 50;

/** Every job (`latest` null), or the latest N shown oldest first, and whether older ones were left out. */
async function listLatest(
  api: ReturnType<typeof client>,
  filter: { cell?: string; state?: string },
  latest: number | null,
): Promise<{ jobs: Job[]; leftOut: boolean }> {
  const jobs: Job[] = [];
  let leftOut = false;
  let after: string | undefined;
  if (latest === null) {
    for (;;) {
      const page = await api.listJobs({ ...filter, limit: 1000, after });
      jobs.push(...page.jobs);
      if (!page.next_after) break;
      after = page.next_after;
    }
    return { jobs, leftOut };
  }
  // The latest N: newest first from planterd (one request up to 1000), shown oldest first.
  while (jobs.length < latest) {
    const page = await api.listJobs({ ...filter, limit: Math.min(1000, latest - jobs.length), after, order: "newest" });
    jobs.push(...page.jobs);
    leftOut = page.next_after !== null;
    if (!page.next_after) break;
    after = page.next_after;
  }
  return { jobs: jobs.reverse(), leftOut };
}

const jobLs = defineCommand({
  meta: {
    name: "ls",
    description:
      `List jobs, oldest first (the newest last). For people: the latest ${LS_DEFAULT} (--limit N: the latest N, --all: every job), ` +
      "saying on stderr when older ones are left out. --json lists every job unless --limit N is given, as it always has",
  },
  args: {
    cell: { type: "string", alias: "c", description: "only this cell's jobs", valueHint: "NAME" },
    state: {
      type: "enum",
      options: ["pending", "running", "exited", "failed", "killed", "lost"],
      description: "only jobs in this state",
    },
    limit: {
      type: "string",
      description: `the latest N jobs (default: ${LS_DEFAULT}; with --json: every job)`,
      valueHint: "N",
    },
    all: { type: "boolean", description: "every job (the default with --json)" },
    ...common,
  },
  async run({ args }) {
    if (args.all && args.limit !== undefined) throw usage("--all and --limit exclude each other");
    // Scripts read --json as the whole list (an array has no room to say rows were left out).
    const latest =
      args.limit !== undefined ? parseCount(args.limit, "--limit") : args.all || args.json ? null : LS_DEFAULT;
    const { jobs, leftOut } = await listLatest(client(args), { cell: args.cell, state: args.state }, latest);
    if (args.json) printJson(jobs);
    else {
      print(
        table(
          ["ID", "CELL", "STATE", "AGE", "COMMAND"],
          jobs.map((j) => [j.id, j.cell, outcome(j), age(j.created_at), shellLine(j.argv)]),
        ),
      );
      if (leftOut) {
        const which = args.cell || args.state ? "matching jobs" : "jobs";
        write(
          2,
          `planter: the latest ${jobs.length} ${which} are shown, older ones are left out: --all lists every job, --limit N the latest N\n`,
        );
      }
    }
    return 0;
  },
});

const jobStatus = defineCommand({
  meta: {
    name: "status",
    description:
      "Show a job: state, exit code or reason (with the limit and the value observed when a limit stopped it), pid, sandbox, limits and how they are enforced",
  },
  args: { id: { type: "positional", description: "job id", required: true }, ...common },
  async run({ args }) {
    const job = await client(args).getJob(args.id);
    if (args.json) printJson(job);
    else print(jobLines(job));
    return 0;
  },
});

const jobKill = defineCommand({
  meta: {
    name: "kill",
    description: "Stop a job's whole process tree: SIGTERM, then SIGKILL after the grace period (--force: SIGKILL now)",
  },
  args: {
    id: { type: "positional", description: "job id", required: true },
    signal: {
      type: "enum",
      alias: "s",
      options: ["TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2"],
      description: "signal to send (default TERM)",
    },
    force: { type: "boolean", alias: "f", description: "SIGKILL at once" },
    ...common,
  },
  async run({ args }) {
    const job = await client(args).killJob(args.id, { signal: args.signal, force: args.force || undefined });
    if (args.json) printJson(job);
    else print(`sent SIG${args.force ? "KILL" : (args.signal ?? "TERM")} to job ${p(job.id)}`);
    return 0;
  },
});

const jobWait = defineCommand({
  meta: {
    name: "wait",
    description: "Wait for a job to end and exit with its exit code (124 if --timeout passes first)",
  },
  args: {
    id: { type: "positional", description: "job id", required: true },
    timeout: {
      type: "string",
      alias: "t",
      description: "give up after this long: 500ms, 30s, 5m (default: wait forever)",
      valueHint: "DURATION",
    },
    ...common,
  },
  async run({ args }) {
    const api = client(args);
    const deadline =
      args.timeout === undefined ? Number.POSITIVE_INFINITY : Date.now() + parseDuration(args.timeout, "--timeout");
    for (;;) {
      const left = Math.max(0, Math.min(60_000, deadline - Date.now()));
      const r = await api.waitJob(args.id, left);
      if (!r.timed_out || Date.now() >= deadline) {
        if (args.json) printJson(r);
        else if (r.timed_out)
          write(2, `planter: job ${p(r.job.id)} is still ${p(r.job.state)} after ${args.timeout}\n`);
        else print(`job ${p(r.job.id)} ${p(outcome(r.job))}`);
        return r.timed_out ? EXIT.waitTimeout : passthroughCode(r.job);
      }
    }
  },
});

const jobRm = defineCommand({
  meta: { name: "rm", description: "Remove a finished job and its logs" },
  args: { id: { type: "positional", description: "job id", required: true }, ...common },
  async run({ args }) {
    const r = await client(args).removeJob(args.id);
    if (args.json) printJson(r);
    else print(`removed job ${p(r.removed)}`);
    return 0;
  },
});

export const job = defineCommand({
  meta: { name: "job", description: "Inspect and control jobs (ls, status, kill, wait, rm)" },
  args: clientArgs,
  subCommands: { ls: jobLs, status: jobStatus, kill: jobKill, wait: jobWait, rm: jobRm },
});

export const events = defineCommand({
  meta: {
    name: "events",
    description: "Print planterd's events (every change of a cell or job). Resume with --cursor; -f keeps following",
  },
  args: {
    cursor: {
      type: "string",
      description: "print events after this cursor (from an earlier event)",
      valueHint: "CURSOR",
    },
    follow: { type: "boolean", alias: "f", description: "keep printing new events as they happen" },
    ...common,
  },
  async run({ args }) {
    const api = client(args);
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    let cursor = args.cursor;
    try {
      for (;;) {
        let n = 0;
        for await (const e of api.events({ cursor, follow: args.follow ? 1 : undefined, limit: 1000 }, stop.signal)) {
          n++;
          cursor = e.cursor;
          if (args.json) write(1, `${JSON.stringify(e)}\n`);
          else
            write(
              1,
              `${p(e.cursor)}  ${p(e.at)}  ${p(e.kind).padEnd(18)} ${p(e.subject)}  ${dim(p(JSON.stringify(e.data)))}\n`,
            );
        }
        if (args.follow || n < 1000) return 0;
      }
    } catch (e) {
      if (stop.signal.aborted) return 0;
      throw e;
    }
  },
});

if (import.meta.main) {
  const root = defineCommand({ meta: { name: "planter" }, args: clientArgs, subCommands: { cell, run, job, events } });
  await runCli(root, process.argv.slice(2), "planter");
}
