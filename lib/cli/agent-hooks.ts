/** `planter agent hooks install|uninstall`: planter's report hooks in your own agent settings (#16). */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { defineCommand } from "citty";
import * as v from "valibot";
import {
  parseSettings,
  withClaudeHooks,
  withCodexNotify,
  withoutClaudeHooks,
  withoutCodexNotify,
} from "../agents/host-hooks.ts";
import { PlanterError } from "../api/errors.ts";
import { selfArgv } from "../self.ts";
import { usage } from "./args.ts";
import { examples } from "./help.ts";
import { print, printJson } from "./output.ts";

type Which = "claude" | "codex" | "gemini";

/** Where each agent keeps the settings planter edits. */
export function settingsFile(which: Which, env: Record<string, string | undefined> = process.env): string {
  const home = env.HOME ?? homedir();
  if (which === "claude") return join(env.CLAUDE_CONFIG_DIR ?? join(home, ".claude"), "settings.json");
  if (which === "gemini") return join(env.GEMINI_CLI_HOME ?? home, ".gemini", "settings.json");
  return join(env.CODEX_HOME ?? join(home, ".codex"), "config.toml");
}

/** The record of what install changed, beside planter's client config. */
function recordFile(env: Record<string, string | undefined> = process.env): string {
  const base = env.XDG_CONFIG_HOME ?? join(env.HOME ?? homedir(), ".config");
  return join(base, "planter", "agent-hooks.json");
}

const Change = v.object({
  agent: v.picklist(["claude", "codex", "gemini"]),
  file: v.string(),
  before_sha256: v.nullable(v.string()),
  after_sha256: v.string(),
  added: v.array(v.string()),
  at: v.string(),
});
const Record_ = v.object({ changes: v.array(Change) });
type Change = v.InferOutput<typeof Change>;

const sha = (text: string | null) => (text === null ? null : createHash("sha256").update(text).digest("hex"));

function readText(file: string): string | null {
  return existsSync(file) ? readFileSync(file, "utf8") : null;
}

/** Write `text` to `file` whole (a temp file renamed over it), keeping its mode; its dir made 0700 if missing. */
function writeWhole(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const mode = existsSync(file) ? statSync(file).mode & 0o777 : 0o600;
  const tmp = `${file}.planter-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}

function readRecord(): Change[] {
  const f = recordFile();
  if (!existsSync(f)) return [];
  try {
    return v.parse(Record_, JSON.parse(readFileSync(f, "utf8"))).changes;
  } catch (e) {
    throw new PlanterError("E_BAD_REQUEST", `${f} cannot be read: ${(e as Error).message}`, {
      hint: "move it aside; uninstall finds planter's hooks by their command either way",
    });
  }
}

function writeRecord(changes: Change[]): void {
  writeWhole(recordFile(), `${JSON.stringify({ changes }, null, 2)}\n`);
}

function chosen(args: Record<string, unknown>): Which[] {
  const all = (["claude", "codex", "gemini"] as const).filter((w) => args[w]);
  if (!all.length) throw usage("name the agents: --claude, --codex and/or --gemini");
  return all;
}

interface Outcome {
  agent: Which;
  file: string | null;
  changed: boolean;
  detail: string;
}

function install(which: Which, dryRun: boolean): Outcome {
  const file = settingsFile(which);
  const before = readText(file);
  const planter = selfArgv("agent").slice(0, -1);
  let after: string;
  let added: string[];
  if (which !== "codex") {
    const r = withClaudeHooks(parseSettings(before, file), planter, which);
    after = `${JSON.stringify(r.settings, null, 2)}\n`;
    added = r.added;
  } else {
    const r = withCodexNotify(before, planter, file);
    after = r.text;
    added = r.added ? ["notify"] : [];
  }
  if (!added.length) return { agent: which, file, changed: false, detail: "already installed" };
  if (!dryRun) {
    writeWhole(file, after);
    const changes = readRecord().filter((c) => !(c.agent === which && c.file === file));
    changes.push({
      agent: which,
      file,
      before_sha256: sha(before),
      after_sha256: sha(after) as string,
      added,
      at: new Date().toISOString(),
    });
    writeRecord(changes);
  }
  return { agent: which, file, changed: true, detail: `added ${added.join(", ")}` };
}

function uninstall(which: Which, dryRun: boolean): Outcome {
  const file = settingsFile(which);
  const before = readText(file);
  let after: string;
  let removed: number;
  if (which !== "codex") {
    const r = withoutClaudeHooks(parseSettings(before, file));
    after = `${JSON.stringify(r.settings, null, 2)}\n`;
    removed = r.removed;
  } else {
    const r = withoutCodexNotify(before);
    after = r.text;
    removed = r.removed ? 1 : 0;
  }
  if (!removed) return { agent: which, file, changed: false, detail: "no hook of planter's there" };
  if (!dryRun) {
    // A file install made (there was none) and that holds nothing else now: gone again.
    const made = readRecord().some((c) => c.agent === which && c.file === file && c.before_sha256 === null);
    if (made && (after.trim() === "" || after.trim() === "{}")) rmSync(file, { force: true });
    else writeWhole(file, after);
    writeRecord(readRecord().filter((c) => !(c.agent === which && c.file === file)));
  }
  return { agent: which, file, changed: true, detail: `removed ${removed} hook(s) of planter's` };
}

const agentFlags = {
  claude: { type: "boolean", description: "Claude Code (~/.claude/settings.json, or $CLAUDE_CONFIG_DIR)" },
  codex: { type: "boolean", description: "Codex CLI (~/.codex/config.toml, or $CODEX_HOME): its notify program" },
  gemini: { type: "boolean", description: "Gemini CLI (~/.gemini/settings.json, or under $GEMINI_CLI_HOME)" },
  "dry-run": { type: "boolean", description: "say what would change, change nothing" },
  json: { type: "boolean", description: "print JSON for scripts instead of text for people" },
} as const;

function report(outcomes: Outcome[], json: boolean, dryRun: boolean): number {
  if (json) printJson({ dry_run: dryRun, agents: outcomes });
  else
    for (const o of outcomes)
      print(`${o.agent}: ${o.file ? `${o.file}: ` : ""}${dryRun && o.changed ? "would be " : ""}${o.detail}`);
  return 0;
}

const installCmd = defineCommand({
  meta: {
    name: "install",
    description:
      "Add planter's report hooks to your agents' own settings (every entry marked as planter's; nothing else changes), so agents you run anywhere (in any tmux pane) report their state to planterd",
  },
  args: agentFlags,
  run({ args }) {
    const dry = Boolean(args["dry-run"]);
    return report(
      chosen(args).map((w) => install(w, dry)),
      Boolean(args.json),
      dry,
    );
  },
});

const uninstallCmd = defineCommand({
  meta: {
    name: "uninstall",
    description: "Remove planter's report hooks from your agents' settings: exactly the entries planter added",
  },
  args: agentFlags,
  run({ args }) {
    const dry = Boolean(args["dry-run"]);
    return report(
      chosen(args).map((w) => uninstall(w, dry)),
      Boolean(args.json),
      dry,
    );
  },
});

examples(installCmd, [
  "planter agent hooks install --claude --codex --gemini",
  "planter agent hooks install --claude --dry-run",
]);
examples(uninstallCmd, ["planter agent hooks uninstall --claude --codex --gemini"]);

export const hooks = defineCommand({
  meta: { name: "hooks", description: "Install or remove planter's report hooks in your own agent settings" },
  subCommands: { install: installCmd, uninstall: uninstallCmd },
});
