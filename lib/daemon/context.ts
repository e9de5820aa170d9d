/** The daemon's shared context: state, config, paths, and notification of committed changes. */
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import type { Observer } from "../agents/observer.ts";
import type { Integrity, SandboxMode } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import type { Config } from "../config.ts";
import { StdinQueue } from "../jobs/stdin.ts";
import type { Supervisor } from "../jobs/supervisor.ts";
import { GrowthWatch } from "../logs/read.ts";
import { type Paths, stateFiles } from "../paths.ts";
import type { Backend, Probe } from "../sandbox/backend.ts";
import type { Identity } from "../sandbox/identity.ts";
import { VmBackend } from "../sandbox/vm.ts";
import { appendEvent, pruneEvents } from "../state/events.ts";
import { storageError } from "../state/storage.ts";
import { type AuthzPolicy, DenialLog } from "./authz.ts";
import { Terminals } from "./handlers/tty.ts";
import { HealthLedger } from "./target-health.ts";
import { Walks } from "./walks.ts";

type Waiter = () => void;

/** Wakes waiters when events are committed or a job ends. */
export class Bus {
  private eventWaiters = new Set<Waiter>();
  private jobWaiters = new Map<string, Set<Waiter>>();

  /** Resolve on the next committed event, or after `ms`; returns a disposer too. */
  onEvent(fn: Waiter): () => void {
    this.eventWaiters.add(fn);
    return () => this.eventWaiters.delete(fn);
  }

  onJobEnd(id: string, fn: Waiter): () => void {
    const set = this.jobWaiters.get(id) ?? new Set<Waiter>();
    this.jobWaiters.set(id, set);
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.jobWaiters.delete(id);
    };
  }

  eventsCommitted(): void {
    const ws = [...this.eventWaiters];
    this.eventWaiters.clear();
    for (const w of ws) w();
  }

  jobEnded(id: string): void {
    const ws = this.jobWaiters.get(id);
    if (!ws) return;
    this.jobWaiters.delete(id);
    for (const w of ws) w();
  }
}

/** An event to record with a change. */
export interface PendingEvent {
  kind: string;
  subject: string;
  data: Record<string, unknown>;
}

/** A write kept for later because the state disk refused it (`Context.writeOrDefer`). */
interface Deferred {
  fn: (events: PendingEvent[]) => unknown;
  after?: (result: unknown) => void;
}

/** How the state database was checked this run and what the check found (GET /v1/ready). */
export type { Integrity };

/** How often writes kept for later are tried again. */
const RETRY_MS = 500;

export class Context {
  readonly bus = new Bus();
  /** The last write the state disk refused (cleared by the next one that succeeds). */
  storageFailure: { at: number; error: PlanterError } | null = null;
  private readonly deferred: Deferred[] = [];
  private retryTimer: Timer | null = null;
  private flushing = false;
  readonly logWatch: GrowthWatch;
  private writesSincePrune = 0;
  /** The vm backend (Linux; null elsewhere), made on first use from the config's `[vm]`. */
  private vmBackend: VmBackend | null | undefined;
  get vm(): VmBackend | null {
    if (this.vmBackend === undefined) {
      this.vmBackend =
        process.platform === "linux"
          ? new VmBackend({
              cacheDir: this.config.vm.cache_dir ?? join(this.paths.stateDir, "vm"),
              accel: this.config.vm.accel,
            })
          : null;
    }
    return this.vmBackend;
  }
  /** The platform sandbox backend and its probe, filled in at startup. */
  sandbox: { backend: Backend | null; probe: Probe } = { backend: null, probe: { ok: false } };
  /** Who may connect (filled in at startup from config [authz]). */
  authz: AuthzPolicy = { uids: [], gids: [], groupNames: [], strict: true };
  readonly denials = new DenialLog();
  /** Targets' health as reported by local users' clients, and each uid's report budget. */
  readonly targetHealth = new HealthLedger();
  /** Requests being handled right now (set by the server; reported by /v1/ready). */
  inflight: () => number = () => 0;
  /** Who a root peer's jobs run as (planterd root only), and why it is a fallback when it is one. */
  rootPeer: { identity: Identity; fallback: string | null } = {
    identity: { uid: 65534, gid: 65534, groups: [], user: "nobody", home: null },
    fallback: null,
  };
  /** The state database's check (lib/state/integrity.ts). */
  integrity: Integrity = { check: "start", status: "ok", message: null, ms: null };
  /** Set when the database failed its full check after planterd started serving: no new work is taken. */
  damaged: PlanterError | null = null;
  /** Workspace snapshots and reviews in progress, one at a time per tree (lib/daemon/walks.ts). */
  readonly walks = new Walks();
  /** Clients attached to terminal jobs (lib/daemon/handlers/tty.ts). */
  readonly terminals = new Terminals();
  /** Writes to jobs' stdin pipes, one after another per job (lib/jobs/stdin.ts). */
  readonly stdins = new StdinQueue();
  /** Set right after construction: the supervisor needs the context too. */
  supervisor!: Supervisor;
  /** The agent observer (lib/agents/observer.ts), set at startup. */
  agents!: Observer;

