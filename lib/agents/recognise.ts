/**
 * Which agent CLI runs in a pane: the pane's process tree, read from /proc without a scan of
 * every process (each process's children from /proc/PID/task/TID/children), matched by name.
 * Where /proc cannot walk a tree (macOS; a Linux kernel without CONFIG_PROC_CHILDREN), one `ps`
 * listing per observer tick stands in for it (psReader).
 * Claude Code is a native binary `claude`; Codex and Gemini are node scripts
 * (`@openai/codex/bin/codex.js`, `@google/gemini-cli/…`; Codex runs a native `codex` below it).
 */
import { readdirSync } from "node:fs";
import { basename } from "node:path";
import { execSync } from "../host/exec.ts";
import { ended, procStat, procText } from "../jobs/proc.ts";
import type { AgentKind } from "./model.ts";

/** The names the CLIs are installed under. */
const NAMES: Record<string, AgentKind> = { claude: "claude", "claude.exe": "claude", codex: "codex", gemini: "gemini" };
/** Their npm packages, as they appear in a script's path. */
const PACKAGES: [RegExp, AgentKind][] = [
  [/(^|\/)@anthropic-ai\/claude-code(\/|$)/, "claude"],
  [/(^|\/)@openai\/codex(\/|$)/, "codex"],
  [/(^|\/)@google\/gemini-cli(\/|$)/, "gemini"],
];
/**
 * Programs that run a script named by their first free argument. The shells are there for a
 * script started by its `#!` line where the kernel's name for it (comm) is not known (`ps`).
 */
const RUNTIMES = new Set(["node", "nodejs", "bun", "deno", "sh", "bash", "dash", "zsh"]);
const SHELLS = new Set(["sh", "bash", "dash", "zsh"]);

/**
 * The agent a process is, from its argv and its kernel name (`comm`, which for a script started
 * by its `#!` line is the script's name): null when it is none of them.
 */
export function agentOf(argv: readonly string[], comm: string | null): AgentKind | null {
  const direct = NAMES[basename(argv[0] ?? "")] ?? (comm === null ? undefined : NAMES[comm]);
  if (direct) return direct;
  if (!RUNTIMES.has(basename(argv[0] ?? ""))) return null;
  // The script: the first argument that is not an option of the runtime (`node --flag script`).
  const at = argv.findIndex((a, i) => i > 0 && !a.startsWith("-"));
  const script = argv[at];
  if (at < 0 || !script) return null;
  // `sh -c 'claude …'` runs a command line, not a script: the agent is its child.
  if (SHELLS.has(basename(argv[0] ?? "")) && argv.slice(1, at).some((o) => /^-[a-z]*c/.test(o))) return null;
  for (const [re, kind] of PACKAGES) if (re.test(script)) return kind;
  return NAMES[basename(script)] ?? null;
}

/** What the recognition reads of a process (the real /proc, or a table in the tests). */
export interface ProcReader {
  /** Its children (of every thread), [] when it is gone. */
  children(pid: number): number[];
  argv(pid: number): string[] | null;
  comm(pid: number): string | null;
  /** Its start time (/proc/PID/stat field 22), parent and real uid; null when it is gone. */
  facts(pid: number): { start: string; ppid: number; uid: number } | null;
  /** Whether the process "PID:START" still runs (one read: the observer asks every tick). */
  alive(ref: string): boolean;
}

/** /proc, read directly. */
export const procReader: ProcReader = {
  children(pid) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      return [];
    }
    const out: number[] = [];
    for (const t of tasks) {
      const text = procText(pid, `task/${t}/children`);
      if (!text) continue;
      for (const c of text.split(" ")) if (c.trim()) out.push(Number(c));
    }
    return out;
  },
  argv(pid) {
    const text = procText(pid, "cmdline");
    if (text === null) return null;
    return text.split("\0").filter((a, i, all) => a !== "" || i < all.length - 1);
  },
  comm(pid) {
    return procText(pid, "comm")?.trimEnd() ?? null;
  },
  facts(pid) {
    const st = procStat(pid);
    const status = procText(pid, "status");
    if (st === null || ended(st) || status === null) return null;
    const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    if (uid === undefined) return null;
    return { start: st.startTime, ppid: st.ppid, uid: Number(uid) };
  },
  alive(ref) {
    const colon = ref.indexOf(":");
    const st = procStat(Number(ref.slice(0, colon)));
    return st !== null && !ended(st) && st.startTime === ref.slice(colon + 1);
  },
};

