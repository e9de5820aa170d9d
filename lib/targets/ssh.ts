/**
 * An `ssh://` target: a persistent OpenSSH ControlMaster per target with a Unix-socket forward
 * (`-L local.sock:remote.sock`) to the remote planterd's socket; the ordinary Client then speaks to
 * the local end. Loaded only when such a target is used (lib/cli/target.ts).
 *
 * Trust (plans/design.md "Targets"): the local end lives in the user's 0700 directory and is
 * listened on by the user's own ssh, so the client's usual socket checks hold for it; the remote
 * end is vouched for by the host key (always checked, never accepted blindly) and, when the master
 * starts, by the remote socket's owner: the socket and its directory must belong to the login user
 * or root, and the directory must not be writable by others — the rule lib/api/trust.ts applies
 * locally, read with one remote `stat` through the master.
 */
import { existsSync, mkdirSync, rmdirSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { sshDir } from "../cli/target.ts";
import { controlArgs, masterArgs, remoteArgs, type SshPlan, ssh, sshFailure, sshWhere } from "../host/ssh.ts";
import { SOCKET_PATH_MAX } from "../paths.ts";
import { privateDir } from "./dir.ts";
import { type Endpoint, SSH_DEFAULT_SOCKET } from "./url.ts";

type Env = Record<string, string | undefined>;

/** What `ensureForward` needs of a target. */
export interface ForwardPlan {
  name: string;
  endpoint: Extract<Endpoint, { kind: "ssh" }>;
  identity?: string;
  knownHosts?: string;
  env: Env;
}

/** ConnectTimeout of every ssh call, in seconds. */
export const CONNECT_TIMEOUT_S = 3;
/** How long an idle master stays, in seconds. */
export const PERSIST_S = 600;

/** Whether something accepts connections on the Unix socket `path`. */
async function answers(path: string): Promise<boolean> {
  if (!existsSync(path)) return false;
  try {
    const s = await Bun.connect({ unix: path, socket: { data() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

/** The plan ssh is called with for a target. */
export function sshPlan(plan: ForwardPlan, dir: string): SshPlan {
  return {
    user: plan.endpoint.user,
    host: plan.endpoint.host,
    port: plan.endpoint.port,
    identity: plan.identity,
    knownHosts: plan.knownHosts,
    control: `${dir}/${plan.name}.ctl`,
    connectTimeoutS: CONNECT_TIMEOUT_S,
    persistS: PERSIST_S,
  };
}

/**
 * One lock per target while its master is started: concurrent commands would each start one.
 * A lock directory older than 30 s is a crashed command's, and is taken over.
 */
async function withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      mkdirSync(path, { mode: 0o700 });
      break;
    } catch {
      try {
        if (Date.now() - statSync(path).mtimeMs > 30_000) rmdirSync(path);
      } catch {
        // gone meanwhile
      }
      if (Date.now() > deadline)
        throw new PlanterError("E_UNAVAILABLE", `another planter is starting the same ssh target (lock ${path})`, {
          hint: `if none is, remove ${path}`,
        });
      await Bun.sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    try {
      rmdirSync(path);
    } catch {
      // removed by a command that took it over
    }
  }
}

/**
 * The target's forward, ready: its local socket there returns at once (the warm path: no ssh
 * call, no connect — the client's listener check is the connect); `stale` (that connect was
 * refused) or no socket: unless another command made it live meanwhile, the old master (if any) is
 * stopped and a new one started with the forward, and the remote socket's owner is checked before
 * the client sends anything.
 */
export async function ensureForward(plan: ForwardPlan, stale = false): Promise<void> {
  const dir = sshDir(plan.env);
  const local = `${dir}/${plan.name}.sock`;
  // Warm: the forward's socket is there; the client's own connect (its listener check) tries it,
  // and calls again with `stale` when nothing listens — one channel through ssh fewer per command.
  if (!stale && existsSync(local)) return;
  if (await answers(local)) return;
  // ssh binds the control socket at its path plus a 17-byte temporary suffix first.
  if (`${dir}/${plan.name}.ctl`.length + 17 > SOCKET_PATH_MAX)
    throw new PlanterError(
      "E_CONFIG",
      `the ssh control socket of target ${plan.name} would be longer than a Unix socket address holds: ${dir}/${plan.name}.ctl`,
      {
        hint: "set XDG_RUNTIME_DIR (a short directory of yours, such as /run/user/UID), or give the target a shorter name",
      },
    );
  privateDir(dir);
  await withLock(`${dir}/${plan.name}.lock`, async () => {
    if (await answers(local)) return; // started by another command meanwhile
    const p = sshPlan(plan, dir);
    // A master still there is stopped; a dead one's control socket removed, or ssh would start
    // without multiplexing (a background ssh that no ControlPersist ever ends).
    if (existsSync(p.control) && (await ssh(controlArgs(p, "exit"), 5000)).code !== 0)
      rmSync(p.control, { force: true });
    const remote = plan.endpoint.socket ?? SSH_DEFAULT_SOCKET;
    const started = await ssh(masterArgs(p, local, remote), (CONNECT_TIMEOUT_S + 10) * 1000);
    if (started.code !== 0) throw sshFailure(p, plan.name, started);
    try {
      await checkRemoteSocket(p, plan.name, remote);
    } catch (e) {
      await ssh(controlArgs(p, "exit"), 5000);
      throw e;
    }
  });
}

/** Stop the target's master (and so its forward), if one runs. */
export async function stopForward(plan: ForwardPlan): Promise<boolean> {
  const dir = sshDir(plan.env);
  const p = sshPlan(plan, dir);
  if (!existsSync(p.control)) return false;
  return (await ssh(controlArgs(p, "exit"), 5000)).code === 0;
}

/** The remote command that reads the login uid and the socket's and its directory's owner and mode. */
export function statCommand(socket: string): string {
  // The path was checked to hold no quote, space or control character (lib/targets/url.ts).
  return `id -u && stat -L -c '%u %a %F' -- '${socket}' && stat -L -c '%u %a' -- '${dirname(socket)}'`;
}

/** What is wrong with the remote socket, from `statCommand`'s output, or null. Pure. */
export function remoteSocketProblem(out: string, socket: string): string | null {
  const lines = out.trim().split("\n");
  const login = Number(lines[0]);
  const sock = /^(\d+) ([0-7]+) (.+)$/.exec(lines[1] ?? "");
  const dir = /^(\d+) ([0-7]+)$/.exec(lines[2] ?? "");
  if (!Number.isInteger(login) || !sock || !dir) return `cannot read the owner of ${socket} on the remote host`;
  const ok = (uid: number) => uid === login || uid === 0;
  if (sock[3] !== "socket") return `${socket} on the remote host is not a socket (${sock[3]})`;
  if (!ok(Number(sock[1])))
    return `${socket} on the remote host is owned by uid ${sock[1]}, not by the login user (uid ${login}) or root`;
  if (!ok(Number(dir[1])))
    return `the directory of ${socket} on the remote host is owned by uid ${dir[1]}, not by the login user (uid ${login}) or root`;
  const mode = Number.parseInt(dir[2] as string, 8);
  if ((mode & 0o022) !== 0 && (mode & 0o1000) === 0)
    return `the directory of ${socket} on the remote host is writable by others (mode ${dir[2]}), so the socket could be swapped`;
  return null;
}

async function checkRemoteSocket(p: SshPlan, name: string, socket: string): Promise<void> {
  const r = await ssh(remoteArgs(p, statCommand(socket)), 10_000);
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr))
      throw new PlanterError(
        "E_DAEMON_UNREACHABLE",
        `no planterd socket at ${socket} on target ${name} (ssh ${sshWhere(p)})`,
        {
          hint: `start planterd there, or name its socket in the URL: planter target add ${name} 'ssh://${sshWhere(p)}?socket=PATH' --replace (a user install's is $XDG_RUNTIME_DIR/planter/planterd.sock)`,
        },
      );
    throw new PlanterError(
      "E_UNTRUSTED_DAEMON",
      `refusing target ${name} (ssh ${sshWhere(p)}): cannot check the owner of ${socket} there: ${r.stderr.trim().split("\n").at(-1) ?? `exit ${r.code}`}`,
      {
        hint: "the login user needs a POSIX shell with GNU stat on the remote host (planter reads the socket's owner before it sends anything)",
      },
    );
  }
  const problem = remoteSocketProblem(r.stdout, socket);
  if (problem)
    throw new PlanterError("E_UNTRUSTED_DAEMON", `refusing target ${name} (ssh ${sshWhere(p)}): ${problem}`, {
      hint: "whoever owns it would read what planter sends; point the URL's socket= at planterd's own socket",
    });
}
