/**
 * Agent jobs (#16 part 2): what an agent CLI needs to run in a planter job — its egress preset,
 * and its own hooks configured for that job only, each writing one line per event into the
 * job's report channel (`$PLANTER_AGENT_REPORT`, a FIFO planterd reads: lib/agents/report.ts).
 * The lines are `EVENT<TAB>JSON` (the JSON as the CLI gave it, newlines dropped, cut at
 * REPORT_LINE_BYTES so one line is one atomic write into the FIFO).
 */
import type { AgentKind } from "./model.ts";

/** Where the report channel is inside a bwrap sandbox (a bind of the job's FIFO into its private /tmp). */
export const REPORT_IN_SANDBOX = "/tmp/.planter-agent-report";
/** The variable that names the channel to the hooks. */
export const REPORT_ENV = "PLANTER_AGENT_REPORT";
/** Bytes of a hook's JSON kept per line: with the event name, under PIPE_BUF (4096), one write. */
export const REPORT_LINE_BYTES = 3800;

/** The hosts each agent's CLI talks to: its API, and its sign-in (a job's network when its cell says `host`). */
export const EGRESS_PRESETS: Record<AgentKind, string[]> = {
  claude: ["api.anthropic.com", "statsig.anthropic.com", "console.anthropic.com", "claude.ai"],
  codex: ["api.openai.com", "chatgpt.com", "auth.openai.com"],
  gemini: [
    "generativelanguage.googleapis.com",
    "cloudcode-pa.googleapis.com",
    "oauth2.googleapis.com",
    "accounts.google.com",
  ],
};

/** The program each agent's CLI is run as (found on the job's PATH). */
export const AGENT_PROGRAMS: Record<AgentKind, string> = { claude: "claude", codex: "codex", gemini: "gemini" };

/** Claude Code's hook events planter listens to (Claude Code 2.1). */
export const CLAUDE_HOOK_EVENTS = [
  "SessionStart",
  "UserPromptSubmit",
  "PreToolUse",
  "PermissionRequest",
  "PostToolUse",
  "Notification",
  "Stop",
  "SubagentStop",
  "PreCompact",
  "SessionEnd",
] as const;

/**
 * The shell command of one hook: the CLI's JSON on stdin, cut and on one line, written with one
 * printf into the channel. `1<>` opens the FIFO read-write, so the hook never waits for a reader
 * (planterd down: the line waits in the pipe, up to its 64 KiB); no channel, nothing is written.
 */
export function reportCommand(event: string): string {
  if (!/^[A-Za-z-]+$/.test(event)) throw new Error(`not an event name: ${event}`);
  return `[ -p "$${REPORT_ENV}" ] || exit 0; l=$(head -c ${REPORT_LINE_BYTES} | tr -d '\\n\\r'); printf '${event}\\t%s\\n' "$l" 1<>"$${REPORT_ENV}"`;
}

/** Claude Code's `--settings` for a job: its hooks report every event; nothing else is changed. */
export function claudeSettings(): Record<string, unknown> {
  const hooks: Record<string, unknown[]> = {};
  for (const e of CLAUDE_HOOK_EVENTS)
    hooks[e] = [{ hooks: [{ type: "command", command: reportCommand(e), timeout: 5 }] }];
  return { hooks };
}

/**
 * Codex's notify program for a job (`-c notify=[…]`): Codex runs it with one JSON argument
 * (`{"type": "agent-turn-complete", …}`) at the end of each turn.
 */
export function codexNotify(): string[] {
  return [
    "sh",
    "-c",
    `[ -p "$${REPORT_ENV}" ] || exit 0; l=$(printf '%s' "$1" | head -c ${REPORT_LINE_BYTES} | tr -d '\\n\\r'); printf 'notify\\t%s\\n' "$l" 1<>"$${REPORT_ENV}"`,
    "planter-notify",
  ];
}

/** argv of an agent job: the CLI with its hooks for this job, then the user's arguments. */
export function agentArgv(kind: AgentKind, args: string[]): string[] {
  const program = AGENT_PROGRAMS[kind];
  if (kind === "claude") return [program, "--settings", JSON.stringify(claudeSettings()), ...args];
  if (kind === "codex") return [program, "-c", `notify=${JSON.stringify(codexNotify())}`, ...args];
  // Gemini CLI: no per-run hook setting planter can pass; its state comes from the poller.
  return [program, ...args];
}
