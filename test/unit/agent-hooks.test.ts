/** planter's hooks in a user's own agent settings: added once, removed exactly, the user's kept. */
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  agentArgv,
  CLAUDE_HOOK_EVENTS,
  claudeSettings,
  GEMINI_HOOK_EVENTS,
  reportCommand,
} from "../../lib/agents/hooks.ts";
import {
  hostReportCommand,
  parseSettings,
  withClaudeHooks,
  withCodexNotify,
  withoutClaudeHooks,
  withoutCodexNotify,
} from "../../lib/agents/host-hooks.ts";
import { lineEvent, parseLine } from "../../lib/agents/report.ts";

const P = ["/opt/planter dir/planter"];

describe("Claude Code settings", () => {
  test("install adds one hook per event beside the user's, once; uninstall removes exactly those", () => {
    const mine = { hooks: [{ type: "command", command: "notify-send done" }] };
    const user = { model: "sonnet", hooks: { Stop: [mine], Custom: "kept as it is" } };
    const a = withClaudeHooks(user, P);
    expect(a.added).toEqual([...CLAUDE_HOOK_EVENTS]);
    const stop = (a.settings.hooks as Record<string, unknown[]>).Stop;
    expect(stop).toEqual([
      mine,
      { hooks: [{ type: "command", command: "'/opt/planter dir/planter' agent report claude Stop", timeout: 5 }] },
    ]);
    expect(withClaudeHooks(a.settings, P).added).toEqual([]);
    const b = withoutClaudeHooks(a.settings);
    expect(b.removed).toBe(CLAUDE_HOOK_EVENTS.length);
    expect(b.settings).toEqual(user);
    // A group the user extended with their own hook keeps theirs.
    const mixed = {
      hooks: { Stop: [{ hooks: [{ command: hostReportCommand(P, "claude", "Stop") }, { command: "x" }] }] },
    };
    expect(withoutClaudeHooks(mixed).settings).toEqual({ hooks: { Stop: [{ hooks: [{ command: "x" }] }] } });
    expect(withoutClaudeHooks({ model: "m" })).toEqual({ settings: { model: "m" }, removed: 0 });
  });

  test("a settings file that is not a JSON object is refused with its name", () => {
    expect(parseSettings(null, "f")).toEqual({});
    expect(() => parseSettings("{", "/h/.claude/settings.json")).toThrow("/h/.claude/settings.json is not JSON");
    expect(() => parseSettings("[]", "f")).toThrow("f is not a JSON object");
    expect(() => parseSettings('{"hooks": 3}', "f")).toThrow('f: "hooks" is not an object');
    expect(() => hostReportCommand(P, "claude", "Stop; rm -rf /")).toThrow("not an event name");
  });
});

describe("Codex config.toml", () => {
  test("notify is added with a marker, kept when it is planter's, never replaced when it is the user's", () => {
    const a = withCodexNotify('model = "o3"\n[tui]\nx = 1\n', ["/bin/planter"], "c.toml");
    expect(a.text).toBe(
      '# planter agent hooks: the line below reports Codex\'s turns to planterd\nnotify = ["/bin/planter", "agent", "report", "codex", "notify"]\nmodel = "o3"\n[tui]\nx = 1\n',
    );
    expect(withCodexNotify(a.text, ["/bin/planter"], "c.toml")).toEqual({ text: a.text, added: false });
    expect(withoutCodexNotify(a.text)).toEqual({ text: 'model = "o3"\n[tui]\nx = 1\n', removed: true });
    expect(() => withCodexNotify('notify = ["say"]\n', ["/bin/planter"], "/h/.codex/config.toml")).toThrow(
      '/h/.codex/config.toml already sets notify (notify = ["say"]): Codex runs one notify program, and planter does not replace yours',
    );
    // A notify inside a table is not the top-level one.
    expect(withCodexNotify('[profiles.x]\nnotify = ["say"]\n', ["/p"], "c").added).toBe(true);
    expect(withoutCodexNotify('notify = ["say"]\n')).toEqual({ text: 'notify = ["say"]\n', removed: false });
  });
});

