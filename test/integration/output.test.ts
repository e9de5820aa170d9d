/**
 * Output reaches a slow pipe whole: every command's stdout goes through a reader that takes
 * 16 KiB at a time with a pause, and must arrive complete (multi-MB where the command can
 * print that much). Bun writes to pipes asynchronously; a command that exits right after
 * writing used to deliver 64 or 128 KiB of it.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { CommandDef } from "citty";
import type { Job } from "../../lib/api/contract.ts";
import { planter } from "../../lib/cli/commands.ts";
import { appendEvent } from "../../lib/state/events.ts";
import { baseEnv, cleanup, type DaemonHandle, PLANTER, ROOT, startDaemon, tempHome, waitFor } from "../harness.ts";

const FIXTURE = join(ROOT, "test", "slow-reader-fixture.ts");
const BIG = 100 * 1024;
/** 12 arguments of 100 KiB: 1.2 MB of argv, under the kernel's ARG_MAX for the CLI itself. */
const bigArgs = (tag: string) => Array.from({ length: 12 }, (_, i) => `${tag}${i}-${"a".repeat(BIG)}`);

let d: DaemonHandle;
let n = 0;

/** Run the CLI with stdout piped straight (an OS pipe, no Bun in between) into the slow reader. */
async function slow(args: string[], env: Record<string, string> = {}) {
  const out = join(d.home, `out-${++n}`);
  const err = join(d.home, `err-${n}`);
  const proc = Bun.spawn(
    ["bash", "-c", 'set -o pipefail; "$@" 2>"$ERR_FILE" | "$READER_BUN" "$READER" "$OUT_FILE"', "bash"].concat([
      process.execPath,
      PLANTER,
      ...args,
    ]),
    {
      env: { ...baseEnv(d.home, env), READER_BUN: process.execPath, READER: FIXTURE, OUT_FILE: out, ERR_FILE: err },
      stdin: "ignore",
      stdout: "ignore",
      stderr: "inherit",
    },
  );
  const code = await proc.exited;
  return { code, stdout: readFileSync(out, "utf8"), stderr: readFileSync(err, "utf8") };
}

const parse = (r: { stdout: string; stderr: string }) => {
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new Error(`not whole JSON (${r.stdout.length} bytes): …${r.stdout.slice(-80)} stderr: ${r.stderr}`);
  }
};

let running: Job;
let failed: Job;
let logJob: Job;
const LOG_BYTES = 5_000_000;

beforeAll(async () => {
  d = await startDaemon({ config: "[api]\nmax_body_bytes = 33554432\nmax_cell_bytes = 33554432\n" });
  const c = d.client;
  await c.createCell({ name: "big", env: Object.fromEntries(bigArgs("v").map((v, i) => [`V${i}`, v])) });
  // argv[0] too long to exec: the job fails at spawn, and its event carries the long argv0.
  // (The cell's env is as large: its jobs could not start, so running jobs use the default cell.)
  for (let i = 0; i < 3; i++)
    failed = await c.createJob({ cell: "big", argv: [`/no/such/${"p".repeat(BIG)}`, ...bigArgs(`f${i}`)] });
  running = await c.createJob({ argv: ["sh", "-c", "sleep 600", ...bigArgs("r")] });
  logJob = await c.createJob({ argv: ["sh", "-c", `head -c ${LOG_BYTES} /dev/zero | tr '\\0' x; echo`] });
  await c.waitJob(logJob.id, 60_000);
}, 120_000);

afterAll(async () => {
  // Jobs outlive planterd: the sleeping one goes first.
  if (running) await d.client.killJob(running.id, { force: true }).catch(() => undefined);
  await d?.stop();
  if (d) cleanup(d.home);
});

