/**
 * What an agent's screen says: the poller's rules, one table per agent CLI, written from what the
 * real CLIs print (Claude Code 2.1, Codex CLI 0.171, Gemini CLI 0.61; their screens are kept as
 * literal fixtures in test/fixtures/agents/screens and the unit tests run every rule on them).
 *
 * A screen is first cut into regions by the agent's layout (its input box, the status lines below
 * it, the turn above it since the user's last message, a dialog where the input box is replaced),
 * then the agent's rules are tried in order on those regions: the first that matches decides.
 * Nothing matched is `unknown` with reason `unrecognised_screen`, never a guess.
 */
import type { AgentKind, AgentState, UnknownReason } from "./model.ts";

/** The regions a rule can look at (each the lines of that region joined by "\n"). */
export interface Regions {
  /** Whether the agent's input box (its prompt) is on the screen. */
  input: boolean;
  /** The lines below the input box: status, hints ("esc to interrupt", "? for shortcuts"). */
  footer: string;
  /** The last few non-blank lines above the input box (a spinner sits there). */
  near: string;
  /** Everything above the input box after the user's last message: the agent's answer so far. */
  turn: string;
  /** The first line of the last block of the turn ("● …", "• …", "✦ …"), "" when there is none. */
  last: string;
  /** With no input box: the bottom lines, where a dialog (a permission prompt) replaces it. */
  dialog: string;
}

/** One rule: a name (the event's `kind`), the state it means, and what must match where. */
export interface Rule {
  name: string;
  state: AgentState;
  /** Every pattern must match its region. */
  match: Partial<Record<Exclude<keyof Regions, "input">, RegExp>>;
  /** Whether the input box must be there (true) or absent (false); either when left out. */
  input?: boolean;
  /** A short summary for `detail`: the capture groups of this pattern in its region, joined by " · ". */
  detail?: [Exclude<keyof Regions, "input">, RegExp];
}

/** What the poller concluded from one screen. */
export interface Verdict {
  state: AgentState;
  reason: UnknownReason | null;
  /** The rule that matched, or `unrecognised`. */
  rule: string;
  detail: string | null;
}

/** How many lines at the bottom of a pane the rules look at. */
export const SCREEN_LINES = 40;

const RULE_LINE = /^\s*─{12,}\s*$/;
const blank = (l: string) => l.trim() === "";

/** The head of a message block: a line that starts in column 0 (or 1) with a mark, not a box edge. */
function isHead(l: string): boolean {
  return /^ ?[^\s│╰╭╮╯─]/.test(l);
}

/** The turn above the input box (from `from` up to the user's last message) and its last block's head. */
function turnAbove(lines: string[], end: number, isUser: (l: string) => boolean, skip: (l: string) => boolean) {
  let start = end;
  while (start > 0 && !isUser(lines[start - 1] as string)) start--;
  // No message of the user on the screen: nothing was asked yet (or it scrolled away): no turn.
  const turn = start > 0 ? lines.slice(start, end) : [];
  let last = "";
  for (let i = turn.length - 1; i >= 0; i--) {
    const l = turn[i] as string;
    if (isHead(l) && !skip(l)) {
      last = l.trim();
      break;
    }
  }
  const near = lines
    .slice(0, end)
    .filter((l) => !blank(l))
    .slice(-4);
  return { turn: turn.join("\n"), last, near: near.join("\n") };
}

interface Layout {
  /** Regions of a screen (its lines, trailing blanks removed). */
  regions(lines: string[]): Regions;
}

const noInput = (lines: string[]): Regions => ({
  input: false,
  footer: "",
  near: "",
  turn: "",
  last: "",
  dialog: lines
    .filter((l) => !blank(l))
    .slice(-20)
    .join("\n"),
});

/**
 * Claude Code: the input box is a `❯` line between two full-width rules, the status line below
 * it; the user's messages are echoed as `❯ text`; a permission prompt replaces the box.
 */
