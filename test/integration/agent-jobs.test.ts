/**
 * Agent jobs (#16): the real Claude Code, Codex and Gemini CLIs (from npm, installed for the tests
 * only; never shipped) in sandboxed terminal jobs, each driven by a scripted model server on
 * 127.0.0.1 reached through the job's egress proxy (test/fixtures/fake-anthropic.ts,
 * fake-openai.ts, fake-gemini.ts). Claude Code's hooks report through the job's channel: running →
 * waiting_approval (a Bash tool call) → running → completed, as `agent.reported` events; Codex's
 * notify reports the turn's end; Gemini answers.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { agentArgv } from "../../lib/agents/hooks.ts";
import type { Job } from "../../lib/api/contract.ts";
import { type FakeModel, fakeModel } from "../fixtures/fake-anthropic.ts";
import { fakeGemini } from "../fixtures/fake-gemini.ts";
import { fakeOpenAI } from "../fixtures/fake-openai.ts";
import { cleanup, cli, type DaemonHandle, raw, startDaemon, tempHome, waitFor } from "../harness.ts";

const AGENTS = process.env.PLANTER_TEST_AGENTS ?? "/var/tmp/planter-test-agents";
const BIN = join(AGENTS, "node_modules", ".bin");
const KEY = "sk-test-not-a-key-0123456789";

let d: DaemonHandle;
let model: FakeModel;
let sandboxed = false;

beforeAll(async () => {
  model = fakeModel((s) =>
    s.last === "tool_result"
      ? { text: "all done" }
      : s.last.includes("please run it")
        ? { tool: "Bash", input: { command: "touch made-by-tool", description: "make a file" } }
        : { text: "ok" },
  );
  d = await startDaemon({
    home: tempHome("pt-ag"),
    config: '[sandbox]\nmode = "enforced"\n[network.hosts]\n"fake.test" = ["127.0.0.1"]\n',
  });
  const ready = (await raw(d.socket, "GET", "/v1/ready")).json as { sandbox: { backend: string; ok: boolean } };
  sandboxed = ready.sandbox.backend === "bwrap" && ready.sandbox.ok;
});

afterAll(async () => {
  // A test that failed midway leaves its agent running (jobs outlive planterd): ended first.
  if (d) {
    const { jobs } = await d.client.listJobs({ state: "running" });
    for (const j of jobs) await d.client.killJob(j.id, { force: true }).catch(() => undefined);
    for (const j of jobs) await d.client.waitJob(j.id, 20_000).catch(() => undefined);
  }
  await d?.stop();
  model?.stop();
  if (d) cleanup(d.home);
});

/** The job's `agent.reported` events so far. */
async function reported(id: string): Promise<{ event: string; state: string; detail: string | null }[]> {
  const out: { event: string; state: string; detail: string | null }[] = [];
  for await (const e of d.client.events({ limit: 10_000 })) {
    const ev = e as unknown as {
      kind: string;
      subject: string;
      data: { event: string; state: string; detail: string | null };
    };
    if (ev.kind === "agent.reported" && ev.subject === `job/${id}`) out.push(ev.data);
  }
  return out;
}

