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

/** Gemini CLI's hook events planter listens to (Gemini CLI 0.61). */
export const GEMINI_HOOK_EVENTS = [
  "SessionStart",
  "BeforeAgent",
  "BeforeTool",
  "AfterTool",
  "Notification",
  "AfterAgent",
  "PreCompress",
  "SessionEnd",
] as const;

/**
 * Puts planter's hooks into Gemini CLI's settings (`${GEMINI_CLI_HOME:-$HOME}/.gemini/settings.json`),
 * run with node (Gemini's own runtime) as the job's user in its sandbox before Gemini starts.
 * Gemini has no per-run setting for hooks: its system settings file (GEMINI_CLI_SYSTEM_SETTINGS_PATH)
 * is refused unless it and every parent dir are root's, which a sandbox's user namespace never
 * shows (root is the overflow uid there). The hooks are the same for every job — each writes into
 * the channel its job's environment names, and does nothing without one — so they are set in
 * place: every hook whose command names PLANTER_AGENT_REPORT is replaced by this version's, the
 * rest of the file is kept. A file that is not JSON is left alone (the agent runs without them).
 * argv[1]: `{event: command}`.
 */
const GEMINI_MERGE = `const fs=require("fs"),path=require("path"),os=require("os");
const dir=path.join(process.env.GEMINI_CLI_HOME||os.homedir(),".gemini"),file=path.join(dir,"settings.json");
const want=JSON.parse(process.argv[1]);let s={};
try{s=JSON.parse(fs.readFileSync(file,"utf8"))}catch(e){if(e.code!=="ENOENT"){console.error("planter: "+file+": "+e.message+" (the agent runs without planter's hooks)");process.exit(0)}}
if(!s||typeof s!=="object"||Array.isArray(s)){console.error("planter: "+file+" is not a JSON object (the agent runs without planter's hooks)");process.exit(0)}
const hooks=s.hooks&&typeof s.hooks==="object"&&!Array.isArray(s.hooks)?s.hooks:{};
const ours=(d)=>Array.isArray(d&&d.hooks)&&d.hooks.some((h)=>typeof(h&&h.command)==="string"&&h.command.includes("PLANTER_AGENT_REPORT"));
for(const e of Object.keys(hooks))if(Array.isArray(hooks[e]))hooks[e]=hooks[e].filter((d)=>!ours(d));
for(const [e,c] of Object.entries(want))(Array.isArray(hooks[e])?hooks[e]:(hooks[e]=[])).push({hooks:[{type:"command",command:c,timeout:5000}]});
s.hooks=hooks;fs.mkdirSync(dir,{recursive:true,mode:0o700});
const tmp=file+".planter-"+process.pid;fs.writeFileSync(tmp,JSON.stringify(s,null,2)+"\\n",{mode:0o600});fs.renameSync(tmp,file);`;

/** argv of a Gemini CLI job: planter's hooks put into its settings (GEMINI_MERGE), then the CLI. */
function geminiArgv(program: string, args: string[]): string[] {
  const want = Object.fromEntries(GEMINI_HOOK_EVENTS.map((e) => [e, reportCommand(e)]));
  return [
    "/bin/sh",
    "-c",
    'node -e "$1" "$2" || echo "planter: the agent\'s hooks were not set" >&2; shift 2; exec "$@"',
    "planter-gemini",
    GEMINI_MERGE,
    JSON.stringify(want),
    program,
    ...args,
  ];
}

/**
 * argv of an agent job: the CLI (`program`, by default its name on the job's PATH) with its hooks
 * for this job, then the user's arguments.
 */
export function agentArgv(kind: AgentKind, args: string[], program: string = AGENT_PROGRAMS[kind]): string[] {
  if (kind === "claude") return [program, "--settings", JSON.stringify(claudeSettings()), ...args];
  if (kind === "codex") return [program, "-c", `notify=${JSON.stringify(codexNotify())}`, ...args];
  return geminiArgv(program, args);
}
