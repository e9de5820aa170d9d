/**
 * The agent observer (#16), planterd's subsystem: it finds the tmux servers it may read, lists
 * their panes and recognises the agent CLIs in them, captures the screens of those panes and
 * classifies them (the poller), and takes every report — its own and those of hooks — through the
 * state engine (`ingest`). Every change of what an agent shows is stored with its record and as a
 * change a watch resumes from (lib/state/agents.ts). plans/agents.md has the design.
 *
 * Cadence: one tmux call per server per tick, for all of that server's agent panes due within the
 * next `poll_ms`. A pane is due every `fast` ms (0.4 × poll_ms) for 5 s after its state changed,
 * every `poll_ms` while its screen changes, every `idle` ms (2 × poll_ms) once it has been still
 * for a minute; a server without agents is listed every `topology` ms (5 × poll_ms), and the
 * socket dirs are read as often.
 */
import type { Database } from "bun:sqlite";
import { parseBody } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import {
  agentsStream,
  appendChange,
  changesAfter,
  deleteAgent,
  lastChange,
  loadAgents,
  pruneChanges,
  resumeAt,
  saveAgent,
} from "../state/agents.ts";
import { type AgentRecord, reduce, settle, toAgent, viewChanged } from "./engine.ts";
import {
  type Agent,
  type AgentChangeOp,
  AgentEventIn,
  type AgentKind,
  type AgentList,
  type AgentReportResult,
  type AgentState,
  type AgentWatchLine,
  HOOK_FRESH_MS,
  type RuntimeRef,
  runtimeId,
  type UnknownReason,
} from "./model.ts";
import { canWalk, type Found, findAgent, hostReader, type ProcReader, processOwner, procReader } from "./recognise.ts";
import { classify, type Verdict } from "./screens.ts";
import { defaultDirs, findSockets, haveTmux, type PaneInfo, type Socket, tick } from "./tmux.ts";

/** The observer's settings (config `[agents]`). */
export interface ObserverConfig {
  observe: boolean;
  /** Dirs whose sockets are tmux servers to read; null: tmux's defaults for this uid (every user's, as root). */
  tmux_dirs: string[] | null;
  tmux_sockets: string[];
  poll_ms: number;
}

/** Who may see an agent, by its owner's uid. */
export type CanSee = (owner: number | null) => boolean;

/** How long a gone agent is still listed (as `unknown`/`pane_gone`) before it is forgotten. */
export const GONE_RETAIN_MS = 10 * 60_000;
/** How many changes are kept for watchers to resume from. */
export const CHANGES_RETAIN = 10_000;
/** How many agents one uid may have reported into being (hooks of panes planterd does not see). */
export const MAX_REPORTED_PER_UID = 256;
/** How long a pane stays on the fast cadence after its state changed, and when a still screen is idle. */
const HOT_MS = 5000;
const STILL_MS = 60_000;

interface Entry {
  rec: AgentRecord;
  gone_at: number | null;
  /** Changed since it was last stored (only what no watcher is told of: updated_at, reports). */
  dirty: boolean;
}

interface PaneWatch {
  info: PaneInfo;
  /** `pane_pid:command` when its tree was last walked. */
  walked: string;
  found: Found | null;
  runtime_id: string | null;
  hash: bigint | number | null;
  verdict: Verdict | null;
  screenChanged: number;
  stateChanged: number;
  nextCapture: number;
  /** What the current screen says (its hash is `hash`), and whether it is an unknown not yet believed. */
  seen: Verdict | null;
  unsure: boolean;
}

interface Server {
  sock: Socket;
  /** The server process, "PID:START", once a tick saw it. */
  ref: string | null;
  panes: Map<string, PaneWatch>;
  nextAt: number;
  busy: boolean;
  /** Ticks that did not answer in a row (a backoff). */
  failures: number;
  ticked: boolean;
}

export interface ObserverDeps {
  db: Database;
  config: ObserverConfig;
  /** The job an agent runs in: its cell and owner (null: no such job). */
  job?: (id: string) => { cell: string; owner_uid: number | null } | null;
  proc?: ProcReader;
  now?: () => number;
  log?: (msg: string) => void;
}

