/** planterd: open state, re-adopt jobs, serve the API until SIGTERM/SIGINT. */
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { Observer } from "../agents/observer.ts";
import { PlanterError } from "../api/errors.ts";
import { loadConfig } from "../config.ts";
import { chooseEnforcement } from "../jobs/monitor.ts";
import { Supervisor } from "../jobs/supervisor.ts";
import { type Paths, resolvePaths, SOCKET_PATH_MAX, socketDir, stateFiles } from "../paths.ts";
import { rootPeerIdentity } from "../sandbox/identity.ts";
import { probePlatform } from "../sandbox/index.ts";
import { openState, streamId } from "../state/db.ts";
import { backgroundCheck, recordCleanClose, takeCleanClose } from "../state/integrity.ts";
import { getJob } from "../state/jobs.ts";
import { lockStateDir } from "../state/lock.ts";
import { storageError } from "../state/storage.ts";
import { BUILD } from "../version.ts";
import { groupGid, resolvePolicy, systemGroup } from "./authz.ts";
import { Context } from "./context.ts";
import { ensureCell } from "./handlers/common.ts";
import { jobOwner } from "./launch.ts";
import { checkDir, checkParents, checkSocket, expectedLayout, fixSocket, makeDir, refuseOn } from "./layout.ts";
import { peerReader } from "./peer.ts";
import { routes } from "./routes.ts";
import { ApiServer, activationFd } from "./server.ts";
import { loadTcp } from "./tcp.ts";

export interface DaemonOptions {
  socket?: string;
  stateDir?: string;
  config?: string;
}

const log = (msg: string) => console.error(`planterd: ${msg}`);

/** Resolve paths with flags over env over config. */
export function daemonPaths(opts: DaemonOptions): { paths: Paths; config: ReturnType<typeof loadConfig> } {
  const base = resolvePaths();
  const configPath = opts.config ?? base.configPath;
  const config = loadConfig(configPath);
  const paths: Paths = {
    mode: base.mode,
    configPath,
    stateDir:
      opts.stateDir ??
      (process.env.PLANTER_STATE || process.env.PLANTER_HOME
        ? base.stateDir
        : (config.daemon.state_dir ?? base.stateDir)),
    socketPath:
      opts.socket ??
      (process.env.PLANTER_SOCKET || process.env.PLANTER_HOME
        ? base.socketPath
        : (config.daemon.socket ?? base.socketPath)),
  };
  return { paths, config };
}

/** What planterd found when its database is empty but job dirs exist: jobs recorded before are gone. */
export interface FreshDatabase {
  path: string;
  /** The database file's size before planterd opened it (null: it did not exist). */
  bytes: number | null;
  job_dirs: number;
  message: string;
}

/**
 * Whether the database is missing or 0 bytes while the jobs dir holds job dirs: the state was
 * lost or replaced (a failed copy, a full disk, an editor), and planterd starts empty.
 */
export function freshDatabase(dbPath: string, jobsDir: string): FreshDatabase | null {
  let bytes: number | null = null;
  try {
    bytes = statSync(dbPath).size;
  } catch {
    bytes = null;
  }
  if (bytes !== null && bytes > 0) return null;
  let dirs = 0;
  try {
    dirs = readdirSync(jobsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).length;
  } catch {
    return null;
  }
  if (dirs === 0) return null;
  const what = bytes === null ? "is missing" : "is empty (0 bytes)";
  return {
    path: dbPath,
    bytes,
    job_dirs: dirs,
    message:
      `the state database ${dbPath} ${what} but ${jobsDir} holds ${dirs} job ${dirs === 1 ? "dir" : "dirs"}: ` +
      "planterd starts with empty state, and those jobs are unknown to it (`planter doctor` shows how to restore a backup)",
  };
}

/** The layout the socket's dir and the socket must have; the dir made and checked unless the socket is inherited. */
function socketLayout(
  paths: Paths,
  config: ReturnType<typeof loadConfig>,
  fd: number | null,
  selfUid: number,
): ReturnType<typeof expectedLayout> {
  const group = systemGroup(config.authz);
  const layout = expectedLayout(paths.mode, selfUid, paths.mode === "system" && group ? groupGid(group) : null, group);
  if (paths.mode === "system" && layout.gid === null) {
    log(
      group
        ? `group ${group} does not exist: only root can use this planterd (install creates the group)`
        : "no system group ([authz] group or PLANTER_GROUP is empty): only root can use this planterd",
    );
  }
  if (fd === null) {
    const dir = socketDir(paths.socketPath);
    makeDir(dir, layout);
    refuseOn([...checkDir(dir, layout), ...checkParents(dir, selfUid)]);
  }
  return layout;
}

