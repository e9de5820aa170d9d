/**
 * Tool configuration in a cell that the host's own programs execute: git (hooks, config keys that
 * name commands, redirections to another git dir) and the project config of editors, agents and
 * direnv. A job may write any of it, and the user's next `git status` or editor launch in that
 * directory would run the job's command outside the sandbox. So: a snapshot before the job, read-only
 * binds of what exists, and after the job a review that sets aside (renames, never deletes) what the
 * job added or changed and writes the earlier version back.
 *
 * The review may run as root on a directory that a still-running job changes concurrently, so it
 * never follows a symlink: directories are walked by their entries' own types, every directory it
 * reads from or acts in is opened with O_NOFOLLOW and confirmed through /proc/self/fd to be the
 * expected path inside the cell, and files are read, renamed and written through that descriptor.
 * Names are handled as latin1 strings (one code unit per byte) so that a name that is not UTF-8
 * still reaches the same file.
 */
import {
  closeSync,
  constants,
  type Dirent,
  fchmodSync,
  fchownSync,
  fstatSync,
  lchownSync,
  lstatSync,
  opendirSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  renameSync,
  statfsSync,
  statSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import { posix } from "node:path";
import { within } from "./paths.ts";

/** Tool configuration names protected in a cell (relative names matched at any depth). */
export const WORKSPACE_CONFIG: readonly string[] = [
  // editors
  ".vscode",
  ".idea",
  ".zed",
  ".devcontainer",
  ".devcontainer.json",
  ".exrc",
  ".nvimrc",
  ".nvim.lua",
  ".dir-locals.el",
  ".dir-locals-2.el",
  ".vimrc",
  ".lazy.lua",
  ".fleet",
  ".helix",
  ".hg/hgrc",
  // coding agents
  ".claude",
  ".mcp.json",
  ".cursor",
  ".windsurf",
  ".gemini",
  ".codex",
  ".continue",
  ".kiro",
  ".amazonq",
  ".opencode",
  "opencode.json",
  ".aider.conf.yml",
  ".roo",
  ".qwen",
  ".junie",
  "crush.json",
  ".crush.json",
  // shell and git hook managers; mise trusts a config by its path, so a changed one runs unasked
  ".envrc",
  "mise.toml",
  ".mise.toml",
  "mise.local.toml",
  ".mise.local.toml",
  ".mise",
  ".config/mise",
  ".config/mise.toml",
  ".rtx.toml",
  ".gitmodules",
  ".pre-commit-config.yaml",
  ".husky",
  // hook dirs teams point core.hooksPath at (also for configs planter cannot read: GIT_CONFIG_GLOBAL)
  ".githooks",
  ".git-hooks",
  "lefthook.yml",
  ".lefthook.yml",
  "lefthook-local.yml",
  ".lefthook-local.yml",
  ".overcommit.yml",
];

/** What a watched entry is to the host. */
export type FindingKind = "git-hook" | "git-config" | "git-redirect" | "tool-config";

/** One thing a job added or changed that the host would execute, and where it was set aside. */
export interface Finding {
  /** The entry as the job left it (absolute); for "review-incomplete", the tree. */
  path: string;
  /**
   * What it is; "review-incomplete": the tree was larger than the review's budget, and is not all
   * reviewed; "more-set-aside": a count of further entries set aside that are not listed one by one
   * (`recordedFindings`).
   */
  kind: FindingKind | "review-incomplete" | "more-set-aside";
  detail: string;
  /** Where it now is (absolute), or "" when it could not be set aside. */
  saved_as: string;
  /** Whether something safe was written back at `path`: the earlier version, or for a config the job created, a copy without its dangerous keys. */
  restored: boolean;
}

/** One watched entry as the snapshot saw it. */
export interface WatchedEntry {
  kind: FindingKind;
  type: "file" | "symlink";
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  /** Its hard links (absent in snapshots of older planterds: 1). */
  nlink?: number;
  /** The contents, base64 (regular files up to 64 KiB). */
  data?: string;
  /** A symlink's target. */
  link?: string;
}

/** What a cell held before a job: enough to tell afterwards what the job added or changed. JSON-serialisable (stored in the job dir so a restarted daemon can still review). */
export interface WorkspaceSnapshot {
  version: 1;
  /** The cell dir's real path. Every path here is a latin1 string: one code unit per byte of the name. */
  cellDir: string;
  /** The tool configuration names watched (WORKSPACE_CONFIG and the extra ones). */
  config: string[];
  /** Git dirs (a `.git` dir, a bare layout, a worktree's or submodule's git dir), relative; "" is the cell itself. */
  gitDirs: string[];
  /** Hook dirs named by `core.hooksPath`, config files named by `include.path` and programs the user's global git config names, that lie in the cell, relative. */
  derived: Derived;
  /** What the host user's global and system git config name relative to each repository (resolved again for repositories a job creates). */
  global?: GlobalGit;
  /** Directories that could not be listed, relative. */
  unlistable: string[];
  /** What readOnlyPaths binds read-only, relative. */
  protect: string[];
  /** Watched entries by relative path. */
  entries: Record<string, WatchedEntry>;
  /**
   * Trees the job can write that no review walks (the cells' homes), canonical: a symlink the job
   * leaves in the cell that leads into one is set aside, since the host's tools follow it (a `cd`
   * into it and `git status` finds the repository the job made there).
   */
  unreviewed?: string[];
}

/** Paths derived from git configs, relative to the cell. */
export interface Derived {
  hooks: string[];
  configs: string[];
  /** Programs a global config runs from the work tree (`core.fsmonitor = ./tools/x`, `!scripts/y` aliases). */
  programs?: string[];
}

/**
 * What the host user's own git reads before any repository's config (`~/.gitconfig`,
 * `$XDG_CONFIG_HOME/git/config`, `/etc/gitconfig`, and what they include) and resolves in the
 * repository it runs in: such a path in a cell is the job's to write, and the user's next
 * `git status` there would run it.
 */
export interface GlobalGit {
  /** Relative `core.hooksPath` values (from the work tree, or a bare repository's git dir). */
  hooks: string[];
  /** Relative program paths (with a slash) in command-valued keys: run from the work tree. */
  programs: string[];
  /** Absolute paths the global configs name: hook dirs, included configs, programs. */
  absolute: { hooks: string[]; configs: string[]; programs: string[] };
}

/** Contents kept in a snapshot (and so restorable) up to this size. */
const KEEP_BYTES = 64 * 1024;
/** A git config larger than this is not parsed, only judged changed or not. */
const CONFIG_BYTES = 1024 * 1024;
const QUARANTINE = ".planter-quarantine-";

// ---------------------------------------------------------------- git config

/** A key and its value as git reads them; value null is a key without `=` (boolean true). */
export interface GitConfigEntry {
  /** `section.key` or `section.subsection.key`: section and key lower-cased, subsection as written in quotes. */
  name: string;
  value: string | null;
  line: number;
}

/** A parsed git config: its entries and the lines git would refuse. */
export interface GitConfig {
  entries: GitConfigEntry[];
  bad: { line: number; text: string }[];
}

const isSpace = (c: string) => c === " " || c === "\t" || c === "\n" || c === "\r";
const isAlpha = (c: string) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const isKeyChar = (c: string) => isAlpha(c) || (c >= "0" && c <= "9") || c === "-";

/** A value being read: inside quotes, in a trailing comment, the text so far, where its trailing blanks begin (0: none). */
interface ValueState {
  quote: boolean;
  comment: boolean;
  out: string;
  trim: number;
}

/** The escapes git knows in a value (`\` before a newline continues the value instead). */
const VALUE_ESCAPES = new Map([
  ["t", "\t"],
  ["b", "\b"],
  ["n", "\n"],
  ["\\", "\\"],
  ['"', '"'],
]);

/** Take one character of a value (not its line's end) into `v`; false when git refuses it (an unknown escape). */
function valueChar(v: ValueState, c: string, next: () => string): boolean {
  if (v.comment) return true;
  if (isSpace(c) && !v.quote) {
    if (!v.trim) v.trim = v.out.length;
    if (v.out.length) v.out += c;
    return true;
  }
  if (!v.quote && (c === ";" || c === "#")) {
    v.comment = true;
    return true;
  }
  v.trim = 0;
  if (c === "\\") {
    const d = next();
    if (d === "\n") return true;
    const e = VALUE_ESCAPES.get(d);
    if (e === undefined) return false;
    v.out += e;
    return true;
  }
  if (c === '"') v.quote = !v.quote;
  else v.out += c;
  return true;
}

/** Parse git config text as git's config.c does; after a bad line, resume at the next one. */
export function parseGitConfig(text: string): GitConfig {
  // A parser that read any line differently from git would let a key through, so this follows
  // git character by character rather than an ini grammar: a key may follow its section header on
  // the same line, a backslash-newline continues a value, quotes and escapes, `#` and `;` comments.
  // Git stops at a bad line and refuses the file; reading on finds every dangerous key to report.
  let t = text;
  if (t.startsWith("\uFEFF")) t = t.slice(1);
  else if (t.startsWith("\xEF\xBB\xBF")) t = t.slice(3);
  const entries: GitConfigEntry[] = [];
  const badLines = new Set<number>();
  let i = 0;
  let line = 1;
  let eof = false;
  let newline = false;
  const next = (): string => {
    if (i >= t.length) {
      eof = true;
      newline = true;
      return "\n";
    }
    let c = t[i++] as string;
    if (c === "\r" && t[i] === "\n") {
      i++;
      c = "\n";
    }
    newline = c === "\n";
    if (newline) line++;
    return c;
  };

  const extendedHeader = (name: string, first: string): string | null => {
    let c = first;
    do {
      if (c === "\n") return null;
      c = next();
    } while (isSpace(c));
    if (c !== '"') return null;
    let out = `${name}.`;
    for (;;) {
      let d = next();
      if (d === "\n") return null;
      if (d === '"') break;
      if (d === "\\") {
        d = next();
        if (d === "\n") return null;
      }
      out += d;
    }
    return next() === "]" ? out : null;
  };
  const header = (): string | null => {
    let name = "";
    for (;;) {
      const c = next();
      if (eof) return null;
      if (c === "]") return name.length ? name : null;
      if (isSpace(c)) return extendedHeader(name, c);
      if (!isKeyChar(c) && c !== ".") return null;
      name += c.toLowerCase();
    }
  };
  const value = (): string | null => {
    const v: ValueState = { quote: false, comment: false, out: "", trim: 0 };
    for (;;) {
      const c = next();
      if (c === "\n") {
        if (v.quote) return null;
        return v.trim ? v.out.slice(0, v.trim) : v.out;
      }
      if (!valueChar(v, c, next)) return null;
    }
  };
  const keyValue = (first: string): { key: string; value: string | null } | null => {
    let key = first.toLowerCase();
    let c: string;
    for (;;) {
      c = next();
      if (eof || !isKeyChar(c)) break;
      key += c.toLowerCase();
    }
    while (c === " " || c === "\t") c = next();
    if (c === "\n") return { key, value: null };
    if (c !== "=") return null;
    const v = value();
    return v === null ? null : { key, value: v };
  };

  let section: string | null = null;
  let comment = false;
  for (;;) {
    const start = line;
    const c = next();
    if (c === "\n") {
      if (eof) break;
      comment = false;
      continue;
    }
    if (comment || isSpace(c)) continue;
    if (c === "#" || c === ";") {
      comment = true;
      continue;
    }
    let ok = true;
    if (c === "[") {
      section = header();
      ok = section !== null;
    } else if (!isAlpha(c)) {
      ok = false;
    } else {
      const kv = keyValue(c);
      // A key before any section (or after a bad header) is not one git would look up as meant.
      ok = kv !== null && section !== null;
      if (kv && section !== null) entries.push({ name: `${section}.${kv.key}`, value: kv.value, line: start });
    }
    if (!ok) {
      badLines.add(start);
      // Resume at the next line, unless the failure already consumed its newline.
      comment = !newline;
    }
  }
  const lines = t.split("\n");
  const bad = [...badLines].map((n) => ({ line: n, text: (lines[n - 1] ?? "").replace(/\r$/, "") }));
  return { entries, bad };
}

/** True when git would read `value` as a boolean (so a key that takes "bool or command" runs nothing). */
function isBool(value: string | null): boolean {
  return value === null || /^(true|false|yes|no|on|off|)$/i.test(value) || /^[-+]?[0-9]+[kmg]?$/i.test(value);
}

const CORE = new Set([
  "fsmonitor",
  "hookspath",
  "sshcommand",
  "editor",
  "pager",
  "askpass",
  "gitproxy",
  "worktree",
  "alternaterefscommand",
]);
const SENDEMAIL = new Set(["sendmailcmd", "smtpserver", "tocmd", "cccmd", "headercmd"]);

/**
 * Whether git would run a command (or read config, hooks or a work tree from elsewhere) because of
 * this key. Subsections are ignored where git needs one (`filter.x.clean`): a key git does not
 * read is flagged rather than parsed for whether git reads it.
 */
function isDangerous(name: string, value: string | null): boolean {
  const first = name.indexOf(".");
  const last = name.lastIndexOf(".");
  const section = name.slice(0, first);
  const key = name.slice(last + 1);
  const sub = first === last ? null : name.slice(first + 1, last);
  const v = (value ?? "").trimStart();
  switch (section) {
    case "core":
      return CORE.has(key) && !(key === "fsmonitor" && isBool(value));
    case "sequence":
      return key === "editor";
    case "pager":
      return !isBool(value);
    case "credential":
      return key === "helper";
    case "gpg":
      return key === "program" || key === "defaultkeycommand";
    case "alias":
      return v.startsWith("!");
    case "filter":
      return key === "clean" || key === "smudge" || key === "process";
    case "diff":
      return key === "textconv" || key === "command" || key === "external";
    case "merge":
      return key === "driver";
    case "include":
    case "includeif":
      return key === "path";
    case "uploadpack":
      return key === "packobjectshook";
    case "remote":
      return (
        key === "uploadpack" || key === "receivepack" || ((key === "url" || key === "pushurl") && /^ext::/i.test(v))
      );
    case "protocol":
      // protocol.allow is the default for ext too; only an explicit "never" keeps ext:: off.
      return key === "allow" && (sub === null || sub.toLowerCase() === "ext") && v.toLowerCase() !== "never";
    case "difftool":
    case "mergetool":
    case "browser":
    case "man":
      return key === "cmd" || key === "path";
    case "interactive":
      return key === "difffilter";
    case "sendemail":
      return SENDEMAIL.has(key);
    case "trailer":
      return key === "command" || key === "cmd";
    case "submodule":
      return key === "update" && v.startsWith("!");
    case "hook":
      return true;
    case "init":
      return key === "templatedir";
    case "guitool":
      return key === "cmd";
    case "imap":
      return key === "tunnel";
    case "instaweb":
      return key === "httpd";
    default:
      return false;
  }
}

/** Dangerous keys in a git config text (lower-cased `section.sub.key` names). An unparsable line counts as dangerous. */
export function dangerousGitConfig(text: string): string[] {
  const c = parseGitConfig(text);
  const names = c.entries.filter((e) => isDangerous(e.name, e.value)).map((e) => e.name);
  for (const b of c.bad) names.push(`(unparsable line ${b.line})`);
  return [...new Set(names)];
}

/** Dangerous entries as comparable strings with display names: what "grew" is measured in. */
function dangerousItems(c: GitConfig): { id: string; name: string }[] {
  const items = c.entries
    .filter((e) => isDangerous(e.name, e.value))
    .map((e) => ({ id: `${e.name}\0${e.value ?? "\x01"}`, name: e.name }));
  for (const b of c.bad) items.push({ id: `\0bad\0${b.text}`, name: `(unparsable line ${b.line})` });
  return items;
}

/** Names of the dangerous entries of `after` that `before` does not have (as a multiset). */
function addedDanger(before: GitConfig | null, after: GitConfig): string[] {
  const had = new Map<string, number>();
  for (const x of before ? dangerousItems(before) : []) had.set(x.id, (had.get(x.id) ?? 0) + 1);
  const added: string[] = [];
  for (const x of dangerousItems(after)) {
    const n = had.get(x.id) ?? 0;
    if (n > 0) had.set(x.id, n - 1);
    else added.push(x.name);
  }
  return [...new Set(added)];
}

/** A value in quotes with git's escapes. */
const quoteValue = (s: string) =>
  `"${s.replace(/[\\"]/g, "\\$&").replace(/\n/g, "\\n").replace(/\t/g, "\\t").replaceAll("\b", "\\b")}"`;
/** A subsection in quotes: there a backslash stands for the next character itself, so only \\ and " are escaped. */
const quoteSub = (s: string) => `"${s.replace(/[\\"]/g, "\\$&")}"`;

/** The harmless entries of a git config, rendered afresh: `[section "sub"]`, one quoted value a line. */
export function harmlessGitConfig(text: string): string {
  // Rendered rather than copied line by line, git reads exactly the entries judged here, whatever
  // the original's quoting, continuations or comments did.
  const out: string[] = [];
  let current: string | null = null;
  for (const e of parseGitConfig(text).entries) {
    if (isDangerous(e.name, e.value)) continue;
    const first = e.name.indexOf(".");
    const last = e.name.lastIndexOf(".");
    const head =
      first === last
        ? `[${e.name.slice(0, first)}]`
        : `[${e.name.slice(0, first)} ${quoteSub(e.name.slice(first + 1, last))}]`;
    if (head !== current) {
      out.push(head);
      current = head;
    }
    const key = e.name.slice(last + 1);
    out.push(e.value === null ? `\t${key}` : `\t${key} = ${quoteValue(e.value)}`);
  }
  return out.length ? `${out.join("\n")}\n` : "";
}

// ---------------------------------------------------------------- scanning

/** A path as the kernel wants it: the latin1 string's code units are the name's bytes. */
const bytes = (p: string) => Buffer.from(p, "latin1");
/** A latin1 path for people (UTF-8 names read back as such). */
const shown = (p: string) => Buffer.from(p, "latin1").toString("utf8");
const toLatin1 = (s: string) => Buffer.from(s, "utf8").toString("latin1");

interface Scan {
  root: string;
  /** Real directories reached by the walk (through directories only, never a symlink). */
  dirs: Set<string>;
  gitDirs: Set<string>;
  watched: Map<string, { kind: FindingKind; type: "file" | "symlink" }>;
  protect: Set<string>;
  unlistable: string[];
  /** The walk stopped at its budget's `max` entries: what lies past them was not seen. */
  truncated: boolean;
  /** Every symlink met, relative (collected only when asked). */
  links: string[] | null;
  /** The same, to look up. */
  linkSet: Set<string>;
}

interface Names {
  single: Set<string>;
  /** Multi-segment names by their last segment. */
  multi: Map<string, string[]>;
}

function configNames(list: readonly string[]): { all: string[]; names: Names } {
  const all = [
    ...new Set(
      list.map((n) =>
        toLatin1(n)
          .replace(/^(\.\/)+/, "")
          .replace(/\/+$/, ""),
      ),
    ),
  ].filter(Boolean);
  const names: Names = { single: new Set(), multi: new Map() };
  for (const n of all.map(fold)) {
    if (!n.includes("/")) {
      names.single.add(n);
      continue;
    }
    const last = n.slice(n.lastIndexOf("/") + 1);
    names.multi.set(last, [...(names.multi.get(last) ?? []), n]);
  }
  return { all, names };
}

/**
 * Names compared as a case-insensitive filesystem resolves them (macOS, vfat and exFAT, WSL's
 * /mnt/c, ext4 casefold dirs): there git opens `.GIT/CONFIG` for `.git/config` and direnv finds
 * `.EnvRC`. On a case-sensitive one a name in another case is watched for nothing, which is harmless.
 */
const fold = (name: string) => name.toLowerCase();

const relJoin = (dir: string, name: string) => (dir ? `${dir}/${name}` : name);
const absOf = (root: string, rel: string) => (rel ? `${root === "/" ? "" : root}/${rel}` : root);
const parentOf = (rel: string) => rel.slice(0, Math.max(0, rel.lastIndexOf("/")));
const baseOf = (rel: string) => rel.slice(rel.lastIndexOf("/") + 1);

// ---------------------------------------------------------------- walking without stalling

/**
 * Bounds and progress of one snapshot or review: the entries listed so far (every scan of it
 * together), the most one scan may list, and the slice of work between two yields to the caller's
 * event loop (snapshotAsync, reviewAsync): `sliceMs` of it, the clock read every 16 steps (a
 * step is one listed entry, or one watched entry read, judged or set aside: these cost more, so
 * the slice is measured in time, not counted).
 */
export interface WalkBudget {
  entries: number;
  max: number;
  sliceMs: number;
  /** When the current slice began (set by the driver). */
  since: number;
  steps: number;
}

/**
 * A budget for one snapshot or review; `max` entries per scan (unbounded by default). Slices of
 * 1 ms keep a request's wait short (it needs a few turns of the event loop); a walk is no slower
 * for them (a yield costs microseconds).
 */
export const walkBudget = (max = Number.POSITIVE_INFINITY, sliceMs = 1): WalkBudget => ({
  entries: 0,
  max,
  sliceMs,
  since: performance.now(),
  steps: 0,
});

/** One more step: whether its slice is spent (then the walk yields). */
const spent = (b: WalkBudget) => ++b.steps % 16 === 0 && performance.now() - b.since >= b.sliceMs;

/** A tree with more entries than a snapshot may list (the job that wanted it is refused). */
export class TreeTooLarge extends Error {
  constructor(
    readonly root: string,
    readonly max: number,
  ) {
    super(`${shown(root)} holds more than ${max} entries`);
  }
}

/** A walk as steps: it yields between slices (WalkBudget), and returns what it found. */
type Steps<T> = Generator<void, T, void>;

/** Run every step at once (the synchronous API). */
function drain<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Run the steps, letting the event loop in between (pending I/O, other requests); `signal` stops it. */
async function drive<T>(steps: Steps<T>, budget: WalkBudget, signal?: AbortSignal): Promise<T> {
  for (;;) {
    budget.since = performance.now();
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (signal?.aborted) {
      steps.return(undefined as T);
      throw signal.reason ?? new Error("the walk was stopped");
    }
  }
}

/**
 * The entries of a directory, read a slice at a time (a directory of a million names costs no
 * more than its share of the budget), or null when it is gone (`denied`: it cannot be listed).
 * Stops, setting `s.truncated`, once the scan has listed `budget.max` entries.
 */
function* listDir(s: Scan, abs: string, budget: WalkBudget, listed: { n: number }): Steps<Dirent[] | "denied" | null> {
  const failed = (e: unknown) => {
    const code = (e as NodeJS.ErrnoException).code;
    // Gone or no directory: nothing to list. No permission, or a path past PATH_MAX that a job
    // nested deep enough for: a directory that cannot be reviewed, said. Anything else (planterd
    // out of descriptors or memory) fails the walk: neither skipped in silence nor set aside.
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    if (code === "EACCES" || code === "EPERM" || code === "ENAMETOOLONG" || code === "ELOOP") return "denied";
    throw e;
  };
  let dir: ReturnType<typeof opendirSync>;
  try {
    dir = opendirSync(bytes(abs) as unknown as string, { encoding: "latin1" as BufferEncoding });
  } catch (e) {
    return failed(e);
  }
  const list: Dirent[] = [];
  try {
    for (;;) {
      let e: Dirent | null;
      try {
        e = dir.readSync();
      } catch (err) {
        // Bun's opendirSync opens lazily: a directory this uid may not list fails on the first read.
        return failed(err);
      }
      if (e === null) return list;
      if (listed.n >= budget.max) {
        s.truncated = true;
        return list;
      }
      list.push(e);
      listed.n++;
      budget.entries++;
      if (spent(budget)) yield;
    }
  } finally {
    try {
      dir.closeSync();
    } catch {
      // closed already
    }
  }
}

/**
 * Walk the cell once: find every git dir (`.git` dir, a directory with HEAD and objects/ + refs/ or
 * a commondir file — what git itself accepts), the entries of each that make git run something, and
 * the listed tool configuration. Nothing is skipped by name except a git dir's objects/.
 */
function* scan(root: string, names: Names, derived: Derived, budget: WalkBudget, links = false): Steps<Scan> {
  const s: Scan = {
    root,
    dirs: new Set(),
    gitDirs: new Set(),
    watched: new Map(),
    protect: new Set(),
    unlistable: [],
    truncated: false,
    links: links ? [] : null,
    linkSet: new Set(),
  };
  const listed = { n: 0 };
  const known: Known = {
    names,
    hookDirs: new Set(derived.hooks.map(fold)),
    includes: new Set(derived.configs.map(fold)),
    programs: new Set((derived.programs ?? []).map(fold)),
  };
  // An explicit stack: a job can nest directories deeper than any call stack.
  const stack: ScanDir[] = [{ rel: "", tool: false, hooks: false }];
  for (let top = stack.pop(); top && !s.truncated; top = stack.pop()) {
    const list = yield* listDir(s, absOf(root, top.rel), budget, listed);
    if (list === "denied") s.unlistable.push(top.rel);
    if (list === null || list === "denied") continue;
    s.dirs.add(top.rel);
    const gitDir = isGitDir(top.rel, list);
    if (gitDir) s.gitDirs.add(top.rel);
    for (const e of list) {
      if (spent(budget)) yield;
      const sub = visit(s, known, top, gitDir, e);
      if (sub) stack.push(sub);
    }
  }
  return s;
}

/** A directory the scan is to list: whether it is (in) a tool configuration, a hooks directory, or (in) a git dir's objects/. */
interface ScanDir {
  rel: string;
  tool: boolean;
  hooks: boolean;
  objects?: boolean;
}

/** What a scan looks for: the tool configurations, and the hooks dirs, includes and programs git's config names (folded). */
interface Known {
  names: Names;
  hookDirs: Set<string>;
  includes: Set<string>;
  programs: Set<string>;
}

/** Note one entry of `dir` in the scan (watched, kept read-only, a symlink met); returns it when it is a directory to list too. */
function visit(s: Scan, known: Known, dir: ScanDir, gitDir: boolean, e: Dirent): ScanDir | null {
  const name = fold(e.name);
  const r = relJoin(dir.rel, e.name);
  const fr = fold(r);
  const isDir = e.isDirectory();
  const type = e.isSymbolicLink() ? "symlink" : e.isFile() ? "file" : null;
  let toolHere = dir.tool;
  if (!dir.tool && isToolConfig(known.names, name, fr)) {
    toolHere = true;
    if (type !== "symlink" && (isDir || type === "file")) s.protect.add(r);
  }
  const hookDir = (gitDir && name === "hooks") || known.hookDirs.has(fr);
  const { programs, includes } = known;
  const found = entryKind({ name, fr, isDir, type, gitDir, hookDir, inHooks: dir.hooks, toolHere, programs, includes });
  if (found.protect) s.protect.add(r);
  if (found.kind && type) s.watched.set(r, { kind: found.kind, type });
  if (type === "symlink" && s.links) {
    s.links.push(r);
    s.linkSet.add(r);
  }
  if (!isDir) return null;
  if (gitDir && name === "objects") {
    // Of objects/ only its alternates redirect anything.
    watchAlternates(s, `${r}/info/alternates`);
    // Yet a job decides what is a git dir (a HEAD and refs/ beside a project's own objects/
    // make one): objects/ is walked like any directory but for git's own fan-out and pack
    // dirs holding no directory, whose one file per object need not be listed.
    return { rel: r, tool: toolHere, hooks: false, objects: true };
  }
  if (dir.objects && (name === "pack" || /^[0-9a-f]{2}$/.test(name)) && holdsNoDir(absOf(s.root, r))) return null;
  return { rel: r, tool: toolHere, hooks: hookDir };
}

/** Whether a directory is a git dir: a `.git` dir, or one with HEAD and objects/ + refs/ or a commondir file. */
function isGitDir(rel: string, list: Dirent[]): boolean {
  let head = false;
  let objects = false;
  let refs = false;
  let commondir = false;
  for (const e of list) {
    const n = fold(e.name);
    if (n === "head") head = !e.isDirectory();
    else if (n === "objects") objects = true;
    else if (n === "refs") refs = true;
    else if (n === "commondir") commondir = true;
  }
  return fold(baseOf(rel)) === ".git" || (head && ((objects && refs) || commondir));
}

/** Whether the entry `name` at `fr` (both folded) is one of the listed tool configurations. */
function isToolConfig(names: Names, name: string, fr: string): boolean {
  return names.single.has(name) || names.multi.get(name)?.some((n) => fr === n || fr.endsWith(`/${n}`)) === true;
}

/** One entry of a scanned directory, as entryKind needs it (`name` and `fr`, its relative path, folded). */
interface EntryFacts {
  name: string;
  fr: string;
  isDir: boolean;
  type: "file" | "symlink" | null;
  /** The directory holding it is a git dir. */
  gitDir: boolean;
  /** It is a hooks directory (a git dir's, or one core.hooksPath names). */
  hookDir: boolean;
  /** The directory holding it is a hooks directory. */
  inHooks: boolean;
  /** It is, or lies in, a listed tool configuration. */
  toolHere: boolean;
  programs: Set<string>;
  includes: Set<string>;
}

/** What an entry is to the host (a finding's kind, or null), and whether it is kept read-only for the job. */
function entryKind(f: EntryFacts): { kind: FindingKind | null; protect: boolean } {
  const { name, fr, isDir, type, gitDir } = f;
  if (name === ".git" && !isDir) return { kind: type ? "git-redirect" : null, protect: type === "file" };
  if (gitDir && (name === "config" || name === "config.worktree") && type)
    return { kind: "git-config", protect: type === "file" };
  if (gitDir && name === "commondir" && type) return { kind: "git-redirect", protect: type === "file" };
  if (f.hookDir) return { kind: type === "symlink" ? "git-hook" : null, protect: isDir };
  if (gitDir && name === "info" && isDir) return { kind: null, protect: true };
  if (f.inHooks && type && !name.endsWith(".sample")) return { kind: "git-hook", protect: false };
  if (f.programs.has(fr) && type) return { kind: "git-hook", protect: type === "file" };
  if (f.includes.has(fr) && type) return { kind: "git-config", protect: type === "file" };
  return { kind: f.toolHere && type ? "tool-config" : null, protect: false };
}

/** Watch a git dir's objects/info/alternates when there is one (a file or a symlink). */
function watchAlternates(s: Scan, alt: string): void {
  try {
    const st = lstatSync(bytes(absOf(s.root, alt)));
    if (st.isFile() || st.isSymbolicLink()) {
      s.watched.set(alt, { kind: "git-redirect", type: st.isFile() ? "file" : "symlink" });
    }
  } catch {
    // no alternates
  }
}

/**
 * Filesystems whose directories count their subdirectories in their link count (2 + one per
 * subdirectory), as find's leaf optimisation trusts them: ext2/3/4, XFS, tmpfs. Elsewhere (btrfs
 * counts 1, network and FUSE filesystems say what they like) a directory is listed.
 */
const COUNTS_SUBDIRS = new Set([0xef53, 0x58465342, 0x01021994]);

/** Whether the directory `abs` surely holds no directory (its link count says so on a filesystem that keeps it). */
function holdsNoDir(abs: string): boolean {
  try {
    const st = lstatSync(bytes(abs));
    if (!st.isDirectory() || st.nlink !== 2) return false;
    return COUNTS_SUBDIRS.has(Number(statfsSync(bytes(abs) as unknown as string).type));
  } catch {
    return false;
  }
}

/**
 * The tree among `trees` that the symlink `rel` leads into as a directory (as the host follows it:
 * its target taken literally, and resolved through every symlink on the way), or null. Only a
 * directory is a way in for the host's tools (`cd`, git's discovery of a repository above it, an
 * editor opening a folder); a link to a file there (a venv's `bin/python` to an interpreter uv or
 * pyenv keeps in the home) runs what the job could as well have written in the cell. A dangling
 * link is judged again at every review, once it leads somewhere.
 */
function leadsInto(s: Scan, rel: string, trees: string[]): string | null {
  const root = s.root;
  const abs = bytes(absOf(root, rel));
  let target: string;
  try {
    target = readlinkSync(abs, { encoding: "latin1" }) as string;
    // A relative link that stays in the tree by its text, climbing (`..`) only out of directories
    // the walk found real, goes nowhere else (a link it passes through is judged on its own):
    // node_modules' thousands need no stat.
    if (staysIn(s, parentOf(rel), target)) return null;
    if (!statSync(abs, { throwIfNoEntry: false })?.isDirectory()) return null;
  } catch {
    return null; // gone, a loop
  }
  const literal = posix.normalize(target.startsWith("/") ? target : `${absOf(root, parentOf(rel))}/${target}`);
  let real: string | null = null;
  try {
    real = realpathSync(abs, { encoding: "latin1" }) as unknown as string;
  } catch {
    // changed meanwhile
  }
  return trees.find((t) => within(literal, t) || (real !== null && within(real, t))) ?? null;
}

/**
 * Whether the relative link `target` in the cell dir `from` surely ends in the tree: `..` taken
 * only from real directories, and through no other link (one set aside keeps leading where it led).
 */
function staysIn(s: Scan, from: string, target: string): boolean {
  if (target.startsWith("/")) return false;
  const cur = from ? from.split("/") : [];
  for (const x of target.split("/")) {
    if (x === "" || x === ".") continue;
    if (x !== "..") {
      cur.push(x);
      if (s.linkSet.has(cur.join("/"))) return false;
      continue;
    }
    if (!cur.length || !s.dirs.has(cur.join("/"))) return false;
    cur.pop();
  }
  return true;
}

// ---------------------------------------------------------------- checked access

/** Open a directory of the cell without following symlinks, and only if it is still where expected. */
function openDir(root: string, rel: string): number | null {
  const abs = absOf(root, rel);
  let fd: number;
  try {
    fd = openSync(bytes(abs), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
  try {
    // O_NOFOLLOW covers the last component only; the descriptor's own path covers the rest.
    if ((readlinkSync(`/proc/self/fd/${fd}`, { encoding: "latin1" }) as string) === abs) return fd;
  } catch {
    // fall through
  }
  closeSync(fd);
  return null;
}

const at = (fd: number, name: string) => bytes(`/proc/self/fd/${fd}/${name}`);

type Read =
  | { ok: true; data: Buffer }
  | { ok: false; why: "moved" | "gone" | "not-file" | "large" }
  | { ok: true; link: string };

/** Read a file (up to `max` bytes) or a symlink's target, in a checked directory. */
function readEntry(root: string, rel: string, max: number): Read {
  const dfd = openDir(root, parentOf(rel));
  if (dfd === null) return { ok: false, why: "moved" };
  try {
    return readAt(dfd, baseOf(rel), max);
  } finally {
    closeSync(dfd);
  }
}

function readAt(dfd: number, name: string, max: number): Read {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted under a watched name must not hang the daemon.
    fd = openSync(at(dfd, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ELOOP") {
      try {
        return { ok: true, link: readlinkSync(at(dfd, name), { encoding: "latin1" }) as string };
      } catch {
        return { ok: false, why: "gone" };
      }
    }
    return { ok: false, why: code === "ENOENT" ? "gone" : "not-file" };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { ok: false, why: "not-file" };
    if (st.size > max) return { ok: false, why: "large" };
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    for (;;) {
      const k = readSync(fd, buf, n, buf.length - n, null);
      if (k <= 0) break;
      n += k;
      if (n > max) return { ok: false, why: "large" };
    }
    return { ok: true, data: buf.subarray(0, n) };
  } finally {
    closeSync(fd);
  }
}

function lstatIn(root: string, rel: string) {
  try {
    return lstatSync(bytes(absOf(root, rel)));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- derived watches

/** `p` (absolute, or relative to the cell-relative dir `from`) as a path relative to the cell, or null outside it. */
function inCellPath(root: string, from: string, p: string): string | null {
  if (p.startsWith("~") || p.startsWith("%(prefix)")) return null;
  const parts = p.startsWith("/") ? null : [...(from ? from.split("/") : [])];
  let cur: string[];
  let rest: string[];
  if (parts === null) {
    const pre = root === "/" ? "" : root;
    if (p !== root && !p.startsWith(`${pre}/`)) return null;
    cur = [];
    rest = p.slice(pre.length + 1).split("/");
  } else {
    cur = parts;
    rest = p.split("/");
  }
  for (const x of rest) {
    if (x === "" || x === ".") continue;
    if (x === "..") {
      if (cur.length === 0) return null;
      cur.pop();
    } else cur.push(x);
  }
  return cur.length ? cur.join("/") : null;
}

/**
 * Paths a command value names as a program or script: words with a slash, after any `--opt=`.
 * Over-reading is harmless (a path kept read-only and reviewed); under-reading is not.
 */
export function commandPaths(value: string): string[] {
  const v = value.trimStart().replace(/^!/, "");
  const out: string[] = [];
  for (const raw of v.split(/[\s;&|()<>`'"{}]+/)) {
    const w = raw.replace(/^--?[A-Za-z0-9-]+=/, "");
    if (!w.includes("/") || w.includes("://") || w.startsWith("$") || w.startsWith("-")) continue;
    out.push(w);
  }
  return out;
}

/** Config files git reads a global config through, at most this deep. */
const INCLUDE_DEPTH = 10;

/**
 * Read the global and system git configs `files` (and what they include) into what they name
 * relative to a repository or inside a cell. `home` expands `~/`. A file is read only when root
 * or the owner of the file that names it (`owners`: the first files' expected owners) owns it,
 * so a config cannot make planterd read another user's private files.
 */
export function readGlobalGit(files: { path: string; home: string | null; owner: number }[]): GlobalGit {
  const out: GlobalGit = { hooks: [], programs: [], absolute: { hooks: [], configs: [], programs: [] } };
  const seen = new Set<string>();
  const visit = (path: string, home: string | null, owner: number, depth: number) => {
    if (depth > INCLUDE_DEPTH || seen.has(path)) return;
    seen.add(path);
    const text = ownedConfig(path, owner);
    if (text === null) return;
    for (const e of parseGitConfig(text).entries) {
      const include = noteGlobalEntry(out, e, path, home);
      if (include) visit(include, home, owner, depth + 1);
    }
  };
  for (const f of files) visit(f.path, f.home, f.owner, 0);
  const uniq = (a: string[]) => [...new Set(a)].sort();
  return {
    hooks: uniq(out.hooks),
    programs: uniq(out.programs),
    absolute: {
      hooks: uniq(out.absolute.hooks),
      configs: uniq(out.absolute.configs),
      programs: uniq(out.absolute.programs),
    },
  };
}

/** A config file's text, when it is a file of at most CONFIG_BYTES owned by root or `owner`; else null. */
function ownedConfig(path: string, owner: number): string | null {
  try {
    const st = lstatSync(path);
    if (!st.isFile() || st.size > CONFIG_BYTES || (st.uid !== 0 && st.uid !== owner)) return null;
    return readFileSync(path, "latin1");
  } catch {
    return null;
  }
}

/**
 * Note what a dangerous entry of the global config at `path` names (hooks dir, included config,
 * programs); `~/` is `home`. Returns an included config to read next, or null.
 */
function noteGlobalEntry(out: GlobalGit, e: GitConfigEntry, path: string, home: string | null): string | null {
  if (e.value === null || !isDangerous(e.name, e.value)) return null;
  const expand = (p: string) => (p.startsWith("~/") && home ? `${home}${p.slice(1)}` : p);
  const section = e.name.slice(0, e.name.indexOf("."));
  const key = e.name.slice(e.name.lastIndexOf(".") + 1);
  const v = expand(e.value);
  if (e.name === "core.hookspath") {
    (v.startsWith("/") ? out.absolute.hooks : out.hooks).push(v);
    return null;
  }
  if ((section === "include" || section === "includeif") && key === "path") {
    if (v.startsWith("~")) return null;
    const abs = v.startsWith("/") ? v : `${parentOfAbs(path)}/${v}`;
    out.absolute.configs.push(abs);
    return abs;
  }
  for (const w of commandPaths(e.value)) {
    const x = expand(w);
    if (x.startsWith("~")) continue;
    (x.startsWith("/") ? out.absolute.programs : out.programs).push(x);
  }
  return null;
}

const parentOfAbs = (p: string) => p.slice(0, Math.max(1, p.lastIndexOf("/")));

/** What the global configs name in this cell, for the repositories `gitDirs` found there. */
function globalDerived(root: string, gitDirs: Iterable<string>, g: GlobalGit | undefined): Derived {
  const out: Required<Derived> = { hooks: [], configs: [], programs: [] };
  if (!g) return out;
  const add = (list: string[], r: string | null) => {
    if (r !== null) list.push(r);
  };
  for (const a of g.absolute.hooks) add(out.hooks, inCellPath(root, "", a));
  for (const a of g.absolute.configs) add(out.configs, inCellPath(root, "", a));
  for (const a of g.absolute.programs) add(out.programs, inCellPath(root, "", a));
  for (const gitDir of gitDirs) {
    const worktree = fold(baseOf(gitDir)) === ".git" ? parentOf(gitDir) : gitDir;
    for (const h of g.hooks) for (const from of new Set([worktree, gitDir])) add(out.hooks, inCellPath(root, from, h));
    for (const p of g.programs) add(out.programs, inCellPath(root, worktree, p));
  }
  return out;
}

/** Two derived sets together; `grew` tells whether `b` added anything to `a`. */
function mergeDerived(a: Derived, b: Derived): { merged: Derived; grew: boolean } {
  const u = (x: string[] = [], y: string[] = []) => [...new Set([...x, ...y])].sort();
  const merged = { hooks: u(a.hooks, b.hooks), configs: u(a.configs, b.configs), programs: u(a.programs, b.programs) };
  const size = (d: Derived) => d.hooks.length + d.configs.length + (d.programs?.length ?? 0);
  return { merged, grew: size(merged) > size({ ...a, programs: a.programs ?? [] }) };
}

/**
 * Hook dirs and config files that the existing configs point into the cell (`core.hooksPath`,
 * `include.path`, `includeIf.*.path`): they run or are read like a git dir's own, so they are
 * watched the same way. Relative values resolve as git does (include: from the config's directory;
 * hooksPath: from where hooks run, the work tree or the git dir; both are taken).
 */
function derive(root: string, gitDir: string, configRel: string, text: string): Derived {
  const out = { hooks: [] as string[], configs: [] as string[] };
  const inCell = (from: string, p: string) => inCellPath(root, from, p);
  const worktree = fold(baseOf(gitDir)) === ".git" ? parentOf(gitDir) : gitDir;
  for (const e of parseGitConfig(text).entries) {
    if (e.value === null) continue;
    const key = e.name.slice(e.name.lastIndexOf(".") + 1);
    const section = e.name.slice(0, e.name.indexOf("."));
    if (e.name === "core.hookspath") {
      for (const from of new Set([worktree, gitDir])) {
        const r = inCell(from, e.value);
        if (r !== null) out.hooks.push(r);
      }
    } else if ((section === "include" || section === "includeif") && key === "path") {
      const r = inCell(parentOf(configRel), e.value);
      if (r !== null) out.configs.push(r);
    }
  }
  return out;
}

// ---------------------------------------------------------------- snapshot

/** The first component of `rel`, short of its last, that is a symlink now, if any. */
function firstSymlink(root: string, rel: string): string | null {
  const parts = rel.split("/");
  for (let k = 1; k < parts.length; k++) {
    const r = parts.slice(0, k).join("/");
    const st = lstatIn(root, r);
    if (!st) return null;
    if (st.isSymbolicLink()) return r;
    if (!st.isDirectory()) return null;
  }
  return null;
}

function realRoot(cellDir: string): string {
  return realpathSync(Buffer.from(cellDir), { encoding: "latin1" }) as unknown as string;
}

function describe(root: string, rel: string, kind: FindingKind): WatchedEntry | null {
  const st = lstatIn(root, rel);
  if (!st || !(st.isFile() || st.isSymbolicLink())) return null;
  const e: WatchedEntry = {
    kind,
    type: st.isFile() ? "file" : "symlink",
    size: st.size,
    mtimeMs: st.mtimeMs,
    ctimeMs: st.ctimeMs,
    ino: st.ino,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    nlink: st.nlink,
  };
  if (e.type === "file" && st.size > KEEP_BYTES) return e;
  const r = readEntry(root, rel, KEEP_BYTES);
  if (r.ok && "data" in r && e.type === "file") e.data = r.data.toString("base64");
  if (r.ok && "link" in r && e.type === "symlink") e.link = r.link;
  return e;
}

const EMPTY = { hooks: [] as string[], configs: [] as string[] };

/** Scan a cell dir (no symlink is ever followed). `extra` extends WORKSPACE_CONFIG (config). */
export function snapshot(
  cellDir: string,
  extra: readonly string[] = [],
  global?: GlobalGit,
  budget: WalkBudget = walkBudget(),
): WorkspaceSnapshot {
  return drain(snapshotSteps(cellDir, extra, global, budget));
}

/**
 * `snapshot`, letting the event loop in between slices of `budget.sliceMs`: planterd answers other
 * requests while a large tree is walked. Rejects with TreeTooLarge past `budget.max` entries.
 */
export function snapshotAsync(
  cellDir: string,
  extra: readonly string[],
  global: GlobalGit | undefined,
  budget: WalkBudget,
  signal?: AbortSignal,
): Promise<WorkspaceSnapshot> {
  return drive(snapshotSteps(cellDir, extra, global, budget), budget, signal);
}

function* snapshotSteps(
  cellDir: string,
  extra: readonly string[],
  global: GlobalGit | undefined,
  budget: WalkBudget,
): Steps<WorkspaceSnapshot> {
  const root = realRoot(cellDir);
  const { all, names } = configNames([...WORKSPACE_CONFIG, ...extra]);
  // A tree only partly seen cannot be protected: what lies past the budget stays unknown.
  const whole = function* (d: Derived): Steps<Scan> {
    const scanned = yield* scan(root, names, d, budget);
    if (scanned.truncated) throw new TreeTooLarge(root, budget.max);
    return scanned;
  };
  let derived: Derived = EMPTY;
  let s = yield* whole(derived);
  if (global) {
    // The user's global config applies in every repository the walk found.
    const g = mergeDerived(derived, globalDerived(root, s.gitDirs, global));
    if (g.grew) {
      derived = g.merged;
      s = yield* whole(derived);
    }
  }
  let entries: Record<string, WatchedEntry>;
  // Configs may point at hook dirs and further configs in the cell; follow until nothing new.
  for (let round = 1; ; round++) {
    entries = yield* describeWatched(s, budget);
    const next = reachedFrom(s, entries, derived);
    const programs = derived.programs ?? [];
    if (round === 8 || (next.hooks.size === derived.hooks.length && next.configs.size === derived.configs.length))
      break;
    derived = { hooks: [...next.hooks].sort(), configs: [...next.configs].sort(), programs };
    s = yield* whole(derived);
  }
  return {
    version: 1,
    cellDir: root,
    config: all,
    gitDirs: [...s.gitDirs].sort(),
    derived,
    ...(global ? { global } : {}),
    unlistable: s.unlistable.sort(),
    protect: [...s.protect].sort(),
    entries,
  };
}

/** Each watched entry of a scan as it is now (its type, size, times, and a config's or link's content). */
function* describeWatched(s: Scan, budget: WalkBudget): Steps<Record<string, WatchedEntry>> {
  const entries: Record<string, WatchedEntry> = {};
  for (const [rel, w] of s.watched) {
    const e = describe(s.root, rel, w.kind);
    if (e) entries[rel] = e;
    if (spent(budget)) yield;
  }
  return entries;
}

/** The hook dirs and configs in the cell that `derived` and the cell's own git configs (`entries`) point at. */
function reachedFrom(
  s: Scan,
  entries: Record<string, WatchedEntry>,
  derived: Derived,
): { hooks: Set<string>; configs: Set<string> } {
  const next = { hooks: new Set(derived.hooks), configs: new Set(derived.configs) };
  for (const [rel, e] of Object.entries(entries)) {
    if (e.kind !== "git-config" || e.data === undefined) continue;
    const gitDir = s.gitDirs.has(parentOf(rel)) ? parentOf(rel) : "";
    const d = derive(s.root, gitDir, rel, Buffer.from(e.data, "base64").toString("latin1"));
    // One already reached through a symlink is the user's own layout, not something to watch.
    for (const h of d.hooks) if (firstSymlink(s.root, h) === null) next.hooks.add(h);
    for (const c of d.configs) if (firstSymlink(s.root, c) === null) next.configs.add(c);
  }
  return next;
}

/** Existing paths the sandbox should bind read-only: .git/{hooks,config,commondir,info,config.worktree} at any depth (and a bare repo's same parts), `.git` gitlink files, existing listed tool config files/dirs. Absolute. */
export function readOnlyPaths(snap: WorkspaceSnapshot): string[] {
  const out: string[] = [];
  const all = new Set(snap.protect);
  for (const rel of [...all].sort()) {
    // One bind of a directory covers what lies inside it.
    let up = parentOf(rel);
    while (up && !all.has(up)) up = parentOf(up);
    if (up) continue;
    const abs = absOf(snap.cellDir, rel);
    // A name that is not UTF-8 cannot be passed in an argv string; review still covers it.
    if (shown(abs).includes("\uFFFD")) continue;
    out.push(shown(abs));
  }
  return out;
}

// ---------------------------------------------------------------- review

interface Plan {
  rel: string;
  kind: FindingKind;
  detail: string;
  /** For a config the job created: what to write back instead. */
  sanitized?: string;
}

/** Where a gitlink or commondir points, if that is a git dir the walk itself found in the cell. */
function redirectTarget(s: Scan, fromDir: string, target: string): string | null {
  const pre = s.root === "/" ? "" : s.root;
  let cur: string[];
  let rest: string[];
  if (target.startsWith("/")) {
    if (target !== s.root && !target.startsWith(`${pre}/`)) return null;
    cur = [];
    rest = target.slice(pre.length + 1).split("/");
  } else {
    cur = fromDir ? fromDir.split("/") : [];
    rest = target.split("/");
  }
  for (const x of rest) {
    if (x === "" || x === ".") continue;
    if (x === "..") {
      // ".." of a real directory is its real parent; every step down is checked below.
      if (cur.length === 0) return null;
      cur.pop();
      continue;
    }
    cur.push(x);
    if (!s.dirs.has(cur.join("/"))) return null;
  }
  const r = cur.join("/");
  return s.gitDirs.has(r) ? r : null;
}

/** The path a gitlink (`gitdir: …`) or commondir file names, as git trims it. */
function redirectPath(rel: string, data: Buffer): string | null {
  let text = data.toString("latin1");
  if (fold(baseOf(rel)) === ".git") {
    if (!text.startsWith("gitdir: ")) return null;
    text = text.slice(8);
  }
  return text.replace(/[\r\n]+$/, "") || null;
}

const sameStat = (a: WatchedEntry, st: { size: number; mtimeMs: number; ctimeMs: number; ino: number }) =>
  a.size === st.size && a.mtimeMs === st.mtimeMs && a.ctimeMs === st.ctimeMs && a.ino === st.ino;

/**
 * Decide whether one watched entry is something the job added or changed that the host would
 * run. Unchanged inode, size, mtime and ctime mean unchanged (no process can set ctime back);
 * otherwise small files are compared by content, configs by their dangerous entries.
 */
function judge(s: Scan, rel: string, kind: FindingKind, before: WatchedEntry | undefined): Plan | null {
  const st = lstatIn(s.root, rel);
  if (!st) return null;
  // A hard link the job made to it (`ln .git/config keep`) is a name no bind covers: through it a
  // later job writes the file its read-only bind shows. Set aside, and a fresh copy written back.
  if (st.isFile() && st.nlink > 1 && st.nlink > (before?.nlink ?? 1)) return linkedPlan(s, rel, kind, before, st.nlink);
  if (before && before.type === (st.isFile() ? "file" : st.isSymbolicLink() ? "symlink" : "") && sameStat(before, st))
    return null;
  const read = readEntry(s.root, rel, kind === "git-config" ? CONFIG_BYTES : KEEP_BYTES);
  const what = before ? "changed" : "new";
  if (!read.ok) return unread(rel, kind, read.why, what);
  if ("link" in read) {
    if (before?.type === "symlink" && before.link === read.link) return null;
    return { rel, kind, detail: `${what}: a symlink to ${shown(read.link)}` };
  }
  const data = read.data;
  if (before?.type === "file" && before.data !== undefined && Buffer.from(before.data, "base64").equals(data))
    return null;
  if (kind === "git-config") return configChange(rel, kind, data, before);
  if (kind === "git-redirect" && baseOf(rel) !== "alternates") return redirectChange(s, rel, kind, data, what);
  if (kind === "git-redirect") return { rel, kind, detail: `${what} alternates` };
  if (kind === "git-hook") return { rel, kind, detail: `${what} hook` };
  return { rel, kind, detail: what };
}

function linkedPlan(s: Scan, rel: string, kind: FindingKind, before: WatchedEntry | undefined, nlink: number): Plan {
  const detail = `${before ? "changed" : "new"}: ${nlink - 1} other hard link${nlink > 2 ? "s" : ""}, a name through which it could be written`;
  if (before || kind !== "git-config") return { rel, kind, detail };
  // A config the job made keeps its safe part, in a file of its own.
  const read = readEntry(s.root, rel, CONFIG_BYTES);
  const sanitized = read.ok && "data" in read ? harmlessGitConfig(read.data.toString("latin1")) : undefined;
  return { rel, kind, detail, ...(sanitized !== undefined ? { sanitized } : {}) };
}

/** A watched entry that could not be read: gone (nothing to judge), or a finding for why. */
function unread(
  rel: string,
  kind: FindingKind,
  why: "moved" | "gone" | "not-file" | "large",
  what: string,
): Plan | null {
  if (why === "gone") return null;
  if (why === "moved") return { rel, kind, detail: "changed while checked" };
  if (why === "not-file") return { rel, kind, detail: `${what}: not a regular file` };
  // Too large to keep: judged on its stat alone (already known to differ).
  return { rel, kind, detail: `${what} (too large to compare)` };
}

/** A git config new or changed: a finding when it sets a dangerous key it did not (a new one is written back harmless). */
function configChange(rel: string, kind: FindingKind, data: Buffer, before: WatchedEntry | undefined): Plan | null {
  const after = parseGitConfig(data.toString("latin1"));
  const was =
    before?.type === "file" && before.data !== undefined
      ? parseGitConfig(Buffer.from(before.data, "base64").toString("latin1"))
      : null;
  if (before && was === null) {
    // The earlier config was too large to keep: any dangerous key counts.
    const added = addedDanger(null, after);
    return added.length ? { rel, kind, detail: `sets ${added.join(", ")}` } : null;
  }
  const added = addedDanger(was, after);
  if (!added.length) return null;
  return {
    rel,
    kind,
    detail: `${before ? "sets" : "new config sets"} ${added.join(", ")}`,
    sanitized: before ? undefined : harmlessGitConfig(data.toString("latin1")),
  };
}

/** A gitlink or commondir file new or changed: a finding unless it names a repository found in the cell. */
function redirectChange(s: Scan, rel: string, kind: FindingKind, data: Buffer, what: string): Plan | null {
  // Relative to the gitlink's directory, or to the git dir holding commondir: the same parent.
  const target = redirectPath(rel, data);
  if (target !== null && redirectTarget(s, parentOf(rel), target) !== null) return null;
  const label = fold(baseOf(rel)) === ".git" ? "gitlink" : "commondir";
  return {
    rel,
    kind,
    detail: `${what} ${label} to ${target === null ? "(unreadable)" : shown(target)}, not a repository found in the cell`,
  };
}

/** A free sibling name for the set-aside copy (a name the job planted first is not replaced). */
/** Longest file name (bytes; names here are latin1 strings, one char per byte). */
const NAME_MAX = 255;

function asideName(dfd: number, name: string, jobId: string): string {
  // A name with no room for the suffix keeps its head: the set-aside must never fail on length.
  const suffix = `${QUARANTINE}${jobId}`;
  const room = NAME_MAX - suffix.length - 4;
  const base = `${name.length > room ? name.slice(0, room) : name}${suffix}`;
  for (let n = 1; ; n++) {
    const candidate = n === 1 ? base : `${base}.${n}`;
    try {
      lstatSync(at(dfd, candidate));
    } catch {
      return candidate;
    }
  }
}

/**
 * Write the earlier (or sanitised) version back under `name`, never through an existing entry.
 * Owned as before, or as the set-aside entry was: a daemon running as root must not leave the user
 * a config they cannot edit.
 */
function writeBack(
  dfd: number,
  name: string,
  before: WatchedEntry | undefined,
  sanitized: string | undefined,
  owner: { uid: number; gid: number },
): boolean {
  const target = at(dfd, name);
  const root = process.getuid?.() === 0;
  if (before?.type === "symlink" && before.link !== undefined) {
    symlinkSync(bytes(before.link), target);
    if (root) lchownSync(target, before.uid, before.gid);
    return true;
  }
  let data: Buffer;
  let mode = 0o644;
  if (before?.type === "file" && before.data !== undefined) {
    data = Buffer.from(before.data, "base64");
    mode = before.mode & 0o777;
  } else if (!before && sanitized !== undefined) {
    data = Buffer.from(sanitized, "latin1");
  } else {
    return false;
  }
  // O_CREAT|O_EXCL fails on any existing entry, a symlink included, so nothing is written through one.
  const fd = openSync(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fchmodSync(fd, mode);
    if (root) fchownSync(fd, before?.uid ?? owner.uid, before?.gid ?? owner.gid);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** Set one entry of a cell (`rel`, relative) aside as `<name>.planter-quarantine-<jobId>`, never through a symlink. */
export function setAside(cellDir: string, rel: string, jobId: string): { saved_as: string; problem?: string } {
  checkJobId(jobId);
  const r = setAsideIn(realRoot(cellDir), toLatin1(rel), jobId, {});
  return r.problem ? { saved_as: r.saved_as, problem: r.problem } : { saved_as: r.saved_as };
}

function checkJobId(jobId: string): void {
  if (!/^[A-Za-z0-9._-]+$/.test(jobId)) throw new Error(`invalid job id for a file name: ${JSON.stringify(jobId)}`);
}

function setAsideIn(
  root: string,
  rel: string,
  jobId: string,
  restore: { before?: WatchedEntry; sanitized?: string },
): { saved_as: string; restored: boolean; problem?: string } {
  // The directory is opened without following symlinks and checked to be the expected one; the
  // rename and the write-back go through that descriptor, so whatever the job swaps meanwhile,
  // nothing outside the cell is renamed or written.
  const dfd = openDir(root, parentOf(rel));
  if (dfd === null) return { saved_as: "", restored: false, problem: "changed while checked" };
  // A job may leave the directory without write or search permission (`chmod 555 .claude`, even
  // the cell dir): root passes anyway, but planterd as the job's own user would fail to rename and
  // leave the file where the host's tools read it. The directory is its own, so planterd opens it
  // up for the rename and the write-back and gives it its mode back after.
  const mode = fstatSync(dfd);
  const uid = process.geteuid?.() ?? 0;
  const opened = uid !== 0 && mode.uid === uid && ((mode.mode >> 6) & 3) !== 3;
  try {
    if (opened) fchmodSync(dfd, (mode.mode & 0o7777) | 0o300);
    const name = baseOf(rel);
    const aside = asideName(dfd, name, jobId);
    try {
      renameSync(at(dfd, name), at(dfd, aside));
    } catch (e) {
      return { saved_as: "", restored: false, problem: `could not be set aside: ${(e as Error).message}` };
    }
    const saved_as = shown(absOf(root, relJoin(parentOf(rel), aside)));
    try {
      const owner = lstatSync(at(dfd, aside));
      return { saved_as, restored: writeBack(dfd, name, restore.before, restore.sanitized, owner) };
    } catch (e) {
      return { saved_as, restored: false, problem: `not restored: ${(e as NodeJS.ErrnoException).code ?? e}` };
    }
  } finally {
    if (opened) {
      try {
        fchmodSync(dfd, mode.mode & 0o7777);
      } catch {
        // the directory stays writable by its owner: nothing the host runs
      }
    }
    closeSync(dfd);
  }
}

/** What a restore wrote back, as a snapshot entry: the earlier version, or the sanitised copy (judged by its contents). */
function leftBehind(before: WatchedEntry | undefined, p: Plan): WatchedEntry | null {
  if (before) return before;
  if (p.sanitized === undefined) return null;
  const data = Buffer.from(p.sanitized, "latin1");
  return {
    kind: p.kind,
    type: "file",
    size: data.length,
    mtimeMs: 0,
    ctimeMs: 0,
    ino: 0,
    mode: 0o644,
    uid: 0,
    gid: 0,
    ...(data.length <= KEEP_BYTES ? { data: data.toString("base64") } : {}),
  };
}

/** Findings of one tree recorded one by one (job status, events); the rest are counted. */
export const MAX_RECORDED_FINDINGS = 100;

/**
 * The findings of one tree's review as planterd records them: every entry is set aside, but a job
 * that plants thousands (a `.envrc` in each of 100k dirs) must not make its own record, its events
 * and every `job ls` answer that size. Past MAX_RECORDED_FINDINGS the rest become one
 * "more-set-aside" finding with their count; a "review-incomplete" one is always kept.
 */
export function recordedFindings(found: Finding[], root: string, max = MAX_RECORDED_FINDINGS): Finding[] {
  const incomplete = found.filter((f) => f.kind === "review-incomplete");
  const each = found.filter((f) => f.kind !== "review-incomplete");
  if (each.length <= max) return found;
  const more = each.length - (max - 1);
  const restored = each.slice(max - 1).filter((f) => f.restored).length;
  return [
    ...each.slice(0, max - 1),
    {
      path: root,
      kind: "more-set-aside",
      detail: `${more} more entries the job added or changed were set aside (each beside itself as NAME${QUARANTINE}JOB); ${restored} had an earlier version restored`,
      saved_as: "",
      restored: false,
    },
    ...incomplete,
  ];
}

/** After a job: find what it added/changed (compared to `before`), set each aside (never delete), restore the earlier version where there was one. */
export function review(
  cellDir: string,
  before: WorkspaceSnapshot,
  opts: { jobId: string; extra?: readonly string[]; budget?: WalkBudget; settled?: Settled },
): Finding[] {
  return drain(reviewSteps(cellDir, before, opts, opts.budget ?? walkBudget()));
}

/**
 * `review`, letting the event loop in between slices of `budget.sliceMs`. Past `budget.max` entries
 * the review acts on what it saw and ends with a `review-incomplete` finding for the tree.
 */
export function reviewAsync(
  cellDir: string,
  before: WorkspaceSnapshot,
  opts: { jobId: string; extra?: readonly string[]; budget: WalkBudget; signal?: AbortSignal; settled?: Settled },
): Promise<Finding[]> {
  return drive(reviewSteps(cellDir, before, opts, opts.budget), opts.budget, opts.signal);
}

/**
 * Told, for each entry the review acted on, what it left at that path (relative, latin1): the
 * earlier version or the sanitised copy it wrote back, or null (nothing, or the job's entry where
 * it could not be set aside). Snapshots of other jobs still running in the tree take it over
 * (`passOn`): theirs were taken before this review, and would vouch for the job's entry.
 */
export type Settled = (rel: string, left: WatchedEntry | null) => void;

/** A name the review gave an entry it set aside (inert to git, editors and direnv by its suffix). */
const isAside = (rel: string) => /\.planter-quarantine-[A-Za-z0-9._-]+$/.test(baseOf(rel));

/**
 * Another job's snapshot of the same tree (`into`), taken before this review, with what this
 * review settled: the entry it left, or none. Its own review then judges against that, not
 * against the state it saw at its start, which held this job's entries.
 */
export function passOn(into: WorkspaceSnapshot, settled: [rel: string, left: WatchedEntry | null][]): void {
  for (const [rel, left] of settled) {
    if (left) into.entries[rel] = left;
    else delete into.entries[rel];
  }
}

/**
 * What the job left to set aside: watched entries it added or changed, symlinks out of the reviewed
 * tree, symlinks on the way to what the earlier configs name, and directories it made unlistable.
 */
function* planReview(s: Scan, before: WorkspaceSnapshot, unreviewed: string[], budget: WalkBudget): Steps<Plan[]> {
  const plans: Plan[] = [];
  for (const [rel, w] of s.watched) {
    if (isAside(rel)) continue;
    const p = judge(s, rel, w.kind, before.entries[rel]);
    if (p) plans.push(p);
    if (spent(budget)) yield;
  }
  // Symlinks out of the reviewed tree into one no review walks, wherever they are and whoever made them.
  for (const rel of s.links ?? []) {
    if (spent(budget)) yield;
    if (isAside(rel) || plans.some((p) => p.rel === rel)) continue;
    const into = leadsInto(s, rel, unreviewed);
    if (into !== null)
      plans.push({ rel, kind: "git-redirect", detail: `a symlink into ${shown(into)}, which no review walks` });
  }
  planSymlinked(s, before, plans);
  // A directory the job made unlistable could hide anything; it is set aside unreviewed.
  const wasUnlistable = new Set(before.unlistable);
  for (const rel of s.unlistable) {
    if (rel && !wasUnlistable.has(rel))
      plans.push({ rel, kind: "tool-config", detail: "a directory that cannot be listed, so not reviewed" });
  }
  return plans;
}

/** A hook dir or included config of the earlier configs now reached through a symlink: that symlink is planned. */
function planSymlinked(s: Scan, before: WorkspaceSnapshot, plans: Plan[]): void {
  for (const rel of [...before.derived.hooks, ...before.derived.configs, ...(before.derived.programs ?? [])]) {
    if (s.dirs.has(parentOf(rel))) continue;
    const link = firstSymlink(s.root, rel);
    if (link === null || s.watched.has(link) || plans.some((p) => p.rel === link)) continue;
    const kind = before.derived.configs.includes(rel) ? "git-config" : "git-hook";
    plans.push({ rel: link, kind, detail: `symlink on the way to ${shown(rel)}, which the repository's config names` });
  }
}

/**
 * Act on one planned finding: set the entry aside (restoring `was`, the earlier version, where
 * kept), tell `settled` what the job's entry is now, and say what was done.
 */
function act(root: string, p: Plan, was: WatchedEntry | undefined, jobId: string, settled?: Settled): Finding {
  const path = shown(absOf(root, p.rel));
  if (p.detail === "changed while checked") {
    settled?.(p.rel, null);
    return { path, kind: p.kind, detail: p.detail, saved_as: "", restored: false };
  }
  const r = setAsideIn(root, p.rel, jobId, { before: was, sanitized: p.sanitized });
  settled?.(p.rel, r.restored ? leftBehind(was, p) : null);
  const notes = [p.detail];
  if (r.problem) notes.push(r.problem);
  else if (r.restored && !was) notes.push("a copy without those keys written back");
  else if (!r.restored && was) notes.push("the earlier version was not kept (over 64 KiB)");
  return { path, kind: p.kind, detail: notes.join("; "), saved_as: r.saved_as, restored: r.restored };
}

function* reviewSteps(
  cellDir: string,
  before: WorkspaceSnapshot,
  opts: { jobId: string; extra?: readonly string[]; settled?: Settled },
  budget: WalkBudget,
): Steps<Finding[]> {
  checkJobId(opts.jobId);
  if (before.version !== 1) throw new Error(`workspace snapshot version ${before.version} is not 1`);
  const root = realRoot(cellDir);
  // The tree must still be where the snapshot found it: a job that swapped an ancestor for a
  // symlink would otherwise have planterd (root) rename and write files in another user's tree.
  if (root !== before.cellDir) {
    throw new Error(`${cellDir} now resolves to ${root}, not ${before.cellDir} as before the job: nothing reviewed`);
  }
  const { names } = configNames([...before.config, ...(opts.extra ?? [])]);
  const unreviewed = before.unreviewed ?? [];
  let s = yield* scan(root, names, before.derived, budget, unreviewed.length > 0);
  // Repositories the job made get the user's global hook dirs and programs watched too.
  const g = mergeDerived(before.derived, globalDerived(root, s.gitDirs, before.global));
  if (g.grew) s = yield* scan(root, names, g.merged, budget, unreviewed.length > 0);
  const plans = yield* planReview(s, before, unreviewed, budget);
  const findings: Finding[] = [];
  for (const p of plans.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0))) {
    findings.push(act(root, p, before.entries[p.rel], opts.jobId, opts.settled));
    // A step is an entry set aside; one only noted (changed while checked) is none.
    if (p.detail !== "changed while checked" && spent(budget)) yield;
  }
  // Said, never skipped in silence: past the budget the tree was not seen, so nothing there is known safe.
  if (s.truncated) {
    findings.push({
      path: shown(root),
      kind: "review-incomplete",
      detail:
        `the job left more than ${budget.max} entries here, and the review stopped there: what lies past them was not ` +
        "reviewed (hooks or tool config the host would run may be among them); look before running git, an editor or an agent in this tree",
      saved_as: "",
      restored: false,
    });
  }
  return findings;
}
