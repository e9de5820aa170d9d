/**
 * The client's trust in a socket: whoever listens there reads every request (`--env` values
 * included) and writes what the CLI prints. Before a byte is sent, the socket file and its
 * directory must belong to the user or root (so nobody else can have bound or swapped it), and
 * the process on the other end of the connected socket must run as the user or root
 * (SO_PEERCRED / getpeereid on the connection itself: no window between check and use).
 */
import { lstatSync, realpathSync, type Stats, statSync } from "node:fs";
import { dirname } from "node:path";
import { PlanterError } from "./errors.ts";

/** What the checks read of the file system (replaceable in tests). */
export interface TrustFs {
  lstat(path: string): Stats;
  stat(path: string): Stats;
  realpath(path: string): string;
}

const realFs: TrustFs = { lstat: lstatSync, stat: statSync, realpath: realpathSync };

/** Uids a client trusts: its own and root's (and any it was told to). */
export function trusted(uid: number, me: number, also: readonly number[] = []): boolean {
  return uid === me || uid === 0 || also.includes(uid);
}

const HINT =
  "whoever owns it would read what planter sends (--env values included); point --socket or PLANTER_SOCKET at your own planterd's socket (or unset it), or ask that user to fix its owner and mode";

function untrusted(socket: string, why: string, details: Record<string, unknown>): PlanterError {
  return new PlanterError("E_UNTRUSTED_DAEMON", `refusing to use the planterd socket ${socket}: ${why}`, {
    hint: HINT,
    details: { socket, ...details },
  });
}

/** A directory nobody else can add, rename or remove entries in: owned by `me` or root, no write for others unless sticky. */
function dirProblem(dir: string, st: Stats, me: number, also: readonly number[]): string | null {
  if (!trusted(st.uid, me, also))
    return `its directory ${dir} is owned by uid ${st.uid}, not by you (uid ${me}) or root`;
  const othersWrite = (st.mode & 0o022) !== 0;
  const sticky = (st.mode & 0o1000) !== 0;
  if (othersWrite && !sticky)
    return `its directory ${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)}), so the socket could be swapped`;
  return null;
}

/**
 * Refuse a socket path that another user controls: the socket (through symlinks) and the
 * directory it is in must belong to `me` or root, and so must the directory of a symlink on the
 * way (or the link could be re-pointed). A path that does not exist passes: connecting fails.
 */
export function checkSocketPath(socket: string, me: number, also: readonly number[] = [], fs: TrustFs = realFs): void {
  let link: Stats;
  try {
    link = fs.lstat(socket);
  } catch {
    return;
  }
  const problem = (why: string, details: Record<string, unknown> = {}) => untrusted(socket, why, details);
  // A directory this user cannot stat cannot be checked here; connecting through it fails, and
  // a connection that does get made is still checked by its peer's uid.
  const dirStat = (dir: string): Stats | null => {
    try {
      return fs.stat(dir);
    } catch {
      return null;
    }
  };
  if (link.isSymbolicLink()) {
    const dir = dirname(socket);
    const st = dirStat(dir);
    const why = st && dirProblem(dir, st, me, also);
    if (why) throw problem(`it is a symlink and ${why}`);
  }
  let st: Stats;
  let real: string;
  try {
    st = fs.stat(socket);
    real = fs.realpath(socket);
  } catch {
    return; // a dangling link: connecting fails with the usual message
  }
  if (!trusted(st.uid, me, also))
    throw problem(`it is owned by uid ${st.uid}, not by you (uid ${me}) or root`, { owner_uid: st.uid });
  const dir = dirname(real);
  const dst = dirStat(dir);
  const why = dst && dirProblem(dir, dst, me, also);
  if (why) throw problem(why);
}

/** Refuse a connection whose listening process runs as another user. */
export function checkPeerUid(socket: string, peerUid: number, me: number, also: readonly number[] = []): void {
  if (trusted(peerUid, me, also)) return;
  throw new PlanterError(
    "E_UNTRUSTED_DAEMON",
    `refusing to use the planterd socket ${socket}: the process listening on it runs as uid ${peerUid}, not as you (uid ${me}) or root`,
    { hint: HINT, details: { socket, peer_uid: peerUid } },
  );
}
