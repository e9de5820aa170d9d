/**
 * Events by kind and subject (`GET /v1/events?kind=&subject=`, `planter job net`), at the state
 * layer: one job's `net.connect` events out of 100k (the default `[events] retain`) and 1M, and a
 * kind family's first page, with and without an index on `events(subject, seq)`; and what such an
 * index costs every write (the events table is written by every change). The variants are built
 * and read interleaved, so a busy box weighs on both alike. The decision it informed is in
 * plans/design.md "Egress (#15)": no index.
 */
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { migrate } from "../lib/state/db.ts";
import { appendEvent, readEvents } from "../lib/state/events.ts";
import { header, median, note, report } from "./common.ts";

const JOBS = 1000;
const record = {
  job: "j-0mxdf1qwqwmxt",
  host: "registry.npmjs.org",
  port: 443,
  decision: "allow",
  rule: "registry.npmjs.org",
  address: "104.16.1.34",
  protocol: "connect",
  bytes_out: 1834,
  bytes_in: 3_456_789,
  duration_ms: 1234,
};
const subject = (i: number) => `job/j-${(i % JOBS).toString().padStart(12, "0")}`;

/** A state database of `n` events over JOBS interleaved subjects (one in ten a job.started), and µs per event written. */
function build(path: string, n: number, index: boolean): { db: Database; writeUsPerEvent: number } {
  const db = new Database(path, { create: true });
  db.run("PRAGMA journal_mode = WAL");
  db.run("PRAGMA synchronous = NORMAL");
  migrate(db);
  if (index) db.run("CREATE INDEX events_subject ON events (subject, seq)");
  // Transactions of 100: planterd writes each change in its own, a busy proxy's records in few.
  const batch = db.transaction((from: number) => {
    for (let i = from; i < from + 100; i++) appendEvent(db, i % 10 ? "net.connect" : "job.started", subject(i), record);
  });
  const t = performance.now();
  for (let i = 0; i < n; i += 100) batch(i);
  return { db, writeUsPerEvent: ((performance.now() - t) * 1000) / n };
}

export async function eventsBench(): Promise<void> {
  header("events: one subject's records with and without an events(subject) index");
  const dir = mkdtempSync("/tmp/pb-events-");
  try {
    for (const n of [100_000, 1_000_000]) {
      const built = [false, true].map((index) => ({
        index,
        ...build(join(dir, `${n}-${index}.db`), n, index),
      }));
      const reads: Record<string, number[]> = { false: [], true: [] };
      const family: Record<string, number[]> = { false: [], true: [] };
      for (let round = 0; round < 7; round++) {
        for (const b of built) {
          let t = performance.now();
          // A job whose events are all net.connect (j mod 10 ≠ 0), another each round.
          const got = readEvents(b.db, "s", 0, 10_000, { kinds: ["net.connect"], subject: subject(round * 10 + 7) });
          reads[String(b.index)]?.push(performance.now() - t);
          if (got.length !== n / JOBS) throw new Error(`read ${got.length} records, not ${n / JOBS}`);
          t = performance.now();
          readEvents(b.db, "s", 0, 1000, { kinds: ["job"] });
          family[String(b.index)]?.push(performance.now() - t);
        }
      }
      const label = n === 100_000 ? "100k" : "1M";
      const [plain, indexed] = built as [(typeof built)[0], (typeof built)[0]];
      const plainRead = median(reads.false ?? []);
      // The default retention is the goal's case; ten times it, context.
      if (n === 100_000)
        report("events", "one job's net.connect of 100k events, no index", plainRead, "ms", "le", 50, 1);
      else note(`one job's net.connect of ${label} events, no index: ${plainRead.toFixed(1)} ms`);
      note(`with events(subject, seq): ${median(reads.true ?? []).toFixed(1)} ms`);
      note(
        `kind family (job) first page: ${median(family.false ?? []).toFixed(1)} ms, with the index ${median(family.true ?? []).toFixed(1)} ms`,
      );
      note(
        `writing ${label}: ${plain.writeUsPerEvent.toFixed(1)} µs per event, with the index ${indexed.writeUsPerEvent.toFixed(1)} µs`,
      );
      for (const b of built) b.db.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
