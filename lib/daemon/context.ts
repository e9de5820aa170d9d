/** The daemon's shared context: state, config, paths, and notification of committed changes. */
import type { Database } from "bun:sqlite";
import type { SandboxMode } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import type { Config } from "../config.ts";
import type { Supervisor } from "../jobs/supervisor.ts";
import { GrowthWatch } from "../logs/read.ts";
import type { Paths } from "../paths.ts";
import type { Backend, Probe } from "../sandbox/backend.ts";
import type { Identity } from "../sandbox/identity.ts";
import { appendEvent, pruneEvents } from "../state/events.ts";
import { storageError } from "../state/storage.ts";
import { type AuthzPolicy, DenialLog } from "./authz.ts";

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
  /** The platform sandbox backend and its probe, filled in at startup. */
  sandbox: { backend: Backend | null; probe: Probe } = { backend: null, probe: { ok: false } };
  /** Who may connect (filled in at startup from config [authz]). */
  authz: AuthzPolicy = { uids: [], gids: [], groupNames: [], strict: true };
  readonly denials = new DenialLog();
  /** Requests being handled right now (set by the server; reported by /v1/ready). */
  inflight: () => number = () => 0;
  /** Who a root peer's jobs run as (planterd root only), and why it is a fallback when it is one. */
  rootPeer: { identity: Identity; fallback: string | null } = {
    identity: { uid: 65534, gid: 65534, groups: [], user: "nobody", home: null },
    fallback: null,
  };
  /** Set right after construction: the supervisor needs the context too. */
  supervisor!: Supervisor;

  constructor(
    readonly db: Database,
    readonly config: Config,
    readonly paths: Paths,
    readonly stream: string,
    readonly version: string,
  ) {
    this.logWatch = new GrowthWatch(config.logs.poll_ms);
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
