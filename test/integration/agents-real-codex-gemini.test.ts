/**
 * The real Codex and Gemini CLIs (from npm, installed for the tests only into
 * /var/tmp/planter-test-agents, never shipped) in a private tmux server, answered by scripted
 * fake model servers on loopback, observed by a real planterd through its poller alone (no hook,
 * no notify): recognised from the pane's process tree, waiting for input at their prompt, then
 * back at it once they answered.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Agent } from "../../lib/agents/model.ts";
import { fakeGemini } from "../fixtures/fake-gemini.ts";
import { fakeOpenAI } from "../fixtures/fake-openai.ts";
import { cleanup, type DaemonHandle, startDaemon, tempHome, waitFor } from "../harness.ts";

const AGENTS = process.env.PLANTER_TEST_AGENTS ?? "/var/tmp/planter-test-agents";
const BIN = join(AGENTS, "node_modules", ".bin");

let home: string;
let d: DaemonHandle;
const sock = () => join(home, "tmux.sock");
const tmux = (...args: string[]) =>
  Bun.spawnSync(["tmux", "-S", sock(), ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "" },
  });
const screen = (target: string) => tmux("capture-pane", "-p", "-t", target).stdout.toString();

beforeAll(async () => {
  home = tempHome("pcx");
  d = await startDaemon({ home, config: `[agents]\ntmux_dirs = []\ntmux_sockets = ["${sock()}"]\npoll_ms = 200\n` });
  // A server that stays when its last session ends (another test's next session must not race its exit).
  tmux("-f", "/dev/null", "start-server", ";", "set", "-g", "exit-empty", "off");
});

afterAll(async () => {
  tmux("kill-server");
  await d?.stop();
  if (home) cleanup(home);
});

/** The agent of kind `kind` the observer shows (one runs at a time here). */
async function agentOf(kind: "codex" | "gemini"): Promise<Agent | undefined> {
  return (await d.client.listAgents({ agent: kind })).agents[0];
}

/** End session `s` and every process of its pane (the pane's process group: a CLI's relaunched child too). */
async function stop(s: string): Promise<void> {
  const pid = Number(tmux("display-message", "-p", "-t", s, "#{pane_pid}").stdout.toString().trim());
  tmux("kill-session", "-t", s);
  if (!pid) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // gone already
  }
  const inGroup = () =>
    Bun.spawnSync(["pgrep", "-g", String(pid)], { stdout: "pipe" })
      .stdout.toString()
      .trim().length > 0;
  await waitFor(() => !inGroup(), `session ${s}'s processes to end`);
}

function start(s: string, env: Record<string, string>, argv: string[], cwd: string) {
  const r = tmux(
    "new-session",
    "-d",
    "-s",
    s,
    "-x",
    "120",
    "-y",
    "35",
    "-c",
    cwd,
    ...Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]),
    ...argv,
  );
  expect(r.exitCode).toBe(0);
}

describe.skipIf(!existsSync(join(BIN, "codex")) || !Bun.which("tmux"))(
  `the real Codex in tmux (needs ${AGENTS})`,
  () => {
    test("recognised by the poller: waiting for input at its prompt, and again once it answered", async () => {
      let release: () => void = () => undefined;
      const held = new Promise<void>((r) => {
        release = r;
      });
      const openai = fakeOpenAI((x) => ({ text: `fake answer to: ${x.last.slice(0, 40)}`, hold: held }));
      try {
        const user = join(home, "codex-user");
        const proj = join(user, "proj");
        mkdirSync(proj, { recursive: true });
        const provider = `{name="fake",base_url="http://127.0.0.1:${openai.port}/v1",wire_api="responses",env_key="FAKE_OPENAI_KEY"}`;
        start(
          "codex",
          { PATH: `${BIN}:${process.env.PATH}`, HOME: user, TERM: "xterm-256color", FAKE_OPENAI_KEY: "sk-fake" },
          [
            join(BIN, "codex"),
            "-c",
            "model_provider=fake",
            "-c",
            `model_providers.fake=${provider}`,
            "-c",
            "model=gpt-fake",
          ],
          proj,
        );
        await waitFor(() => screen("codex").includes("Ask Codex to do anything"), "Codex's prompt", 60_000);
        const first = await waitFor(async () => {
          const a = await agentOf("codex");
          return a?.agent === "codex" && a.state === "waiting_input" ? a : undefined;
        }, "the observer's codex waiting for input");
        expect(first.source).toBe("poller");
        tmux("send-keys", "-t", "codex", "-l", "say hello");
        await waitFor(() => screen("codex").includes("say hello"), "the prompt typed");
        tmux("send-keys", "-t", "codex", "Enter");
        // The model's answer is held: Codex works, and the poller sees it working.
        const working = await waitFor(
          async () => {
            const a = await agentOf("codex");
            return a?.state === "running" ? a : undefined;
          },
          `the observer's codex running (screen:\n${screen("codex")})`,
          30_000,
        );
        expect(working.source).toBe("poller");
        release();
        await waitFor(() => screen("codex").includes("fake answer to: say hello"), "the answer", 30_000);
        const done = await waitFor(
          async () => {
            const a = await agentOf("codex");
            return a?.state === "completed" ? a : undefined;
          },
          `the observer's codex completed (screen:\n${screen("codex")})`,
          30_000,
        );
        expect(done.source).toBe("poller");
      } finally {
        await stop("codex");
        openai.stop();
      }
    }, 120_000);
  },
);