describe.skipIf(!existsSync(join(BIN, "claude")))(`an agent job: Claude Code (needs ${AGENTS})`, () => {
  test("its hooks report running → waiting_approval → running → completed through the job's channel", async () => {
    if (!sandboxed) return;
    const cell = await d.client.createCell({
      name: "ag",
      sandbox: { policy: { network: { allow: ["fake.test"], allow_local: true } } },
    } as never);
    // Claude Code's first-run state in the cell's home: onboarding done, the cell dir trusted, the key approved.
    const seed = JSON.stringify({
      hasCompletedOnboarding: true,
      theme: "dark",
      customApiKeyResponses: { approved: [KEY.slice(-20)], rejected: [] },
      projects: { [cell.dir]: { hasTrustDialogAccepted: true, allowedTools: [] } },
    });
    const s = await d.client.createJob({
      cell: "ag",
      argv: ["sh", "-c", 'printf %s "$SEED" > "$HOME/.claude.json"'],
      env: { SEED: seed },
    } as never);
    expect(((await d.client.waitJob(s.id, 30_000)).job as Job).exit_code).toBe(0);

    const job = await d.client.createJob({
      cell: "ag",
      agent: { kind: "claude" },
      argv: agentArgv("claude", []),
      tty: { cols: 120, rows: 35 },
      env: {
        PATH: `${BIN}:/usr/local/bin:/usr/bin:/bin`,
        ANTHROPIC_BASE_URL: `http://fake.test:${model.port}`,
        ANTHROPIC_API_KEY: KEY,
        DISABLE_TELEMETRY: "1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
        TERM: "xterm-256color",
      },
    } as never);
    expect(job.env.PLANTER_AGENT_REPORT).toBe("/tmp/.planter-agent-report");
    const screen = async () => (await d.client.screen(job.id)).lines.join("\n");
    const ended = async () => (await d.client.getJob(job.id)).state !== "running";
    await waitFor(
      async () => {
        if (await ended()) throw new Error(`the agent's job ended: ${await screen()}`);
        return (await screen()).includes("? for shortcuts");
      },
      "Claude Code's prompt",
      60_000,
    );
    const states = async () => (await reported(job.id)).map((r) => `${r.event}:${r.state}`);
    await waitFor(async () => (await states()).includes("SessionStart:waiting_input"), "SessionStart");
    await d.client.writeStdin(job.id, { data: Buffer.from("please run it").toString("base64") });
    await waitFor(async () => (await screen()).includes("please run it"), "the prompt typed");
    await d.client.writeStdin(job.id, { data: Buffer.from("\r").toString("base64") });
    await waitFor(
      async () => (await states()).includes("PermissionRequest:waiting_approval"),
      "the approval asked",
      30_000,
    );
    // The hook runs as the dialog is drawn: the screen shows it a moment later.
    await waitFor(async () => (await screen()).includes("Do you want to proceed?"), "the approval dialog");
    // The observer shows the job's agent waiting for approval; approved through an action guarded by that state.
    const agent = await waitFor(
      async () => (await d.client.listAgents({ job: job.id })).agents.find((a) => a.state === "waiting_approval"),
      "the job's agent waiting for approval",
    );
    expect(agent).toMatchObject({ agent: "claude", cell: "ag", source: "hook" });
    const approved = await d.client.agentSend(agent.runtime_id, { keys: ["Enter"], if_state: "waiting_approval" });
    expect(approved.written).toBe(1);
    await waitFor(async () => (await states()).includes("Stop:completed"), "the turn's end", 30_000);
    expect(existsSync(join(cell.dir, "made-by-tool"))).toBe(true);
    const seen = await reported(job.id);
    const order = seen
      .map((r) => r.event)
      .filter((e) => ["UserPromptSubmit", "PreToolUse", "PermissionRequest", "PostToolUse", "Stop"].includes(e));
    expect(order).toEqual(["UserPromptSubmit", "PreToolUse", "PermissionRequest", "PostToolUse", "Stop"]);
    expect(seen.find((r) => r.event === "PreToolUse")?.detail).toBe("Bash");
    // The observer took them: the job's agent is listed, as its hooks said.
    const listed = (await d.client.listAgents({ job: job.id })).agents[0];
    expect([listed?.state, listed?.source, listed?.cell]).toEqual(["completed", "hook", "ag"]);
    // The model saw the tool's result: the whole turn went through the job's proxy.
    expect(model.seen.some((x) => x.last === "tool_result")).toBe(true);
    await d.client.killJob(job.id, { force: true });
    await d.client.waitJob(job.id, 20_000);
    expect(existsSync(join(d.home, "state", "reports", `${job.id}.fifo`))).toBe(false);
  });
});

/** `planter agent run KIND -d --json` in cell `cell` with `env` and the CLI's `args`: the job. */
async function agentRun(kind: string, cell: string, env: Record<string, string>, args: string[]): Promise<Job> {
  const r = await cli(d.home, [
    "agent",
    "run",
    kind,
    "-d",
    "--json",
    "--cell",
    cell,
    "--program",
    join(BIN, kind),
    ...Object.entries({ PATH: `${BIN}:/usr/local/bin:/usr/bin:/bin`, TERM: "xterm-256color", ...env }).flatMap(
      ([k, v]) => ["--env", `${k}=${v}`],
    ),
    "--",
    ...args,
  ]);
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout) as Job;
}

