/**
 * A real MCP client nobody here wrote (#17): Claude Code from npm (installed for the tests only;
 * never shipped), in print mode with planter as its MCP server over stdio (`planter mcp`), driven
 * by a scripted model on 127.0.0.1: the model calls planter's run tool, Claude Code runs it
 * through planter (a sandboxed job in planterd), and the job's output comes back to the model.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type FakeModel, fakeModel } from "../fixtures/fake-anthropic.ts";
import { baseEnv, cleanup, type DaemonHandle, exitWithin, PLANTER, startDaemon, tempHome } from "../harness.ts";

const AGENTS = process.env.PLANTER_TEST_AGENTS ?? "/var/tmp/planter-test-agents";
const CLAUDE = join(AGENTS, "node_modules", ".bin", "claude");
const KEY = "sk-test-not-a-key-0123456789";

describe.skipIf(!existsSync(CLAUDE))(`Claude Code calls planter's MCP tools (needs ${AGENTS})`, () => {
  let d: DaemonHandle;
  let model: FakeModel;
  beforeAll(async () => {
    model = fakeModel((s) =>
      s.toolResult
        ? { text: s.toolResult.includes("from-planter-42") ? "the job said from-planter-42" : "no answer from planter" }
        : s.last.includes("use planter")
          ? { tool: "mcp__planter__run", input: { command: "echo from-planter-$((6*7)); id -u", wait_s: 30 } }
          : { text: "ok" },
    );
    d = await startDaemon({ home: tempHome("pt-mc"), config: '[sandbox]\nmode = "enforced"\n' });
  });
  afterAll(async () => {
    await d?.stop();
    model?.stop();
    if (d) cleanup(d.home);
  });

  test("claude -p --mcp-config: the model's run call becomes a planter job; its output goes back", async () => {
    const home = join(d.home, "claude-home");
    mkdirSync(home, { recursive: true });
    writeFileSync(
      join(home, ".claude.json"),
      JSON.stringify({
        hasCompletedOnboarding: true,
        customApiKeyResponses: { approved: [KEY.slice(-20)], rejected: [] },
      }),
    );
    const config = join(d.home, "mcp.json");
    writeFileSync(
      config,
      JSON.stringify({
        mcpServers: { planter: { command: process.execPath, args: [PLANTER, "mcp"], env: baseEnv(d.home) } },
      }),
    );
    const proc = Bun.spawn(
      [
        CLAUDE,
        "-p",
        "use planter to run the command",
        "--mcp-config",
        config,
        "--strict-mcp-config",
        "--allowedTools",
        "mcp__planter__run",
        "--output-format",
        "json",
      ],
      {
        cwd: home,
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: home,
          ANTHROPIC_BASE_URL: model.url,
          ANTHROPIC_API_KEY: KEY,
          DISABLE_TELEMETRY: "1",
          CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
          DISABLE_AUTOUPDATER: "1",
          // A loaded full suite starts `planter mcp` (from source) slowly: Claude Code's own
          // MCP start-up and tool timeouts are raised so that they are not what is measured.
          MCP_TIMEOUT: "60000",
          // Print mode does not wait for MCP servers by default: the model's first turn could
          // come before `planter mcp` answers (seen in CI: "still connecting").
          MCP_CONNECTION_NONBLOCKING: "false",
          MCP_TOOL_TIMEOUT: "120000",
        },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    const code = await exitWithin(proc, 120_000, "claude -p");
    const out = await new Response(proc.stdout).text();
    const err = await new Response(proc.stderr).text();
    expect({ code, err: code === 0 ? "" : err.slice(-2000) }).toEqual({ code: 0, err: "" });
    const result = JSON.parse(out) as { result: string; is_error: boolean };
    // What the model got back is the job's output, and the job is planter's: sandboxed, never root, audited.
    const back = model.seen.find((s) => s.toolResult)?.toolResult ?? "";
    expect({ result: result.result, back: result.result.includes("42") ? "" : back }).toEqual({
      result: "the job said from-planter-42",
      back: "",
    });
    expect(back).toContain("from-planter-42");
    const { jobs } = await d.client.listJobs({});
    const job = jobs.find((j) => j.argv[2]?.startsWith("echo from-planter-"));
    expect(job?.state).toBe("exited");
    expect(job?.sandbox.backend).toBe("bwrap");
    // Claude Code hands the model the structured result: the job, its end, its output.
    const seen = JSON.parse(back) as { job: { id: string; exit_code: number }; stdout: { text: string } };
    expect(seen.job).toMatchObject({ id: job?.id, exit_code: 0 });
    expect(seen.stdout.text).toBe("from-planter-42\n65534\n");
    const created = [];
    for await (const e of d.client.events({ kind: ["job.created"], subject: `job/${job?.id}` })) created.push(e);
    expect(created[0]?.data.via).toBe("mcp");
  });
});
