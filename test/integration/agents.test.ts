/**
 * The agent observer through a real planterd and real tmux (always a private server: `tmux -S`
 * in the test's temp dir, never the default one): fake agents (test/fixtures/agents: scripts
 * named claude, codex and gemini drawing the real CLIs' screens) through every state and
 * transition, as the list, the watch stream and the CLI show them; hook reports beating the
 * poller until they are stale; refusals; a restart; other users' agents (as root).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Agent, AgentEventIn, AgentState, AgentWatchLine } from "../../lib/agents/model.ts";
import { HOOK_FRESH_MS } from "../../lib/agents/model.ts";
import type { PlanterError } from "../../lib/api/errors.ts";
import {
  baseEnv,
  bundled,
  cleanup,
  cli,
  type DaemonHandle,
  PLANTER,
  raw,
  startDaemon,
  tempHome,
  waitFor,
} from "../harness.ts";

const FAKES = join(import.meta.dir, "..", "fixtures", "agents");
const root = process.getuid?.() === 0;
const haveTmux = Bun.which("tmux") !== null;

/**
 * A private tmux server (its socket in `dir`), run as `uid` when given (through setpriv). It stays
 * up without sessions (`exit-empty off`, from the config file it starts with): else a session that
 * ends as the test's last one makes the server exit, and the next test's `new-session` may reach it
 * while it goes ("server exited unexpectedly", seen under load).
 */
function tmuxServer(sock: string, uid?: number) {
  const as = uid === undefined ? [] : ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups"];
  const conf = `${sock}.conf`;
  writeFileSync(conf, "set -s exit-empty off\n", { mode: 0o644 });
  const run = (...args: string[]) => {
    // SHELL: tmux runs a pane's command with it (nobody's login shell is nologin).
    const r = Bun.spawnSync([...as, "tmux", "-f", conf, "-S", sock, ...args], {
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", SHELL: "/bin/sh" },
    });
    return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
  };
  return {
    sock,
    run,
    /** A new session running `argv` (a window of 100×30); its pane id. */
    start(name: string, argv: string[]) {
      const r = run("new-session", "-d", "-s", name, "-x", "100", "-y", "30", "-P", "-F", "#{pane_id}", ...argv);
      if (r.code !== 0) throw new Error(`tmux new-session: ${r.err}`);
      return r.out.trim();
    },
    keys: (target: string, ...keys: string[]) => run("send-keys", "-t", target, ...keys),
    kill: () => run("kill-server"),
  };
}

/** Wait for the daemon to show an agent matching `pred`. */
function agentWhere(d: DaemonHandle, what: string, pred: (a: Agent) => boolean, ms = 10_000) {
  return waitFor(async () => (await d.client.listAgents()).agents.find(pred), what, ms);
}

/** Collect a watch stream's lines until aborted. */
function collect(d: DaemonHandle, cursor?: string) {
  const lines: AgentWatchLine[] = [];
  const stop = new AbortController();
  const done = (async () => {
    try {
      for await (const l of d.client.watchAgents({ cursor }, stop.signal)) lines.push(l);
    } catch (e) {
      if (!stop.signal.aborted) throw e;
    }
  })();
  return {
    lines,
    async stop() {
      stop.abort();
      await done;
    },
  };
}

const config = (sock: string, extra = "") =>
  `[agents]\ntmux_dirs = []\ntmux_sockets = ["${sock}"]\npoll_ms = 200\n${extra}`;

