/** The events table: every change of a cell or job, addressed by `<stream_id>:<seq>` cursors. */
import type { Database } from "bun:sqlite";
import type { EventRecord } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import { AnyRecord, jsonColumn } from "./json.ts";

interface EventRow {
  seq: number;
  at: number;
  kind: string;
  subject: string;
  data: string;
}

/** Append one event; returns its sequence number. Call inside the write transaction of the change. */
export function appendEvent(
  db: Database,
  kind: string,
  subject: string,
  data: Record<string, unknown>,
  at = Date.now(),
): number {
  const r = db
    .query("INSERT INTO events (at, kind, subject, data) VALUES (?, ?, ?, ?)")
    .run(at, kind, subject, JSON.stringify(data));
  return Number(r.lastInsertRowid);
}

/** Drop the oldest events beyond `retain`. */
export function pruneEvents(db: Database, retain: number): void {
  db.query("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?").run(retain);
}

export function toEvent(stream: string, row: EventRow): EventRecord {
  return {
    cursor: `${stream}:${row.seq}`,
    at: new Date(row.at).toISOString(),
    kind: row.kind,
    subject: row.subject,
    data: jsonColumn(AnyRecord, row.data, `event ${row.seq}`),
  };
}

/**
 * Turn a cursor into the sequence number to read after. No cursor means the beginning, `now`
 * the newest event.
 * Another database's cursor is E_CURSOR_INVALID; one older than what is retained is E_CURSOR_EXPIRED.
 */
export function resolveCursor(db: Database, stream: string, cursor: string | undefined): number {
  const oldest = (db.query("SELECT MIN(seq) AS s FROM events").get() as { s: number | null }).s;
  const oldestCursor = `${stream}:${oldest === null ? 0 : oldest - 1}`;
  if (cursor === undefined || cursor === "") return 0;
  // "now": after the newest event (a follower sees only what happens from here on).
  if (cursor === "now") return lastSeq(db);
  const m = /^([0-9a-f]+):(\d{1,15})$/.exec(cursor);
  if (!m || m[1] !== stream) {
    throw new PlanterError(
      "E_CURSOR_INVALID",
      `cursor ${JSON.stringify(cursor)} does not belong to this planterd's event stream`,
      {
        hint: "start again without --cursor, or from the oldest valid cursor",
        details: { oldest_cursor: oldestCursor },
      },
    );
  }
  const seq = Number(m[2]);
  const last = lastSeq(db);
  if (seq > last) {
    throw new PlanterError("E_CURSOR_INVALID", `cursor ${cursor} is ahead of the newest event (${stream}:${last})`, {
      hint: "use a cursor that this planterd returned",
      details: { oldest_cursor: oldestCursor },
    });
  }
  if (oldest !== null && seq < oldest - 1) {
    throw new PlanterError(
      "E_CURSOR_EXPIRED",
      `cursor ${cursor} has expired: events before ${stream}:${oldest} were pruned`,
      {
        hint: "resume from the oldest valid cursor (some events were missed)",
        details: { oldest_cursor: oldestCursor },
      },
    );
  }
  return seq;
}

/**
 * Which events a reader wants: `kinds` (each also every kind under it: `job` is `job.created`,
 * `job.started`, …) and one `subject` (`job/ID`); absent: every event.
 */
export interface EventFilter {
  kinds?: string[] | undefined;
  subject?: string | undefined;
}

/** The newest sequence number ever given (0: none yet), pruned or not. */
export function lastSeq(db: Database): number {
  return (db.query("SELECT seq FROM sqlite_sequence WHERE name = 'events'").get() as { seq: number } | null)?.seq ?? 0;
}

/**
 * Events after `afterSeq` (and up to `upTo`), oldest first, at most `limit`, those `filter` names.
 * A kind family is a range of the column (`job.` ≤ kind < `job/`), so it needs no LIKE escaping.
 */
export function readEvents(
  db: Database,
  stream: string,
  afterSeq: number,
  limit: number,
  filter: EventFilter = {},
  upTo = Number.MAX_SAFE_INTEGER,
): EventRecord[] {
  const where = ["seq > ?", "seq <= ?"];
  const params: (string | number)[] = [afterSeq, upTo];
  if (filter.subject !== undefined) {
    where.push("subject = ?");
    params.push(filter.subject);
  }
  if (filter.kinds?.length) {
    where.push(`(${filter.kinds.map(() => "kind = ? OR (kind >= ? AND kind < ?)").join(" OR ")})`);
    for (const k of filter.kinds) params.push(k, `${k}.`, `${k}/`);
  }
  params.push(limit);
  const rows = db
    .query(`SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY seq LIMIT ?`)
    .all(...params) as EventRow[];
  return rows.map((r) => toEvent(stream, r));
}