export class Observer {
  readonly stream: string;
  private readonly db: Database;
  private readonly cfg: ObserverConfig;
  private readonly proc: ProcReader;
  private readonly now: () => number;
  private readonly log: (msg: string) => void;
  private readonly job: NonNullable<ObserverDeps["job"]>;
  private readonly entries = new Map<string, Entry>();
  private readonly servers = new Map<string, Server>();
  private readonly waiters = new Set<() => void>();
  private timer: Timer | null = null;
  private sweepTimer: Timer | null = null;
  private nextDiscovery = 0;
  private closed = false;
  private writesSincePrune = 0;
  private warned = new Set<string>();
  /** Records restored from the database that no tick or check has confirmed yet. */
  private unconfirmed = new Set<string>();
  private discovered = false;

  constructor(deps: ObserverDeps) {
    this.db = deps.db;
    this.cfg = deps.config;
    this.proc = deps.proc ?? hostReader();
    this.now = deps.now ?? Date.now;
    this.log = deps.log ?? ((m) => console.error(`planterd: agents: ${m}`));
    this.job = deps.job ?? (() => null);
    this.stream = agentsStream(this.db);
    const stored = loadAgents(this.db, (id, why) => this.log(`agent ${id} is not restored: ${why}`));
    for (const { record, gone_at } of stored) {
      this.entries.set(record.runtime_id, { rec: record, gone_at, dirty: false });
      if (gone_at === null) this.unconfirmed.add(record.runtime_id);
    }
  }

  // ---- cadence ------------------------------------------------------------------------------

  private get fastMs() {
    return Math.max(50, Math.round(this.cfg.poll_ms * 0.4));
  }
  private get idleMs() {
    return this.cfg.poll_ms * 2;
  }
  private get topologyMs() {
    return this.cfg.poll_ms * 5;
  }

  /** Start watching tmux (when `[agents] observe` is on and tmux is there) and the clock-driven changes. */
  start(): void {
    this.sweepTimer = setInterval(() => this.sweep(), 1000);
    this.sweepTimer.unref?.();
    if (!this.cfg.observe) return;
    if (!haveTmux()) {
      this.log("tmux is not on PATH: agents in tmux panes are not observed (hooks still report)");
      return;
    }
    if (this.proc === procReader && !canWalk()) {
      this.log("this kernel does not list a process's children (/proc/PID/task/TID/children): panes are not observed");
      return;
    }
    this.schedule(0);
  }

  /** Stop, and store what changed since the last write (updated_at, reports). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const dirty = [...this.entries.values()].filter((e) => e.dirty);
    if (!dirty.length) return;
    try {
      this.db.transaction(() => {
        for (const e of dirty) saveAgent(this.db, e.rec, e.gone_at);
      })();
    } catch (e) {
      this.log(`could not store ${dirty.length} agents at shutdown: ${(e as Error).message}`);
    }
  }

  private schedule(delay: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.loop(), Math.max(0, delay));
    this.timer.unref?.();
  }

  private loop(): void {
    this.timer = null;
    if (this.closed) return;
    const now = this.now();
    if (now >= this.nextDiscovery) this.discover(now);
    for (const s of this.servers.values()) {
      if (!s.busy && s.nextAt <= now) void this.tickServer(s);
    }
    let next = this.nextDiscovery;
    for (const s of this.servers.values()) if (!s.busy) next = Math.min(next, s.nextAt);
    this.schedule(next - this.now());
  }

  // ---- topology -----------------------------------------------------------------------------

  private discover(now: number): void {
    this.nextDiscovery = now + this.topologyMs;
    const self = process.getuid?.() ?? 0;
    const dirs = this.cfg.tmux_dirs ?? defaultDirs(self);
    const socks = findSockets(dirs, this.cfg.tmux_sockets, { self, checkDirNames: this.cfg.tmux_dirs === null });
    const seen = new Set(socks.map((s) => s.path));
    for (const sock of socks) {
      const known = this.servers.get(sock.path);
      if (known && known.sock.uid === sock.uid) continue;
      if (known) this.dropServer(known, now);
      this.servers.set(sock.path, {
        sock,
        ref: null,
        panes: new Map(),
        nextAt: now,
        busy: false,
        failures: 0,
        ticked: false,
      });
    }
    for (const s of [...this.servers.values()]) if (!seen.has(s.sock.path)) this.dropServer(s, now);
    if (!this.discovered) {
      this.discovered = true;
      // A restored agent of a tmux server that is not there any more is gone.
      for (const id of [...this.unconfirmed]) {
        const e = this.entries.get(id);
        if (e?.rec.runtime.tmux_socket && !seen.has(e.rec.runtime.tmux_socket)) this.gone(id, "server_gone", now);
      }
    }
  }

  /** A server that went away (its socket, or the server behind it): its agents are gone. */
  private dropServer(s: Server, now: number): void {
    this.servers.delete(s.sock.path);
    for (const p of s.panes.values()) if (p.runtime_id) this.gone(p.runtime_id, "server_gone", now);
    for (const id of [...this.unconfirmed]) {
      if (this.entries.get(id)?.rec.runtime.tmux_socket === s.sock.path) this.gone(id, "server_gone", now);
    }
  }