/** How planterd reads who connects, or null where the platform cannot say (refused when `strict`). */
async function peerCredentials(strict: boolean): Promise<Awaited<ReturnType<typeof peerReader>>> {
  let readPeer: Awaited<ReturnType<typeof peerReader>> = null;
  try {
    readPeer = await peerReader();
  } catch (e) {
    readPeer = null;
    log(`cannot read peer credentials on this platform: ${(e as Error).message}`);
  }
  if (!readPeer && strict) {
    throw new PlanterError(
      "E_UNAVAILABLE",
      "planterd cannot read peer credentials here, so it cannot tell who connects",
      {
        hint: "set [authz] strict = false to serve every peer that can open the socket (local development only)",
      },
    );
  }
  return readPeer;
}

/** The state dir and its subdirs, made with the modes planterd keeps them in. */
function makeStateDirs(paths: Paths): ReturnType<typeof stateFiles> {
  // Nothing planterd creates is readable by others (the database, logs, job dirs)...
  process.umask(0o077);
  mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
  const files = stateFiles(paths.stateDir);
  mkdirSync(files.jobs, { recursive: true, mode: 0o700 });
  mkdirSync(files.cells, { recursive: true, mode: 0o700 });
  mkdirSync(join(paths.stateDir, "homes"), { recursive: true, mode: 0o700 });
  mkdirSync(join(paths.stateDir, "reports"), { recursive: true, mode: 0o700 });
  // ...but as root, a job's user must pass through the state dir to its own cell and home (bwrap
  // resolves every bind source as that user): search permission only, no listing.
  // (Not where the socket lives in the state dir itself, as on macOS: that dir must stay 0700.)
  if (process.getuid?.() === 0 && socketDir(paths.socketPath) !== paths.stateDir) {
    for (const d of [paths.stateDir, files.cells, join(paths.stateDir, "homes"), join(paths.stateDir, "reports")])
      chmodSync(d, 0o711);
    // Only when needed: a chmod sets the file's ctime, which the clean-close record compares.
    for (const f of [files.db, `${files.db}-wal`, `${files.db}-shm`]) {
      if (existsSync(f) && (statSync(f).mode & 0o777) !== 0o600) chmodSync(f, 0o600);
    }
  }
  return files;
}

/** One daemon per state dir (migrate takes the same lock): returns the unlock. */
function lockState(stateDir: string, pidFile: string): () => void {
  try {
    return lockStateDir(
      pidFile,
      (pid) =>
        new PlanterError("E_UNAVAILABLE", `another planterd (pid ${pid}) is using the state dir ${stateDir}`, {
          hint: `stop it first: kill ${pid}`,
        }),
    );
  } catch (e) {
    // Not even the lock file fits: say what is full, not ENOSPC.
    throw storageError(e, stateDir) ?? e;
  }
}

/** The agent observer, fed by agent jobs' report channels: each event is its job's, owned by the job's owner. */
function agentObserver(ctx: Context, config: ReturnType<typeof loadConfig>): Observer {
  const observer = new Observer({
    db: ctx.db,
    config: { ...config.agents, tmux_dirs: config.agents.tmux_dirs ?? null },
    job: (id) => {
      const job = getJob(ctx.db, id);
      return job ? { cell: job.cell, owner_uid: jobOwner(ctx, job) } : null;
    },
  });
  ctx.supervisor.agents.onEvent = (e) => {
    const job = e.runtime.job_id === null ? null : getJob(ctx.db, e.runtime.job_id);
    observer.ingest(e, { owner_uid: job ? jobOwner(ctx, job) : null });
  };
  return observer;
}

/** The default cell, made when missing; on a full disk planterd still starts: it serves what it has and records what it can. */
function ensureDefaultCell(ctx: Context, name: string): void {
  try {
    ensureCell(ctx, name);
  } catch (e) {
    if (!(e instanceof PlanterError) || e.code !== "E_UNAVAILABLE") throw e;
    log(`cannot create the default cell ${name}: ${e.message}`);
  }
}