const claudeLayout: Layout = {
  regions(lines) {
    const rules = lines.flatMap((l, i) => (RULE_LINE.test(l) ? [i] : []));
    const b = rules.at(-1);
    const a = rules.at(-2);
    if (a !== undefined && b !== undefined && b - a >= 2 && lines.slice(a + 1, b).some((l) => /^\s*❯/.test(l))) {
      const t = turnAbove(
        lines,
        a,
        (l) => /^❯\s/.test(l),
        () => false,
      );
      return { input: true, footer: lines.slice(b + 1).join("\n"), ...t, dialog: "" };
    }
    // A dialog is drawn below the last rule (or is the whole bottom when there is none).
    return b === undefined ? noInput(lines) : { ...noInput(lines.slice(b + 1)) };
  },
};

/**
 * Codex CLI: the input is the last `› ` line with only indented status lines below it; the user's
 * messages are echoed as `› text`; a permission prompt replaces the input (its options are `› 1.`).
 */
const codexLayout: Layout = {
  regions(lines) {
    for (let i = lines.length - 1; i >= 0; i--) {
      const l = lines[i] as string;
      if (!/^› (?!\d+\.)/.test(l) && l !== "›") continue;
      const below = lines.slice(i + 1);
      if (!below.every((x) => blank(x) || /^\s/.test(x))) break;
      const t = turnAbove(
        lines,
        i,
        (x) => /^› /.test(x),
        () => false,
      );
      return { input: true, footer: below.join("\n"), ...t, dialog: "" };
    }
    return noInput(lines);
  },
};

/**
 * Gemini CLI: a rule, then the input line (`>   Type your message`) and the status lines; the user's
 * messages are echoed as ` > text`; a permission prompt is a box that replaces the input.
 */
const geminiLayout: Layout = {
  regions(lines) {
    const rules = lines.flatMap((l, i) => (RULE_LINE.test(l) ? [i] : []));
    const r = rules.at(-1);
    if (r !== undefined) {
      const after = lines.slice(r + 1);
      const k = after.findIndex((l) => /^\s*>\s/.test(l) || /^\s*>$/.test(l));
      if (k >= 0 && k <= 3) {
        const t = turnAbove(
          lines,
          r,
          (l) => /^ > /.test(l),
          (l) => /^ℹ/.test(l),
        );
        return { input: true, footer: after.slice(k + 1).join("\n"), ...t, dialog: "" };
      }
    }
    return noInput(lines);
  },
};

/**
 * The rules of each agent, in order: the first that matches decides. `completed` is a turn that
 * ended (the CLI's turn summary or its answer last above the input); `waiting_input` an input box
 * with nothing asked yet, after an interruption or a refusal, or a dialog of the CLI's own.
 */
