/**
 * The real Claude Code (from npm, installed for the tests only into /var/tmp/planter-test-agents,
 * never shipped) in a private tmux server, answered by a scripted fake Messages API on loopback
 * (test/fixtures/fake-anthropic.ts), observed by a real planterd through its poller alone:
 * waiting for input, running, waiting for approval (a Bash tool call), completed, error.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Agent, AgentState } from "../../lib/agents/model.ts";
import { fakeAnthropic } from "../fixtures/fake-anthropic.ts";
import { cleanup, type DaemonHandle, startDaemon, tempHome, waitFor } from "../harness.ts";

const AGENTS = process.env.PLANTER_TEST_AGENTS ?? "/var/tmp/planter-test-agents";
const CLAUDE = join(AGENTS, "node_modules", "@anthropic-ai", "claude-code", "bin", "claude.exe");
const KEY = "sk-ant-planter-test-0000000000000000";

describe.skipIf(!existsSync(CLAUDE) || !Bun.which("tmux"))(`the real Claude Code (needs ${AGENTS})`, () => {
  let home: string;
  let d: DaemonHandle;
  let api: ReturnType<typeof fakeAnthropic>;
  const sock = () => join(home, "tmux.sock");
  const tmux = (...args: string[]) =>
    Bun.spawnSync(["tmux", "-S", sock(), ...args], {
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: process.env.PATH ?? "" },
    });

  beforeAll(async () => {
    home = tempHome("pc");
    api = fakeAnthropic();
    const user = join(home, "user");
    const project = join(user, "proj");
    mkdirSync(project, { recursive: true });
    // As after a first run: onboarding done, this key approved (its last 20 characters), the folder trusted.
    await Bun.write(
      join(user, ".claude.json"),
      JSON.stringify({
        hasCompletedOnboarding: true,
        theme: "dark",
        customApiKeyResponses: { approved: [KEY.slice(-20)], rejected: [] },
        projects: { [project]: { hasTrustDialogAccepted: true } },
      }),
    );
    d = await startDaemon({ home, config: `[agents]\ntmux_dirs = []\ntmux_sockets = ["${sock()}"]\npoll_ms = 200\n` });
    const env = [
      `PATH=${process.env.PATH}`,
      `HOME=${user}`,
      "TERM=xterm-256color",
      `ANTHROPIC_API_KEY=${KEY}`,
      `ANTHROPIC_BASE_URL=${api.url}`,
      "DISABLE_AUTOUPDATER=1",
      "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
    ];
    const r = tmux(
      "new-session",
      "-d",
      "-s",
      "claude",
      "-x",
      "120",
      "-y",
      "40",
      "-c",
      project,
      "env",
      "-i",
      ...env,
      CLAUDE,
    );
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  });
  afterAll(async () => {
    tmux("kill-server");
    api.stop();
    await d.stop();
    cleanup(home);
  });

  test("waiting_input → running → completed → waiting_approval → running → completed → error, by the poller", async () => {
    const seen: AgentState[] = [];
    const agent = async (): Promise<Agent | undefined> => {
      const a = (await d.client.listAgents({ agent: "claude" })).agents[0];
      if (a && seen.at(-1) !== a.state) seen.push(a.state);
      return a;
    };
    const reach = (state: AgentState, ms = 30_000) =>
      waitFor(
        async () => {
          const a = await agent();
          return a?.state === state ? a : null;
        },
        `Claude Code to be ${state} (seen: ${seen.join(" → ")}; screen:\n${tmux("capture-pane", "-p", "-t", "claude").stdout})`,
        ms,
      );
    const type = async (text: string) => {
      tmux("send-keys", "-t", "claude", "-l", text);
      await Bun.sleep(300);
      tmux("send-keys", "-t", "claude", "Enter");
    };
    const first = await reach("waiting_input", 60_000);
    expect(first.runtime.pane_id).toMatch(/^%\d+$/);
    await type("please SLOW answer");
    const running = await reach("running");
    expect(running.detail).toEndWith("…");
    expect((await reach("completed")).detail).toBe("A slow answer.");
    await type("RUN:ls /");
    const asking = await reach("waiting_approval");
    expect(asking.detail).toBe("Bash command · ls /");
    tmux("send-keys", "-t", "claude", "Enter");
    expect((await reach("completed")).detail).toBe("The command ran.");
    await type("FAIL now");
    expect((await reach("error")).detail).toBe("API Error: 400 fake failure for planter");
    expect(seen.filter((s) => s !== "unknown")).toEqual(
      expect.arrayContaining(["waiting_input", "running", "completed", "waiting_approval", "error"]),
    );
    expect((await agent())?.source).toBe("poller");
  });
});
