/**
 * The view guard: a cover (deny path, credential, planter's own, another cell) holds against
 * anything the job does, but the kernel detaches a mount when a process in *another* mount
 * namespace unlinks or renames over the dentry it sits on. A host that replaces a denied path or
 * one of its ancestors while a job runs (an editor's atomic save, `rm -rf` + `mkdir`, `mv`) would
 * show the new one to the job, uncovered. planterd watches the host entries the covers depend on
 * (`guardedEntries` in view.ts: `[dir, name]` pairs) with inotify and stops the job at once when
 * one of them is created, removed or renamed: its view is no longer the one its policy asked for.
 *
 * One watcher per directory, shared by every job that depends on it; a job's entries are kept in
 * its job dir (`guard.json`) so that a restarted planterd watches adopted jobs again. Limits, said
 * in docs/sandbox.md and plans/design.md: the job is stopped after the change, not before it (inotify tells
 * afterwards: a job reading the path in a tight loop may see the new file in that moment); nothing
 * is watched while planterd is down; a denied *file* the host rewrites through a temporary file
 * shows the temporary file to the job (deny the directory instead).
 */
import { existsSync, type FSWatcher, readFileSync, statSync, watch, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

export type Entry = [dir: string, name: string];

interface Watched {
  watcher: FSWatcher;
  /** name → the jobs that depend on it. */
  names: Map<string, Set<string>>;
  /** While no job depends on the directory: the timer that closes its watcher. */
  idle: Timer | null;
  /** The directory watched (device:inode): a lingering watcher is reused only for that one. */
  id: string;
  /** The directory itself was removed or moved: its watcher is never reused. */
  stale: boolean;
}

/**
 * How long a directory no job depends on stays watched. Jobs of one cell depend on the same
 * directories one after another, and closing an inotify watch waits for the kernel (an SRCU grace
 * period, ~2 ms of planterd's time per job when each job closed what the last one left).
 */
export const GUARD_LINGER_MS = 30_000;

export class ViewGuard {
  private readonly dirs = new Map<string, Watched>();
  private readonly jobs = new Map<string, Entry[]>();

  /** `changed(job, path)` is called once per job, on the first change to what it depends on. */
  constructor(private readonly changed: (job: string, path: string) => void) {}

  /**
   * Watch `entries` for `job` (replacing what it watched before). Throws, watching nothing, when a
   * directory cannot be watched (gone, or the host's inotify limits reached): the job must not run
   * unguarded.
   */
  watch(job: string, entries: Entry[]): void {
    this.unwatch(job);
    if (!entries.length) return;
    this.jobs.set(job, entries);
    for (const [dir, name] of entries) {
      let w = this.dirs.get(dir);
      // A lingering watcher whose directory was replaced meanwhile watches nothing the job hangs on.
      if (w?.idle && (w.stale || w.id !== dirId(dir))) {
        this.drop(dir, w);
        w = undefined;
      }
      if (!w) {
        let watcher: FSWatcher;
        // Read before the watch: a directory replaced in between is reopened at its next reuse.
        const id = dirId(dir);
        try {
          watcher = this.open(dir);
        } catch (e) {
          this.unwatch(job);
          throw new Error(
            `cannot watch ${dir}, which a cover of the job's sandbox hangs on: ${(e as Error).message}` +
              " (the host's inotify limits: fs.inotify.max_user_watches / max_user_instances)",
          );
        }
        w = { watcher, names: new Map(), idle: null, id, stale: false };
        this.dirs.set(dir, w);
      }
      if (w.idle) {
        clearTimeout(w.idle);
        w.idle = null;
      }
      const js = w.names.get(name) ?? new Set<string>();
      w.names.set(name, js);
      js.add(job);
    }
  }

  /** Stop watching for `job`; a directory no job depends on any more is unwatched. */
  unwatch(job: string): void {
    const entries = this.jobs.get(job);
    if (!entries) return;
    this.jobs.delete(job);
    for (const [dir, name] of entries) {
      const w = this.dirs.get(dir);
      const js = w?.names.get(name);
      js?.delete(job);
      if (w && js && js.size === 0) w.names.delete(name);
      if (w?.stale && w.names.size === 0) this.drop(dir, w);
      else if (w && w.names.size === 0 && !w.idle) {
        const idle = w;
        idle.idle = setTimeout(() => {
          if (this.dirs.get(dir) === idle && idle.names.size === 0) this.drop(dir, idle);
        }, GUARD_LINGER_MS);
        idle.idle.unref?.();
      }
    }
  }

  private drop(dir: string, w: Watched): void {
    if (w.idle) clearTimeout(w.idle);
    w.watcher.close();
    if (this.dirs.get(dir) === w) this.dirs.delete(dir);
  }

  private open(dir: string): FSWatcher {
    const w = watch(dir, { persistent: false }, (event, file) => {
      // "change" is a write into an entry (its dentry stays); "rename" is a create, remove or move.
      if (event === "rename") this.event(dir, file === null ? null : String(file));
    });
    // The directory itself went away: what hung under it changed (its parent's watcher says so too).
    w.on("error", () => this.event(dir, null));
    return w;
  }

  private event(dir: string, name: string | null): void {
    const w = this.dirs.get(dir);
    if (!w) return;
    // The directory itself was removed or moved (reported under its own name): never reused.
    if (name === null || name === basename(dir)) {
      w.stale = true;
      if (w.idle) this.drop(dir, w);
    }
    const hit = new Map<string, string>();
    for (const [n, js] of w.names) {
      if (name !== null && n !== name) continue;
      for (const j of js) if (!hit.has(j)) hit.set(j, dir === "/" ? `/${n}` : `${dir}/${n}`);
    }
    for (const [job, path] of hit) {
      this.unwatch(job);
      this.changed(job, path);
    }
  }
}

/** device:inode of a directory now ("" when it cannot be read). */
function dirId(dir: string): string {
  const st = statSync(dir, { throwIfNoEntry: false });
  return st ? `${st.dev}:${st.ino}` : "";
}

const FILE = "guard.json";

/** Keep a job's guarded entries beside its other files (a restarted planterd reads them). */
export function saveGuard(jobDir: string, entries: Entry[]): void {
  if (entries.length) writeFileSync(join(jobDir, FILE), JSON.stringify(entries), { mode: 0o600 });
}

/** A job's guarded entries as launch saved them (none when it has no covers or predates the guard). */
export function loadGuard(jobDir: string): Entry[] {
  const p = join(jobDir, FILE);
  if (!existsSync(p)) return [];
  try {
    const v = JSON.parse(readFileSync(p, "utf8")) as unknown;
    if (!Array.isArray(v)) return [];
    return v.filter(
      (e): e is Entry => Array.isArray(e) && e.length === 2 && typeof e[0] === "string" && typeof e[1] === "string",
    );
  } catch {
    return [];
  }
}
