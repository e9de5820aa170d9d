/**
 * The agents tables (#16): each observed agent's record (its reports and the view decided from
 * them) so a restarted planterd shows what it knew, and the changes a watch resumes from, addressed
 * by `<agents_stream_id>:<seq>` cursors.
 */
import type { Database } from "bun:sqlite";
import * as v from "valibot";
import type { AgentRecord } from "../agents/engine.ts";
import {
  AGENT_KINDS,
  AGENT_STATES,
  type Agent,
  type AgentChangeOp,
  RuntimeRef,
  SOURCES,
  UNKNOWN_REASONS,
} from "../agents/model.ts";
import { PlanterError } from "../api/errors.ts";
import { jsonColumn } from "./json.ts";

const int = v.pipe(v.number(), v.integer());
const Report = v.object({
  agent: v.picklist(AGENT_KINDS),
  state: v.picklist(AGENT_STATES),
  reason: v.nullable(v.picklist(UNKNOWN_REASONS)),
  at: int,
  seq: v.nullable(int),
  kind: v.string(),
  detail: v.nullable(v.string()),
});
const Pane = v.nullable(v.object({ session: v.string(), window: int, index: int, title: v.string() }));

/** A stored record, checked as it is read back (a JSON column is a boundary). */
const RecordSchema = v.object({
  runtime_id: v.string(),
  runtime: RuntimeRef,
  owner_uid: v.nullable(int),
  reports: v.object({ hook: v.optional(Report), notify: v.optional(Report), poller: v.optional(Report) }),
  dedupe: v.array(v.string()),
  agent: v.picklist(AGENT_KINDS),
  state: v.picklist(AGENT_STATES),
  reason: v.nullable(v.picklist(UNKNOWN_REASONS)),
  since: int,
  updated_at: int,
  source: v.picklist(SOURCES),
  detail: v.nullable(v.string()),
  state_version: int,
  completed_since: v.nullable(int),
  pane: Pane,
  cell: v.nullable(v.string()),
});

/** A stored record and when it went (null: still there). */
export interface StoredAgent {
  record: AgentRecord;
  gone_at: number | null;
}

/** Every stored agent; a row that does not read back is skipped and named to `bad`. */
export function loadAgents(db: Database, bad: (runtimeId: string, why: string) => void = () => {}): StoredAgent[] {
  const rows = db.query("SELECT runtime_id, record, gone_at FROM agents").all() as {
    runtime_id: string;
    record: string;
    gone_at: number | null;
  }[];
  const out: StoredAgent[] = [];
  for (const r of rows) {
    try {
      out.push({
        record: jsonColumn(RecordSchema, r.record, `agent ${r.runtime_id}`) as AgentRecord,
        gone_at: r.gone_at,
      });
    } catch (e) {
      bad(r.runtime_id, (e as Error).message);
    }
  }
  return out;
}

/** Insert or replace an agent's record. Call inside the write transaction of the change. */
export function saveAgent(db: Database, rec: AgentRecord, goneAt: number | null): void {
  db.query(
    `INSERT INTO agents (runtime_id, agent, state, owner_uid, job_id, record, gone_at) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (runtime_id) DO UPDATE SET agent = excluded.agent, state = excluded.state, owner_uid = excluded.owner_uid,
       job_id = excluded.job_id, record = excluded.record, gone_at = excluded.gone_at`,
  ).run(rec.runtime_id, rec.agent, rec.state, rec.owner_uid, rec.runtime.job_id, JSON.stringify(rec), goneAt);
}

export function deleteAgent(db: Database, runtimeId: string): void {
  db.query("DELETE FROM agents WHERE runtime_id = ?").run(runtimeId);
}

/** One change a watcher is told of. */
export interface ChangeRow {
  seq: number;
  at: number;
  runtime_id: string;
  op: AgentChangeOp;
  owner_uid: number | null;
  agent: Agent;
}

/** Record a change; returns its sequence number. Call inside the write transaction of the change. */
export function appendChange(
  db: Database,
  c: { at: number; runtime_id: string; op: AgentChangeOp; owner_uid: number | null; agent: Agent },
): number {
  const r = db
    .query("INSERT INTO agent_changes (at, runtime_id, op, owner_uid, agent) VALUES (?, ?, ?, ?, ?)")
    .run(c.at, c.runtime_id, c.op, c.owner_uid, JSON.stringify(c.agent));
  return Number(r.lastInsertRowid);
}

const AgentJson = v.looseObject({ runtime_id: v.string() });

/** The changes after `afterSeq`, oldest first. */
export function changesAfter(db: Database, afterSeq: number, limit: number): ChangeRow[] {
  const rows = db
    .query("SELECT seq, at, runtime_id, op, owner_uid, agent FROM agent_changes WHERE seq > ? ORDER BY seq LIMIT ?")
    .all(afterSeq, limit) as (Omit<ChangeRow, "agent"> & { agent: string })[];
  return rows.map((r) => ({
    ...r,
    agent: jsonColumn(AgentJson, r.agent, `agent change ${r.seq}`) as unknown as Agent,
  }));
}

/** Drop the oldest changes beyond `retain`. */
export function pruneChanges(db: Database, retain: number): void {
  db.query("DELETE FROM agent_changes WHERE seq <= (SELECT MAX(seq) FROM agent_changes) - ?").run(retain);
}

/** The newest change's sequence number (0: none yet). */
export function lastChange(db: Database): number {
  return (
    (db.query("SELECT seq FROM sqlite_sequence WHERE name = 'agent_changes'").get() as { seq: number } | null)?.seq ?? 0
  );
}

/** The agents stream's id (names this database in agent watch cursors). */
export function agentsStream(db: Database): string {
  const row = db.query("SELECT value FROM meta WHERE key = 'agents_stream_id'").get() as { value: string } | null;
  if (!row) throw new PlanterError("E_STATE", "state database has no agents stream id");
  return row.value;
}

/** Why a cursor cannot be resumed: another database's, older than what is kept, or newer than any change. */
export type ResetReason = "foreign" | "expired" | "ahead";

/**
 * The sequence number to resume after, or why the watcher must start again from a snapshot.
 * A cursor that is not `<hex>:<digits>` at all is a bad request.
 */
export function resumeAt(db: Database, stream: string, cursor: string): { seq: number } | { reset: ResetReason } {
  const m = /^([0-9a-f]{1,64}):(\d{1,15})$/.exec(cursor);
  if (!m) {
    throw new PlanterError("E_BAD_REQUEST", `cursor ${JSON.stringify(cursor)} is not an agents watch cursor`, {
      hint: "pass a cursor from an earlier snapshot or delta (STREAM:SEQ), or none for a snapshot",
    });
  }
  if (m[1] !== stream) return { reset: "foreign" };
  const seq = Number(m[2]);
  const last = lastChange(db);
  if (seq > last) return { reset: "ahead" };
  const oldest = (db.query("SELECT MIN(seq) AS s FROM agent_changes").get() as { s: number | null }).s;
  // Nothing kept after seq although changes happened after it: they were pruned.
  if (seq < last && (oldest === null || seq < oldest - 1)) return { reset: "expired" };
  return { seq };
}
