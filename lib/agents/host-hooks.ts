/**
 * `planter agent hooks install|uninstall` (#16): planter's report hooks in the user's own agent
 * settings, for agents that run outside planter (in any tmux pane). Each hook runs `planter agent
 * report KIND EVENT`, which hands the event to planterd as the user. The edits are reversible:
 * every entry planter adds is recognised by its command (it runs planter's `agent report`), so
 * uninstall removes exactly those and nothing the user wrote, and a record of what was changed
 * (the file's digest before and after, the entries added) is kept beside planter's config.
 * The functions here are pure (text in, text out); the command does the files.
 */
import { PlanterError } from "../api/errors.ts";
import { CLAUDE_HOOK_EVENTS, GEMINI_HOOK_EVENTS } from "./hooks.ts";

/** What marks a command as planter's own: it runs `agent report`. */
export const REPORT_MARK = " agent report ";

/** The hook command for one event: `PLANTER agent report KIND EVENT` (`planter`: the words that run planter, quoted). */
export function hostReportCommand(planter: string[], kind: "claude" | "codex" | "gemini", event: string): string {
  if (!/^[A-Za-z-]+$/.test(event)) throw new Error(`not an event name: ${event}`);
  return `${planter.map(shellQuote).join(" ")}${REPORT_MARK}${kind} ${event}`;
}

const shellQuote = (s: string) => (/^[A-Za-z0-9_./@%+=:,-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`);

const isOurs = (command: unknown) => typeof command === "string" && command.includes(REPORT_MARK);

interface HookGroup {
  matcher?: string;
  hooks?: { type?: string; command?: unknown; timeout?: number }[];
  [k: string]: unknown;
}

/** Parse a settings.json (absent: `{}`), or a clear error naming the file. */
export function parseSettings(text: string | null, file: string): Record<string, unknown> {
  if (text === null || text.trim() === "") return {};
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new PlanterError("E_BAD_REQUEST", `${file} is not JSON: ${(e as Error).message}`, {
      hint: "fix it (the agent would not read it either), then install the hooks again",
    });
  }
  if (!j || typeof j !== "object" || Array.isArray(j))
    throw new PlanterError("E_BAD_REQUEST", `${file} is not a JSON object`);
  const hooks = (j as Record<string, unknown>).hooks;
  if (hooks !== undefined && (typeof hooks !== "object" || hooks === null || Array.isArray(hooks)))
    throw new PlanterError("E_BAD_REQUEST", `${file}: "hooks" is not an object`);
  return j as Record<string, unknown>;
}

/**
 * Claude Code's (or Gemini CLI's: the same shape, other event names, timeouts in ms) settings with
 * planter's hooks for every event (one group per event, added once: installing again changes
 * nothing) and everything else kept as it was. `added`: the events that got one.
 */
export function withClaudeHooks(
  settings: Record<string, unknown>,
  planter: string[],
  kind: "claude" | "gemini" = "claude",
): { settings: Record<string, unknown>; added: string[] } {
  const hooks = { ...((settings.hooks as Record<string, HookGroup[]> | undefined) ?? {}) };
  const added: string[] = [];
  for (const event of kind === "claude" ? CLAUDE_HOOK_EVENTS : GEMINI_HOOK_EVENTS) {
    const groups = Array.isArray(hooks[event]) ? [...(hooks[event] as HookGroup[])] : [];
    if (groups.some((g) => g.hooks?.some((h) => isOurs(h.command)))) continue;
    const timeout = kind === "claude" ? 5 : 5000;
    groups.push({ hooks: [{ type: "command", command: hostReportCommand(planter, kind, event), timeout }] });
    hooks[event] = groups;
    added.push(event);
  }
  return { settings: { ...settings, hooks }, added };
}

/** Claude Code's (or Gemini CLI's) settings without planter's hooks (groups and events left empty go too). */
export function withoutClaudeHooks(settings: Record<string, unknown>): {
  settings: Record<string, unknown>;
  removed: number;
} {
  const before = settings.hooks as Record<string, HookGroup[]> | undefined;
  if (!before) return { settings, removed: 0 };
  let removed = 0;
  const hooks: Record<string, HookGroup[]> = {};
  for (const [event, groups] of Object.entries(before)) {
    if (!Array.isArray(groups)) {
      hooks[event] = groups;
      continue;
    }
    const kept: HookGroup[] = [];
    for (const g of groups) {
      const list = Array.isArray(g.hooks) ? g.hooks : [];
      const mine = list.filter((h) => isOurs(h.command));
      removed += mine.length;
      if (!mine.length) kept.push(g);
      else if (mine.length < list.length) kept.push({ ...g, hooks: list.filter((h) => !isOurs(h.command)) });
    }
    if (kept.length) hooks[event] = kept;
  }
  const out = { ...settings };
  if (Object.keys(hooks).length) out.hooks = hooks;
  else delete out.hooks;
  return { settings: out, removed };
}

/** The marker on the line planter adds to Codex's config.toml. */
const CODEX_MARK = "# planter agent hooks: the line below reports Codex's turns to planterd";

/** A top-level `notify = …` line of a config.toml (before the first table), or null. */
function topLevelNotify(lines: string[]): number | null {
  for (let i = 0; i < lines.length; i++) {
    const l = (lines[i] as string).trim();
    if (l.startsWith("[")) return null;
    if (/^notify\s*=/.test(l)) return i;
  }
  return null;
}

/**
 * Codex's config.toml with `notify` running planter's report. Codex has one notify program: one
 * set by the user is never replaced (a refusal says what is there); planter's own is left as is.
 */
export function withCodexNotify(
  text: string | null,
  planter: string[],
  file: string,
): { text: string; added: boolean } {
  const lines = (text ?? "").split("\n");
  const at = topLevelNotify(lines);
  if (at !== null) {
    if (lines[at - 1] === CODEX_MARK || (lines[at] as string).includes('"agent", "report"'))
      return { text: text ?? "", added: false };
    throw new PlanterError(
      "E_CONFLICT",
      `${file} already sets notify (${(lines[at] as string).trim()}): Codex runs one notify program, and planter does not replace yours`,
      { hint: "remove or rename that line to let planter report Codex's turns, or leave Codex to the pane poller" },
    );
  }
  const argv = [...planter, "agent", "report", "codex", "notify"];
  const line = `notify = [${argv.map((a) => JSON.stringify(a)).join(", ")}]`;
  return { text: [CODEX_MARK, line, ...(text ? [text] : [""])].join("\n"), added: true };
}

/** Codex's config.toml without planter's notify (its marker line and the line after it). */
export function withoutCodexNotify(text: string | null): { text: string; removed: boolean } {
  if (!text) return { text: text ?? "", removed: false };
  const lines = text.split("\n");
  const i = lines.indexOf(CODEX_MARK);
  if (i < 0 || !/^notify\s*=/.test((lines[i + 1] ?? "").trim())) return { text, removed: false };
  lines.splice(i, 2);
  return { text: lines.join("\n"), removed: true };
}
