/** The event stream: JSON lines after a cursor, optionally followed live. */

import type { EventRecord } from "../../api/contract.ts";
import type { Routes } from "../../api/routes.ts";
import { readEvents, resolveCursor } from "../../state/events.ts";
import type { Context } from "../context.ts";
import type { Reply, Req } from "../router.ts";

export function stream(ctx: Context, req: Req<Routes["events"]>): Reply<EventRecord> {
  const { follow } = req.query;
  // A follower without a limit follows until it goes away; a limit is honoured either way.
  const limit = req.query.limit ?? (follow ? Number.POSITIVE_INFINITY : 1000);
  let after = resolveCursor(ctx.db, ctx.stream, req.query.cursor);
  return {
    status: 200,
    lines: async (write, signal) => {
      let sent = 0;
      for (;;) {
        const batch = readEvents(ctx.db, ctx.stream, after, Math.min(1000, limit - sent));
        for (const e of batch) {
          write(e);
          after = Number(e.cursor.slice(e.cursor.indexOf(":") + 1));
        }
        sent += batch.length;
        if (sent >= limit) return;
        if (batch.length) continue;
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