/** A job's screen as text; throws when the job has ended (its screen says why). */
async function screenOf(id: string): Promise<string> {
  const text = (await d.client.screen(id)).lines.join("\n");
  if ((await d.client.getJob(id)).state !== "running") throw new Error(`the agent's job ended:\n${text}`);
  return text;
}

/** Type `text` into a terminal job, then Enter once it shows. */
async function typeLine(id: string, text: string): Promise<void> {
  await d.client.writeStdin(id, { data: Buffer.from(text).toString("base64") });
  await waitFor(async () => (await screenOf(id)).includes(text), `"${text}" typed`);
  await d.client.writeStdin(id, { data: Buffer.from("\r").toString("base64") });
}

/** A cell whose jobs reach the fake model servers (fake.test, 127.0.0.1 in the config) only. */
async function fakeCell(name: string) {
  return d.client.createCell({
    name,
    sandbox: { policy: { network: { allow: ["fake.test"], allow_local: true } } },
  } as never);
}

describe.skipIf(!existsSync(join(BIN, "codex")))(`an agent job: Codex CLI (needs ${AGENTS})`, () => {
  test("planter agent run codex: it answers from a scripted Responses API; its notify reports the turn's end", async () => {
    if (!sandboxed) return;
    const openai = fakeOpenAI((s) => ({ text: `fake answer to: ${s.last.slice(0, 40)}` }));
    try {
      await fakeCell("ag-codex");
      const provider = `{name="fake",base_url="http://fake.test:${openai.port}/v1",wire_api="responses",env_key="FAKE_OPENAI_KEY"}`;
      const job = await agentRun("codex", "ag-codex", { FAKE_OPENAI_KEY: "sk-fake-not-a-key" }, [
        "-c",
        "model_provider=fake",
        "-c",
        `model_providers.fake=${provider}`,
        "-c",
        "model=gpt-fake",
      ]);
      expect(job.argv[1]).toBe("-c");
      expect(job.argv[2]).toStartWith("notify=");
      await waitFor(
        async () => (await screenOf(job.id)).includes("Ask Codex to do anything"),
        "Codex's prompt",
        60_000,
      );
      await typeLine(job.id, "say hello");
      await waitFor(async () => (await screenOf(job.id)).includes("fake answer to: say hello"), "the answer", 30_000);
      // Codex runs the job's notify at the turn's end: a line in the channel, the observer's state.
      const seen = await waitFor(
        async () => (await reported(job.id)).find((r) => r.event === "notify"),
        "Codex's notify",
        30_000,
      );
      expect(seen.state).toBe("completed");
      const agent = await waitFor(
        async () => (await d.client.listAgents({ job: job.id })).agents.find((a) => a.state === "completed"),
        "the job's agent completed",
      );
      expect(agent).toMatchObject({ agent: "codex", source: "notify", cell: "ag-codex" });
      expect(openai.seen.some((x) => x.last.includes("say hello"))).toBe(true);
      await d.client.killJob(job.id, { force: true });
      await d.client.waitJob(job.id, 20_000);
    } finally {
      openai.stop();
    }
  });
});