  constructor(
    readonly db: Database,
    readonly config: Config,
    readonly paths: Paths,
    readonly stream: string,
    readonly version: string,
  ) {
    this.logWatch = new GrowthWatch(config.logs.poll_ms);
  }

  /**
   * The database is damaged (its full check after start failed, or SQLite reported corruption on
   * a request): said on stderr, in an event when the database still takes one, and by /v1/ready;
   * from then on planterd takes no new work (lib/daemon/server.ts), and writes no clean-close
   * record, so its next start checks fully before serving. Returns the error requests get.
   */
  markDamaged(findings: string): PlanterError {
    if (this.damaged) return this.damaged;
    const db = stateFiles(this.paths.stateDir).db;
    this.damaged = new PlanterError(
      "E_UNAVAILABLE",
      `the state database ${db} failed its integrity check after planterd started: ${findings}`,
      {
        hint:
          "planterd takes no new jobs or cells and removes nothing; running jobs are still watched and can be killed. " +
          `Stop planterd, then restore the newest backup beside it (planter.db.v*.bak) or move ${db} aside ` +
          "(with its -wal and -shm files), and start it again (`planter doctor state` says which)",
      },
    );
    if (this.integrity.status !== "failed") this.integrity = { ...this.integrity, status: "failed", message: findings };
    console.error(`planterd: error: ${this.damaged.message}`);
    try {
      this.write((ev) => ev.push({ kind: "state.integrity_failed", subject: "daemon", data: { message: findings } }));
    } catch {
      // a damaged database may refuse the event too: stderr and /v1/ready still say it
    }
    return this.damaged;
  }

  get defaultMode(): SandboxMode {
    return this.config.sandbox.mode;
  }

  /**
   * Run `fn` in an immediate write transaction; the events it returns are recorded in the
   * same transaction, and waiters are woken after the commit.
   */
  write<T>(fn: (events: PendingEvent[]) => T): T {
    const events: PendingEvent[] = [];
    let result: T;
    try {
      result = this.db
        .transaction(() => {
          events.length = 0; // a retried fn starts afresh
          const r = fn(events);
          const at = Date.now();
          for (const e of events) appendEvent(this.db, e.kind, e.subject, e.data, at);
          return r;
        })
        .immediate();
    } catch (e) {
      const code = (e as { code?: unknown } | null)?.code;
      if (code === "SQLITE_CORRUPT" || code === "SQLITE_NOTADB") throw this.markDamaged((e as Error).message);
      // SQLITE_FULL / SQLITE_IOERR: the API says what is full and how much is free, not "a bug".
      const err = storageError(e, this.paths.stateDir);
      if (!err) throw e;
      this.storageFailure = { at: Date.now(), error: err };
      throw err;
    }
    if (this.storageFailure) {
      this.storageFailure = null;
      if (this.deferred.length) setImmediate(() => this.flushDeferred());
    }
    if (events.length) {
      this.writesSincePrune += events.length;
      if (this.writesSincePrune > 1000) {
        this.writesSincePrune = 0;
        try {
          this.db.transaction(() => pruneEvents(this.db, this.config.events.retain)).immediate();
        } catch (e) {
          // Pruning frees space; on a full disk it may itself fail, and waits for the next round.
          if (!storageError(e, this.paths.stateDir)) throw e;
        }
      }
      this.bus.eventsCommitted();
    }
    return result;
  }

  /**
   * Like `write`, but a write the state disk refuses is kept in memory and tried again (every
   * RETRY_MS, and after any write that succeeds) until it commits, in the order given; `after`
   * runs after the commit. Returns whether it committed now. Once one write waits, later ones
   * queue behind it, so an end is never recorded before the kill that caused it.
   */
  writeOrDefer<T>(fn: (events: PendingEvent[]) => T, after?: (result: T) => void): boolean {
    const d: Deferred = { fn, after: after as Deferred["after"] };
    if (!this.deferred.length) {
      try {
        const r = this.write(fn);
        after?.(r);
        return true;
      } catch (e) {
        if (!(e instanceof PlanterError) || this.storageFailure?.error !== e) throw e;
      }
    }
    this.deferred.push(d);
    this.scheduleRetry();
    return false;
  }

  /** Writes waiting for the state disk. */
  get deferredWrites(): number {
    return this.deferred.length;
  }

  private scheduleRetry(): void {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.flushDeferred();
    }, RETRY_MS);
  }

  /** Commit the writes kept for later, oldest first; stop at the first the disk still refuses. */
  flushDeferred(): void {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.deferred.length) {
        const d = this.deferred[0] as Deferred;
        let r: unknown;
        try {
          r = this.write(d.fn);
        } catch (e) {
          if (e instanceof PlanterError && this.storageFailure?.error === e) {
            this.scheduleRetry();
            return;
          }
          // Not the disk: trying again would fail the same way.
          console.error(`planterd: a deferred state write failed and is dropped: ${(e as Error).message}`);
        }
        this.deferred.shift();
        try {
          d.after?.(r);
        } catch (e) {
          console.error(`planterd: after a deferred state write: ${(e as Error).message}`);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /** Stop retrying (daemon shutdown): one last try, then say what stays unrecorded. */
  closeDeferred(): number {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.flushDeferred();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    return this.deferred.length;
  }
}
