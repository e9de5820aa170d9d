/** `planter events`: the event stream, resumable, followed with -f. */
import { defineCommand } from "citty";
import type { EventRecord } from "../../api/contract.ts";
import { EXIT, PlanterError } from "../../api/errors.ts";
import { client, parseCount, repeated, usage } from "../args.ts";
import { targetsArg } from "../client-config.ts";
import { examples } from "../help.ts";
import { eachTarget, reportFailures, targetsOf } from "../multi.ts";
import { dim, printable as p, write } from "../output.ts";
import { clientOf } from "../target.ts";
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

/** A target's health in a followed stream: ok (streaming), degraded (lost, reconnecting), down (3 reconnects failed). */
type Health = "ok" | "degraded" | "down";

/** One labelled line: an event of a target, or a change of a target's health. */
function labelled(target: string, e: EventRecord, json: boolean): string {
  if (json) return `${JSON.stringify({ target, ...e })}\n`;
  return `${p(target)}  ${eventLine(e, false)}`;
}

/**
 * The line saying a followed target's health changed (kind `target.health`, no cursor): what this
 * follower sees; the change is also reported to the local planterd, which stores it (lib/cli/health.ts).
 */
function healthEvent(target: string, health: Health, error?: PlanterError): EventRecord {
  return {
    cursor: "",
    at: new Date().toISOString(),
    kind: "target.health",
    subject: `target/${target}`,
    data: { health, ...(error ? { error: error.toBody() } : {}) },
  } as EventRecord;
}

/**
 * `events` over several targets. Without -f: each target's events to its end, merged by time.
 * With -f: every target's stream at once, lines as they come; a stream that breaks is resumed from
 * its last cursor after a backoff (1 s, doubling to 32 s), and the target's health changes are
 * lines of their own (`target.health`: degraded, down, ok again).
 */
async function eventsOfTargets(targets: string[], o: MultiOptions): Promise<number> {
  return o.follow ? followTargets(targets, o) : readTargets(targets, o);
}

interface MultiOptions {
  follow: boolean;
  kind?: string[];
  subject?: string;
  limit: number | null;
  json: boolean;
}

/** Each target's events to its end, merged by time. */
async function readTargets(targets: string[], o: MultiOptions): Promise<number> {
  const results = await eachTarget(targets, async (c, _name, signal) => {
    const all: EventRecord[] = [];
    let cursor: string | undefined;
    for (;;) {
      let n = 0;
      for await (const e of c.events({ cursor, limit: 1000, kind: o.kind, subject: o.subject }, signal)) {
        all.push(e);
        cursor = e.cursor;
        n++;
      }
      if (n < 1000) return all;
    }
  });
  const merged = results
    .flatMap((r) => (r.ok ? r.value.map((e) => ({ target: r.target, e })) : []))
    .sort((a, b) => a.e.at.localeCompare(b.e.at));
  for (const { target, e } of o.limit === null ? merged : merged.slice(0, o.limit))
    write(1, labelled(target, e, o.json));
  return reportFailures(results);
}

/** Every target's stream at once, each resumed after a break, health changes said as lines. */
async function followTargets(targets: string[], o: MultiOptions): Promise<number> {
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  let total = 0;
  const health = new Map<string, Health>(targets.map((t) => [t, "ok"]));
  const { boundsFrom, backoffMs } = await import("../../targets/https.ts");
  const bounds = boundsFrom(process.env.PLANTER_RETRY);
  const { reportHealth } = await import("../health.ts");
  // Reports one after another (each reads and writes the user's health.json), never holding up the stream.
  let reporting: Promise<void> = Promise.resolve();
  const report = (target: string, h: Health, error?: PlanterError) => {
    const o = {
      target,
      health: h,
      complete: true,
      ...(error ? { error: { code: error.code, message: error.message } } : {}),
    };
    reporting = reporting.then(() => reportHealth([o]));
  };
  const say = (target: string, h: Health, error?: PlanterError) => {
    if (health.get(target) === h) return;
    health.set(target, h);
    write(1, labelled(target, healthEvent(target, h, error), o.json));
    report(target, h, error);
  };
  /** One connection's worth of a target's stream; throws when it breaks. */
  const stream = async (target: string, at: { cursor?: string; failures: number }) => {
    const q = { cursor: at.cursor, follow: true, kind: o.kind, subject: o.subject };
    let first = true;
    for await (const e of clientOf(target).events(q, stop.signal)) {
      if (at.failures) say(target, "ok");
      // Streaming: ok (a target an earlier command saw down is reported back).
      else if (first) report(target, "ok");
      first = false;
      at.failures = 0;
      at.cursor = e.cursor;
      write(1, labelled(target, e, o.json));
      if (o.limit !== null && ++total >= o.limit) stop.abort();
    }
    if (!stop.signal.aborted)
      throw new PlanterError("E_DAEMON_UNREACHABLE", `target ${target}: the event stream ended (planterd stopped?)`);
  };
  const follow = async (target: string) => {
    const at: { cursor?: string; failures: number } = { failures: 0 };
    while (!stop.signal.aborted) {
      try {
        await stream(target, at);
      } catch (e) {
        if (stop.signal.aborted) return;
        at.failures++;
        const err = e instanceof PlanterError ? e : new PlanterError("E_INTERNAL", String(e));
        say(target, at.failures > 3 ? "down" : "degraded", err);
        await Bun.sleep(backoffMs(bounds, at.failures - 1));
      }
    }
  };
  await Promise.all(targets.map(follow));
  await reporting;
  return [...health.values()].every((h) => h === "ok") ? 0 : EXIT.partial;
}

/** `events` of one target: pages of 1000, or with -f one stream, bounded only by --limit. */
async function eventsOfOne(
  args: Parameters<typeof client>[0] & { cursor?: string; follow?: boolean; json?: boolean },
  o: { kind?: string[]; subject?: string; limit: number | null },
): Promise<number> {
  const { kind, subject, limit } = o;
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
    ...targetsArg,
  },
  async run({ args, rawArgs }) {
    const kind = kindsOf(rawArgs);
    const subject = args.subject || undefined;
    const limit = args.limit === undefined ? null : parseCount(args.limit, "--limit");
    if (limit === 0) return 0;
    const many = targetsOf(args);
    if (many) {
      if (args.cursor)
        throw usage(
          "--cursor names a place in one target's stream: use it with --target",
          "drop --cursor, or name one --target",
        );
      return eventsOfTargets(many, { follow: Boolean(args.follow), kind, subject, limit, json: Boolean(args.json) });
    }
    return eventsOfOne(args, { kind, subject, limit });
  },
});
examples(events, [
  "planter events -f                                   # every change, live",
  "planter events --kind job -f                        # job.created, job.started, job.finished, …",
  "planter events --kind net.connect --subject job/ID  # one job's connections (planter job net ID shows them as a table)",
  "planter events --kind cell.updated,cell.created --json",
]);
