/**
 * The socket's secure layout: the directory and socket file with the expected owner, group and
 * mode, no symlinked directory, and no parent that others could write (sticky root-owned
 * parents such as /tmp excepted). Checks return problems with the command that fixes each.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync, realpathSync, type Stats, statSync } from "node:fs";
import { dirname } from "node:path";
import { PlanterError } from "../api/errors.ts";
import type { InstallMode } from "../paths.ts";

export interface Layout {
  uid: number;
  /** Expected group of dir and socket, or null when any group is fine. */
  gid: number | null;
  groupName: string | null;
  dirMode: number;
  socketMode: number;
}

export interface Problem {
  message: string;
  fix: string;
}

const oct = (m: number) => `0${(m & 0o7777).toString(8)}`;

/** User mode: ours, 0700/0600. System mode: root:planter 0750/0660 (root-only 0700/0600 without the group). */
export function expectedLayout(
  mode: InstallMode,
  selfUid: number,
  planterGid: number | null,
  groupName = "planter",
): Layout {
  if (mode === "system" && planterGid !== null)
    return { uid: 0, gid: planterGid, groupName, dirMode: 0o750, socketMode: 0o660 };
  return { uid: mode === "system" ? 0 : selfUid, gid: null, groupName: null, dirMode: 0o700, socketMode: 0o600 };
}

function checkOwnerMode(path: string, st: Stats, want: Layout, mode: number, what: string): Problem[] {
  const out: Problem[] = [];
  if (st.uid !== want.uid)
    out.push({
      message: `${what} ${path} is owned by uid ${st.uid}, not ${want.uid}`,
      fix: `sudo chown ${want.uid} ${path}`,
    });
  if (want.gid !== null && st.gid !== want.gid) {
    out.push({
      message: `${what} ${path} has group ${st.gid}, not ${want.groupName} (${want.gid})`,
      fix: `sudo chgrp ${want.groupName} ${path}`,
    });
  }
  if ((st.mode & 0o7777) !== mode)
    out.push({
      message: `${what} ${path} has mode ${oct(st.mode)}, not ${oct(mode)}`,
      fix: `chmod ${oct(mode)} ${path}`,
    });
  return out;
}

/** Problems with the socket directory itself. */
export function checkDir(dir: string, want: Layout): Problem[] {
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch {
    return [{ message: `socket directory ${dir} does not exist`, fix: `mkdir -m ${oct(want.dirMode)} -p ${dir}` }];
  }
  if (st.isSymbolicLink())
    return [{ message: `socket directory ${dir} is a symlink`, fix: `rm ${dir}  # planterd creates it again` }];
  if (!st.isDirectory())
    return [{ message: `socket directory ${dir} is not a directory`, fix: `mv ${dir} ${dir}.old` }];
  return checkOwnerMode(dir, st, want, want.dirMode, "socket directory");
}

/** Problems with the parents of `dir`: none may be writable by others (sticky root-owned ones excepted). */
export function checkParents(dir: string, selfUid: number): Problem[] {
  const out: Problem[] = [];
  let p: string;
  try {
    p = realpathSync(dirname(dir));
  } catch {
    return [{ message: `parent of ${dir} does not exist`, fix: `mkdir -p ${dirname(dir)}` }];
  }
  for (;;) {
    const st = statSync(p);
    const sticky = (st.mode & 0o1000) !== 0 && st.uid === 0;
    if ((st.mode & 0o002) !== 0 && !sticky)
      out.push({ message: `${p}, a parent of the socket, is writable by others`, fix: `chmod o-w ${p}` });
    if (st.uid !== 0 && st.uid !== selfUid && !sticky) {
      out.push({
        message: `${p}, a parent of the socket, is owned by another user (uid ${st.uid})`,
        fix: `move the socket elsewhere (--socket), or: sudo chown ${selfUid} ${p}`,
      });
    }
    if (p === "/") break;
    p = dirname(p);
  }
  return out;
}

/** Problems with the socket file. */
export function checkSocket(path: string, want: Layout): Problem[] {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    return [{ message: `socket ${path} does not exist`, fix: "restart planterd" }];
  }
  if (!st.isSocket()) return [{ message: `${path} is not a socket`, fix: `mv ${path} ${path}.old` }];
  return checkOwnerMode(path, st, want, want.socketMode, "socket");
}

/** Create the socket directory with the right owner and mode when missing. */
export function makeDir(dir: string, want: Layout): void {
  try {
    lstatSync(dir);
    return;
  } catch {
    // missing: create it below
  }
  mkdirSync(dir, { recursive: true, mode: want.dirMode });
  chmodSync(dir, want.dirMode);
  if (want.gid !== null) chownSync(dir, want.uid, want.gid);
}

/** Give a freshly bound socket its mode and group (before the first accept). */
export function fixSocket(path: string, want: Layout): void {
  chmodSync(path, want.socketMode);
  if (want.gid !== null) chownSync(path, want.uid, want.gid);
}

/** Throw when there are problems: what is wrong, and the commands that fix it. */
export function refuseOn(problems: Problem[]): void {
  if (!problems.length) return;
  throw new PlanterError("E_UNAVAILABLE", `insecure socket layout: ${problems.map((p) => p.message).join("; ")}`, {
    hint: `fix it, then start planterd again: ${problems.map((p) => p.fix).join(" && ")}`,
  });
}
