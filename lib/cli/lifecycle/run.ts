/** `planter run`: a job, its output as it is written, its end; signals sent on to the job. */
import { resolve as resolvePath } from "node:path";
import { defineCommand } from "citty";
import { type Job, type JobCreateIn, type KillRequestIn, passthroughCode, type Signal } from "../../api/contract.ts";
import { PlanterError } from "../../api/errors.ts";
import type { FrameEvent } from "../../api/frames.ts";
import type { ByteStream } from "../../api/stream.ts";
import { copyLog, jobOutput, olderDaemon, runFrames } from "../../logs/follow.ts";
import { afterDashes, client, envPairs, rawArg, repeated, usage } from "../args.ts";
import { attachArgs, attachJob } from "../attach.ts";
import { examples } from "../help.ts";
import { allowRest } from "../main.ts";
import { netArgs, sandboxFromArgs } from "../network.ts";
import { onOutputGone, outcome, printable as p, print, printJson, write } from "../output.ts";
import { windowSize } from "../rawmode.ts";
import { sendStdin } from "../stdin.ts";
import { pathForTarget } from "../target.ts";
import { isTerminal } from "../tty.ts";
import { formatBytes, limitArgs, limitsFromArgs, limitText } from "../units.ts";
import { common } from "./common.ts";

/** The job a `planter run` asks for, from its options. */
async function jobBody(
  args: {
    cell?: string;
    cwd?: string;
    sandbox?: "disabled" | "permissive" | "enforced";
    policy?: string;
    net?: string;
    "net-local"?: boolean;
    "request-ref"?: string;
    tty?: boolean;
    interactive?: boolean;
    detach?: boolean;
    target?: string;
    socket?: string;
  } & Parameters<typeof limitsFromArgs>[0],
  rawArgs: string[],
  argv: string[],
): Promise<JobCreateIn> {
  const body: JobCreateIn = { argv };
  const limits = limitsFromArgs(args);
  if (limits) body.limits = limits;
  if (args.cell) body.cell = args.cell;
  const env = envPairs(repeated(rawArgs, "env", "e"));
  if (env) body.env = env;
  if (args.cwd) body.cwd = await pathForTarget(args, resolvePath(args.cwd), "--cwd");
  const sandbox = sandboxFromArgs(args, rawArgs);
  if (sandbox) body.sandbox = sandbox;
  if (args["request-ref"]) body.request_ref = args["request-ref"];
  // Without -t, the job reads a pipe your stdin is copied into (with -t, the terminal is its stdin).
  if (args.interactive && !args.tty) body.stdin = true;
  if (args.tty) {
    // The job's terminal has the caller's size (80×24 when there is no terminal to ask).
    body.tty = windowSize(1) ?? windowSize(0) ?? { cols: 80, rows: 24 };
    if (!args.detach && !(isTerminal(0) && isTerminal(1)))
      throw usage("-t needs a terminal on stdin and stdout (or --detach, then planter attach)");
  }
  return body;
}

