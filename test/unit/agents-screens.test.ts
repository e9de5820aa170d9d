/**
 * The poller's screen rules on the real CLIs' screens: each fixture in test/fixtures/agents/screens
 * was captured with `tmux capture-pane -p` from Claude Code 2.1.197, Codex CLI 0.171.0 and Gemini
 * CLI 0.61.0 driven by a fake model server on loopback (the bottom 40 lines, the launching shell
 * line and local paths taken out). Every rule decides at least one of them; a screen the rules do
 * not know is unknown, never a guess.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentKind } from "../../lib/agents/model.ts";
import { classify, RULES, regionsOf, screenLines } from "../../lib/agents/screens.ts";

const DIR = join(import.meta.dir, "..", "fixtures", "agents", "screens");
const screen = (name: string) => readFileSync(join(DIR, `${name}.txt`), "utf8");
const verdict = (name: string) => {
  const v = classify(name.split("-")[0] as AgentKind, screen(name));
  return [v.state, v.rule, v.detail];
};

describe("Claude Code 2.1", () => {
  test("the empty prompt box: waiting for input (a fresh start, after a refusal, input put back after an interruption)", () => {
    expect(verdict("claude-fresh")).toEqual(["waiting_input", "prompt", null]);
    expect(verdict("claude-denied")).toEqual(["waiting_input", "prompt", null]);
    expect(verdict("claude-interrupted")).toEqual(["waiting_input", "prompt", null]);
  });
  test("esc to interrupt under the box: running, with the spinner's words", () => {
    expect(verdict("claude-running")).toEqual(["running", "working", "Galloping…"]);
    expect(verdict("claude-after-approve-0.3")).toEqual(["running", "working", "Hullaballooing…"]);
  });
  test("a permission prompt (Bash, Write): waiting for approval, with what is asked", () => {
    expect(verdict("claude-approval-bash")).toEqual([
      "waiting_approval",
      "permission_prompt",
      "Bash command · ls -la /etc/hostname",
    ]);
    expect(verdict("claude-approval-write")).toEqual([
      "waiting_approval",
      "permission_prompt",
      "Create file · hello.txt",
    ]);
  });
  test("its own dialogs (the API key question) wait for input, not for an approval", () => {
    expect(verdict("claude-api-key")).toEqual([
      "waiting_input",
      "dialog",
      "Detected a custom API key in your environment",
    ]);
  });
  test("the turn summary (✻ Brewed for 0s) last: completed; an API error as the turn's last message: error", () => {
    expect(verdict("claude-done")).toEqual(["completed", "turn_done", "The command ran."]);
    expect(verdict("claude-error")).toEqual(["error", "api_error", "API Error: 400 fake failure for planter"]);
  });
});

describe("Codex CLI 0.171", () => {
  test("the input line: waiting for input, or completed after an answer", () => {
    expect(verdict("codex-fresh")).toEqual(["waiting_input", "prompt", null]);
    expect(verdict("codex-done")).toEqual(["completed", "turn_done", "The command ran."]);
    expect(verdict("codex-done2")).toEqual(["completed", "turn_done", "slow answer done"]);
    expect(verdict("codex-idle")).toEqual(["completed", "turn_done", "slow answer done"]);
    expect(verdict("codex-interrupted")).toEqual(["waiting_input", "interrupted", null]);
    expect(verdict("codex-login")).toEqual([
      "waiting_input",
      "dialog",
      "Welcome to Codex, OpenAI's command-line coding agent",
    ]);
  });
  test("Working (… esc to interrupt), the approval of a command, an error", () => {
    expect(verdict("codex-running")).toEqual(["running", "working", "Working"]);
    expect(verdict("codex-approval")).toEqual(["waiting_approval", "approval", "ls -la /etc/hostname"]);
    expect(verdict("codex-error")).toEqual([
      "error",
      "error",
      '{"error":{"message":"fake failure for planter","type":"invalid_request_error"}}',
    ]);
  });
});

describe("Gemini CLI 0.61", () => {
  test("the input: waiting for input, completed after an answer (✦), error after ✕", () => {
    expect(verdict("gemini-idle")).toEqual(["waiting_input", "prompt", null]);
    expect(verdict("gemini-done")).toEqual(["completed", "turn_done", "slow answer done"]);
    expect(verdict("gemini-done2")).toEqual(["completed", "turn_done", "The command ran."]);
    expect(verdict("gemini-error")[0]).toBe("error");
  });
  test("Thinking… (esc to cancel), Allow execution of [Shell]?, the folder trust dialog", () => {
    expect(verdict("gemini-running")).toEqual(["running", "working", "Thinking..."]);
    expect(verdict("gemini-approval")).toEqual(["waiting_approval", "approval", "Shell ls -la /etc/hostname"]);
    expect(verdict("gemini-trust")).toEqual(["waiting_input", "dialog", "Do you trust the files in this folder?"]);
  });
});

describe("what the rules do not know", () => {
  test("a shell, an empty pane, another agent's screen: unknown, unrecognised_screen", () => {
    for (const [agent, text] of [
      ["claude", "root@host:~# ls\nfile\nroot@host:~# "],
      ["codex", ""],
      ["gemini", screen("claude-running")],
      ["claude", screen("gemini-approval")],
    ] as [AgentKind, string][]) {
      expect(classify(agent, text)).toEqual({
        state: "unknown",
        reason: "unrecognised_screen",
        rule: "unrecognised",
        detail: null,
      });
    }
  });

  test("a permission question printed by the agent's work above a live prompt box is not a permission prompt", () => {
    const text = [
      "❯ show me the file",
      "● Here is the file:",
      "  Do you want to proceed?",
      "  1. Yes",
      "  Esc to cancel",
      "✻ Brewed for 2s",
      "─".repeat(80),
      "❯ ",
      "─".repeat(80),
      "  ? for shortcuts",
    ].join("\n");
    expect(classify("claude", text).state).toBe("completed");
  });

  test("every rule of every agent decides at least one real screen", () => {
    const used = new Set<string>();
    for (const f of readdirSync(DIR)) {
      const agent = f.split("-")[0] as AgentKind;
      used.add(`${agent}/${classify(agent, readFileSync(join(DIR, f), "utf8")).rule}`);
    }
    const all = Object.entries(RULES).flatMap(([agent, r]) => r.rules.map((x) => `${agent}/${x.name}`));
    expect(all.filter((r) => !used.has(r))).toEqual([]);
  });

  test("details are one printable line, at most 200 characters", () => {
    const error = `${"● API Error: 500 ".padEnd(400, "x")}\u001b[31m`;
    const long = [error, "─".repeat(40), "❯ ", "─".repeat(40)].join("\n");
    const v = classify("claude", `❯ go\n${long}`);
    expect(v.state).toBe("error");
    expect(v.detail?.length).toBe(200);
    expect(v.detail).not.toContain("\u001b");
  });

  test("screen lines: trailing blank lines dropped, the last 40 kept", () => {
    const lines = screenLines(`${Array.from({ length: 60 }, (_, i) => `l${i}`).join("\n")}\n\n   \n`);
    expect([lines.length, lines[0], lines.at(-1)]).toEqual([40, "l20", "l59"]);
    expect(regionsOf("claude", "").input).toBe(false);
  });
});