describe("--json output reaches a slow reader whole", () => {
  test("job ls --json", async () => {
    const r = await slow(["job", "ls", "--json"]);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(4_000_000);
    const ids = (parse(r) as Job[]).map((j) => j.id);
    expect(ids).toContain(running.id);
    expect(ids).toContain(logJob.id);
  });

  test("job status --json", async () => {
    const r = await slow(["job", "status", running.id, "--json"]);
    expect(r.code).toBe(0);
    expect(parse(r).argv).toEqual(running.argv);
  });

  test("cell ls, cell show --json", async () => {
    const ls = await slow(["cell", "ls", "--json"]);
    expect(ls.code).toBe(0);
    expect((parse(ls) as { name: string; env: Record<string, string> }[]).find((c) => c.name === "big")?.env.V11).toBe(
      bigArgs("v")[11],
    );
    const show = await slow(["cell", "show", "big", "--json"]);
    expect(show.code).toBe(0);
    expect(parse(show).env.V0).toBe(bigArgs("v")[0]);
  });

  test("cell update --json", async () => {
    const r = await slow(["cell", "update", "big", "--net", "host", "--json"]);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(1_200_000);
    const cell = parse(r);
    expect([cell.env.V11, cell.effective_sandbox.policy.network]).toEqual([bigArgs("v")[11], "host"]);
  });

  test("job net --json", async () => {
    // The proxy's records of 12,000 connections (two pages of events), written as planterd would.
    const db = new Database(join(d.home, "state", "planter.db"));
    db.run("PRAGMA busy_timeout = 5000");
    db.transaction(() => {
      for (let i = 0; i < 12_000; i++) {
        const data = {
          job: logJob.id,
          host: `h${i}.${"n".repeat(200)}.example`,
          port: 443,
          decision: i % 3 ? "allow" : "deny",
          rule: i % 3 ? "*.example" : "unlisted",
          protocol: "connect",
          bytes_out: i,
          bytes_in: 2 * i,
          duration_ms: 1,
        };
        appendEvent(db, "net.connect", `job/${logJob.id}`, data);
      }
    })();
    db.close();
    const r = await slow(["job", "net", logJob.id, "--json"]);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(4_000_000);
    const net = parse(r);
    expect([net.connections.length, net.allowed, net.denied]).toEqual([12_000, 8000, 4000]);
    expect(net.connections.at(-1).host).toBe(`h11999.${"n".repeat(200)}.example`);
  });

  test("cell create --json, cell rm --json", async () => {
    const env = bigArgs("c").flatMap((v, i) => ["--env", `C${i}=${v}`]);
    const r = await slow(["cell", "create", "made", ...env, "--json"]);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(1_200_000);
    expect(parse(r).env.C11).toBe(bigArgs("c")[11]);
    const rm = await slow(["cell", "rm", "made", "--json"]);
    expect(rm.code).toBe(0);
    expect(parse(rm)).toEqual({ removed: "made", jobs_removed: 0 });
  });

  test("run --detach --json, job kill --json, job wait --json, job rm --json", async () => {
    const argv = ["sh", "-c", "sleep 600", ...bigArgs("d")];
    const r = await slow(["run", "--detach", "--json", "--", ...argv]);
    expect(r.code).toBe(0);
    const job = parse(r) as Job;
    expect(job.argv).toEqual(argv);
    const k = await slow(["job", "kill", job.id, "--force", "--json"]);
    expect({ code: k.code, stderr: k.stderr }).toEqual({ code: 0, stderr: "" });
    expect(parse(k).argv).toEqual(argv);
    const w = await slow(["job", "wait", job.id, "--json"]);
    expect(w.code).toBe(137);
    expect(parse(w).job.argv).toEqual(argv);
    const rm = await slow(["job", "rm", job.id, "--json"]);
    expect(rm.code).toBe(0);
    expect(parse(rm)).toEqual({ removed: job.id });
  });

  test("run --detach -i --json, job stdin --eof --json", async () => {
    const r = await slow(["run", "--detach", "-i", "--json", "--", "cat"]);
    expect(r.code).toBe(0);
    const job = parse(r) as Job;
    expect(job.stdin).toEqual({ open: true });
    // Its stdin here is /dev/null: nothing to send, then the end.
    const s = await slow(["job", "stdin", "--eof", "--json", job.id]);
    expect({ code: s.code, stderr: s.stderr }).toEqual({ code: 0, stderr: "" });
    expect(parse(s)).toEqual({ job: job.id, written: 0, eof: true });
    expect((await d.client.waitJob(job.id, 30_000)).job.exit_code).toBe(0);
  });

  test("events --json: every line whole", async () => {
    const r = await slow(["events", "--json"]);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(300_000);
    const lines = r.stdout.trimEnd().split("\n");
    const events = lines.map((l) => JSON.parse(l) as { kind: string; subject: string; data: { argv0?: string } });
    const created = events.filter((e) => e.kind === "job.created" && e.subject === `job/${failed.id}`);
    expect(created[0]?.data.argv0).toBe(failed.argv[0]);
    expect(events.some((e) => e.subject === `job/${logJob.id}` && e.kind === "job.finished")).toBe(true);
  });

  test("agents ls --json, agents wait --json", async () => {
    // 200 agents reported by hooks about one process of ours, each with a detail of 1 KiB.
    const sleeper = Bun.spawn(["sleep", "600"]);
    try {
      const stat = readFileSync(`/proc/${sleeper.pid}/stat`, "utf8");
      const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
      for (let i = 0; i < 200; i++) {
        await d.client.reportAgent({
          agent: "claude",
          source: "hook",
          runtime: {
            tmux_socket: null,
            server: null,
            pane_id: `%${i}`,
            process: `${sleeper.pid}:${start}`,
            job_id: null,
          },
          kind: "PreToolUse",
          state: "running",
          at: Date.now(),
          detail: `${i}-${"d".repeat(1000)}`,
        });
      }
      const r = await slow(["agents", "ls", "--json"]);
      expect(r.code).toBe(0);
      expect(r.stdout.length).toBeGreaterThan(200_000);
      expect((parse(r) as { detail: string }[]).map((a) => a.detail.split("-")[0]).sort()).toEqual(
        Array.from({ length: 200 }, (_, i) => String(i)).sort(),
      );
      const w = await slow(["agents", "wait", "--state", "running", "--json"]);
      expect(w.code).toBe(0);
      expect(parse(w).state).toBe("running");
    } finally {
      sleeper.kill("SIGKILL");
    }
  });

  test("sandbox render --json", async () => {
    const r = await slow(["sandbox", "render", "--backend", "bwrap", "--json", "--", "echo", ...bigArgs("s")]);
    expect(r.code).toBe(0);
    expect((parse(r).argv as string[]).slice(-12)).toEqual(bigArgs("s"));
  });

  test("doctor --json, sandbox check --json, migrate state --dry-run --json", async () => {
    const doc = await slow(["doctor", "--json", "daemon"], { PLANTER_SOCKET: d.socket });
    expect(Array.isArray(parse(doc).checks)).toBe(true);
    const check = await slow(["sandbox", "check", "--json"]);
    expect(typeof parse(check).ok).toBe("boolean");
    const home = tempHome();
    try {
      const m = await slow(["migrate", "state", "--dry-run", "--json"], { PLANTER_HOME: home });
      expect(m.code).toBe(0);
      expect(typeof parse(m)).toBe("object");
    } finally {
      cleanup(home);
    }
  }, 60_000);
});

