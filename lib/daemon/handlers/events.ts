/** The event stream: JSON lines after a cursor, optionally filtered by kind and subject, optionally followed live. */

import type { EventRecord } from "../../api/contract.ts";
import type { Routes } from "../../api/routes.ts";
import { type EventFilter, lastSeq, readEvents, resolveCursor } from "../../state/events.ts";
import type { Context } from "../context.ts";
import type { Reply, Req } from "../router.ts";

/** Sequence numbers a filtered read looks through per query (~3–5 ms of SQLite on this VM's 2 cores). */
const SCAN_WINDOW = 10_000;

export function stream(ctx: Context, req: Req<Routes["events"]>): Reply<EventRecord> {
  const { follow } = req.query;
  const filter: EventFilter = { kinds: req.query.kind, subject: req.query.subject };
  // A follower without a limit follows until it goes away; a limit is honoured either way.
  const limit = req.query.limit ?? (follow ? Number.POSITIVE_INFINITY : 1000);
  const reader = new Reader(ctx, filter, resolveCursor(ctx.db, ctx.stream, req.query.cursor));
  return {
    status: 200,
    lines: async (write, signal) => {
      let sent = 0;
      for (;;) {
        const { events, more } = reader.next(Math.min(1000, limit - sent));
        for (const e of events) write(e);
        sent += events.length;
        if (sent >= limit || signal.aborted) return;
        if (more === "now") continue;
        if (more === "soon") await new Promise<void>((resolve) => setImmediate(resolve));
        else if (follow) await newEvent(ctx, signal);
        else return;
        if (signal.aborted) return;
      }
    },
  };
}

/**
 * Reads the events after a position, page by page. Each read goes up to the newest event now, so
 * with a filter what did not match is never read again; and a filtered read looks through at most
 * SCAN_WINDOW events per query, answering other requests between two (a rare kind among a million
 * events is a scan of the table, which must not stall planterd).
 */
class Reader {
  private readonly filtered: boolean;
  constructor(
    private readonly ctx: Context,
    private readonly filter: EventFilter,
    private after: number,
  ) {
    this.filtered = filter.kinds !== undefined || filter.subject !== undefined;
  }

  /** Up to `page` events; `more`: read again at once, after other work, or only once there are new events. */
  next(page: number): { events: EventRecord[]; more: "now" | "soon" | "new" } {
    const top = lastSeq(this.ctx.db);
    const upTo = this.filtered ? Math.min(top, this.after + SCAN_WINDOW) : top;
    const events = readEvents(this.ctx.db, this.ctx.stream, this.after, page, this.filter, upTo);
    const last = events.at(-1);
    if (last && events.length === page) {
      this.after = Number(last.cursor.slice(last.cursor.indexOf(":") + 1));
      return { events, more: "now" };
    }
    this.after = upTo;
    return { events, more: upTo < top ? "soon" : "new" };
  }
}

/** Until an event is recorded or the request is aborted. */
function newEvent(ctx: Context, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const off = ctx.bus.onEvent(done);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      off();
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