  private async tickServer(s: Server): Promise<void> {
    s.busy = true;
    try {
      await this.tickOnce(s);
    } catch (e) {
      this.warnOnce(`tick:${s.sock.path}`, `reading ${s.sock.path} failed: ${(e as Error).message}`);
      s.nextAt = this.now() + this.topologyMs;
    } finally {
      s.busy = false;
      if (!this.closed) this.schedule(0);
    }
  }

  private async tickOnce(s: Server): Promise<void> {
    const start = this.now();
    // The call is paid for once per server: every agent pane due within the next poll_ms rides it
    // (a change in one pane has its neighbours looked at sooner, for no extra spawn).
    const due = [...s.panes.values()]
      .filter((p) => p.runtime_id && p.nextCapture <= start + this.cfg.poll_ms)
      .sort((a, b) => a.nextCapture - b.nextCapture)
      .map((p) => p.info.pane_id);
    const r = await tick(s.sock, due);
    if (this.closed || this.servers.get(s.sock.path) !== s) return;
    const now = this.now();
    if ("error" in r) {
      if (r.error === "gone") return this.dropServer(s, now);
      this.warnOnce(`unreachable:${s.sock.path}`, `${s.sock.path} does not answer: ${r.message || "no reason given"}`);
      return this.unreachable(s, now);
    }
    s.failures = 0;
    if (!this.identify(s, r.panes[0]?.server_pid, now)) {
      s.nextAt = now + this.topologyMs;
      return;
    }
    this.topology(s, r.panes, now);
    for (const [paneId, text] of r.screens) {
      const p = s.panes.get(paneId);
      if (p?.runtime_id && p.found) this.screen(p, text, now);
    }
    if (!s.ticked) {
      s.ticked = true;
      // Restored agents of this server that it no longer shows are gone.
      for (const id of [...this.unconfirmed]) {
        const e = this.entries.get(id);
        if (e?.rec.runtime.tmux_socket === s.sock.path) this.gone(id, "pane_gone", now);
      }
    }
    const agentPanes = [...s.panes.values()].filter((p) => p.runtime_id);
    s.nextAt = agentPanes.length ? Math.min(...agentPanes.map((p) => p.nextCapture)) : now + this.topologyMs;
  }

  /** A server that did not answer: its agents are `unknown`/`target_unreachable`, and it is asked less often. */
  private unreachable(s: Server, now: number): void {
    s.failures++;
    for (const p of s.panes.values()) {
      if (p.runtime_id && p.found)
        this.poll(p.runtime_id, p.found, now, "unreachable", "unknown", "target_unreachable", null);
    }
    s.nextAt = now + Math.min(this.topologyMs, this.cfg.poll_ms * 2 ** Math.min(s.failures, 5));
  }

