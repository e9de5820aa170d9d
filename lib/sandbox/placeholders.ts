/**
 * Placeholders for deny paths that do not exist when a job starts. A cover can only be mounted on
 * something that exists, and bwrap would create a missing mount point itself, through the job's
 * bind, in the host's tree. So planterd creates the first missing component of the path itself,
 * empty (a file, or a directory when more components follow or the path ends in `/`), before the
 * job, and the view covers it like any deny path: whatever the host later writes into it, or
 * below it, the job does not see. After the job it is removed again, but only while it is still
 * the empty entry planter made (same inode, nothing in it); anything else is the user's data now
 * and stays. What was made is recorded in the job dir first, so a restarted planterd cleans up too.
 *
 * Every step goes through a directory fd opened with O_NOFOLLOW and confirmed through
 * /proc/self/fd to be the expected path: a job (or anyone) swapping a component for a symlink
 * never has planterd create or remove anything elsewhere.
 */
import {
  closeSync,
  constants,
  fchownSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";

/** One placeholder a job relies on: where, what, and the inode planter made (or found, when shared). */
export interface Placeholder {
  path: string;
  kind: "file" | "dir";
  dev: number;
  ino: number;
}

/** The file in a job dir that lists the placeholders of the job. */
export const placeholderFile = (jobDir: string) => join(jobDir, "placeholders.json");

/** A path without trailing slashes (`/` stays `/`). */
const bare = (p: string) => p.replace(/\/+$/, "") || "/";

/**
 * Where a missing deny path's placeholder goes: the first missing component below the nearest
 * existing ancestor, and whether it is a directory. Null when the path exists (or its nearest
 * existing ancestor is no directory: nothing can appear below it without replacing it).
 */
export function placeholderFor(
  deny: string,
  exists: (p: string) => "dir" | "other" | null,
): {
  path: string;
  parent: string;
  kind: "file" | "dir";
} | null {
  const d = bare(deny);
  if (exists(d) !== null) return null;
  let child = d;
  let parent = dirname(d);
  while (parent !== "/" && exists(parent) === null) {
    child = parent;
    parent = dirname(parent);
  }
  if (exists(parent) !== "dir") return null;
  const kind = child !== d || deny.endsWith("/") ? "dir" : "file";
  return { path: child, parent, kind };
}

/** A directory opened without following symlinks, and only if it is exactly `path`. */
function openDir(path: string): number {
  const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    if (readlinkSync(`/proc/self/fd/${fd}`) === path) return fd;
  } catch {
    // fall through
  }
  closeSync(fd);
  throw new Error(`${path} changed while it was opened`);
}

/**
 * Create an empty placeholder `name` in `parent` (never through a symlink, never over anything),
 * owned by `owner` when given (the parent's owner: it is their tree). Returns its inode.
 */
export function createPlaceholder(
  parent: string,
  name: string,
  kind: "file" | "dir",
  owner: { uid: number; gid: number } | null,
): { dev: number; ino: number } {
  const dfd = openDir(parent);
  try {
    const at = `/proc/self/fd/${dfd}/${name}`;
    if (kind === "dir") mkdirSync(at, { mode: 0o755 });
    const fd =
      kind === "dir"
        ? openSync(at, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW)
        : openSync(at, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    try {
      if (owner) fchownSync(fd, owner.uid, owner.gid);
      const st = fstatSync(fd);
      return { dev: st.dev, ino: st.ino };
    } finally {
      closeSync(fd);
    }
  } finally {
    closeSync(dfd);
  }
}

/**
 * Remove a placeholder if it is still the empty entry that was made (same inode, no content).
 * Returns what happened, for the record.
 */
export function removePlaceholder(ph: Placeholder): "removed" | "kept" | "gone" {
  let dfd: number;
  try {
    dfd = openDir(dirname(ph.path));
  } catch {
    return "gone";
  }
  try {
    const at = `/proc/self/fd/${dfd}/${basename(ph.path)}`;
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(at);
    } catch {
      return "gone";
    }
    if (st.dev !== ph.dev || st.ino !== ph.ino) return "kept";
    if (ph.kind === "file") {
      if (!st.isFile() || st.size !== 0) return "kept";
      unlinkSync(at);
    } else {
      if (!st.isDirectory() || readdirSync(at).length) return "kept";
      // rmdir refuses a directory that gained an entry since: never a recursive removal.
      rmdirSync(at);
    }
    return "removed";
  } catch {
    return "kept";
  } finally {
    closeSync(dfd);
  }
}

/** The placeholders a job dir records (none when there is no record or it cannot be read). */
export function readPlaceholders(jobDir: string): Placeholder[] {
  try {
    const raw = JSON.parse(readFileSync(placeholderFile(jobDir), "utf8")) as unknown;
    if (!Array.isArray(raw)) return [];
    return raw.filter(
      (x): x is Placeholder =>
        typeof x?.path === "string" &&
        (x.kind === "file" || x.kind === "dir") &&
        typeof x.dev === "number" &&
        typeof x.ino === "number",
    );
  } catch {
    return [];
  }
}

/** Write a job's placeholder record (0600, in its job dir). */
export function writePlaceholders(jobDir: string, list: Placeholder[]): void {
  mkdirSync(jobDir, { recursive: true, mode: 0o700 });
  writeFileSync(placeholderFile(jobDir), JSON.stringify(list), { mode: 0o600 });
}

/** Whether `path` is (still) the placeholder `ph` names. */
export function isPlaceholder(path: string, ph: Placeholder): boolean {
  try {
    const st = lstatSync(path);
    return ph.path === path && st.dev === ph.dev && st.ino === ph.ino;
  } catch {
    return false;
  }
}