/** One process of a `ps` listing. */
interface PsProc {
  ppid: number;
  uid: number;
  /** ps's state letters ("Ss", "R+", "Z"). */
  stat: string;
  /** The start as seconds since the epoch (ps prints it to the second, in UTC as asked). */
  start: string;
  argv: string[];
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** The columns of the two listings: the facts (no text a process chooses) and the arguments. */
export const PS_FACTS = "pid=,ppid=,uid=,stat=,lstart=";
export const PS_ARGS = "pid=,args=";

/** Two `ps -axww` listings, taken one after the other (`PS_FACTS`, then `PS_ARGS`). */
export interface PsListings {
  facts: string;
  args: string;
}

/**
 * Parse the two listings, run with TZ=UTC and LC_ALL=C (the same columns on macOS and procps):
 * `lstart` is "Mon Dec  7 20:42:33 2026"; argv is the args column split at spaces (ps joins the
 * arguments with spaces: enough to tell a program and its script apart).
 *
 * Why two: a process chooses its arguments, and a ps that prints a newline in them as it is (macOS's
 * is not known not to; procps prints a space) would let a process forge whole lines, a pid with
 * another uid among them, and so an owner for the report checks. The facts listing has no column a
 * process chooses, and every line of it must parse to its end; the arguments are only ever attached
 * to a pid the facts listing has, and a pid named twice in the arguments listing (its own line and a
 * forged one) gets none (argv empty: not recognised). A process that started between the two
 * listings has no arguments this tick; one that ended between them, and whose pid a forged line
 * names, could lend it forged arguments for one tick (its uid and start stay the facts').
 */
export function parsePs(listings: PsListings): Map<number, PsProc> {
  const out = new Map<number, PsProc>();
  const line =
    /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+\w{3}\s+(\w{3})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})\s+(\d{4})\s*$/;
  for (const l of listings.facts.split("\n")) {
    const m = line.exec(l);
    if (!m) continue;
    const month = MONTHS.indexOf(m[5] as string);
    if (month < 0) continue;
    const at = Date.UTC(Number(m[10]), month, Number(m[6]), Number(m[7]), Number(m[8]), Number(m[9])) / 1000;
    out.set(Number(m[1]), { ppid: Number(m[2]), uid: Number(m[3]), stat: m[4] as string, start: String(at), argv: [] });
  }
  const seen = new Map<number, string[] | null>();
  for (const l of listings.args.split("\n")) {
    const m = /^\s*(\d+)(?:\s(.*))?$/.exec(l);
    if (!m) continue;
    const pid = Number(m[1]);
    const args = (m[2] ?? "").trim();
    seen.set(pid, seen.has(pid) ? null : args ? args.split(/ +/) : []);
  }
  for (const [pid, argv] of seen) {
    const p = out.get(pid);
    if (p && argv) p.argv = argv;
  }
  return out;
}

/** The listings parsePs reads; a listing ps fails to give is "". */
function psListing(): PsListings {
  const ps = (columns: string) => {
    const r = execSync("ps", ["-axww", "-o", columns], {
      env: { LC_ALL: "C", TZ: "UTC" },
      timeoutMs: 5000,
      maxOutputBytes: 32 << 20,
      nothrow: true,
    });
    return r.code === 0 ? r.stdout : "";
  };
  return { facts: ps(PS_FACTS), args: ps(PS_ARGS) };
}

/**
 * A ProcReader over one pair of `ps` listings (parsePs), taken again when older than `maxAgeMs` (one per observer
 * tick, not one per process). `comm` is unknown (null): recognition goes by argv. A process's start
 * is its second: a pid reused within the second it was freed would pass for the old process.
 */