  /**
   * The server behind a socket: its process must be the socket owner's (that uid owns its agents);
   * a new server on the same socket (a restart) makes every pane a new one. False: not read.
   */
  private identify(s: Server, pid: number | undefined, now: number): boolean {
    if (pid === undefined) return true;
    const facts = this.proc.facts(pid);
    if (!facts || facts.uid !== s.sock.uid) {
      this.warnOnce(
        `owner:${s.sock.path}`,
        `${s.sock.path}: its server (pid ${pid}) is not the socket owner's; not read`,
      );
      return false;
    }
    const ref = `${pid}:${facts.start}`;
    if (s.ref && ref !== s.ref) {
      for (const p of s.panes.values()) if (p.runtime_id) this.gone(p.runtime_id, "server_gone", now);
      s.panes.clear();
    }
    s.ref = ref;
    return true;
  }

  /** The panes of a tick: new ones walked, changed ones walked again, gone ones' agents gone. */
  private topology(s: Server, panes: PaneInfo[], now: number): void {
    const seen = new Set<string>();
    for (const info of panes) {
      seen.add(info.pane_id);
      this.pane(s, info, now);
    }
    for (const [id, p] of s.panes) {
      if (seen.has(id)) continue;
      if (p.runtime_id) this.gone(p.runtime_id, "pane_gone", now);
      s.panes.delete(id);
    }
  }

  /**
   * One pane of a tick. Its tree is walked again only when its process or foreground command
   * changed, or its agent's process is gone: a pane whose agent changed is another runtime.
   */
  private pane(s: Server, info: PaneInfo, now: number): void {
    let p = s.panes.get(info.pane_id);
    if (!p) {
      p = {
        info,
        walked: "",
        found: null,
        runtime_id: null,
        hash: null,
        verdict: null,
        screenChanged: now,
        stateChanged: now,
        nextCapture: now,
        seen: null,
        unsure: false,
      };
      s.panes.set(info.pane_id, p);
    }
    const moved =
      p.info.session !== info.session ||
      p.info.window !== info.window ||
      p.info.index !== info.index ||
      p.info.title !== info.title;
    p.info = info;
    const key = `${info.pane_pid}:${info.command}:${info.dead}`;
    const lost = p.found !== null && !this.proc.alive(p.found.process);
    if (key === p.walked && !lost) {
      if (p.runtime_id && moved) this.repane(p.runtime_id, paneOf(info), now);
      return;
    }
    p.walked = key;
    const found = info.dead ? null : findAgent(info.pane_pid, this.proc);
    const runtime: RuntimeRef | null = found
      ? { tmux_socket: s.sock.path, server: s.ref, pane_id: info.pane_id, process: found.process, job_id: null }
      : null;
    const id = runtime ? runtimeId(runtime) : null;
    if (id === p.runtime_id) return;
    if (p.runtime_id) this.gone(p.runtime_id, "pane_gone", now);
    Object.assign(p, { runtime_id: id, found, hash: null, verdict: null, seen: null, unsure: false });
    Object.assign(p, { stateChanged: now, nextCapture: now });
    if (runtime && found) this.appear(runtime, found, s.sock.uid, paneOf(info), now);
  }

  /**
   * A captured screen: classified (again only when it changed), reported, the pane's next capture
   * set. A screen the rules do not know counts only when two captures in a row say so: a CLI
   * caught in the middle of a redraw, or one that has not drawn yet, is not an unknown agent.
   */
  private screen(p: PaneWatch, text: string, now: number): void {
    const hash = Bun.hash(text);
    const changed = hash !== p.hash;
    p.hash = hash;
    if (changed) p.screenChanged = now;
    const v = changed || !p.seen ? classify((p.found as Found).agent, text) : p.seen;
    p.seen = v;
    const doubt = v.state === "unknown" && p.verdict?.state !== "unknown";
    if (doubt && !p.unsure) p.unsure = true;
    else {
      p.unsure = false;
      if (!p.verdict || v.state !== p.verdict.state || v.reason !== p.verdict.reason) p.stateChanged = now;
      p.verdict = v;
    }
    const shown = p.verdict;
    if (shown)
      this.poll(p.runtime_id as string, p.found as Found, now, shown.rule, shown.state, shown.reason, shown.detail);
    const every =
      now - p.stateChanged < HOT_MS ? this.fastMs : now - p.screenChanged < STILL_MS ? this.cfg.poll_ms : this.idleMs;
    p.nextCapture = now + every;
  }