/** Before the first accept: the socket's mode and group (an inherited one: that it is ours), then the whole layout once more. */
async function checkListening(
  listening: Awaited<ReturnType<ApiServer["listen"]>>,
  socketPath: string,
  layout: ReturnType<typeof expectedLayout>,
  selfUid: number,
): Promise<void> {
  if (listening.via === "bind") fixSocket(socketPath, layout);
  else {
    const inherited = await listening.address();
    if (inherited !== socketPath) {
      refuseOn([
        {
          message: `the inherited socket is ${inherited ?? "not a path socket"}, not ${socketPath}`,
          fix: "make ListenStream in planterd.socket match [daemon] socket (or PLANTER_SOCKET)",
        },
      ]);
    }
    const dir = socketDir(socketPath);
    refuseOn([...checkDir(dir, layout), ...checkParents(dir, selfUid)]);
  }
  refuseOn(checkSocket(socketPath, layout));
}

/** MCP on a loopback TCP port, only with a bearer token (lib/daemon/mcp.ts); a bad setting stops nothing else (null). */
async function startMcpTcp(ctx: Context, router: ReturnType<typeof routes>): Promise<{ close(): void } | null> {
  const { McpTcp } = await import("./mcp.ts");
  const tcp = new McpTcp(ctx, router);
  try {
    const at = await tcp.listen();
    if (at) log(`MCP on http://${at.host.includes(":") ? `[${at.host}]` : at.host}:${at.port}/mcp (bearer token)`);
    return tcp;
  } catch (e) {
    log(
      `MCP TCP listener not started: ${(e as Error).message}${e instanceof PlanterError && e.hint ? ` (${e.hint})` : ""}`,
    );
    return null;
  }
}

/** What the background check of a cleanly closed database found, as `ctx.integrity` (and `damaged` when it is). */
function recordBackgroundCheck(
  ctx: Context,
  dbFile: string,
  r: Awaited<ReturnType<typeof backgroundCheck>["result"]>,
): void {
  if (r.status === "damaged") {
    ctx.integrity = { check: "background", status: "failed", message: r.message, ms: r.ms };
    ctx.markDamaged(r.message ?? "quick_check failed");
  } else if (r.status === "error") {
    // Nothing is known about the database: it is not called damaged, and the next start checks first.
    ctx.integrity = { check: "background", status: "unchecked", message: r.message, ms: null };
    log(`warning: the background check of ${dbFile} could not run (${r.message}); the next start checks it fully`);
  } else ctx.integrity = { check: "background", status: "ok", message: null, ms: r.ms };
}

/** Resolves at SIGTERM or SIGINT (jobs keep running). */
function stopSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log(`${sig}: stopping (jobs keep running)`);
      resolve();
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}