describe.skipIf(!existsSync(join(BIN, "gemini")))(`an agent job: Gemini CLI (needs ${AGENTS})`, () => {
  test("planter agent run gemini: it answers from a scripted Gemini API; its hooks report the turn", async () => {
    if (!sandboxed) return;
    const gemini = fakeGemini((s) =>
      s.stream
        ? { text: `fake gemini answer to: ${s.last.slice(0, 30)}` }
        : { text: '{"next_speaker": "user", "reasoning": "the answer is complete"}' },
    );
    try {
      const cell = await fakeCell("ag-gemini");
      // The API key's sign-in chosen, no folder-trust dialog, no update check: the cell's home.
      const settings = JSON.stringify({
        security: { auth: { selectedType: "gemini-api-key" }, folderTrust: { enabled: false } },
        general: { disableAutoUpdate: true, disableUpdateNag: true },
        privacy: { usageStatisticsEnabled: false },
      });
      const s = await d.client.createJob({
        cell: "ag-gemini",
        argv: ["sh", "-c", 'mkdir -p "$HOME/.gemini" && printf %s "$SEED" > "$HOME/.gemini/settings.json"'],
        env: { SEED: settings },
      } as never);
      expect(((await d.client.waitJob(s.id, 30_000)).job as Job).exit_code).toBe(0);
      const job = await agentRun(
        "gemini",
        "ag-gemini",
        { GEMINI_API_KEY: "fake-key-not-a-key", GOOGLE_GEMINI_BASE_URL: `http://fake.test:${gemini.port}` },
        [],
      );
      expect(job.cwd).toBe(cell.dir);
      await waitFor(async () => (await screenOf(job.id)).includes("Type your message"), "Gemini's prompt", 60_000);
      // Its hooks, put into its settings as the job started, report through the job's channel.
      const states = async () => (await reported(job.id)).map((r) => `${r.event}:${r.state}`);
      await waitFor(async () => (await states()).includes("SessionStart:waiting_input"), "SessionStart", 30_000);
      await typeLine(job.id, "say hello");
      await waitFor(
        async () => (await screenOf(job.id)).includes("fake gemini answer to: say hello"),
        "the answer",
        30_000,
      );
      expect(gemini.seen.some((x) => x.stream && x.last.includes("say hello"))).toBe(true);
      await waitFor(async () => (await states()).includes("AfterAgent:completed"), "AfterAgent", 30_000);
      expect((await states()).filter((x) => x.startsWith("BeforeAgent") || x.startsWith("AfterAgent"))).toEqual([
        "BeforeAgent:running",
        "AfterAgent:completed",
      ]);
      const agent = await waitFor(
        async () => (await d.client.listAgents({ job: job.id })).agents.find((a) => a.state === "completed"),
        "the job's agent completed",
      );
      expect(agent).toMatchObject({ agent: "gemini", source: "hook", cell: "ag-gemini" });
      // The cell's settings kept what was there, beside planter's hooks.
      const settingsFile = join(d.home, "state", "homes", "ag-gemini", ".gemini", "settings.json");
      const saved = JSON.parse(readFileSync(settingsFile, "utf8"));
      expect([saved.security.auth.selectedType, Object.keys(saved.hooks).length]).toEqual(["gemini-api-key", 8]);
      await d.client.killJob(job.id, { force: true });
      await d.client.waitJob(job.id, 20_000);
    } finally {
      gemini.stop();
    }
  });
});

