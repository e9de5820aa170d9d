/**
 * The state engine: a pure reducer from reports to an agent's state. Each source's latest report
 * is kept (the latest by `source_seq`, then `at`, then a fixed order of the rest, so any order of
 * the same events keeps the same one, and a repeat changes nothing); the state is then decided
 * from those reports and the observer's clock alone:
 *
 * 1. the poller saw the pane or its process go (`unknown`/`pane_gone`): that is final;
 * 2. a fresh hook report (at most HOOK_FRESH_MS old), else a fresh notify report, decides;
 * 3. otherwise the newest report decides (equal times: hook, notify, poller; then precedence) —
 *    the poller takes over once hook data is older than HOOK_FRESH_MS, if it has looked since;
 *    when the poller then cannot tell (`unknown`) but a hook or notify said something, the state
 *    is `unknown` with reason `stale`;
 * 4. nothing reported: `unknown`/`no_signal`; `completed` turns `idle` COMPLETED_TO_IDLE_MS after
 *    it began.
 *
 * `since`, `state_version` and the idle timer's start are the observer's history (when it saw a
 * change), not a function of the reports: a replay in another order may count other changes.
 * plans/agents.md has the reasoning.
 */
import {
  AGENT_STATES,
  type Agent,
  type AgentEventIn,
  type AgentKind,
  type AgentReportResult,
  type AgentState,
  COMPLETED_TO_IDLE_MS,
  HOOK_FRESH_MS,
  type RuntimeRef,
  runtimeId,
  SOURCES,
  type Source,
  type UnknownReason,
} from "./model.ts";

/** One source's latest report about a runtime. */
export interface Report {
  agent: AgentKind;
  state: AgentState;
  reason: UnknownReason | null;
  /** When it happened (the source's clock, never later than when the observer took it). */
  at: number;
  seq: number | null;
  kind: string;
  detail: string | null;
}

/** Everything the observer keeps about one runtime: its reports and the view decided from them. */
export interface AgentRecord {
  runtime_id: string;
  runtime: RuntimeRef;
  /** Whose agent it is: who may see it and report on it (null: root only). */
  owner_uid: number | null;
  reports: Partial<Record<Source, Report>>;
  /** The latest dedupe keys taken (at most DEDUPE_KEEP). */
  dedupe: string[];
  agent: AgentKind;
  state: AgentState;
  reason: UnknownReason | null;
  since: number;
  updated_at: number;
  source: Source;
  detail: string | null;
  state_version: number;
  /** When the current run of `completed` began (the idle timer), null outside it. */
  completed_since: number | null;
  pane: Agent["pane"];
  cell: string | null;
}

/** How many dedupe keys a runtime remembers. */
export const DEDUPE_KEEP = 64;

const stateRank = (s: AgentState) => AGENT_STATES.indexOf(s);
const sourceRank = (s: Source) => SOURCES.indexOf(s);
const cmp = (a: string | null, b: string | null) => ((a ?? "") < (b ?? "") ? -1 : (a ?? "") > (b ?? "") ? 1 : 0);

/**
 * Whether report `a` comes after `b` of the same source (> 0), before (< 0), or is the same (0).
 * A total order: by `seq` (a report without one before any with one), then `at`, then the more
 * urgent state, then the rest, so the latest of any set of reports is one and the same.
 */
export function compareReports(a: Report, b: Report): number {
  return (
    (a.seq ?? -1) - (b.seq ?? -1) ||
    a.at - b.at ||
    stateRank(b.state) - stateRank(a.state) ||
    cmp(a.reason, b.reason) ||
    cmp(a.kind, b.kind) ||
    cmp(a.detail, b.detail) ||
    cmp(a.agent, b.agent)
  );
}

/** What decides the state now: a report and its source, or null (nothing said anything). */
interface Decision {
  source: Source;
  report: Report;
  state: AgentState;
  reason: UnknownReason | null;
  /**
   * Not before this time could it decide: the newest hook or notify report was fresh until then
   * (the poller's report that takes over may be older than that moment).
   */
  from?: number;
}

/** Whether `a` decides over `b` among reports that are not fresh: the newer; at equal times hook, notify, poller; then precedence. */
function preferred(a: Decision, b: Decision): boolean {
  return (
    (a.report.at - b.report.at ||
      sourceRank(b.source) - sourceRank(a.source) ||
      stateRank(b.state) - stateRank(a.state)) > 0
  );
}

/** The state the reports give at `now` (before `completed` turns `idle`). */
export function decide(reports: AgentRecord["reports"], now: number): Decision | null {
  const poller = reports.poller;
  if (poller?.state === "unknown" && poller.reason === "pane_gone") {
    return { source: "poller", report: poller, state: "unknown", reason: "pane_gone" };
  }
  for (const source of ["hook", "notify"] as const) {
    const r = reports[source];
    if (r && now - r.at <= HOOK_FRESH_MS) return { source, report: r, state: r.state, reason: r.reason };
  }
  let best: Decision | null = null;
  let from: number | undefined;
  for (const source of SOURCES) {
    const r = reports[source];
    if (!r) continue;
    if (source !== "poller") from = Math.max(from ?? Number.NEGATIVE_INFINITY, r.at + HOOK_FRESH_MS);
    const d: Decision = { source, report: r, state: r.state, reason: r.reason };
    if (!best || preferred(d, best)) best = d;
  }
  if (best && from !== undefined) best = { ...best, from };
  if (best?.source === "poller" && best.state === "unknown" && (reports.hook || reports.notify)) {
    // The poller has looked since the last hook or notify report and cannot tell: that report is stale.
    return { ...best, reason: "stale" };
  }
  return best;
}