  // ---- the engine's side ------------------------------------------------------------------------

  /** A runtime the topology found: a record (unknown, no signal) unless it is known (restored, or from a hook). */
  private appear(runtime: RuntimeRef, found: Found, owner: number, pane: Agent["pane"], now: number): void {
    const id = runtimeId(runtime);
    this.unconfirmed.delete(id);
    const known = this.entries.get(id);
    if (known) {
      if (JSON.stringify(known.rec.pane) !== JSON.stringify(pane)) this.repane(id, pane, now);
      return;
    }
    const event: AgentEventIn = {
      agent: found.agent,
      source: "poller",
      runtime,
      kind: "recognised",
      state: "unknown",
      reason: "no_signal",
      at: now,
    };
    this.apply(event, now, { owner_uid: owner, pane });
  }

  private repane(id: string, pane: Agent["pane"], now: number): void {
    const e = this.entries.get(id);
    if (!e) return;
    const before = e.rec;
    e.rec = { ...e.rec, pane };
    if (viewChanged(before, e.rec)) this.store(e, "upsert", now);
    else e.dirty = true;
  }

  /** The poller's report on a runtime. */
  private poll(
    id: string,
    found: Found,
    now: number,
    kind: string,
    state: AgentState,
    reason: UnknownReason | null,
    detail: string | null,
  ): void {
    const e = this.entries.get(id);
    if (!e) return;
    this.unconfirmed.delete(id);
    const event: AgentEventIn = {
      agent: found.agent,
      source: "poller",
      runtime: e.rec.runtime,
      kind,
      state,
      at: now,
      ...(reason ? { reason } : {}),
      ...(detail ? { detail } : {}),
    };
    this.apply(event, now, { owner_uid: e.rec.owner_uid });
  }

  /** A runtime is gone (its pane, its process, its server): final; it is forgotten GONE_RETAIN_MS later. */
  private gone(id: string, kind: string, now: number): void {
    this.unconfirmed.delete(id);
    const e = this.entries.get(id);
    if (!e || e.gone_at !== null) return;
    e.gone_at = now;
    const event: AgentEventIn = {
      agent: e.rec.agent,
      source: "poller",
      runtime: e.rec.runtime,
      kind,
      state: "unknown",
      reason: "pane_gone",
      at: now,
    };
    const before = e.rec;
    e.rec = reduce(e.rec, event, now).record;
    // Stored either way: gone_at changed even when what the agent shows did not.
    const shown = viewChanged(before, e.rec) || before.state_version !== e.rec.state_version;
    this.store(e, shown ? "upsert" : null, now);
  }

  /**
   * Take one event through the engine. Valid events only (callers parse); `init` is used when the
   * runtime is new. Stores and announces a change of what the agent shows.
   */
  private apply(
    event: AgentEventIn,
    now: number,
    init: { owner_uid: number | null; pane?: Agent["pane"]; cell?: string | null },
  ): AgentReportResult {
    const id = runtimeId(event.runtime);
    const e = this.entries.get(id);
    const { record, outcome } = reduce(e?.rec ?? null, event, now, init);
    const entry: Entry = e ?? { rec: record, gone_at: null, dirty: false };
    const before = e?.rec ?? null;
    entry.rec = record;
    if (!e) this.entries.set(id, entry);
    const changed = !before || viewChanged(before, record) || before.state_version !== record.state_version;
    if (changed) this.store(entry, "upsert", now);
    else if (before !== record) entry.dirty = true;
    return { outcome, changed, agent: toAgent(record) };
  }

