/** The event stream: JSON lines after a cursor, optionally followed live. */

import type { EventRecord } from "../../api/contract.ts";
import type { Routes } from "../../api/routes.ts";
import { lastSeq, readEvents, resolveCursor } from "../../state/events.ts";
import type { Context } from "../context.ts";
import type { Reply, Req } from "../router.ts";

export function stream(ctx: Context, req: Req<Routes["events"]>): Reply<EventRecord> {
  const { follow } = req.query;
  const filter = { kinds: req.query.kind, subject: req.query.subject };
  // A follower without a limit follows until it goes away; a limit is honoured either way.
  const limit = req.query.limit ?? (follow ? Number.POSITIVE_INFINITY : 1000);
  let after = resolveCursor(ctx.db, ctx.stream, req.query.cursor);
  return {
    status: 200,
    lines: async (write, signal) => {
      let sent = 0;
      for (;;) {
        const page = Math.min(1000, limit - sent);
        // Read up to the newest event now: with a filter, what did not match is never read again.
        const top = lastSeq(ctx.db);
        const batch = readEvents(ctx.db, ctx.stream, after, page, filter, top);
        for (const e of batch) write(e);
        sent += batch.length;
        if (sent >= limit) return;
        const last = batch.at(-1);
        if (last && batch.length === page) {
          after = Number(last.cursor.slice(last.cursor.indexOf(":") + 1));
          continue;
        }
        after = top;
        if (!follow) return;
        if (signal.aborted) return;
        await new Promise<void>((resolve) => {
          const off = ctx.bus.onEvent(done);
          signal.addEventListener("abort", done, { once: true });
          function done() {
            off();
            resolve();
          }
        });
        if (signal.aborted) return;
      }
    },
  };
}