export const run = defineCommand({
  meta: {
    name: "run",
    description:
      "Run a command as a job. Streams its stdout and stderr and exits with its exit code (128+N when killed by signal N); " +
      "Ctrl-C sends SIGINT to the job, a second Ctrl-C kills it; SIGTERM, SIGHUP (a closed terminal) and SIGQUIT (Ctrl-\\) are sent on to the job. " +
      "The job's stdin is empty (/dev/null) unless -i sends it yours (a pipe, a file, your terminal's lines) or -t gives it a terminal. With --detach, prints the job id and returns at once.",
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
    tty: {
      type: "boolean",
      alias: "t",
      description:
        "give the job a terminal of your window's size (an interactive job: your keys reach it, Ctrl-C included; Ctrl-P Ctrl-Q detaches; planter attach JOB comes back)",
    },
    interactive: {
      type: "boolean",
      alias: "i",
      description:
        "send your stdin to the job as it is read, byte for byte, and end the job's input where yours ends (Ctrl-D on a terminal); with -t: your terminal. With --detach its stdin stays open: planter job stdin JOB sends more, --eof ends it",
    },
    ...attachArgs,
    ...rawArg,
    sandbox: {
      type: "enum",
      options: ["disabled", "permissive", "enforced"],
      description: "sandbox mode for this job",
    },
    backend: {
      type: "enum",
      options: ["bwrap", "seatbelt", "vm"],
      description:
        'sandbox backend for this job: vm runs each job in its own KVM virtual machine (Linux with /dev/kvm; docs/sandbox.md "VM jobs")',
    },
    policy: {
      type: "string",
      description: "narrow the cell's sandbox policy for this job with a policy file (never widen it)",
      valueHint: "FILE",
    },
    ...netArgs("narrow"),
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
    const body = await jobBody(args, rawArgs, argv);
    if (args.detach) return printDetached(warnFallback(await api.createJob(body)), Boolean(args.json));
    if (args.tty) {
      const job = warnFallback(await api.createJob(body));
      if (job.state !== "running") return ended(job);
      return attachJob(api, job.id, { readOnly: false, detachKeys: args["detach-keys"] });
    }
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
        forwardStdin(api, job);
        return await Promise.race([attach(api, job, Boolean(args.raw)), proxy.closed.then(() => proxy.ended())]);
      }
      const frames = runFrames(api, stream);
      const first = (await frames.next()).value;
      if (first?.kind !== "job")
        throw new PlanterError("E_INTERNAL", "planterd's run stream did not begin with the job");
      const job = warnFallback(first.job);
      proxy.attach(job.id);
      forwardStdin(api, job);
      // Output that is gone (a closed terminal, a reader that left) is not waited for: the job's
      // end gives the code.
      return await Promise.race([
        attached(job, frames, Boolean(args.raw)),
        proxy.closed.then(() => proxy.ended()),
      ]).catch((e: unknown) => {
        // planterd went away: the job's input stays open, and can be written again.
        if (e instanceof PlanterError && e.code === "E_DAEMON_UNREACHABLE" && job.stdin?.open)
          throw new PlanterError(e.code, e.message, {
            hint: `${e.hint}; its input stays open: planter job stdin ${job.id} (--eof ends it)`,
          });
        throw e;
      });
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
  "planter run --net-allow registry.npmjs.org -- npm ci   # within the cell's allow list; see `planter job net ID`",
  "planter run --net none -- make test                    # no network for this job",
  "git diff | planter run -i -- wc -l   # your stdin is the job's",
  "planter run -it -- bash             # a terminal: Ctrl-P Ctrl-Q detaches, planter attach ID comes back",
]);

/**
 * A job with stdin (-i without -t) gets the caller's stdin, read and sent while its output is
 * copied; its input ends where the caller's does. A job that stops reading stops the copy; a
 * failure to send is said once, and the job's end still gives the exit code.
 */
function forwardStdin(api: ReturnType<typeof client>, job: Job): void {
  if (!job.stdin?.open) return;
  sendStdin(api, job.id, Bun.file(0).stream())
    .then((sent) => {
      if (sent.readError)
        write(2, `planter: cannot read your stdin (${p(sent.readError.message)}): the job's input is ended\n`);
    })
    .catch((e: unknown) => {
      // A planterd gone is said once, by the output's stream.
      if (e instanceof PlanterError && e.code === "E_DAEMON_UNREACHABLE") return;
      const why = e instanceof PlanterError ? e.message : String((e as Error)?.message ?? e);
      write(2, `planter: stopped sending stdin to job ${p(job.id)}: ${p(why)}\n`);
    });
}

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
      const name = sig.slice(3) as Signal;
      let body: KillRequestIn = { signal: name };
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
 * code. On a terminal the output goes through a TerminalFilter (docs/usage.md "Commands") unless `raw`.
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