/** The record's view as `GET /v1/agents` shows it. */
export function toAgent(r: AgentRecord): Agent {
  return {
    runtime_id: r.runtime_id,
    runtime: r.runtime,
    agent: r.agent,
    state: r.state,
    reason: r.reason,
    since: r.since,
    updated_at: r.updated_at,
    source: r.source,
    detail: r.detail,
    pane: r.pane,
    cell: r.cell,
    state_version: r.state_version,
  };
}

/** A new record for a runtime nothing has reported on yet (`unknown`/`no_signal`). */
export function newRecord(
  runtime: RuntimeRef,
  agent: AgentKind,
  now: number,
  extra: { owner_uid: number | null; pane?: Agent["pane"]; cell?: string | null },
): AgentRecord {
  return {
    runtime_id: runtimeId(runtime),
    runtime,
    owner_uid: extra.owner_uid,
    reports: {},
    dedupe: [],
    agent,
    state: "unknown",
    reason: "no_signal",
    since: now,
    updated_at: now,
    source: "poller",
    detail: null,
    state_version: 0,
    completed_since: null,
    pane: extra.pane ?? null,
    cell: extra.cell ?? null,
  };
}

/** Where a pane is (its title left out: agents animate it while they work). */
const place = (p: Agent["pane"]) => (p ? `${p.session}\0${p.window}\0${p.index}` : "");

/**
 * Whether a record's view differs from another's in anything a watcher is told of: not the times,
 * and not the pane's title alone (it is kept, and shown with the next change).
 */
export function viewChanged(a: AgentRecord, b: AgentRecord): boolean {
  return (
    a.state !== b.state ||
    a.reason !== b.reason ||
    a.source !== b.source ||
    a.detail !== b.detail ||
    a.agent !== b.agent ||
    a.cell !== b.cell ||
    place(a.pane) !== place(b.pane)
  );
}

/** The record with its view decided again at `now` (for time alone: a hook goes stale, completed turns idle). */
export function settle(rec: AgentRecord, now: number): AgentRecord {
  const d = decide(rec.reports, now);
  if (!d) return rec;
  let state = d.state;
  let completedSince: number | null = null;
  let begin = Math.min(now, Math.max(d.report.at, rec.since, d.from ?? 0));
  if (state === "completed") {
    const running = (rec.state === "completed" || rec.state === "idle") && rec.completed_since !== null;
    completedSince = running ? (rec.completed_since as number) : Math.min(now, d.report.at);
    if (now - completedSince >= COMPLETED_TO_IDLE_MS) {
      state = "idle";
      begin = completedSince + COMPLETED_TO_IDLE_MS;
    }
  }
  const reason = state === "unknown" ? (d.reason ?? "no_signal") : null;
  const updated = Math.max(rec.updated_at, ...Object.values(rec.reports).map((r) => (r as Report).at));
  const changed = state !== rec.state || reason !== rec.reason;
  const next: AgentRecord = {
    ...rec,
    agent: d.report.agent,
    state,
    reason,
    source: d.source,
    detail: d.report.detail,
    since: changed ? begin : rec.since,
    updated_at: updated,
    state_version: changed ? rec.state_version + 1 : rec.state_version,
    completed_since: completedSince,
  };
  return viewChanged(rec, next) || changed || next.updated_at !== rec.updated_at ? next : rec;
}

/** What one event did: taken (the record may have changed), or dropped as a repeat or as older news. */
export type Outcome = AgentReportResult["outcome"];

/**
 * Apply one event to a runtime's record (null: the runtime is new) at `now`. Pure: the record
 * passed in is not changed. The event must be valid (`AgentEventIn`) and about this runtime.
 */
export function reduce(
  rec: AgentRecord | null,
  event: AgentEventIn,
  now: number,
  init: { owner_uid: number | null; pane?: Agent["pane"]; cell?: string | null } = { owner_uid: null },
): { record: AgentRecord; outcome: Outcome } {
  const base = rec ?? newRecord(event.runtime, event.agent, now, init);
  if (event.dedupe_key !== undefined && base.dedupe.includes(event.dedupe_key)) {
    return { record: base, outcome: "duplicate" };
  }
  const report: Report = {
    agent: event.agent,
    state: event.state,
    reason: event.state === "unknown" ? (event.reason ?? "no_signal") : null,
    // A source's clock may run ahead (or lie): nothing is fresher than now.
    at: Math.min(event.at, now),
    seq: event.source_seq ?? null,
    kind: event.kind,
    detail: event.detail ?? null,
  };
  const prev = base.reports[event.source];
  const order = prev ? compareReports(report, prev) : 1;
  const dedupe = event.dedupe_key === undefined ? base.dedupe : [...base.dedupe, event.dedupe_key].slice(-DEDUPE_KEEP);
  if (order <= 0) {
    // Older news (or the same): nothing changes but the key, so its repeat is known as one.
    return {
      record: dedupe === base.dedupe ? base : { ...base, dedupe },
      outcome: order === 0 ? "duplicate" : "older",
    };
  }
  const withReport: AgentRecord = { ...base, dedupe, reports: { ...base.reports, [event.source]: report } };
  return { record: settle(withReport, now), outcome: "applied" };
}