describe("planter agent run", () => {
  test("detached: the agent's own cell with its API hosts, its hooks in argv, --pass-env; a cell with no network is refused", async () => {
    if (!sandboxed) return;
    const r = await cli(
      d.home,
      [
        "agent",
        "run",
        "claude",
        "-d",
        "--json",
        "--program",
        "/bin/sleep",
        "--pass-env",
        "PLANTER_TEST_KEY",
        "--",
        "--x",
      ],
      { env: { PLANTER_TEST_KEY: "k-1", TERM: "xterm" } },
    );
    expect(r.stderr).toBe("");
    const job = JSON.parse(r.stdout) as Job;
    expect(job.cell).toBe("agent-claude");
    expect(job.argv[0]).toBe("/bin/sleep");
    expect(job.argv[1]).toBe("--settings");
    expect(JSON.parse(job.argv[2] as string).hooks.PermissionRequest).toBeArray();
    expect(job.argv.at(-1)).toBe("--x");
    expect([job.env.PLANTER_TEST_KEY, job.env.TERM, job.env.PLANTER_AGENT_REPORT]).toEqual([
      "k-1",
      "xterm",
      "/tmp/.planter-agent-report",
    ]);
    expect(job.tty).toMatchObject({ cols: 80, rows: 24 });
    expect(job.sandbox.policy?.network).toEqual({
      allow: ["api.anthropic.com", "statsig.anthropic.com", "console.anthropic.com", "claude.ai"],
      deny: [],
      allow_local: false,
    });
    // `sleep --settings …` refuses its arguments and may have ended already: the kill only cleans up.
    await d.client.killJob(job.id, { force: true }).catch(() => undefined);
    await d.client.waitJob(job.id, 20_000);
    await d.client.createCell({ name: "offline" } as never);
    const refused = await cli(d.home, ["agent", "run", "codex", "-d", "--cell", "offline", "--program", "/bin/true"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      "cell offline has no network, and the codex agent needs its API (api.openai.com, chatgpt.com, auth.openai.com)",
    );
    const unknown = await cli(d.home, ["agent", "run", "cursor", "-d"]);
    expect([unknown.code, unknown.stderr.split("\n")[0]]).toEqual([2, 'planter: unknown agent "cursor"']);
  });
});

describe("planter agent hooks install|uninstall", () => {
  test("edits your settings files reversibly, records what changed, refuses a Codex notify of yours", async () => {
    const home = tempHome("pt-ah");
    try {
      const claude = join(home, ".claude", "settings.json");
      mkdirSync(dirname(claude), { recursive: true });
      const user = `${JSON.stringify({ model: "x", hooks: { Stop: [{ hooks: [{ type: "command", command: "say done" }] }] } }, null, 2)}\n`;
      writeFileSync(claude, user);
      const env = { HOME: home, XDG_CONFIG_HOME: join(home, ".config") };
      const dry = await cli(home, ["agent", "hooks", "install", "--claude", "--dry-run"], { env });
      expect(dry.stdout).toStartWith(`claude: ${claude}: would be added SessionStart,`);
      expect(readFileSync(claude, "utf8")).toBe(user);
      const r = await cli(home, ["agent", "hooks", "install", "--claude", "--codex", "--gemini", "--json"], { env });
      const out = JSON.parse(r.stdout) as { agents: { agent: string; changed: boolean }[] };
      expect(out.agents.map((a) => [a.agent, a.changed])).toEqual([
        ["claude", true],
        ["codex", true],
        ["gemini", true],
      ]);
      expect(readFileSync(claude, "utf8")).toContain(" agent report claude PermissionRequest");
      const gemini = join(home, ".gemini", "settings.json");
      const g = JSON.parse(readFileSync(gemini, "utf8"));
      expect(g.hooks.AfterAgent[0].hooks[0]).toMatchObject({ type: "command", timeout: 5000 });
      expect(g.hooks.AfterAgent[0].hooks[0].command).toEndWith(" agent report gemini AfterAgent");
      const record = JSON.parse(readFileSync(join(home, ".config", "planter", "agent-hooks.json"), "utf8"));
      expect(
        record.changes.map((c: { agent: string; before_sha256: string | null }) => [c.agent, c.before_sha256 === null]),
      ).toEqual([
        ["claude", false],
        ["codex", true],
        ["gemini", true],
      ]);
      const again = await cli(home, ["agent", "hooks", "install", "--claude"], { env });
      expect(again.stdout).toBe(`claude: ${claude}: already installed\n`);
      const un = await cli(home, ["agent", "hooks", "uninstall", "--claude", "--codex"], { env });
      expect(un.code).toBe(0);
      expect(readFileSync(claude, "utf8")).toBe(user);
      // Codex's config.toml did not exist before: it is gone again.
      expect(existsSync(join(home, ".codex", "config.toml"))).toBe(false);
      expect((await cli(home, ["agent", "hooks", "uninstall", "--gemini"], { env })).code).toBe(0);
      expect(existsSync(gemini)).toBe(false);
      mkdirSync(join(home, ".codex"), { recursive: true });
      writeFileSync(join(home, ".codex", "config.toml"), 'notify = ["say"]\n');
      const refused = await cli(home, ["agent", "hooks", "install", "--codex"], { env });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("already sets notify");
      expect(readFileSync(join(home, ".codex", "config.toml"), "utf8")).toBe('notify = ["say"]\n');
      const none = await cli(home, ["agent", "hooks", "install"], { env });
      expect(none.code).toBe(2);
    } finally {
      cleanup(home);
    }
  });
});
