/** `planter job ls|status|kill|wait|rm|stdin`. */
import { defineCommand } from "citty";
import * as v from "valibot";
import { type Job, type JobState, NetConnect, passthroughCode } from "../../api/contract.ts";
import { EXIT, PlanterError } from "../../api/errors.ts";
import { describeNetwork } from "../../net/policy.ts";
import { client, clientArgs, parseCount, parseDuration, usage } from "../args.ts";
import { targetsArg } from "../client-config.ts";
import { examples } from "../help.ts";
import { eachTarget, errorsJson, reportFailures, targetsOf } from "../multi.ts";
import { age, outcome, printable as p, print, printJson, shellLine, table, write } from "../output.ts";
import { STDIN_CHUNK, sendStdin } from "../stdin.ts";
import { formatBytes, formatDuration, limitsLine, limitText } from "../units.ts";
import { common, olderDaemon } from "./common.ts";

function policyLine(p: NonNullable<Job["sandbox"]["policy"]>): string {
  const parts = [`fs ${p.fs_mode}`, `network ${describeNetwork(p.network)}`];
  if (p.read_write.length) parts.push(`rw ${p.read_write.join(",")}`);
  if (p.read_only.length) parts.push(`ro ${p.read_only.join(",")}`);
  if (p.deny.length) parts.push(`deny ${p.deny.join(",")}`);
  if (p.unix_sockets?.length) parts.push(`unix sockets ${p.unix_sockets.join(",")}`);
  if (p.workspace_config === "allow") parts.push("workspace config allowed");
  if (p.env.pass.length) parts.push(`env pass ${p.env.pass.join(",")}`);
  return parts.join(", ");
}