describe("job output reaches a slow reader whole", () => {
  const expected = `${"x".repeat(LOG_BYTES)}\n`;

  test("logs", async () => {
    const r = await slow(["logs", logJob.id]);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(expected.length);
    expect(r.stdout === expected).toBe(true);
  });

  test("logs --json: the chunks add up to the log", async () => {
    const r = await slow(["logs", logJob.id, "--json"]);
    expect(r.code).toBe(0);
    const chunks = r.stdout
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l) as { data: string; next_offset: number });
    expect(chunks.at(-1)?.next_offset).toBe(expected.length);
    expect(Buffer.concat(chunks.map((c) => Buffer.from(c.data, "base64"))).toString() === expected).toBe(true);
  });

  test("run, attached", async () => {
    const r = await slow(["run", "--", "sh", "-c", `head -c ${LOG_BYTES} /dev/zero | tr '\\0' x; echo`]);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(expected.length);
  });
});

/** Commands with --json that the tests above do not run, each with the reason. */
const NOT_RUN: Record<string, string> = {
  install: "changes the host; its --json output is a few hundred bytes (test/integration/install.test.ts)",
  uninstall: "changes the host; its --json output is a few hundred bytes (test/integration/install.test.ts)",
  "migrate lima": "needs a Lima VM (test/integration/lima-migrate.test.ts)",
  "agents watch": "follows until interrupted; its --json lines are checked in test/integration/agents.test.ts",
  "agents send": "its --json is one action's result, a few hundred bytes (test/integration/agent-actions.test.ts)",
  "agents output": "its --json is the pane's last lines, bounded by --lines (test/integration/agent-actions.test.ts)",
  "agents kill": "its --json is one action's result, a few hundred bytes (test/integration/agent-actions.test.ts)",
  "agents attach": "attaches a terminal; its --json is not used (test/integration/agent-actions.test.ts)",
  "agent run":
    "its --json (with -d) is one job's view, the size `run -d --json` prints (test/integration/agent-jobs.test.ts)",
  "agent hooks install":
    "edits the user's agent settings; its --json is a line per agent (test/integration/agent-jobs.test.ts)",
  "target add": "its --json is the one entry it wrote, a few hundred bytes (test/integration/targets.test.ts)",
  "target ls": "its --json is a line or so per registered target (test/integration/targets.test.ts)",
  "target rm": "its --json is one line (test/integration/targets.test.ts)",
  "target check": "its --json is a few lines per target (test/integration/targets.test.ts, ssh-target.test.ts)",
  "agent hooks uninstall":
    "edits the user's agent settings; its --json is a line per agent (test/integration/agent-jobs.test.ts)",
};
const RUN = [
  "cell create",
  "cell ls",
  "cell show",
  "cell update",
  "cell rm",
  "run",
  "job ls",
  "job status",
  "job kill",
  "job wait",
  "job rm",
  "job net",
  "job stdin",
  "events",
  "logs",
  "sandbox check",
  "sandbox render",
  "doctor",
  "migrate state",
  "agents ls",
  "agents wait",
];