export function psReader(
  list: () => PsListings = psListing,
  maxAgeMs = 250,
  now = () => performance.now(),
): ProcReader {
  let table = new Map<number, PsProc>();
  let children = new Map<number, number[]>();
  let at = Number.NEGATIVE_INFINITY;
  const fresh = () => {
    if (now() - at < maxAgeMs) return;
    table = parsePs(list());
    children = new Map();
    for (const [pid, p] of table) {
      const kids = children.get(p.ppid);
      if (kids) kids.push(pid);
      else children.set(p.ppid, [pid]);
    }
    at = now();
  };
  /** A live process (a zombie has ended: only its pid is left). */
  const get = (pid: number) => {
    fresh();
    const p = table.get(pid);
    return p && !p.stat.startsWith("Z") ? p : undefined;
  };
  return {
    children: (pid) => (get(pid) ? (children.get(pid) ?? []) : []),
    argv: (pid) => get(pid)?.argv ?? null,
    comm: () => null,
    facts(pid) {
      const p = get(pid);
      return p ? { start: p.start, ppid: p.ppid, uid: p.uid } : null;
    },
    alive(ref) {
      const colon = ref.indexOf(":");
      return get(Number(ref.slice(0, colon)))?.start === ref.slice(colon + 1);
    },
  };
}

let hostPs: ProcReader | null = null;

/**
 * The reader for this host: /proc on Linux; elsewhere (macOS) one `ps` listing per tick, shared
 * by the observer, the report checks and `agent report`, so that all of them name a process by
 * the same start.
 */
export function hostReader(): ProcReader {
  if (process.platform === "linux") return procReader;
  hostPs ??= psReader();
  return hostPs;
}

/** Whether this kernel lists children per task (CONFIG_PROC_CHILDREN): without it no tree can be walked. */
export function canWalk(pid = process.pid): boolean {
  return procText(pid, `task/${pid}/children`) !== null;
}

/** An agent process found in a tree. */
export interface Found {
  agent: AgentKind;
  pid: number;
  /** "PID:START", the runtime's `process`. */
  process: string;
  uid: number;
}

/** How far down a pane's tree an agent is looked for, and how many processes at most. */
const MAX_DEPTH = 6;
const MAX_PROCS = 256;

/**
 * The agent of the tree below (and including) `root`: the topmost process that is one, breadth
 * first (a wrapper such as `npx`, a shell script or Codex's node launcher above the CLI is passed
 * through; the launcher itself is found first and names the runtime). Null when there is none.
 */
export function findAgent(root: number, read: ProcReader = procReader): Found | null {
  let level = [root];
  let seen = 0;
  for (let depth = 0; depth <= MAX_DEPTH && level.length; depth++) {
    const next: number[] = [];
    for (const pid of level) {
      if (++seen > MAX_PROCS) return null;
      const argv = read.argv(pid);
      if (argv) {
        const agent = agentOf(argv, read.comm(pid));
        if (agent) {
          const facts = read.facts(pid);
          if (facts) return { agent, pid, process: `${pid}:${facts.start}`, uid: facts.uid };
        }
      }
      next.push(...read.children(pid));
    }
    level = next;
  }
  return null;
}

/** A process named "PID:START" as it is now: its uid, or null when it is gone or another process has the pid. */
export function processOwner(ref: string, read: ProcReader = procReader): number | null {
  const m = /^(\d+):(\d+)$/.exec(ref);
  if (!m) return null;
  const facts = read.facts(Number(m[1]));
  return facts && facts.start === m[2] ? facts.uid : null;
}

/**
 * The runtime's process for a process of an agent (a hook's parent, say): the topmost agent
 * process above and including `pid` — the one `findAgent` names for the pane (Codex's node
 * launcher rather than its native `codex` child). "PID:START", or null when `pid` is no agent's.
 */
export function topAgentProcess(pid: number, read: ProcReader = procReader): string | null {
  let top: string | null = null;
  let cur = pid;
  for (let i = 0; i < 16 && cur > 1; i++) {
    const argv = read.argv(cur);
    const facts = read.facts(cur);
    if (!argv || !facts || !agentOf(argv, read.comm(cur))) break;
    top = `${cur}:${facts.start}`;
    cur = facts.ppid;
  }
  return top;
}