export const RULES: Record<AgentKind, { layout: Layout; rules: Rule[] }> = {
  claude: {
    layout: claudeLayout,
    rules: [
      {
        name: "permission_prompt",
        state: "waiting_approval",
        input: false,
        match: { dialog: /^\s*Do you want to (?!use this API key)[^\n]*\?\s*$[\s\S]*^\s*(?:❯\s*)?1\.\s+Yes\b/m },
        detail: ["dialog", /^\s*(\S[^\n]*)\n\s*(\S[^\n]*)/],
      },
      {
        name: "dialog",
        state: "waiting_input",
        input: false,
        match: { dialog: /Enter to confirm|Esc to cancel|Press Enter to continue/ },
        detail: ["dialog", /^\s*(\S[^\n]*)/],
      },
      {
        name: "working",
        state: "running",
        input: true,
        match: { footer: /esc to interrupt/i },
        // The spinner's word, not its timer (a detail that changed every second would be a change every second).
        detail: ["near", /^[^\s\w●❯⎿] (\S+…)/m],
      },
      {
        name: "api_error",
        state: "error",
        input: true,
        match: { turn: /^● API Error(?![\s\S]*^● )/m },
        detail: ["turn", /^● (API Error[^\n]*)/m],
      },
      {
        name: "turn_done",
        state: "completed",
        input: true,
        match: { last: /^✻ \S+ for \d/ },
        detail: ["turn", /^● ([^\n]*)[\s\S]*$/m],
      },
      { name: "prompt", state: "waiting_input", input: true, match: {} },
    ],
  },
  codex: {
    layout: codexLayout,
    rules: [
      {
        name: "approval",
        state: "waiting_approval",
        input: false,
        match: { dialog: /Would you like to [^\n]*\?[\s\S]*(Press enter to confirm|Yes, proceed)/ },
        detail: ["dialog", /^\s*\$ ([^\n]+)/m],
      },
      {
        name: "dialog",
        state: "waiting_input",
        input: false,
        match: { dialog: /Press enter to (continue|confirm|save)|Press esc to go back/ },
        detail: ["dialog", /^\s*(\S[^\n]*)/],
      },
      {
        name: "working",
        state: "running",
        input: true,
        match: { near: /esc to interrupt/i },
        detail: ["near", /^[•◦] ([^\n(]*?)\s*\(/m],
      },
      { name: "interrupted", state: "waiting_input", input: true, match: { last: /^■ Conversation interrupted/ } },
      { name: "error", state: "error", input: true, match: { last: /^■ / }, detail: ["turn", /^■ ([^\n]*)/m] },
      {
        name: "turn_done",
        state: "completed",
        input: true,
        match: { last: /^• / },
        detail: ["turn", /^• ([^\n]*)$(?![\s\S]*^• )/m],
      },
      { name: "prompt", state: "waiting_input", input: true, match: {} },
    ],
  },
  gemini: {
    layout: geminiLayout,
    rules: [
      {
        name: "approval",
        state: "waiting_approval",
        input: false,
        match: {
          dialog:
            /(Allow execution of|Apply this change\?|Do you want to proceed\?)[\s\S]*^\s*│?\s*●?\s*1\.\s+(Allow once|Yes)/m,
        },
        detail: ["dialog", /\? (\S+ [^│\n]*?)\s*│?$/m],
      },
      {
        name: "dialog",
        state: "waiting_input",
        input: false,
        match: { dialog: /Do you trust|How would you like to authenticate|Press Enter to submit|Use Enter to select/ },
        detail: ["dialog", /│\s*([^│\s][^│\n]*?)\s*│/],
      },
      {
        name: "working",
        state: "running",
        input: true,
        match: { near: /\(esc to cancel/ },
        detail: ["near", /^\s*\S ([^\n(]*?)\s*\(esc to cancel/m],
      },
      { name: "api_error", state: "error", input: true, match: { last: /^✕ / }, detail: ["turn", /^✕ ([^\n]*)/m] },
      {
        name: "turn_done",
        state: "completed",
        input: true,
        match: { last: /^✦ / },
        detail: ["turn", /^✦ ([^\n]*)$(?![\s\S]*^✦ )/m],
      },
      { name: "prompt", state: "waiting_input", input: true, match: {} },
    ],
  },
};

/** A screen's text as lines: trailing blank lines dropped, then the last SCREEN_LINES. */
export function screenLines(text: string): string[] {
  const lines = text.replace(/\r/g, "").split("\n");
  while (lines.length && blank(lines[lines.length - 1] as string)) lines.pop();
  return lines.slice(-SCREEN_LINES).map((l) => l.trimEnd());
}

const MAX_DETAIL = 200;

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed.
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]+/g;

/** Printable, one line, at most MAX_DETAIL characters. */
function clean(s: string): string {
  const one = s.replace(CONTROLS, " ").replace(/\s+/g, " ").trim();
  return one.length > MAX_DETAIL ? `${one.slice(0, MAX_DETAIL - 1)}…` : one;
}

/** The regions of `text` for `agent` (exported for the tests). */
export function regionsOf(agent: AgentKind, text: string): Regions {
  return RULES[agent].layout.regions(screenLines(text));
}

/** What `agent`'s screen `text` says, by its rules. */
export function classify(agent: AgentKind, text: string): Verdict {
  const regions = regionsOf(agent, text);
  for (const rule of RULES[agent].rules) {
    if (rule.input !== undefined && rule.input !== regions.input) continue;
    let hit = true;
    for (const [where, re] of Object.entries(rule.match) as [Exclude<keyof Regions, "input">, RegExp][]) {
      if (!re.test(regions[where])) {
        hit = false;
        break;
      }
    }
    if (!hit) continue;
    let detail: string | null = null;
    if (rule.detail) {
      const m = rule.detail[1].exec(regions[rule.detail[0]]);
      if (m) detail = clean(m.slice(1).filter(Boolean).join(" · ")) || null;
    }
    return { state: rule.state, reason: null, rule: rule.name, detail };
  }
  return { state: "unknown", reason: "unrecognised_screen", rule: "unrecognised", detail: null };
}