/** A job's terminal or stdin pipe, when it has one. */
function inputLines(j: Job): string[] {
  if (j.tty) {
    const clients = j.tty.clients === undefined ? "" : `, ${j.tty.clients} attached`;
    return [`terminal:  ${j.tty.cols}x${j.tty.rows}${clients}`];
  }
  return j.stdin ? [`stdin:     ${j.stdin.open ? "open" : "closed"}`] : [];
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
    ...inputLines(j),
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
  filter: { cell?: string; state?: JobState },
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

/**
 * `job ls` over several targets: each target's jobs (the latest N of each, or all), merged oldest
 * first, each row with its target; a failed target is said on stderr (--json: under `errors`) and
 * the exit code is 5 (or the failure's own when no target answered).
 */
async function lsTargets(
  targets: string[],
  filter: { cell?: string; state?: JobState },
  latest: number | null,
  json: boolean,
): Promise<number> {
  const results = await eachTarget(targets, (c) => listLatest(c, filter, latest));
  const rows = results
    .flatMap((r) => (r.ok ? r.value.jobs.map((j) => ({ target: r.target, ...j })) : []))
    .sort((a, b) => a.created_at.localeCompare(b.created_at) || a.target.localeCompare(b.target));
  if (json) printJson({ jobs: rows, errors: errorsJson(results) });
  else {
    print(
      table(
        ["TARGET", "ID", "CELL", "STATE", "AGE", "COMMAND"],
        rows.map((j) => [j.target, j.id, j.cell, outcome(j), age(j.created_at), shellLine(j.argv)]),
      ),
    );
    const cut = results.filter((r) => r.ok && r.value.leftOut).map((r) => r.target);
    if (cut.length)
      write(
        2,
        `planter: older jobs of ${cut.join(", ")} are left out: --all lists every job, --limit N the latest N\n`,
      );
  }
  return reportFailures(results);
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
    ...targetsArg,
  },
  async run({ args }) {
    if (args.all && args.limit !== undefined) throw usage("--all and --limit exclude each other");
    // Scripts read --json as the whole list (an array has no room to say rows were left out).
    const latest =
      args.limit !== undefined ? parseCount(args.limit, "--limit") : args.all || args.json ? null : LS_DEFAULT;
    const filter = { cell: args.cell, state: args.state };
    const many = targetsOf(args);
    if (many) return lsTargets(many, filter, latest, Boolean(args.json));
    const { jobs, leftOut } = await listLatest(client(args), filter, latest);
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

/** One connection of `planter job net`: its event's data with the event's time. */
export type Connection = NetConnect & { at: string };

/** A job's connections from its `net.connect` events, oldest first, and whether older events were pruned. */
async function connectionsOf(
  api: ReturnType<typeof client>,
  job: Job,
): Promise<{ connections: Connection[]; skipped: number; complete: boolean }> {
  const connections: Connection[] = [];
  let skipped = 0;
  let cursor: string | undefined;
  const page = 10_000;
  for (;;) {
    let n = 0;
    for await (const e of api.events({ cursor, limit: page, kind: ["net.connect"], subject: `job/${job.id}` })) {
      n++;
      cursor = e.cursor;
      const r = v.safeParse(NetConnect, e.data);
      if (r.success) connections.push({ at: e.at, ...r.output });
      else skipped++;
    }
    if (n < page) break;
  }
  // Retention prunes the oldest events: one newer than the job's creation means some may be gone.
  let oldest: string | undefined;
  for await (const e of api.events({ limit: 1 })) oldest = e.at;
  const complete = oldest === undefined || Date.parse(oldest) <= Date.parse(job.created_at);
  return { connections, skipped, complete };
}

/** `host:port`, with an IPv6 address in brackets; `-` when the request named none. */
const destination = (c: Connection) =>
  c.host ? `${c.host.includes(":") ? `[${c.host}]` : c.host}:${c.port}` : (c.address ?? "-");

/** When a connection began (its event is written when it ends). */
const began = (c: Connection) => Date.parse(c.at) - c.duration_ms;

/** The table of `planter job net`, with its summary line. */
export function connectionTable(connections: Connection[]): string {
  const rows = [...connections].sort((a, b) => began(a) - began(b));
  const errors = rows.some((c) => c.error);
  const header = [
    "TIME (UTC)",
    "DECISION",
    "DESTINATION",
    "RULE",
    "OUT",
    "IN",
    "DURATION",
    ...(errors ? ["NOTE"] : []),
  ];
  const cells = rows.map((c) => [
    new Date(began(c)).toISOString().slice(11, 19),
    c.decision,
    destination(c),
    c.rule,
    formatBytes(c.bytes_out),
    formatBytes(c.bytes_in),
    formatDuration(c.duration_ms),
    ...(errors ? [c.error ?? "-"] : []),
  ]);
  return `${table(header, cells)}\n${netSummary(connections)}`;
}

/** "3 connections: 2 allowed (1 failed), 1 denied". */
export function netSummary(connections: Connection[]): string {
  const allowed = connections.filter((c) => c.decision === "allow");
  const failed = allowed.filter((c) => c.error).length;
  const n = connections.length;
  return `${n} connection${n === 1 ? "" : "s"}: ${allowed.length} allowed${failed ? ` (${failed} failed)` : ""}, ${n - allowed.length} denied`;
}

/** Why a job with no recorded connection has none, from its network. */
function noneRecorded(j: Job): string {
  const net = j.sandbox.policy?.network;
  const why =
    j.sandbox.policy === null || j.sandbox.backend === "none"
      ? "it ran without a sandbox, so its connections do not go through planter's proxy"
      : net === "none"
        ? "its network is none: it could reach nothing"
        : net === "host"
          ? "it has the host's network: only jobs with an allow list go through planter's proxy, which records them"
          : j.state === "running" || j.state === "pending"
            ? "none has ended yet (a connection is recorded when it ends)"
            : "it made none";
  return `no connections recorded for job ${j.id}: ${why}`;
}

const jobNet = defineCommand({
  meta: {
    name: "net",
    description:
      "List a job's network connections through planter's egress proxy (its net.connect events): when, allowed or denied, where, by which rule, bytes out and in, how long; then how many were allowed and denied. " +
      "A connection is listed once it has ended; jobs with network none or host have none",
  },
  args: { id: { type: "positional", description: "job id", required: true }, ...common },
  async run({ args }) {
    const api = client(args);
    const j = await api.getJob(args.id);
    const { connections, skipped, complete } = await connectionsOf(api, j).catch(
      olderDaemon("job net (events by kind)"),
    );
    const allowed = connections.filter((c) => c.decision === "allow").length;
    if (args.json) {
      printJson({ job: j.id, connections, allowed, denied: connections.length - allowed, complete });
    } else print(connections.length ? connectionTable(connections) : p(noneRecorded(j)));
    if (!complete)
      write(
        2,
        "planter: the oldest events were pruned since the job began ([events] retain): its earliest connections may be missing\n",
      );
    if (skipped)
      write(2, `planter: ${skipped} net.connect event(s) of job ${p(j.id)} were not understood and left out\n`);
    return 0;
  },
});
examples(jobNet, [
  "planter job net JOB",
  "planter job net JOB --json | jq '.connections[] | select(.decision == \"deny\")'",
  "planter events --kind net.connect --subject job/JOB -f   # as they happen",
]);

const jobStdin = defineCommand({
  meta: {
    name: "stdin",
    description:
      "Send your stdin to a job's input (a job started with planter run -d -i, or stdin: true over the API; a terminal job's is typed into its terminal), until yours ends. " +
      "The job's input stays open for more unless --eof ends it after yours",
  },
  args: {
    id: { type: "positional", description: "job id", required: true },
    eof: { type: "boolean", description: "end the job's input after yours (^D on a terminal job)" },
    ...common,
  },
  async run({ args }) {
    const api = client(args);
    const sent = await sendStdin(api, args.id, Bun.file(0).stream(), STDIN_CHUNK, Boolean(args.eof));
    if (sent.readError)
      throw usage(`cannot read your stdin: ${sent.readError.message}${args.eof ? " (the job's input is ended)" : ""}`);
    // Nothing was sent: the job is still asked, so that a wrong id or a job without input is said.
    if (sent.end === "sent" && sent.written === 0) await api.writeStdinBytes(args.id, new Uint8Array(0));
    if (sent.end === "stopped") {
      // The job took no more: say why, as planterd says it.
      const job = await api.getJob(args.id);
      throw new PlanterError(
        "E_CONFLICT",
        `job ${job.id} took ${sent.written} bytes, then no more: ${job.stdin?.open === false && job.state === "running" ? "its input was ended" : `it is ${outcome(job)}`}`,
        { hint: `see planter job status ${job.id}` },
      );
    }
    if (args.json) printJson({ job: args.id, written: sent.written, eof: Boolean(args.eof) });
    return 0;
  },
});
examples(jobStdin, [
  "planter run -d -i -- ./server.sh            # prints the job id; its input stays open",
  "echo reload | planter job stdin JOB         # one more line for it",
  "planter job stdin --eof JOB < /dev/null     # end its input",
]);

export const job = defineCommand({
  meta: { name: "job", description: "Inspect and control jobs (ls, status, kill, wait, rm, net, stdin)" },
  args: clientArgs,
  subCommands: {
    ls: jobLs,
    status: jobStatus,
    kill: jobKill,
    wait: jobWait,
    rm: jobRm,
    net: jobNet,
    stdin: jobStdin,
  },
});