/** Run the daemon; resolves when it has shut down. */
export async function runDaemon(opts: DaemonOptions = {}): Promise<void> {
  const { paths, config } = daemonPaths(opts);
  const fd = activationFd();
  if (fd === null && paths.socketPath.length > SOCKET_PATH_MAX) {
    throw new PlanterError(
      "E_USAGE",
      `socket path is ${paths.socketPath.length} bytes, longer than a Unix socket allows (${SOCKET_PATH_MAX})`,
      {
        hint: "use a shorter PLANTER_HOME or --socket",
      },
    );
  }
  // The socket is the security boundary: check its layout before touching any state.
  const selfUid = process.getuid?.() ?? 0;
  const layout = socketLayout(paths, config, fd, selfUid);
  const authz = resolvePolicy(config.authz, paths.mode, selfUid);
  const readPeer = await peerCredentials(authz.strict);
  const files = makeStateDirs(paths);
  const unlock = lockState(paths.stateDir, files.pidFile);
  let db: ReturnType<typeof openState> | null = null;
  // Whether this run's full check of the database passed: only then may its close vouch for it.
  let verified = false;
  let stopCheck = () => {};
  let damaged = () => false;
  try {
    // cgroups first: a delegated v2 group must hold planterd alone when it is checked and planterd
    // moves into its leaf (lib/jobs/cgroup.ts), so nothing of planterd's may run yet — the probe's
    // bwrap, run before, was in the group then, and planterd fell back to the monitor (seen in a
    // cgroup v2 guest, test/slow/cgroup-v2.test.ts).
    const m = config.monitor;
    const enforcement = chooseEnforcement(m.cgroup, m.cgroup_pids_max);
    // The sandbox probe runs bwrap and waits for it: started now, it overlaps opening the state.
    const probing = probePlatform();
    probing.catch(() => undefined);
    // A database that is empty (0 bytes, or gone) beside job dirs means the state was lost.
    const fresh = freshDatabase(files.db, files.jobs);
    // Closed cleanly and untouched since: checked cheaply now and fully once serving.
    const clean = takeCleanClose(files.db);
    db = openState(files.db, { check: clean ? "cheap" : "full" });
    verified = !clean;
    const ctx = new Context(db, config, paths, streamId(db), BUILD.version);
    ctx.supervisor = new Supervisor(ctx, enforcement);
    damaged = () => ctx.damaged !== null;
    if (clean) ctx.integrity = { check: "background", status: "running", message: null, ms: null };
    if (fresh) {
      log(`warning: ${fresh.message}`);
      ctx.writeOrDefer((ev) => ev.push({ kind: "state.database_empty", subject: "daemon", data: { ...fresh } }));
    }
    if (process.getuid?.() === 0) {
      ctx.rootPeer = rootPeerIdentity(config.jobs.root_peer_user);
      if (ctx.rootPeer.fallback) log(`warning: ${ctx.rootPeer.fallback}`);
    }
    const adopted = ctx.supervisor.adoptAll();
    ctx.agents = agentObserver(ctx, config);
    ensureDefaultCell(ctx, config.jobs.default_cell);

    // Adoption and the default cell did not need the sandbox: its probe ran meanwhile.
    ctx.sandbox = await probing;
    ctx.authz = authz;
    // Inherited LISTEN_* variables belong to this process only.
    delete process.env.LISTEN_FDS;
    delete process.env.LISTEN_PID;
    delete process.env.LISTEN_FDNAMES;
    // [api.tcp]: every file and identity read now; any problem stops the start (lib/daemon/tcp.ts).
    const tcp = config.api.tcp ? loadTcp(config.api.tcp, selfUid) : null;
    const router = routes();
    const server = new ApiServer(ctx, router, readPeer);
    const listening = await server.listen(paths.socketPath, fd);
    try {
      await checkListening(listening, paths.socketPath, layout, selfUid);
      if (tcp) {
        const t = await server.listenTcp(tcp);
        log(
          `also on https://${tcp.host.includes(":") ? `[${tcp.host}]` : tcp.host}:${t.port} (TLS; identities ${tcp.identities.map((i) => `${i.name} (uid ${i.peer.uid})`).join(", ")})`,
        );
      }
    } catch (e) {
      await listening.close();
      throw e;
    }
    ctx.writeOrDefer((ev) =>
      ev.push({
        kind: "daemon.started",
        subject: "daemon",
        data: { pid: process.pid, version: BUILD.version, via: listening.via, ...adopted },
      }),
    );
    ctx.agents.start();
    const mcpTcp = config.mcp.listen && config.mcp.enabled ? await startMcpTcp(ctx, router) : null;
    log(
      `ready on ${paths.socketPath} (${listening.via === "activation" ? "socket-activated" : "bound"}; state ${paths.stateDir}; ` +
        `adopted ${adopted.adopted}, recorded ${adopted.finished} ended, ${adopted.lost} lost)`,
    );
    if (clean) {
      const check = backgroundCheck(files.db);
      stopCheck = check.stop;
      void check.result.then((r) => {
        verified = r.status === "ok";
        recordBackgroundCheck(ctx, files.db, r);
      });
    }
    await stopSignal();
    stopCheck();
    mcpTcp?.close();
    await listening.close();
    ctx.agents.close();
    await ctx.supervisor.settleGates();
    ctx.supervisor.close();
    ctx.writeOrDefer((ev) => ev.push({ kind: "daemon.stopped", subject: "daemon", data: { pid: process.pid } }));
    const unwritten = ctx.closeDeferred();
    if (unwritten) {
      log(
        `${unwritten} state writes could not be recorded (the disk is full); ` +
          "jobs' ends are read again from their status files at the next start, kill records are lost",
      );
    }
  } finally {
    stopCheck();
    db?.close();
    if (db && verified && !damaged()) recordCleanClose(files.db);
    unlock();
  }
}
