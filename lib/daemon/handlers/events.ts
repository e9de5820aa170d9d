/** The event stream: JSON lines after a cursor, optionally followed live. */
import { readEvents, resolveCursor } from "../../state/events.ts";
import type { Context } from "../context.ts";
import { allowQuery, boolParam, intParam, type Reply, type Req } from "../router.ts";

export function stream(ctx: Context, req: Req): Reply {
  allowQuery(req.query, ["cursor", "follow", "limit"]);
  const follow = boolParam(req.query, "follow");
  const limit = intParam(req.query, "limit", 1000, 1, 10_000);
  let after = resolveCursor(ctx.db, ctx.stream, req.query.get("cursor") ?? undefined);
  return {
    status: 200,
    lines: async (write, signal) => {
      let sent = 0;
      for (;;) {
        const batch = readEvents(ctx.db, ctx.stream, after, follow ? 1000 : limit - sent);
        for (const e of batch) {
          write(e);
          after = Number(e.cursor.slice(e.cursor.indexOf(":") + 1));
        }
        sent += batch.length;
        if (!follow) {
          if (batch.length === 0 || sent >= limit) return;
          continue;
        }
        if (batch.length) continue;
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