test("every command with --json is run above through a slow reader (or says why not)", async () => {
  const found: string[] = [];
  // biome-ignore lint/suspicious/noExplicitAny: walking commands of every shape
  const walk = async (cmd: CommandDef<any>, path: string[]) => {
    const resolve = async <T>(v: T | (() => T | Promise<T>) | Promise<T>): Promise<T> =>
      typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;
    const args = cmd.args ? await resolve(cmd.args) : {};
    if ("json" in args) found.push(path.join(" "));
    const subs = cmd.subCommands ? await resolve(cmd.subCommands) : {};
    for (const [name, sub] of Object.entries(subs ?? {})) await walk(await resolve(sub), [...path, name]);
  };
  await walk(planter, []);
  expect(found.sort()).toEqual([...RUN, ...Object.keys(NOT_RUN)].sort());
});

// The reader's pauses make the CLI wait; a command must still finish.
test("an early-closing reader does not hang the CLI", async () => {
  const proc = Bun.spawn(
    ["bash", "-c", '"$@" | head -c 10 >/dev/null', "bash", process.execPath, PLANTER, "job", "ls", "--json"],
    {
      env: baseEnv(d.home),
      stdin: "ignore",
      stdout: "ignore",
      stderr: "ignore",
    },
  );
  await waitFor(() => proc.exitCode !== null, "the CLI to end after its reader closed", 60_000);
});

test("a reader gone before the command ends: the command still exits, with its code", async () => {
  // Write until the pipe breaks (its reader, `true`, reads nothing), wait until the stream knows,
  // then end as every command does.
  const script = `
    import { exitAfterOutput } from ${JSON.stringify(join(ROOT, "lib/cli/output.ts"))};
    while (!process.stdout.errored) {
      process.stdout.write("x".repeat(1 << 20));
      await new Promise((r) => setImmediate(r));
    }
    await exitAfterOutput(3);
  `;
  const proc = Bun.spawn(
    ["bash", "-c", '"$@" 2>/dev/null | true; echo "$PIPESTATUS"', "bash", process.execPath, "-e", script],
    {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "ignore",
    },
  );
  const out = new Response(proc.stdout).text();
  await waitFor(() => proc.exitCode !== null, "the command to exit after its reader went away", 30_000);
  expect((await out).trim()).toBe("3");
});