  /** Store a record (and, with `op`, a change watchers are told of), then wake the watchers. */
  private store(e: Entry, op: AgentChangeOp | null, now: number): void {
    try {
      this.db
        .transaction(() => {
          if (op === "remove") deleteAgent(this.db, e.rec.runtime_id);
          else saveAgent(this.db, e.rec, e.gone_at);
          if (op) {
            appendChange(this.db, {
              at: now,
              runtime_id: e.rec.runtime_id,
              op,
              owner_uid: e.rec.owner_uid,
              agent: toAgent(e.rec),
            });
          }
        })
        .immediate();
      e.dirty = false;
    } catch (err) {
      // A full or failing disk: what agents show stays right in memory; the change is not resumable.
      e.dirty = true;
      this.warnOnce("store", `could not store an agent's change: ${(err as Error).message}`);
      return;
    }
    if (op && ++this.writesSincePrune >= 1000) {
      this.writesSincePrune = 0;
      try {
        this.db.transaction(() => pruneChanges(this.db, CHANGES_RETAIN)).immediate();
      } catch {
        // pruning waits for the next round
      }
    }
    if (op) {
      const ws = [...this.waiters];
      this.waiters.clear();
      for (const w of ws) w();
    }
  }

  /** Clock-driven changes (a hook goes stale, completed turns idle), processes of reported runtimes, gone ones forgotten. */
  private sweep(): void {
    const now = this.now();
    for (const [id, e] of [...this.entries]) {
      if (e.gone_at !== null) {
        if (now - e.gone_at >= GONE_RETAIN_MS) {
          this.entries.delete(id);
          this.store(e, "remove", now);
        }
        continue;
      }
      // A runtime no tmux server shows (a job's, a hook's of a pane not watched): its process is its life.
      const watched = e.rec.runtime.tmux_socket !== null && this.servers.has(e.rec.runtime.tmux_socket);
      if (!watched && (!this.cfg.observe || this.discovered || e.rec.runtime.tmux_socket === null)) {
        if (processOwner(e.rec.runtime.process, this.proc) === null) {
          this.gone(id, "process_gone", now);
          continue;
        }
        this.unconfirmed.delete(id);
      }
      if (!this.timed(e.rec, now)) continue;
      const next = settle(e.rec, now);
      if (next === e.rec) continue;
      const changed = viewChanged(e.rec, next) || next.state_version !== e.rec.state_version;
      e.rec = next;
      if (changed) this.store(e, "upsert", now);
      else e.dirty = true;
    }
  }

  /**
   * Whether time alone may change a record now: a hook or notify report that is fresh or just went
   * stale (the poller's word then counts), or a completed turn (it turns idle). Every other record
   * changes only with a report, which settles it anyway.
   */
  private timed(rec: AgentRecord, now: number): boolean {
    if (rec.state === "completed") return true;
    const recent = (at: number | undefined) => at !== undefined && now - at <= HOOK_FRESH_MS + 2000;
    return recent(rec.reports.hook?.at) || recent(rec.reports.notify?.at);
  }

  private warnOnce(key: string, msg: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    if (this.warned.size > 1000) this.warned.clear();
    this.log(msg);
  }

  // ---- what the API and part 2 use -----------------------------------------------------------

  /**
   * Ingest one report (a hook's, Codex's notify, a planter job's channel): validated, deduplicated,
   * ordered, decided. `owner_uid` owns the runtime when it is new (the caller has checked that the
   * reporter may speak for it: lib/agents/access.ts). Throws E_BAD_REQUEST for an invalid event,
   * E_CONFLICT when `owner_uid` already has MAX_REPORTED_PER_UID agents.
   */
  ingest(input: unknown, opts: { owner_uid: number | null }): AgentReportResult {
    const event = parseBody(AgentEventIn, input, "agent event");
    const now = this.now();
    const id = runtimeId(event.runtime);
    const known = this.entries.get(id);
    if (!known) {
      let mine = 0;
      for (const e of this.entries.values()) if (e.rec.owner_uid === opts.owner_uid && e.gone_at === null) mine++;
      if (mine >= MAX_REPORTED_PER_UID) {
        throw new PlanterError("E_CONFLICT", `uid ${opts.owner_uid} already has ${mine} agents`, {
          hint: "agents that are gone are forgotten after 10 minutes",
        });
      }
    }
    const job = event.runtime.job_id === null ? null : this.job(event.runtime.job_id);
    return this.apply(event, now, { owner_uid: known?.rec.owner_uid ?? opts.owner_uid, cell: job?.cell ?? null });
  }

