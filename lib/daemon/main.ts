/** planterd: open state, re-adopt jobs, serve the API until SIGTERM/SIGINT. */
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";
import { loadConfig } from "../config.ts";
import { isAlive, startTime } from "../jobs/proc.ts";
import { Supervisor } from "../jobs/supervisor.ts";
import { type Paths, resolvePaths, SOCKET_PATH_MAX, socketDir, stateFiles } from "../paths.ts";
import { probePlatform } from "../sandbox/index.ts";
import { openState, streamId } from "../state/db.ts";
import { BUILD } from "../version.ts";
import { Context } from "./context.ts";
import { ensureCell } from "./handlers/cells.ts";
import { routes } from "./routes.ts";
import { ApiServer, activationFd } from "./server.ts";

export interface DaemonOptions {
  socket?: string;
  stateDir?: string;
  config?: string;
}

const log = (msg: string) => console.error(`planterd: ${msg}`);

/** Take the state dir's pid lock: one daemon per state dir. Returns a release function. */
function lockStateDir(pidFile: string): () => void {
  const me = `${process.pid} ${startTime(process.pid) ?? ""}\n`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(pidFile, "wx", 0o600);
      writeSync(fd, me);
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(pidFile, "utf8") === me) unlinkSync(pidFile);
        } catch {
          // gone already
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const [pidText, ...start] = readFileSync(pidFile, "utf8").trim().split(" ");
      const pid = Number(pidText);
      if (Number.isInteger(pid) && pid > 0 && isAlive(pid, start.join(" ") || null)) {
        throw new PlanterError(
          "E_UNAVAILABLE",
          `another planterd (pid ${pid}) is using the state dir ${pidFile.replace(/\/[^/]+$/, "")}`,
          {
            hint: `stop it first: kill ${pid}`,
          },
        );
      }
      unlinkSync(pidFile); // stale lock of a daemon that is gone
    }
  }
  throw new PlanterError("E_UNAVAILABLE", `cannot lock ${pidFile}`);
}

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
  mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
  const files = stateFiles(paths.stateDir);
  mkdirSync(files.jobs, { recursive: true, mode: 0o700 });
  mkdirSync(files.cells, { recursive: true, mode: 0o700 });
  const unlock = lockStateDir(files.pidFile);
  let db: ReturnType<typeof openState> | null = null;
  try {
    db = openState(files.db);
    const ctx = new Context(db, config, paths, streamId(db), BUILD.version);
    ctx.supervisor = new Supervisor(ctx);
    ctx.sandbox = await probePlatform();
    const adopted = ctx.supervisor.adoptAll();
    ensureCell(ctx, config.jobs.default_cell);

    if (fd === null) {
      const dir = socketDir(paths.socketPath);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    }
    // Inherited LISTEN_* variables belong to this process only.
    delete process.env.LISTEN_FDS;
    delete process.env.LISTEN_PID;
    delete process.env.LISTEN_FDNAMES;
    const server = new ApiServer(ctx, routes());
    const listening = await server.listen(paths.socketPath, fd);
    ctx.write((ev) =>
      ev.push({
        kind: "daemon.started",
        subject: "daemon",
        data: { pid: process.pid, version: BUILD.version, via: listening.via, ...adopted },
      }),
    );
    log(
      `ready on ${paths.socketPath} (${listening.via === "activation" ? "socket-activated" : "bound"}; state ${paths.stateDir}; ` +
        `adopted ${adopted.adopted}, recorded ${adopted.finished} ended, ${adopted.lost} lost)`,
    );
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        log(`${sig}: stopping (jobs keep running)`);
        resolve();
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
    await listening.close();
    ctx.supervisor.close();
    ctx.write((ev) => ev.push({ kind: "daemon.stopped", subject: "daemon", data: { pid: process.pid } }));
  } finally {
    db?.close();
    unlock();
  }
}