describe.skipIf(!existsSync(join(BIN, "gemini")) || !Bun.which("tmux"))(
  `the real Gemini CLI in tmux (needs ${AGENTS})`,
  () => {
    test("recognised by the poller: waiting for input at its prompt, running while it waits for the model, then completed", async () => {
      let release: () => void = () => undefined;
      const held = new Promise<void>((r) => {
        release = r;
      });
      const gemini = fakeGemini((x) =>
        x.stream
          ? { text: `fake gemini answer to: ${x.last.slice(0, 30)}`, hold: held }
          : { text: '{"next_speaker": "user", "reasoning": "the answer is complete"}' },
      );
      try {
        const user = join(home, "gemini-user");
        const proj = join(user, "proj");
        mkdirSync(join(user, ".gemini"), { recursive: true });
        mkdirSync(proj, { recursive: true });
        // The API key's sign-in chosen, no folder-trust dialog, no update check.
        writeFileSync(
          join(user, ".gemini", "settings.json"),
          JSON.stringify({
            security: { auth: { selectedType: "gemini-api-key" }, folderTrust: { enabled: false } },
            general: { disableAutoUpdate: true, disableUpdateNag: true },
            privacy: { usageStatisticsEnabled: false },
          }),
        );
        start(
          "gemini",
          {
            PATH: `${BIN}:${process.env.PATH}`,
            HOME: user,
            TERM: "xterm-256color",
            GEMINI_API_KEY: "fake-key-not-a-key",
            GOOGLE_GEMINI_BASE_URL: `http://127.0.0.1:${gemini.port}`,
          },
          [join(BIN, "gemini")],
          proj,
        );
        await waitFor(() => screen("gemini").includes("Type your message"), "Gemini's prompt", 60_000);
        const first = await waitFor(
          async () => {
            const a = await agentOf("gemini");
            return a?.state === "waiting_input" ? a : undefined;
          },
          `the observer's gemini waiting for input (screen:\n${screen("gemini")})`,
          30_000,
        );
        expect(first.source).toBe("poller");
        tmux("send-keys", "-t", "gemini", "-l", "say hello");
        await waitFor(() => screen("gemini").includes("say hello"), "the prompt typed");
        tmux("send-keys", "-t", "gemini", "Enter");
        await waitFor(
          async () => (await agentOf("gemini"))?.state === "running",
          `the observer's gemini running (screen:\n${screen("gemini")})`,
          30_000,
        );
        release();
        await waitFor(() => screen("gemini").includes("fake gemini answer to: say hello"), "the answer", 30_000);
        const done = await waitFor(
          async () => {
            const a = await agentOf("gemini");
            return a?.state === "completed" ? a : undefined;
          },
          `the observer's gemini completed (screen:\n${screen("gemini")})`,
          30_000,
        );
        expect(done.source).toBe("poller");
      } finally {
        await stop("gemini");
        gemini.stop();
      }
    }, 120_000);
  },
);