describe.skipIf(!haveTmux)("fake agents in a private tmux server", () => {
  let home: string;
  let d: DaemonHandle;
  let tmux: ReturnType<typeof tmuxServer>;

  beforeAll(async () => {
    home = tempHome("pa");
    tmux = tmuxServer(join(home, "tmux.sock"));
    d = await startDaemon({ home, config: config(tmux.sock) });
  });
  afterAll(async () => {
    tmux.kill();
    await d.stop();
    cleanup(home);
  });

  for (const kind of ["claude", "codex", "gemini"] as const) {
    test(`${kind}: every state and transition, in the list and in the watch stream, then gone`, async () => {
      const watch = collect(d);
      await waitFor(() => watch.lines.length, "the watch's snapshot");
      const pane = tmux.start(kind, [join(FAKES, kind)]);
      const agent = await agentWhere(d, `the ${kind} agent`, (a) => a.agent === kind && a.runtime.pane_id === pane);
      expect(agent.runtime).toMatchObject({ tmux_socket: tmux.sock, pane_id: pane, job_id: null });
      expect(agent.pane).toMatchObject({ session: kind, window: 0, index: 0 });
      const id = agent.runtime_id;
      const now = async () => (await d.client.listAgents()).agents.find((a) => a.runtime_id === id);
      const reach = async (state: AgentState, reason: string | null = null) =>
        waitFor(async () => {
          const a = await now();
          return a?.state === state && a.reason === reason ? a : null;
        }, `${kind} to be ${state}`);
      const steps: [string, AgentState][] = [
        ["", "waiting_input"],
        ["run", "running"],
        ["ask", "waiting_approval"],
        ["yes", "running"],
        ["done", "completed"],
        ["ask", "waiting_approval"],
        ["no", "waiting_input"],
        ["fail", "error"],
        ["again", "running"],
      ];
      for (const [keys, state] of steps) {
        if (keys) tmux.keys(pane, keys, "Enter");
        const a = await reach(state);
        expect(a.source).toBe("poller");
        if (state === "waiting_approval") expect(a.detail).toContain("ls -la");
        if (state === "error") expect(a.detail).toContain("fake failure");
      }
      tmux.keys(pane, "exit", "Enter");
      await reach("unknown", "pane_gone");
      await waitFor(
        () =>
          watch.lines.some((l) => l.type === "delta" && l.agent.runtime_id === id && l.agent.reason === "pane_gone"),
        "the watch to see it go",
      );
      await watch.stop();
      // The watch saw each state in turn (a snapshot first, then one delta per change).
      expect(watch.lines[0]?.type).toBe("snapshot");
      const seen = watch.lines
        .flatMap((l) => (l.type === "delta" && l.agent.runtime_id === id ? [stateOf(l.agent)] : []))
        .filter((s, i, all) => s !== all[i - 1]);
      // Before its prompt is drawn, a screen says nothing yet (no_signal) or shows part of the CLI's
      // banner (unrecognised_screen, when a tick reads it mid-draw); from the prompt on, each state in turn.
      const prompt = seen.indexOf("waiting_input");
      expect(seen[0]).toMatch(/^unknown \((no_signal|unrecognised_screen)\)$/);
      expect(seen.slice(0, prompt).every((s) => /^unknown \((no_signal|unrecognised_screen)\)$/.test(s))).toBe(true);
      expect(seen.slice(prompt)).toEqual([...steps.map(([, s]) => s), "unknown (pane_gone)"]);
      const versions = watch.lines.flatMap((l) =>
        l.type === "delta" && l.agent.runtime_id === id ? [l.agent.state_version] : [],
      );
      expect(versions).toEqual([...versions].sort((a, b) => a - b));
    });
  }

  test("the CLI: agents ls (table and --json, filters), wait (exit 0, 124, 1), watch --json", async () => {
    const pane = tmux.start("cli", [join(FAKES, "codex")]);
    const a = await agentWhere(d, "the codex agent", (x) => x.runtime.pane_id === pane && x.state === "waiting_input");
    const ls = await cli(home, ["agents", "ls"]);
    expect(ls.code).toBe(0);
    const row = ls.stdout.split("\n").find((l) => l.startsWith(a.runtime_id));
    expect(row?.split(/\s{2,}/).slice(0, 3)).toEqual([a.runtime_id, "codex", "waiting_input"]);
    expect(row).toContain("cli:0.0");
    expect(ls.stdout.split("\n")[0]?.split(/\s+/)).toEqual(["RUNTIME", "AGENT", "STATE", "SINCE", "WHERE", "DETAIL"]);
    const json = JSON.parse(
      (await cli(home, ["agents", "ls", "--json", "--agent", "codex", "--state", "waiting_input"])).stdout,
    ) as Agent[];
    expect(json.map((x) => x.runtime_id)).toContain(a.runtime_id);
    expect(
      JSON.parse((await cli(home, ["agents", "ls", "--json", "--state", "error", "--agent", "codex"])).stdout),
    ).toEqual([]);
    const bad = await cli(home, ["agents", "ls", "--state", "sleeping"]);
    expect(bad.code).toBe(2);

    const timedOut = await cli(home, [
      "agents",
      "wait",
      "--state",
      "error",
      "--agent",
      a.runtime_id,
      "--timeout",
      "300ms",
    ]);
    expect([timedOut.code, timedOut.stderr]).toEqual([
      124,
      `planter: agent ${a.runtime_id} did not reach error within 300ms\n`,
    ]);
    const waiting = cli(home, [
      "agents",
      "wait",
      "--state",
      "waiting_approval,error",
      "--agent",
      a.runtime_id,
      "--json",
    ]);
    tmux.keys(pane, "ask", "Enter");
    const w = await waiting;
    expect(w.code).toBe(0);
    expect(JSON.parse(w.stdout)).toMatchObject({ runtime_id: a.runtime_id, state: "waiting_approval" });
    const none = await cli(home, ["agents", "wait", "--state", "idle", "--agent", "rt-0000000000000000"]);
    expect([none.code, none.stderr]).toEqual([
      1,
      "planter: no agent rt-0000000000000000\nhint: see planter agents ls\n",
    ]);
    const gone = cli(home, ["agents", "wait", "--state", "completed", "--agent", a.runtime_id]);
    await Bun.sleep(100);
    tmux.keys(pane, "exit", "Enter");
    const g = await gone;
    expect([g.code, g.stderr.split("\n")[0]]).toEqual([
      1,
      `planter: agent ${a.runtime_id} is gone (unknown (pane_gone))`,
    ]);
    const usage = await cli(home, ["agents", "wait", "--state", "asleep"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("--state takes error, waiting_approval");
  });

  test("hooks beat the poller while fresh; then the poller takes over", async () => {
    const pane = tmux.start("hooked", [join(FAKES, "claude")]);
    const a = await agentWhere(d, "the claude agent", (x) => x.runtime.pane_id === pane && x.state === "waiting_input");
    const event: AgentEventIn = {
      agent: "claude",
      source: "hook",
      runtime: a.runtime,
      kind: "PreToolUse",
      state: "running",
      at: Date.now(),
      source_seq: 1,
      dedupe_key: "pre-1",
      detail: "Bash",
    };
    const r = await d.client.reportAgent(event);
    expect([r.outcome, r.changed, r.agent.state, r.agent.source, r.agent.detail]).toEqual([
      "applied",
      true,
      "running",
      "hook",
      "Bash",
    ]);
    expect((await d.client.reportAgent(event)).outcome).toBe("duplicate");
    expect((await d.client.reportAgent({ ...event, source_seq: 0, dedupe_key: "pre-0", at: Date.now() })).outcome).toBe(
      "older",
    );
    // The screen still says waiting_input: the hook's word stands while fresh, then the poller's.
    const shown = (await d.client.listAgents()).agents.find((x) => x.runtime_id === a.runtime_id);
    expect(shown?.state).toBe("running");
    const back = await waitFor(
      async () =>
        (await d.client.listAgents()).agents.find((x) => x.runtime_id === a.runtime_id && x.source === "poller"),
      "the poller to take over",
    );
    expect(back.state).toBe("waiting_input");
    expect(back.since - event.at).toBeGreaterThanOrEqual(HOOK_FRESH_MS);
    tmux.keys(pane, "exit", "Enter");
  });

  test("refused reports change nothing: bad body, poller source, a process that is not running", async () => {
    const before = (await d.client.listAgents()).agents;
    const good: AgentEventIn = {
      agent: "claude",
      source: "hook",
      runtime: { tmux_socket: null, server: null, pane_id: null, process: `${process.pid}:1`, job_id: null },
      kind: "Stop",
      state: "completed",
      at: Date.now(),
    };
    const bad = await raw(d.socket, "POST", "/v1/agents/events", JSON.stringify({ ...good, state: "sleeping" }));
    expect([bad.status, bad.json.error?.code]).toEqual([400, "E_BAD_REQUEST"]);
    expect(bad.json.error?.message).toStartWith("invalid agent event: × Invalid type: Expected");
    const extra = await raw(d.socket, "POST", "/v1/agents/events", JSON.stringify({ ...good, secret: 1 }));
    expect(extra.status).toBe(400);
    const poller = (await d.client.reportAgent({ ...good, source: "poller" }).catch((e) => e)) as PlanterError;
    expect([poller.code, poller.message]).toEqual([
      "E_BAD_REQUEST",
      "poller events are planterd's own: report as a hook or notify",
    ]);
    // This pid with another start time: not the process named.
    const stale = (await d.client.reportAgent(good).catch((e) => e)) as PlanterError;
    expect([stale.code, stale.message]).toEqual([
      "E_CONFLICT",
      `runtime.process ${process.pid}:1 is not running (no such pid, or it started at another time)`,
    ]);
    const cursor = await raw(d.socket, "GET", "/v1/agents/watch?cursor=nonsense");
    expect([cursor.status, cursor.json.error?.code]).toEqual([400, "E_BAD_REQUEST"]);
    const query = await raw(d.socket, "GET", "/v1/agents?state=sleeping");
    expect([query.status, query.json.error?.message]).toEqual([
      400,
      'state must be one of error, waiting_approval, waiting_input, running, completed, idle, unknown, not "sleeping"',
    ]);
    // No agent was added (the earlier tests' agents may still change state by the poller meanwhile).
    expect((await d.client.listAgents()).agents.map((a) => a.runtime_id)).toEqual(before.map((a) => a.runtime_id));
  });

  test("an agent job's report channel feeds the observer: the job's agent, its cell, gone with the job", async () => {
    const line = `printf 'PreToolUse\\t{"tool_name":"Bash"}\\n' 1<>"$PLANTER_AGENT_REPORT"; sleep 60`;
    const job = await d.client.createJob({ agent: { kind: "claude" }, argv: ["sh", "-c", line] } as never);
    // Timed out twice in the full CI run (both lanes, load ~8) and never alone: a longer wait, and
    // what planterd said when it does not come.
    const a = await agentWhere(d, "the job's agent", (x) => x.runtime.job_id === job.id, 30_000).catch(async (e) => {
      const err = await Bun.file(join(home, "state", "jobs", job.id, "stderr"))
        .text()
        .catch(() => "(none)");
      console.error(
        `planterd's log:\n${d.stderr()}\njob: ${JSON.stringify(await d.client.getJob(job.id))}\nits stderr: ${err}`,
      );
      throw e;
    });
    expect([a.agent, a.state, a.source, a.detail, a.cell, a.pane]).toEqual([
      "claude",
      "running",
      "hook",
      "Bash",
      job.cell,
      null,
    ]);
    expect((await d.client.listAgents({ job: job.id })).agents.map((x) => x.runtime_id)).toEqual([a.runtime_id]);
    await d.client.killJob(job.id, { force: true });
    await agentWhere(
      d,
      "the job's agent to go with it",
      (x) => x.runtime_id === a.runtime_id && x.reason === "pane_gone",
    );
  });

  test("a hook's report about a process planterd does not see in tmux: listed, and gone with its process", async () => {
    const proc = Bun.spawn(["sleep", "60"]);
    try {
      const start = (await Bun.file(`/proc/${proc.pid}/stat`).text()).split(") ")[1]?.split(" ")[19];
      const r = await d.client.reportAgent({
        agent: "gemini",
        source: "hook",
        runtime: { tmux_socket: null, server: null, pane_id: null, process: `${proc.pid}:${start}`, job_id: null },
        kind: "BeforeAgent",
        state: "running",
        at: Date.now(),
      });
      expect([r.agent.state, r.agent.pane]).toEqual(["running", null]);
      const ls = await cli(home, ["agents", "ls"]);
      expect(ls.stdout).toContain(`pid ${proc.pid}`);
      proc.kill("SIGKILL");
      await proc.exited;
      await agentWhere(
        d,
        "the runtime to go with its process",
        (a) => a.runtime_id === r.agent.runtime_id && a.reason === "pane_gone",
      );
    } finally {
      proc.kill("SIGKILL");
    }
  });
});

const stateOf = (a: Agent) => (a.reason ? `${a.state} (${a.reason})` : a.state);

describe.skipIf(!haveTmux)("a restart", () => {
  test("the agents are listed from the database at once, then confirmed or gone; a cursor resumes", async () => {
    const home = tempHome("pr");
    const tmux = tmuxServer(join(home, "tmux.sock"));
    let d = await startDaemon({ home, config: config(tmux.sock) });
    try {
      const stays = tmux.start("stays", [join(FAKES, "claude")]);
      const goes = tmux.start("goes", [join(FAKES, "gemini")]);
      tmux.keys(stays, "ask", "Enter");
      const a = await agentWhere(
        d,
        "claude asking",
        (x) => x.runtime.pane_id === stays && x.state === "waiting_approval",
      );
      const b = await agentWhere(d, "gemini", (x) => x.runtime.pane_id === goes && x.state === "waiting_input");
      const { cursor } = await d.client.listAgents();
      expect(await d.stop()).toBe(0);
      tmux.run("kill-session", "-t", "goes");
      tmux.keys(stays, "yes", "Enter");
      // A long poll_ms: the poller looks once, at start.
      d = await startDaemon({ home, config: config(tmux.sock).replace("poll_ms = 200", "poll_ms = 60000") });
      // Before the poller's first look (poll_ms is long now, so it looks once, at start): as stored, or as seen.
      const first = (await d.client.listAgents()).agents;
      expect(first.map((x) => x.runtime_id).sort()).toEqual([a.runtime_id, b.runtime_id].sort());
      await agentWhere(d, "claude confirmed running", (x) => x.runtime_id === a.runtime_id && x.state === "running");
      await agentWhere(d, "gemini gone", (x) => x.runtime_id === b.runtime_id && x.reason === "pane_gone");
      // The cursor from before the restart resumes: no reset, no snapshot, the changes since.
      const w = collect(d, cursor);
      await waitFor(() => w.lines.length >= 2, "the changes since the cursor");
      await w.stop();
      expect(w.lines.every((l) => l.type === "delta")).toBe(true);
      expect(w.lines.map((l) => (l.type === "delta" ? `${l.agent.runtime_id} ${stateOf(l.agent)}` : l.type))).toEqual(
        expect.arrayContaining([`${a.runtime_id} running`, `${b.runtime_id} unknown (pane_gone)`]),
      );
      // Another database's cursor, or one ahead of every change: a reset, then a snapshot.
      for (const [c, reason] of [
        ["0123456789ab:5", "foreign"],
        [`${cursor.split(":")[0]}:999999`, "ahead"],
      ] as const) {
        const r = collect(d, c);
        await waitFor(() => r.lines.length >= 2, "a reset and a snapshot");
        await r.stop();
        expect(r.lines[0]).toMatchObject({ type: "reset", reason });
        expect(r.lines[1]?.type).toBe("snapshot");
      }
    } finally {
      tmux.kill();
      await d.stop();
      cleanup(home);
    }
  });
});

describe("an agent job's reports while planterd is down", () => {
  // The FIFO keeps a hook's line only while someone holds it open: the job's recorder (or its
  // terminal holder) does, so what a hook writes between two planterds is read by the next.
  for (const tty of [false, true]) {
    test(`${tty ? "a terminal job (its holder)" : "a job (its recorder)"}: a report written meanwhile is read at re-adoption`, async () => {
      const home = tempHome("pw");
      let d = await startDaemon({ home, config: "[agents]\ntmux_dirs = []\n" });
      try {
        const line = `while [ ! -e go ]; do sleep 0.05; done; printf 'PermissionRequest\\t{"tool_name":"Bash"}\\n' 1<>"$PLANTER_AGENT_REPORT" && touch written; sleep 60`;
        const job = await d.client.createJob({
          agent: { kind: "claude" },
          argv: ["sh", "-c", line],
          ...(tty ? { tty: { cols: 80, rows: 24 } } : {}),
        } as never);
        await d.kill9();
        writeFileSync(join(job.cwd, "go"), "");
        await waitFor(() => existsSync(join(job.cwd, "written")), "the job's report written");
        d = await startDaemon({ home });
        const a = await agentWhere(d, "the report written while planterd was down", (x) => x.runtime.job_id === job.id);
        expect([a.state, a.source, a.detail]).toEqual(["waiting_approval", "hook", "Bash"]);
        await d.client.killJob(job.id, { force: true });
        await d.client.waitJob(job.id, 20_000);
      } finally {
        await d.stop();
        cleanup(home);
      }
    });
  }
});

describe.skipIf(!haveTmux || !root)("other users' agents (planterd as root)", () => {
  let home: string;
  let d: DaemonHandle;
  let nobodys: ReturnType<typeof tmuxServer>;

  /** Run the planter CLI (or curl) as `uid`, reaching the socket directly. */
  async function as(uid: number, argv: string[]) {
    const p = Bun.spawn(["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", ...argv], {
      env: { ...baseEnv(home), HOME: "/tmp", PLANTER_SOCKET: d.socket },
      stdout: "pipe",
      stderr: "pipe",
      cwd: "/tmp",
    });
    const [stdout, stderr, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    return { code, stdout, stderr };
  }

  beforeAll(async () => {
    home = tempHome("po");
    // nobody's own tmux server, in a dir of its own, running a fake agent nobody can read.
    const dir = join(home, "nobody");
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, 65534, 65534);
    const fakes = join(home, "fakes");
    cpSync(FAKES, fakes, { recursive: true });
    chmodSync(fakes, 0o755);
    nobodys = tmuxServer(join(dir, "tmux.sock"), 65534);
    d = await startDaemon({ home, config: `${config(nobodys.sock)}[authz]\nallowed_uids = [65534, 65533]\n` });
    chmodSync(home, 0o755);
    chmodSync(join(home, "run"), 0o755);
    chmodSync(d.socket, 0o666);
    nobodys.start("theirs", [join(fakes, "codex")]);
  });
  afterAll(async () => {
    nobodys.kill();
    await d.stop();
    cleanup(home);
  });

  test("an agent is shown to its user and root, not to another user; only its user (or root) reports on it", async () => {
    const theirs = await agentWhere(d, "nobody's codex", (a) => a.agent === "codex" && a.state === "waiting_input");
    const script = bundled(PLANTER);
    const listed = async (uid: number) =>
      (JSON.parse((await as(uid, [process.execPath, script, "agents", "ls", "--json"])).stdout) as Agent[]).map(
        (a) => a.runtime_id,
      );
    expect(await listed(65534)).toEqual([theirs.runtime_id]);
    expect(await listed(65533)).toEqual([]);
    const event: AgentEventIn = { ...eventFor(theirs), state: "error", detail: "from a hook" };
    const post = (uid: number) =>
      as(uid, [
        "curl",
        "-s",
        "--unix-socket",
        d.socket,
        "-H",
        "content-type: application/json",
        "--data",
        JSON.stringify({ ...event, at: Date.now() }),
        "http://planterd/v1/agents/events",
      ]);
    const refused = JSON.parse((await post(65533)).stdout);
    expect(refused.error).toMatchObject({
      code: "E_UNAUTHORIZED_PEER",
      message: `runtime.process ${theirs.runtime.process} is not a process of yours (uid 65533)`,
    });
    expect((await d.client.listAgents()).agents.find((a) => a.runtime_id === theirs.runtime_id)?.state).toBe(
      "waiting_input",
    );
    const taken = JSON.parse((await post(65534)).stdout);
    expect([taken.outcome, taken.agent.state, taken.agent.source]).toEqual(["applied", "error", "hook"]);
    // Another user's watch sees none of it: its snapshot is empty, and the change above is no delta for it.
    const watching = as(65533, [
      "curl",
      "-sN",
      "--max-time",
      "2",
      "--unix-socket",
      d.socket,
      "http://planterd/v1/agents/watch",
    ]);
    await Bun.sleep(300);
    expect(JSON.parse((await post(65534)).stdout).outcome).toBe("applied");
    const lines = (await watching).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toEqual([{ type: "snapshot", cursor: expect.any(String), agents: [] }]);
  });
});

function eventFor(a: Agent): AgentEventIn {
  return {
    agent: a.agent,
    source: "hook",
    runtime: a.runtime,
    kind: "Notification",
    state: "waiting_approval",
    at: Date.now(),
  };
}
