/**
 * The step engine of host changes (install, uninstall, install --lima, migrate lima). A change is a
 * Step `{id, describe, needed, apply}`; a plan is a list of steps, and `Transaction.run(plan)` either
 * lists it (dry run: nothing is asked of the host, nothing written) or runs it in order — so what
 * `--dry-run` prints and what runs are the same list. The transaction owns the staging root (every
 * path goes through `R()`), the record (install-state.json, saved before each change is made and
 * after it: write-ahead, so a run killed anywhere leaves a record that uninstall or a second run
 * completes), files with their sha256 and the backups of what they replaced, and progress.
 *
 * Undo is not a field of a step: uninstall takes back what the record says, whatever options or
 * version of planter made it, so each kind of record entry (file, directory, group, unit, VM) is
 * undone by a step built from that entry (uninstall.ts; files: `undoFile` below).
 */
import {
  chmodSync,
  chownSync,
  constants,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import type { FileRecord, InstallState } from "./install-state.ts";
import { sha256File, sha256Text } from "./install-state.ts";
import { lexists } from "./lima.ts";

/** One change of the host. */
export interface Step {
  /** Stable name of the change (the plan's, --json's and the tests'). */
  id: string;
  /** What apply changes, for people: the same line in the dry run's plan and in the run's report. */
  describe: string;
  /**
   * Asked right before apply, never in a dry run: false when the host already is as apply would
   * make it (the step is then reported `skipped`). It may note in the record what it found (a group
   * that existed before install). Absent: always needed.
   */
  needed?: () => boolean | Promise<boolean>;
  /** Make the change, recording it through the transaction before the host is touched. */
  apply: () => void | Promise<void>;
}

/** A step as a plan or a report lists it. */
export interface StepReport {
  id: string;
  description: string;
  /** What the run did (absent in a dry run). */
  outcome?: "applied" | "skipped";
}

/** A point the engine passes (for tests that stop a run there): before a step, after its record is written, after it. */
export interface StepEvent {
  step: string;
  at: "begin" | "recorded" | "end";
}

export interface TransactionOptions {
  /** Staging root ("/" for the running host). */
  root: string;
  dryRun: boolean;
  progress?: (line: string) => void;
  /** Called at every StepEvent. */
  observe?: (e: StepEvent) => void;
}

/** What is at a path: absent, the sha256 of its bytes (a symlink: of its target string), or something else (a directory…). */
export type Content = { kind: "absent" | "other" } | { kind: "file" | "link"; sha256: string };

/** What a step writes at a path. */
export type FileContent = { text: string; mode: number } | { copy: string; mode: number } | { link: string };

export class Transaction {
  readonly root: string;
  readonly staged: boolean;
  readonly dryRun: boolean;
  readonly progress: (line: string) => void;
  private readonly observe: (e: StepEvent) => void;
  /** The record, when this transaction keeps one (install, uninstall, install --lima). */
  private rec: InstallState | null = null;
  private recordFile: string | null = null;
  private current: string | null = null;
  private readonly shaMemo = new Map<string, { stamp: string; sha256: string }>();

  constructor(o: TransactionOptions) {
    this.root = o.root;
    this.staged = o.root !== "/";
    this.dryRun = o.dryRun;
    this.progress = o.progress ?? (() => undefined);
    this.observe = o.observe ?? (() => undefined);
  }

  /** A target path below the staging root. */
  R(p: string): string {
    return this.root === "/" ? p : join(this.root, p);
  }

  /** Keep `state` in install-state.json at `file` (a target path) from now on; the file is not written yet. */
  keep(state: InstallState, file: string): void {
    this.rec = state;
    this.recordFile = file;
  }

  /** Whether a record is kept. */
  get kept(): boolean {
    return this.rec !== null;
  }

  /** Stop keeping the record (it was deleted, or its directory purged): nothing is saved from now on. */
  drop(): void {
    this.rec = null;
    this.recordFile = null;
  }

  /** The record (keep() first). */
  get state(): InstallState {
    if (!this.rec) throw new Error("transaction: no record kept");
    return this.rec;
  }

  /** Write the record whole (a temp file renamed over it, mode 0600). */
  save(): void {
    if (!this.rec || !this.recordFile || this.dryRun) return;
    const path = this.R(this.recordFile);
    writeFileSync(`${path}.tmp`, `${JSON.stringify(this.rec, null, 2)}\n`, { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  }

  /** Change the record and save it: before the host is changed (what is about to be done), and after. */
  record(change: (s: InstallState) => void): void {
    change(this.state);
    this.save();
    if (this.current) this.observe({ step: this.current, at: "recorded" });
  }

  /** The plan as a dry run lists it. */
  plan(steps: Step[]): StepReport[] {
    return steps.map((s) => ({ id: s.id, description: s.describe }));
  }

  /**
   * Run the steps in order (a dry run lists them and runs nothing). While a step runs, the record
   * names it (`pending`), so the next run knows which change may be half made.
   */
  async run(steps: Step[]): Promise<StepReport[]> {
    if (this.dryRun) return this.plan(steps);
    const out: StepReport[] = [];
    for (const s of steps) {
      if (s.needed && !(await s.needed())) {
        out.push({ id: s.id, description: s.describe, outcome: "skipped" });
        continue;
      }
      this.current = s.id;
      if (this.rec) this.rec.pending = s.id;
      this.save();
      this.observe({ step: s.id, at: "begin" });
      await s.apply();
      if (this.rec) this.rec.pending = null;
      this.save();
      this.current = null;
      this.observe({ step: s.id, at: "end" });
      out.push({ id: s.id, description: s.describe, outcome: "applied" });
    }
    return out;
  }

  /** Create `dir` and its missing parents (`mode`), each recorded in dirs_created before it is made. */
  mkdirs(dir: string, mode = 0o755, save = true): void {
    const missing: string[] = [];
    for (let d = dir; d !== "/" && !existsSync(this.R(d)); d = dirname(d)) missing.unshift(d);
    if (!missing.length) return;
    const note = (s: InstallState) => s.dirs_created.push(...missing.filter((d) => !s.dirs_created.includes(d)));
    if (this.rec && save) this.record(note);
    else if (this.rec) note(this.rec);
    for (const d of missing) mkdirSync(this.R(d), { mode });
  }

  /** What is at a target path now (sha256 memoised while the file's inode, size and times stay). */
  content(path: string): Content {
    const p = this.R(path);
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(p);
    } catch {
      return { kind: "absent" };
    }
    if (st.isSymbolicLink()) return { kind: "link", sha256: sha256Text(readlinkSync(p)) };
    if (!st.isFile()) return { kind: "other" };
    const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    const known = this.shaMemo.get(p);
    if (known?.stamp === stamp) return { kind: "file", sha256: known.sha256 };
    const sha256 = sha256File(p);
    this.shaMemo.set(p, { stamp, sha256 });
    return { kind: "file", sha256 };
  }

  /**
   * Write a file (or a link) at a target path, recording it first: its sha256, and, the first time,
   * whether something was there and a backup of it (with the backup's sha256) in `backupDir`. The
   * new content is written beside the path and renamed over it (atomic for running processes).
   */
  putFile(path: string, kind: FileRecord["kind"], content: FileContent, backupDir: string): void {
    const sha256 =
      "text" in content
        ? sha256Text(content.text)
        : "copy" in content
          ? sha256File(content.copy)
          : sha256Text(content.link);
    const known = this.state.files.find((f) => f.path === path);
    // What is there now matters on first contact (to save it) and while a recorded backup is still to be made.
    const backupToMake = known?.backup !== undefined && !lexists(this.R(known.backup));
    const now: Content = !known || backupToMake ? this.content(path) : { kind: "absent" };
    if (now.kind === "other")
      throw new PlanterError("E_CONFLICT", `${this.R(path)} is not a file, and install writes a file there`, {
        hint: "move it away, then run install again",
      });
    const original = !known && "sha256" in now ? now.sha256 : null;
    const rec: FileRecord = {
      path,
      kind,
      sha256,
      existed_before: known?.existed_before ?? original !== null,
      ...(known?.backup ? { backup: known.backup } : {}),
      ...(known?.backup_sha256 ? { backup_sha256: known.backup_sha256 } : {}),
      ...(original ? { backup: join(backupDir, path.replaceAll("/", "%")), backup_sha256: original } : {}),
      ...("link" in content ? { target: content.link } : {}),
    };
    if (rec.backup) this.mkdirs(backupDir, 0o700);
    this.record((s) => {
      s.files = [...s.files.filter((f) => f.path !== path), rec];
    });
    // The original is saved while it is still in place: on first contact (over whatever stray file has
    // the backup's name), or again if an earlier run stopped before it was.
    const save = original !== null || (backupToMake && "sha256" in now && now.sha256 === rec.backup_sha256);
    if (rec.backup && save) copyEntry(this.R(path), this.R(rec.backup));
    writeEntry(this.R(path), content);
  }
}

const NEW = ".planter-new";

/**
 * Write `content` beside `p` and rename it over `p`. The temp file is created exclusively (a link
 * planted at its name is not followed), after a leftover of a stopped run is removed.
 */
function writeEntry(p: string, content: FileContent): void {
  const tmp = `${p}${NEW}`;
  rmSync(tmp, { force: true });
  if ("link" in content) symlinkSync(content.link, tmp);
  else {
    if ("text" in content) writeFileSync(tmp, content.text, { mode: content.mode, flag: "wx" });
    else copyFileSync(content.copy, tmp, constants.COPYFILE_EXCL);
    chmodSync(tmp, content.mode);
  }
  renameSync(tmp, p);
}

/** Copy a file or a link (owner, as root, and mode kept) to `to`, through a temp file renamed into place. */
function copyEntry(from: string, to: string): void {
  const tmp = `${to}${NEW}`;
  rmSync(tmp, { force: true });
  const st = lstatSync(from);
  if (st.isSymbolicLink()) symlinkSync(readlinkSync(from), tmp);
  else {
    copyFileSync(from, tmp, constants.COPYFILE_EXCL);
    // chown first: it clears set-id bits that chmod then puts back.
    if (process.getuid?.() === 0) chownSync(tmp, st.uid, st.gid);
    chmodSync(tmp, st.mode & 0o7777);
  }
  renameSync(tmp, to);
}

/** Move `from` to `to` (a copy and a removal across filesystems). */
function moveEntry(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EXDEV") throw e;
    copyEntry(from, to);
    rmSync(from, { force: true });
  }
}

/** What uninstall finds for one recorded file, and so what it does. */
export interface FileVerdict {
  /**
   * The path holds what install wrote (remove it), the original it replaced, nothing, something
   * else (the user's change), or — once uninstall removed planter's file and kept the entry for its
   * backup — whatever someone put there since (not planter's, never touched).
   */
  path: "ours" | "original" | "absent" | "changed" | "theirs";
  /** The saved original: none, intact (its sha256 as saved), altered since, or missing. */
  backup: "none" | "intact" | "altered" | "missing";
}

/** Look at a recorded file and its backup (read-only). A record without backup_sha256 (older planter) trusts its backup. */
export function fileVerdict(tx: Transaction, f: FileRecord): FileVerdict {
  const now = tx.content(f.path);
  const matches = (sha: string | undefined) => "sha256" in now && sha !== undefined && now.sha256 === sha;
  const ours = f.kind === "link" ? now.kind === "link" && now.sha256 === f.sha256 : matches(f.sha256);
  const path = matches(f.backup_sha256)
    ? "original"
    : now.kind === "absent"
      ? "absent"
      : f.removed
        ? "theirs"
        : ours
          ? "ours"
          : "changed";
  if (!f.backup) return { path, backup: "none" };
  const b = tx.content(f.backup);
  if (b.kind === "absent") return { path, backup: "missing" };
  const same = "sha256" in b ? !f.backup_sha256 || b.sha256 === f.backup_sha256 : false;
  return { path, backup: same ? "intact" : "altered" };
}

/** What undoing a recorded file did (or, in a dry run, would do). */
export interface FileUndo {
  /** What install wrote (or, forced, what the user changed it to) was removed. */
  removed: boolean;
  /** The original is at its path again (put back now, or found there). */
  restored: boolean;
  /** Why the file (or its saved original) stays, and so stays on record. */
  kept: string | null;
}

/** Why uninstall keeps a file the user changed. */
export const KEPT_CHANGED = "changed since install (use --force to remove it)";
/** Why uninstall keeps what is there now even with --force. */
export const KEPT_NOT_FILE = "it is not a file any more (a directory?): uninstall never removes that";

/** What undoFile does with a verdict (pure). */
export function fileUndoPlan(v: FileVerdict, force: boolean): FileUndo {
  if (v.path === "changed" && !force) return { removed: false, restored: false, kept: KEPT_CHANGED };
  if (v.path === "original") return { removed: false, restored: true, kept: null };
  const removed = v.path === "ours" || v.path === "changed";
  if (v.backup === "altered")
    return { removed, restored: false, kept: "it changed since install saved it, so it is not put back" };
  // Never put back over a file someone put there after planter's was removed.
  if (v.path === "theirs" && v.backup === "intact")
    return { removed, restored: false, kept: "something else is at the path now, so it is not put back over it" };
  return { removed, restored: v.backup === "intact", kept: null };
}

/**
 * Undo one recorded file: remove what install wrote (a file changed since only with `force`), put
 * back the original from its backup when the backup is still what install saved. A backup whose
 * sha256 no longer matches is never put back: it stays where it is, the path is left empty (or as
 * the user has it), and the record keeps both so the caller can say where the backup is.
 */
export function undoFile(tx: Transaction, f: FileRecord, force: boolean): FileUndo {
  const v = fileVerdict(tx, f);
  const plan = fileUndoPlan(v, force);
  if (tx.dryRun || (plan.kept && !plan.removed)) return plan;
  const p = tx.R(f.path);
  // What a run killed while writing left beside the path or the backup.
  rmSync(`${p}${NEW}`, { force: true });
  if (f.backup) rmSync(`${tx.R(f.backup)}${NEW}`, { force: true });
  if (plan.removed && tx.content(f.path).kind === "other")
    return { removed: false, restored: false, kept: KEPT_NOT_FILE };
  if (plan.removed) rmSync(p, { force: true });
  if (!f.backup || v.backup !== "intact") return plan;
  // The original back in place; or, found there already, its copy is not needed any more.
  if (v.path === "original") rmSync(tx.R(f.backup), { force: true });
  else moveEntry(tx.R(f.backup), p);
  return plan;
}

/** Read a text file below the staging root, or null. */
export function readText(tx: Transaction, path: string): string | null {
  try {
    return readFileSync(tx.R(path), "utf8");
  } catch {
    return null;
  }
}
