/**
 * Who a job runs as. A job never runs as host root: when planterd is root (system mode) a job
 * runs as the requesting peer, or — for a root peer — as the cell's owner, else as the
 * configured unprivileged user (`[jobs] root_peer_user`, created by install). Privileged
 * supplementary groups (planter's own, sudo, docker, disk, …) are dropped. User mode keeps the
 * daemon's own uid.
 */
import { readFileSync, statSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";
import { execSync } from "../host/exec.ts";

/** How long a user lookup through NSS may take before the user counts as unknown. */
const LOOKUP_TIMEOUT_MS = 5000;

/** A host identity a job runs as. */
export interface Identity {
  uid: number;
  gid: number;
  groups: number[];
  user: string | null;
  home: string | null;
}

/** One /etc/passwd entry. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** Groups a job never keeps: each grants host privileges a sandbox must not carry in. */
export const PRIVILEGED_GROUPS: readonly string[] = [
  "root",
  "planter",
  "sudo",
  "wheel",
  "admin",
  "adm",
  "disk",
  "docker",
  "lxd",
  "incus-admin",
  "microk8s",
  "libvirt",
  "shadow",
  "systemd-journal",
  "kmem",
  "tty",
  // Debian's staff writes /usr/local, which root's PATH runs first.
  "staff",
];

const DIGITS = /^\d+$/;

/** Parse passwd text (pure). */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    // Digits only: Number("") is 0, and an empty id field must never read as root.
    if (f.length < 7 || !DIGITS.test(f[2] as string) || !DIGITS.test(f[3] as string)) continue;
    out.push({ name: f[0] as string, uid: Number(f[2]), gid: Number(f[3]), home: f[5] as string });
  }
  return out;
}

/** Parse group text into name → gid (pure); the first line of a name counts, as for getgrnam. */
export function parseGroups(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name !== undefined && gid !== undefined && DIGITS.test(gid) && !m.has(name)) m.set(name, Number(gid));
  }
  return m;
}

const cache = new Map<string, { mtime: number; size: number; text: string }>();

/** A small system file, read again only when it changed (jobs start often; passwd rarely changes). */
export function read(path: string): string {
  try {
    const st = statSync(path);
    const hit = cache.get(path);
    if (hit && hit.mtime === st.mtimeMs && hit.size === st.size) return hit.text;
    const text = readFileSync(path, "utf8");
    cache.set(path, { mtime: st.mtimeMs, size: st.size, text });
    return text;
  } catch {
    return "";
  }
}

/** A user by name or uid: /etc/passwd first, then NSS through `getent`. */
export function lookupUser(key: string | number, passwdFile = "/etc/passwd"): PasswdEntry | null {
  const match = (e: PasswdEntry) => (typeof key === "number" ? e.uid === key : e.name === key);
  const local = parsePasswd(read(passwdFile)).find(match);
  if (local) return local;
  if (passwdFile !== "/etc/passwd") return null;
  // Bounded: an NSS source that hangs (LDAP over a dead network) must not stop planterd.
  const r = execSync("getent", ["passwd", String(key)], {
    env: { PATH: "/usr/bin:/bin" },
    clean: true,
    timeoutMs: LOOKUP_TIMEOUT_MS,
    maxOutputBytes: 1 << 16,
    nothrow: true,
  });
  return r.code === 0 ? (parsePasswd(r.stdout).find(match) ?? null) : null;
}

/** The gids of PRIVILEGED_GROUPS on this host (from /etc/group), plus gid 0. */
export function privilegedGids(groupFile = "/etc/group"): Set<number> {
  const groups = parseGroups(read(groupFile));
  const s = new Set<number>([0]);
  for (const name of PRIVILEGED_GROUPS) {
    const g = groups.get(name);
    if (g !== undefined) s.add(g);
  }
  return s;
}

/** An identity for `uid`: its passwd entry's gid and home, its groups less the privileged ones. */
export function identityOf(
  uid: number,
  groups: number[],
  opts: { passwdFile?: string; groupFile?: string; gid?: number } = {},
): Identity {
  const e = lookupUser(uid, opts.passwdFile);
  const drop = privilegedGids(opts.groupFile);
  const gid = e?.gid ?? opts.gid ?? uid;
  return {
    uid,
    gid: drop.has(gid) && gid === 0 ? 65534 : gid,
    groups: [...new Set(groups)].filter((g) => !drop.has(g) && g !== gid),
    user: e?.name ?? null,
    home: e?.home ?? null,
  };
}

/** The user a root peer's jobs run as, from `[jobs] root_peer_user`; `nobody` when it does not exist. */
export function rootPeerIdentity(
  name: string,
  opts: { passwdFile?: string; groupFile?: string } = {},
): { identity: Identity; fallback: string | null } {
  const e = lookupUser(name, opts.passwdFile);
  if (e && e.uid !== 0) return { identity: identityOf(e.uid, [], opts), fallback: null };
  const why = e ? `user ${name} is uid 0` : `user ${name} does not exist`;
  return {
    identity: { uid: 65534, gid: 65534, groups: [], user: "nobody", home: null },
    fallback: `${why}: root's jobs run as nobody (65534); create it with \`planter install\` or set [jobs] root_peer_user`,
  };
}

/**
 * Who a job runs as (planterd root only): the peer itself when it is not root; for a root peer
 * (or no peer) the cell's owner when that is not root, else the root-peer user.
 */
export function jobIdentity(o: {
  peer: { uid: number; gid: number; groups: number[] } | null;
  cellOwner: number | null;
  rootPeer: Identity;
}): Identity {
  if (o.peer && o.peer.uid !== 0) return identityOf(o.peer.uid, o.peer.groups, { gid: o.peer.gid });
  if (o.cellOwner !== null && o.cellOwner !== 0) {
    const e = lookupUser(o.cellOwner);
    return identityOf(o.cellOwner, [], { gid: e?.gid ?? o.rootPeer.gid });
  }
  return o.rootPeer;
}

/** Where a system program planterd runs is: in the system's own dirs only, never through a job's PATH. */
export function systemProgram(name: string): string | null {
  return Bun.which(name, { PATH: "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin" });
}

/** Where setpriv (util-linux) is (`systemProgram`). */
export function setprivPath(): string {
  const found = systemProgram("setpriv");
  if (!found) {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      "setpriv (util-linux) is not installed: planter cannot run jobs as another user",
      {
        hint: "install util-linux (Debian: apt-get install util-linux); as root, planter never runs a job as root",
      },
    );
  }
  return found;
}

/** argv prefix that drops to `id` before running the rest (util-linux setpriv). */
export function dropArgv(id: Identity, setpriv = setprivPath()): string[] {
  return [
    setpriv,
    `--reuid=${id.uid}`,
    `--regid=${id.gid}`,
    id.groups.length ? `--groups=${id.groups.join(",")}` : "--clear-groups",
    "--no-new-privs",
    "--inh-caps=-all",
    "--",
  ];
}
