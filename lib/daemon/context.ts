/** The daemon's shared context: state, config, paths, and notification of committed changes. */
import type { Database } from "bun:sqlite";
import type { SandboxMode } from "../api/contract.ts";
import type { Config } from "../config.ts";
import type { Supervisor } from "../jobs/supervisor.ts";
import { GrowthWatch } from "../logs/read.ts";
import type { Paths } from "../paths.ts";
import type { Backend, Probe } from "../sandbox/backend.ts";
import type { Identity } from "../sandbox/identity.ts";
import { appendEvent, pruneEvents } from "../state/events.ts";
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

export class Context {
  readonly bus = new Bus();
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
    const result = this.db
      .transaction(() => {
        const r = fn(events);
        const at = Date.now();
        for (const e of events) appendEvent(this.db, e.kind, e.subject, e.data, at);
        return r;
      })
      .immediate();
    if (events.length) {
      this.writesSincePrune += events.length;
      if (this.writesSincePrune > 1000) {
        this.writesSincePrune = 0;
        this.db.transaction(() => pruneEvents(this.db, this.config.events.retain)).immediate();
      }
      this.bus.eventsCommitted();
    }
    return result;
  }
}
