/**
 * Targets' health as planterd records it (lib/targets/health.ts): the last recorded health of each
 * (uid, target) — from memory, else from the newest stored `target.health` event of that subject —
 * and each uid's budget of recorded changes: a token bucket of BURST changes, one more every
 * REFILL_MS. A report beyond the budget is refused (429) and counted; the next change recorded for
 * that uid says how many were refused since. So however a peer reports, it adds at most BURST +
 * t / REFILL_MS events in t, all in its own name space (`target/UID/NAME`).
 */
import type { Database } from "bun:sqlite";
import { HEALTHS, type Health } from "../targets/health.ts";

/** Changes a uid may record at once, and how often one more. */
export const BURST = 20;
export const REFILL_MS = 3000;
/** Entries kept in memory before they are dropped (read again from the events when needed). */
const MAX_ENTRIES = 10_000;

interface Bucket {
  tokens: number;
  at: number;
  refused: number;
}

export class HealthLedger {
  private readonly last = new Map<string, Health>();
  private readonly buckets = new Map<number, Bucket>();

  constructor(
    private readonly burst = BURST,
    private readonly refillMs = REFILL_MS,
  ) {}

  /** The last recorded health of `subject`: remembered, else the newest stored event's, else ok (presumed). */
  current(db: Database, subject: string): Health {
    const known = this.last.get(subject);
    if (known) return known;
    const row = db
      .query("SELECT data FROM events WHERE kind = 'target.health' AND subject = ? ORDER BY seq DESC LIMIT 1")
      .get(subject) as { data: string } | null;
    let h: Health = "ok";
    try {
      const to = row ? (JSON.parse(row.data) as { to?: unknown }).to : undefined;
      if ((HEALTHS as readonly unknown[]).includes(to)) h = to as Health;
    } catch {
      // An unreadable event: presumed ok, as with none.
    }
    this.remember(subject, h);
    return h;
  }

  remember(subject: string, h: Health): void {
    if (this.last.size >= MAX_ENTRIES && !this.last.has(subject)) this.last.clear();
    this.last.set(subject, h);
  }

  /**
   * Take one change from `uid`'s budget: the number of reports refused since its last recorded
   * change, or null when the budget is spent (this report is counted as refused).
   */
  take(uid: number, now = Date.now()): number | null {
    let b = this.buckets.get(uid);
    if (!b) {
      if (this.buckets.size >= MAX_ENTRIES) this.buckets.clear();
      b = { tokens: this.burst, at: now, refused: 0 };
      this.buckets.set(uid, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) / this.refillMs);
    b.at = now;
    if (b.tokens < 1) {
      b.refused++;
      return null;
    }
    b.tokens--;
    const refused = b.refused;
    b.refused = 0;
    return refused;
  }

  /** When `uid` may record its next change, in ms from now. */
  waitMs(uid: number): number {
    const b = this.buckets.get(uid);
    return b ? Math.max(0, Math.ceil((1 - b.tokens) * this.refillMs)) : 0;
  }
}