describe("a job's hooks and its report lines", () => {
  test("every event's command writes one line into the channel; the lines mean states", () => {
    const s = claudeSettings() as { hooks: Record<string, { hooks: { command: string }[] }[]> };
    expect(Object.keys(s.hooks)).toEqual([...CLAUDE_HOOK_EVENTS]);
    expect(s.hooks.Stop?.[0]?.hooks[0]?.command).toBe(reportCommand("Stop"));
    expect(reportCommand("Stop")).toBe(
      `[ -p "$PLANTER_AGENT_REPORT" ] || exit 0; l=$(head -c 3800 | tr -d '\\n\\r'); printf 'Stop\\t%s\\n' "$l" 1<>"$PLANTER_AGENT_REPORT"`,
    );
    const rt = { tmux_socket: null, server: null, pane_id: null, process: "10:20", job_id: "j-1" };
    const ev = (line: string) => {
      const l = parseLine(line);
      return l ? lineEvent("claude", l, rt, 1, 5) : null;
    };
    expect(ev('PermissionRequest\t{"tool_name":"Bash"}')).toMatchObject({
      state: "waiting_approval",
      detail: "Bash",
      source: "hook",
    });
    // JSON cut at the line's limit: the fields are still found.
    expect(ev('PreToolUse\t{"tool_name":"Edit","tool_input":{"x":"…')).toMatchObject({
      state: "running",
      detail: "Edit",
    });
    expect(
      ev('Notification\t{"notification_type":"idle_prompt","message":"Claude is waiting for your input"}'),
    ).toMatchObject({
      state: "waiting_input",
    });
    expect(ev("Stop\t{}")).toMatchObject({ state: "completed", kind: "Stop", at: 5, source_seq: 1 });
    expect(ev("Unknown\t{}")).toBeNull();
    expect(ev("no tab here")).toBeNull();
    expect(ev("Bad;Name\t{}")).toBeNull();
    const codex = parseLine('notify\t{"type":"agent-turn-complete","last-assistant-message":"done\\u001b[2J"}');
    expect(codex && lineEvent("codex", codex, rt, 2, 6)).toMatchObject({ source: "notify", state: "completed" });
    const gemini = (line: string) => {
      const l = parseLine(line);
      return l ? lineEvent("gemini", l, rt, 3, 7) : null;
    };
    expect(gemini('BeforeTool\t{"tool_name":"run_shell_command"}')).toMatchObject({
      source: "hook",
      state: "running",
      detail: "run_shell_command",
    });
    expect(
      gemini('Notification\t{"notification_type":"ToolPermission","message":"Allow execution of ls?"}'),
    ).toMatchObject({ state: "waiting_approval", detail: "Allow execution of ls?" });
    expect(gemini("AfterAgent\t{}")).toMatchObject({ state: "completed" });
    expect(gemini("Stop\t{}")).toBeNull();
  });

  test("Gemini: planter's hooks are put into its settings before it runs, the user's kept, an older planter's replaced", () => {
    const home = mkdtempSync(join(tmpdir(), "pt-gh-"));
    try {
      const file = join(home, ".gemini", "settings.json");
      mkdirSync(join(home, ".gemini"));
      const mine = { hooks: [{ type: "command", command: "say done" }] };
      const old = { hooks: [{ type: "command", command: 'printf x >"$PLANTER_AGENT_REPORT"' }] };
      writeFileSync(file, JSON.stringify({ theme: "x", hooks: { AfterAgent: [mine, old] } }));
      const argv = agentArgv("gemini", ["--y"], "/bin/echo");
      expect(argv.slice(-2)).toEqual(["/bin/echo", "--y"]);
      const run = () =>
        Bun.spawnSync(argv, { env: { HOME: home, PATH: process.env.PATH ?? "/usr/bin:/bin" }, stderr: "pipe" });
      const r = run();
      expect([r.exitCode, r.stdout.toString(), r.stderr.toString()]).toEqual([0, "--y\n", ""]);
      run();
      const s = JSON.parse(readFileSync(file, "utf8"));
      expect(s.theme).toBe("x");
      expect(Object.keys(s.hooks)).toEqual(["AfterAgent", ...GEMINI_HOOK_EVENTS.filter((e) => e !== "AfterAgent")]);
      expect(s.hooks.AfterAgent).toEqual([
        mine,
        { hooks: [{ type: "command", command: reportCommand("AfterAgent"), timeout: 5000 }] },
      ]);
      // Not JSON: left alone, and the agent still runs.
      writeFileSync(file, "{ not json");
      const bad = run();
      expect([bad.exitCode, bad.stdout.toString()]).toEqual([0, "--y\n"]);
      expect(bad.stderr.toString()).toContain("(the agent runs without planter's hooks)");
      expect(readFileSync(file, "utf8")).toBe("{ not json");
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("action guards", () => {
  const { checkGuards, sendBytes } =
    require("../../lib/agents/actions.ts") as typeof import("../../lib/agents/actions.ts");
  const agent = {
    runtime_id: "rt-0123456789abcdef",
    runtime: { tmux_socket: null, server: null, pane_id: null, process: "1:2", job_id: "j-1" },
    agent: "claude" as const,
    state: "waiting_approval" as const,
    reason: null,
    since: 1000,
    updated_at: 5000,
    source: "hook" as const,
    detail: "Bash",
    pane: null,
    cell: "c",
    state_version: 7,
  };
  const code = (f: () => unknown) => {
    try {
      f();
      return "ok";
    } catch (e) {
      return `${(e as { code: string }).code}: ${(e as Error).message}`;
    }
  };

  test("the runtime, the state, its version and its freshness; a gone agent is stale", () => {
    expect(
      code(() => checkGuards(agent, { if_runtime: "rt-0123456789abcdef", if_state: "waiting_approval" }, 6000, "x")),
    ).toBe("ok");
    expect(code(() => checkGuards(agent, { if_runtime: "rt-ffffffffffffffff" }, 6000, "%3"))).toBe(
      "E_RUNTIME_STALE: %3 is now runtime rt-0123456789abcdef, not rt-ffffffffffffffff: another agent (or a restart) took its place",
    );
    expect(code(() => checkGuards(agent, { if_state: ["running", "waiting_input"] }, 6000, "x"))).toBe(
      "E_STATE_CHANGED: agent rt-0123456789abcdef is waiting_approval, not running or waiting_input",
    );
    expect(code(() => checkGuards(agent, { if_state_version: 6 }, 6000, "x"))).toBe(
      "E_STATE_CHANGED: agent rt-0123456789abcdef's state changed since version 6 (now 7: waiting_approval)",
    );
    expect(code(() => checkGuards(agent, { if_updated_within: 500 }, 6000, "x"))).toBe(
      "E_STATE_CHANGED: agent rt-0123456789abcdef's state was last confirmed 1000 ms ago, more than 500",
    );
    expect(code(() => checkGuards(null, {}, 6000, "rt-1"))).toBe("E_RUNTIME_STALE: agent rt-1 is gone");
    expect(sendBytes({ text: "yes", keys: ["Enter", "C-c"] })).toBe("yes\r\u0003");
  });
});
