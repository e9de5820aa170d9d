/** `planter events`: the event stream, resumable, followed with -f. */
import { defineCommand } from "citty";
import type { EventRecord } from "../../api/contract.ts";
import { client, parseCount, repeated } from "../args.ts";
import { examples } from "../help.ts";
import { dim, printable as p, write } from "../output.ts";
import { common, olderDaemon } from "./common.ts";

/** The kinds of `--kind`/`-k` (repeated, comma lists), or undefined: every kind. */
function kindsOf(rawArgs: string[]): string[] | undefined {
  const kinds = repeated(rawArgs, "kind", "k")
    .flatMap((k) => k.split(","))
    .map((k) => k.trim())
    .filter(Boolean);
  return kinds.length ? kinds : undefined;
}

/** One event as a line: its JSON, or for people cursor, time, kind, subject and data. */
function eventLine(e: EventRecord, json: boolean): string {
  if (json) return `${JSON.stringify(e)}\n`;
  return `${p(e.cursor)}  ${p(e.at)}  ${p(e.kind).padEnd(18)} ${p(e.subject)}  ${dim(p(JSON.stringify(e.data)))}\n`;
}

export const events = defineCommand({
  meta: {
    name: "events",
    description:
      "Print planterd's events (every change of a cell or job, every connection of a job through planter's proxy). Resume with --cursor; -f keeps following; --kind and --subject pick some",
  },
  args: {
    cursor: {
      type: "string",
      description: "print events after this cursor (from an earlier event); `now`: only events from now on",
      valueHint: "CURSOR",
    },
    follow: { type: "boolean", alias: "f", description: "keep printing new events as they happen" },
    limit: { type: "string", alias: "n", description: "stop after N events (with -f too)", valueHint: "N" },
    kind: {
      type: "string",
      alias: "k",
      description:
        "only events of this kind (net.connect), or of a family (job: job.created, job.started and the rest; also written job.*); repeatable or comma-separated",
      valueHint: "KIND",
    },
    subject: {
      type: "string",
      description: "only events about this subject: job/ID, cell/NAME or daemon",
      valueHint: "SUBJECT",
    },
    ...common,
  },
  async run({ args, rawArgs }) {
    const kind = kindsOf(rawArgs);
    const subject = args.subject || undefined;
    const limit = args.limit === undefined ? null : parseCount(args.limit, "--limit");
    if (limit === 0) return 0;
    const api = client(args);
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    let cursor = args.cursor;
    let total = 0;
    try {
      for (;;) {
        let n = 0;
        // Pages of 1000 without -f; with -f one stream, bounded only by --limit.
        const page = limit === null ? (args.follow ? undefined : 1000) : Math.min(10_000, limit - total);
        for await (const e of api.events(
          { cursor, follow: Boolean(args.follow), limit: page, kind, subject },
          stop.signal,
        )) {
          n++;
          total++;
          cursor = e.cursor;
          write(1, eventLine(e, Boolean(args.json)));
        }
        if (limit !== null && total >= limit) return 0;
        // A page that came short is the end (or, following, planterd went away).
        if (page === undefined || n < page) return 0;
      }
    } catch (e) {
      if (stop.signal.aborted) return 0;
      if (kind || subject) olderDaemon("events by --kind or --subject")(e);
      throw e;
    }
  },
});
examples(events, [
  "planter events -f                                   # every change, live",
  "planter events --kind job -f                        # job.created, job.started, job.finished, …",
  "planter events --kind net.connect --subject job/ID  # one job's connections (planter job net ID shows them as a table)",
  "planter events --kind cell.updated,cell.created --json",
]);