  /** One agent's record (for the access checks). */
  record(id: string): AgentRecord | null {
    return this.entries.get(id)?.rec ?? null;
  }

  /** The cursor of now: a watch from it sees only what changes next. */
  cursor(): string {
    return `${this.stream}:${lastChange(this.db)}`;
  }

  /** The agents `canSee` allows, filtered and in a stable order (socket, session, window, pane; then job). */
  list(canSee: CanSee, filter: { state?: AgentState; agent?: AgentKind; job?: string } = {}): AgentList {
    const agents = [...this.entries.values()]
      .filter((e) => canSee(e.rec.owner_uid))
      .map((e) => toAgent(e.rec))
      .filter(
        (a) =>
          (!filter.state || a.state === filter.state) &&
          (!filter.agent || a.agent === filter.agent) &&
          (!filter.job || a.runtime.job_id === filter.job),
      )
      .sort(order);
    return { agents, cursor: this.cursor() };
  }

  /**
   * A watch: a snapshot (or a reset and a snapshot) unless `cursor` resumes, then every change
   * `canSee` allows as it happens, until `signal` aborts. A malformed cursor is refused now
   * (E_BAD_REQUEST), before the stream starts.
   */
  watch(
    cursor: string | undefined,
    canSee: CanSee,
  ): (write: (line: AgentWatchLine) => boolean, signal: AbortSignal) => Promise<void> {
    const resume = cursor === undefined ? null : resumeAt(this.db, this.stream, cursor);
    return (write, signal) => this.follow(resume, canSee, write, signal);
  }

  private async follow(
    resume: ReturnType<typeof resumeAt> | null,
    canSee: CanSee,
    write: (line: AgentWatchLine) => boolean,
    signal: AbortSignal,
  ): Promise<void> {
    let after: number;
    if (resume && "seq" in resume) after = resume.seq;
    else {
      if (resume) write({ type: "reset", reason: resume.reset, message: RESET_MESSAGES[resume.reset] });
      const snap = this.list(canSee);
      after = Number(snap.cursor.slice(snap.cursor.indexOf(":") + 1));
      write({ type: "snapshot", cursor: snap.cursor, agents: snap.agents });
    }
    while (!signal.aborted) {
      const batch = changesAfter(this.db, after, 1000);
      for (const c of batch) {
        after = c.seq;
        if (canSee(c.owner_uid)) write({ type: "delta", cursor: `${this.stream}:${c.seq}`, op: c.op, agent: c.agent });
      }
      if (batch.length) continue;
      // Pruned while this watcher was behind: it cannot be resumed exactly.
      if (after < lastChange(this.db) && !changesAfter(this.db, after, 1).length) break;
      await new Promise<void>((resolve) => {
        const done = () => {
          this.waiters.delete(done);
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.waiters.add(done);
        signal.addEventListener("abort", done, { once: true });
      });
    }
  }
}

const RESET_MESSAGES: Record<"foreign" | "expired" | "ahead", string> = {
  foreign: "the cursor is another planterd's (or another database's): starting again from a snapshot",
  expired: "the changes after the cursor were pruned: starting again from a snapshot",
  ahead: "the cursor is ahead of the newest change (the database was restored?): starting again from a snapshot",
};

function paneOf(info: PaneInfo): Agent["pane"] {
  return { session: info.session, window: info.window, index: info.index, title: info.title };
}

function order(a: Agent, b: Agent): number {
  const key = (x: Agent) =>
    [
      x.runtime.tmux_socket ?? "~",
      x.pane?.session ?? "~",
      String(x.pane?.window ?? 0).padStart(6, "0"),
      String(x.pane?.index ?? 0).padStart(6, "0"),
      x.runtime.job_id ?? "",
      x.runtime_id,
    ].join("\0");
  const ka = key(a);
  const kb = key(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
