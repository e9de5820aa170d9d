/**
 * The event stream: every change of a cell or job is an event; cursors resume exactly, across
 * restarts; follow streams live; foreign and expired cursors answer with the oldest valid one.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { EventRecord, Job } from "../../lib/api/contract.ts";
import { PlanterError } from "../../lib/api/errors.ts";
import { appendEvent } from "../../lib/state/events.ts";
import { cleanup, cli, cliStream, type DaemonHandle, raw, startDaemon, tempHome, track, waitFor } from "../harness.ts";

/** Short enough to see an escalation quickly, long enough that SIGTERM always ends a plain job first. */
const GRACE_MS = 1000;
/** Mutating requests record who made them. */
const audit = { peer_uid: process.getuid?.() ?? 0, peer_pid: expect.any(Number) };
const homes: string[] = [];
const daemons: DaemonHandle[] = [];

/** A daemon in a fresh home (or `home`), stopped and removed in afterAll. */
async function daemon(home?: string, config = `[jobs]\nkill_grace_ms = ${GRACE_MS}\n`): Promise<DaemonHandle> {
  const h = home ?? tempHome("pe");
  if (!homes.includes(h)) homes.push(h);
  const d = await startDaemon({ home: h, config });
  daemons.push(d);
  return d;
}

afterAll(async () => {
  for (const d of daemons) {
    if (d.proc.exitCode !== null) continue;
    // Jobs outlive planterd by design: end any a failed test left running before stopping it.
    const running = await d.client.listJobs({ state: "running", limit: 1000 }).catch(() => ({ jobs: [] as Job[] }));
    for (const j of running.jobs) await d.client.killJob(j.id, { force: true }).catch(() => undefined);
    await d.stop();
  }
  for (const h of homes) cleanup(h);
});

async function all(d: DaemonHandle, q: Parameters<DaemonHandle["client"]["events"]>[0] = {}): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const e of d.client.events({ limit: 10_000, ...q })) out.push(e);
  return out;
}

const seq = (cursor: string) => Number(cursor.slice(cursor.indexOf(":") + 1));
const streamOf = (cursor: string) => cursor.slice(0, cursor.indexOf(":"));
const lastCursor = async (d: DaemonHandle) => (await all(d)).at(-1)?.cursor as string;
/** Events without cursor and time, for comparing what happened. */
const what = (es: EventRecord[]) => es.map(({ kind, subject, data }) => ({ kind, subject, data }));
const finished = async (d: DaemonHandle, id: string) => (await d.client.waitJob(id, 20_000)).job;

describe("every change is an event", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await daemon();
  });

  test("a fresh daemon records its default cell and its start", async () => {
    const es = await all(d);
    expect(what(es)).toEqual([
      {
        kind: "cell.created",
        subject: "cell/default",
        data: { dir: join(d.home, "state", "cells", "default"), managed: true },
      },
      {
        kind: "daemon.started",
        subject: "daemon",
        data: { pid: d.proc.pid, version: expect.any(String), via: "bind", adopted: 0, finished: 0, lost: 0 },
      },
    ]);
    const stream = streamOf(es[0]?.cursor as string);
    expect(stream).toMatch(/^[0-9a-f]{12}$/);
    expect(es.map((e) => e.cursor)).toEqual([`${stream}:1`, `${stream}:2`]);
    for (const e of es) expect(new Date(e.at).toISOString()).toBe(e.at);
  });

  test("cells and jobs: created, started, signaled, kill requested and escalated, finished, removed", async () => {
    // Who the jobs run as: a root planterd runs a root peer's jobs as nobody (the harness's root_peer_user).
    const root = process.getuid?.() === 0;
    // A user's planterd runs them as that user, named as the system has it (`id -un`, not $USER).
    const me = Bun.spawnSync(["id", "-un"]).stdout.toString().trim();
    const runAs = root
      ? { uid: 65534, gid: 65534, user: "nobody" }
      : { uid: process.getuid?.(), gid: process.getgid?.(), user: me };
    const runAsEvent = { ...runAs, for_uid: process.getuid?.() };
    const from = await lastCursor(d);
    const c = d.client;
    const expected: { kind: string; subject: string; data: Record<string, unknown> }[] = [];
    const created = (j: Job) => ({
      kind: "job.created",
      subject: `job/${j.id}`,
      data: { cell: j.cell, argv0: j.argv[0], sandbox_mode: "disabled", backend: "none", run_as: runAsEvent, ...audit },
    });
    const started = (j: Job) => ({
      kind: "job.started",
      subject: `job/${j.id}`,
      data: { pid: j.pid, backend: "none", run_as: runAsEvent },
    });
    const ended = (j: Job) => ({
      kind: "job.finished",
      subject: `job/${j.id}`,
      data: { state: j.state, reason: j.reason, exit_code: j.exit_code, signal: j.signal, message: j.message },
    });

    // A cell.
    const dir = tempHome("pe-dir");
    homes.push(dir);
    await c.createCell({ name: "ev", dir });
    expected.push({ kind: "cell.created", subject: "cell/ev", data: { dir, managed: false, ...audit } });

    // A job that exits on its own.
    const ok = await c.createJob({ argv: ["printf", "hi"], cell: "ev" });
    const okEnd = await finished(d, ok.id);
    expect([okEnd.state, okEnd.exit_code]).toEqual(["exited", 0]);
    expected.push(created(ok), started(ok), ended(okEnd));

    // A job killed with SIGTERM.
    const term = await c.createJob({ argv: ["sleep", "300"] });
    await c.killJob(term.id, {});
    const termEnd = await finished(d, term.id);
    expect([termEnd.state, termEnd.reason, termEnd.signal]).toEqual(["killed", "terminated_by_user", "TERM"]);
    expected.push(
      created(term),
      started(term),
      {
        kind: "job.kill_requested",
        subject: `job/${term.id}`,
        data: { signal: "TERM", force: false, reason: "terminated_by_user", ...audit },
      },
      ended(termEnd),
    );

    // A signal that is no kill request.
    const usr = await c.createJob({ argv: ["sleep", "300"] });
    await c.killJob(usr.id, { signal: "USR1" });
    const usrEnd = await finished(d, usr.id);
    expect([usrEnd.state, usrEnd.exit_code]).toEqual(["failed", 138]);
    expected.push(
      created(usr),
      started(usr),
      { kind: "job.signaled", subject: `job/${usr.id}`, data: { signal: "USR1", ...audit } },
      ended(usrEnd),
    );

    // A job that ignores SIGTERM: the kill escalates to SIGKILL after the grace period.
    const stubborn = await c.createJob({
      argv: ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
    });
    await waitFor(async () => (await c.logs(stubborn.id, {})).size > 0, "the job to ignore SIGTERM");
    await c.killJob(stubborn.id, { signal: "TERM" });
    const stubbornEnd = await finished(d, stubborn.id);
    expect([stubbornEnd.state, stubbornEnd.signal]).toEqual(["killed", "KILL"]);
    expected.push(
      created(stubborn),
      started(stubborn),
      {
        kind: "job.kill_requested",
        subject: `job/${stubborn.id}`,
        data: { signal: "TERM", force: false, reason: "terminated_by_user", ...audit },
      },
      { kind: "job.kill_escalated", subject: `job/${stubborn.id}`, data: { signal: "KILL", grace_ms: GRACE_MS } },
      ended(stubbornEnd),
    );

    // A job that cannot start: created and finished, never started.
    const bad = await c.createJob({ argv: ["/nonexistent/program"] });
    expect([bad.state, bad.reason]).toEqual(["failed", "spawn_error"]);
    expected.push(created(bad), ended(bad));

    // Removing a finished job.
    await c.removeJob(ok.id);
    expected.push({ kind: "job.removed", subject: `job/${ok.id}`, data: { ...audit } });

    // Force-removing a cell kills its running job first.
    const inCell = await c.createJob({ argv: ["sleep", "300"], cell: "ev" });
    expect(await c.removeCell("ev", true)).toEqual({ removed: "ev", jobs_removed: 1 });
    expected.push(
      created(inCell),
      started(inCell),
      {
        kind: "job.kill_requested",
        subject: `job/${inCell.id}`,
        data: { signal: "KILL", force: true, reason: "forced_kill", ...audit },
      },
      {
        kind: "job.finished",
        subject: `job/${inCell.id}`,
        data: { state: "killed", reason: "forced_kill", exit_code: null, signal: "KILL", message: null },
      },
      { kind: "cell.removed", subject: "cell/ev", data: { jobs_removed: 1, forced: true, ...audit } },
    );

    // A managed cell and its plain removal.
    await c.createCell({ name: "ev2" });
    await c.removeCell("ev2", false);
    expected.push(
      {
        kind: "cell.created",
        subject: "cell/ev2",
        data: { dir: join(d.home, "state", "cells", "ev2"), managed: true, ...audit },
      },
      { kind: "cell.removed", subject: "cell/ev2", data: { jobs_removed: 0, forced: false, ...audit } },
    );

    const es = await all(d, { cursor: from });
    expect(what(es)).toEqual(expected);
    // Cursors count up one by one from where we started.
    expect(es.map((e) => seq(e.cursor))).toEqual(es.map((_, i) => seq(from) + 1 + i));
    const times = es.map((e) => Date.parse(e.at));
    expect(times).toEqual([...times].sort((a, b) => a - b));
  });

  test("refused requests record nothing", async () => {
    const before = await all(d);
    await expect(d.client.createJob({ argv: [] })).rejects.toThrow(PlanterError);
    await expect(d.client.createCell({ name: "Bad" })).rejects.toThrow(PlanterError);
    await expect(d.client.removeCell("nope", true)).rejects.toThrow(PlanterError);
    await expect(d.client.createCell({ name: "default" })).rejects.toThrow("already exists");
    expect(await all(d)).toEqual(before);
  });
});

describe("cursors", () => {
  let d: DaemonHandle;
  let es: EventRecord[];
  let stream: string;
  beforeAll(async () => {
    d = await daemon();
    for (const name of ["c1", "c2", "c3", "c4", "c5"]) await d.client.createCell({ name });
    es = await all(d);
    expect(es.length).toBe(7);
    stream = streamOf(es[0]?.cursor as string);
  });

  test("resuming from a cursor returns exactly the events after it", async () => {
    expect(await all(d)).toEqual(es);
    expect(await all(d, { cursor: `${stream}:0` })).toEqual(es);
    for (let i = 0; i < es.length; i++) {
      expect(await all(d, { cursor: es[i]?.cursor })).toEqual(es.slice(i + 1));
    }
    expect(await all(d, { cursor: es[1]?.cursor, limit: 2 })).toEqual(es.slice(2, 4));
  });

  test("a cursor ahead of the newest event is invalid", async () => {
    const err = await all(d, { cursor: `${stream}:${es.length + 1}` }).catch((e) => e);
    expect(err).toBeInstanceOf(PlanterError);
    expect([err.code, err.message, err.details]).toEqual([
      "E_CURSOR_INVALID",
      `cursor ${stream}:${es.length + 1} is ahead of the newest event (${stream}:${es.length})`,
      { oldest_cursor: `${stream}:0` },
    ]);
  });

  test("a cursor from another database is E_CURSOR_INVALID with the oldest valid cursor", async () => {
    const other = await daemon();
    const foreign = (await all(other)).at(-1)?.cursor as string;
    expect(streamOf(foreign)).not.toBe(stream);
    // Even a sequence number that exists here is refused: the stream id names the database.
    expect(seq(foreign)).toBeLessThanOrEqual(es.length);
    const err = await all(d, { cursor: foreign }).catch((e) => e);
    expect(err).toBeInstanceOf(PlanterError);
    expect(err.toBody()).toEqual({
      code: "E_CURSOR_INVALID",
      message: `cursor ${JSON.stringify(foreign)} does not belong to this planterd's event stream`,
      hint: "start again without --cursor, or from the oldest valid cursor",
      details: { oldest_cursor: `${stream}:0` },
    });
    expect(await all(d, { cursor: err.details.oldest_cursor })).toEqual(es);
    // The CLI says the same, with the envelope under --json.
    expect(await cli(d.home, ["events", "--cursor", foreign])).toEqual({
      code: 1,
      stdout: "",
      stderr: `planter: cursor ${JSON.stringify(foreign)} does not belong to this planterd's event stream\nhint: start again without --cursor, or from the oldest valid cursor\n`,
    });
    const json = await cli(d.home, ["events", "--json", "--cursor", foreign]);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stderr)).toEqual({ error: err.toBody() });
  });

  test("follow=1 streams new events as they happen", async () => {
    const ac = new AbortController();
    const from = es.at(-1)?.cursor as string;
    const it = d.client.events({ cursor: from, follow: true }, ac.signal)[Symbol.asyncIterator]();
    try {
      const first = track(it.next());
      // The follow request is parked: nothing after the cursor yet.
      await d.client.health();
      expect(first.settled).toBe(false);
      await d.client.createCell({ name: "live1" });
      const e1 = (await first.promise).value as EventRecord;
      expect({ ...e1, at: "" }).toEqual({
        cursor: `${stream}:${seq(from) + 1}`,
        at: "",
        kind: "cell.created",
        subject: "cell/live1",
        data: { dir: join(d.home, "state", "cells", "live1"), managed: true, ...audit },
      });

      // The same response keeps streaming: a job's whole life arrives as it happens.
      const second = track(it.next());
      await d.client.health();
      expect(second.settled).toBe(false);
      const job = await d.client.createJob({ argv: ["true"], cell: "live1" });
      const got = [(await second.promise).value as EventRecord];
      while (got.at(-1)?.kind !== "job.finished") got.push((await it.next()).value as EventRecord);
      expect(got.map((e) => [e.kind, e.subject])).toEqual([
        ["job.created", `job/${job.id}`],
        ["job.started", `job/${job.id}`],
        ["job.finished", `job/${job.id}`],
      ]);
      expect(got.map((e) => seq(e.cursor))).toEqual([seq(from) + 2, seq(from) + 3, seq(from) + 4]);
      // What was streamed is what a later read returns.
      expect(await all(d, { cursor: from })).toEqual([e1, ...got]);
    } finally {
      ac.abort();
    }
    const after = await it.next().catch((e: Error) => e);
    expect(after instanceof Error ? after.name : after).toBe("AbortError");
    expect(await d.client.health()).toEqual({ ok: true });
    es = await all(d);
  });

  test("planter events --json prints every event; --cursor resumes", async () => {
    const parse = (out: string) =>
      out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as EventRecord);
    const r = await cli(d.home, ["events", "--json"]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(parse(r.stdout)).toEqual(es);
    const mid = es[3]?.cursor as string;
    const resumed = await cli(d.home, ["events", "--json", "--cursor", mid]);
    expect([resumed.code, resumed.stderr]).toEqual([0, ""]);
    expect(parse(resumed.stdout)).toEqual(es.slice(4));
    const none = await cli(d.home, ["events", "--json", "--cursor", es.at(-1)?.cursor as string]);
    expect(none).toEqual({ code: 0, stdout: "", stderr: "" });
  });

  test("planter events prints one line per event for people", async () => {
    const r = await cli(d.home, ["events", "--cursor", es[4]?.cursor as string]);
    expect(r).toEqual({
      code: 0,
      stdout: es
        .slice(5)
        .map((e) => `${e.cursor}  ${e.at}  ${e.kind.padEnd(18)} ${e.subject}  ${JSON.stringify(e.data)}\n`)
        .join(""),
      stderr: "",
    });
  });

  test("cursor=now follows only what happens from now on; a limit ends a follow too", async () => {
    const ac = new AbortController();
    try {
      const it = d.client.events({ cursor: "now", follow: true, limit: 2 }, ac.signal)[Symbol.asyncIterator]();
      const first = track(it.next());
      await d.client.health();
      // Nothing old is replayed: the stream waits for a new event.
      expect(first.settled).toBe(false);
      await d.client.createCell({ name: "now1" });
      await d.client.createCell({ name: "now2" });
      await d.client.createCell({ name: "now3" });
      const got = [(await first.promise).value as EventRecord, (await it.next()).value as EventRecord];
      expect(got.map((e) => e.subject)).toEqual(["cell/now1", "cell/now2"]);
      // Two asked, two sent: the stream ends although a third event exists and follow=1.
      expect(await it.next()).toEqual({ done: true, value: undefined });
    } finally {
      ac.abort();
    }
    // Without follow, now is past the newest event: nothing.
    expect(await all(d, { cursor: "now" })).toEqual([]);
    const cli3 = await cli(d.home, ["events", "--json", "--limit", "2", "--cursor", es.at(-1)?.cursor as string]);
    expect([cli3.code, cli3.stderr]).toEqual([0, ""]);
    expect(
      cli3.stdout
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as EventRecord).subject),
    ).toEqual(["cell/now1", "cell/now2"]);
    const followed = await cli(d.home, ["events", "-f", "--json", "-n", "1", "--cursor", es.at(-1)?.cursor as string]);
    expect([followed.code, followed.stderr, followed.stdout.trim().split("\n").length]).toEqual([0, "", 1]);
    for (const name of ["now1", "now2", "now3"]) await d.client.removeCell(name, false);
    es = await all(d);
  });

  test("planter events -f prints new events until interrupted", async () => {
    const live = cliStream(d.home, ["events", "-f", "--json", "--cursor", es.at(-1)?.cursor as string]);
    const proc = live.proc;
    await d.client.createCell({ name: "cli-live" });
    await waitFor(() => live.out.includes("\n"), "events -f to print the new event");
    const line = JSON.parse(live.out.trim()) as EventRecord;
    expect([line.kind, line.subject, line.cursor]).toEqual([
      "cell.created",
      "cell/cli-live",
      `${stream}:${seq(es.at(-1)?.cursor as string) + 1}`,
    ]);
    expect(proc.exitCode).toBeNull();
    proc.kill("SIGINT");
    expect(await live.done()).toEqual({ code: 0, stderr: "" });
  });
});

describe("kinds and subjects", () => {
  let d: DaemonHandle;
  let es: EventRecord[];
  let job: Job;
  beforeAll(async () => {
    d = await daemon();
    await d.client.createCell({ name: "k1" });
    job = await d.client.createJob({ argv: ["true"], cell: "k1" });
    await finished(d, job.id);
    await d.client.createCell({ name: "k2" });
    es = await all(d);
  });
  const pick = (f: (e: EventRecord) => boolean) => es.filter(f);

  test("kind=K: that kind; a family (job, job., job.*) every kind under it; comma lists; in order, with their cursors", async () => {
    expect(await all(d, { kind: ["cell.created"] })).toEqual(pick((e) => e.kind === "cell.created"));
    const jobs = pick((e) => e.kind.startsWith("job."));
    expect(jobs.map((e) => e.kind)).toEqual(["job.created", "job.started", "job.finished"]);
    for (const family of ["job", "job.", "job.*"]) {
      const r = await raw(d.socket, "GET", `/v1/events?kind=${encodeURIComponent(family)}`);
      expect(r.status).toBe(200);
      expect(
        r.text
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l)),
      ).toEqual(jobs);
    }
    expect(await all(d, { kind: ["daemon", "job.finished"] })).toEqual(
      pick((e) => e.kind.startsWith("daemon.") || e.kind === "job.finished"),
    );
    // A family is whole name parts: "jo" is no prefix of "job.created"; "cell.create" is not "cell.created".
    expect(await all(d, { kind: ["jo"] })).toEqual([]);
    expect(await all(d, { kind: ["cell.create"] })).toEqual([]);
    // A limit counts what matched; the cursor of the last resumes after it.
    const two = await all(d, { kind: ["job"], limit: 2 });
    expect(two).toEqual(jobs.slice(0, 2));
    expect(await all(d, { kind: ["job"], cursor: two[1]?.cursor })).toEqual(jobs.slice(2));
  });

  test("subject=S: one job's or cell's events; with kind, both must match", async () => {
    expect(await all(d, { subject: `job/${job.id}` })).toEqual(pick((e) => e.subject === `job/${job.id}`));
    expect(await all(d, { subject: "cell/k2" })).toEqual(pick((e) => e.subject === "cell/k2"));
    expect(await all(d, { subject: `job/${job.id}`, kind: ["job.finished"] })).toEqual(
      pick((e) => e.subject === `job/${job.id}` && e.kind === "job.finished"),
    );
    expect(await all(d, { subject: "job/j-nosuch" })).toEqual([]);
  });

  test("a bad kind is refused with the value and what a kind looks like", async () => {
    for (const bad of ["JOB", "job..x", ".job", "job,", "job*", "net connect", "x".repeat(101)]) {
      const r = await raw(d.socket, "GET", `/v1/events?kind=${encodeURIComponent(bad)}`);
      expect([bad, r.status, r.json.error?.code]).toEqual([bad, 400, "E_BAD_REQUEST"]);
      expect(r.json.error?.message).toStartWith(
        "kind must be event kinds such as net.connect, or families such as job (job.*), comma-separated; not ",
      );
    }
    const many = Array.from({ length: 33 }, (_, i) => `k${i}`).join(",");
    const r = await raw(d.socket, "GET", `/v1/events?kind=${many}`);
    expect(r.json.error?.message).toBe("kind names at most 32 kinds, not 33");
  });

  test("following a kind: only new events of it arrive; others in between are passed over", async () => {
    const ac = new AbortController();
    const it = d.client
      .events({ cursor: "now", follow: true, kind: ["cell.removed"] }, ac.signal)
      [Symbol.asyncIterator]();
    try {
      const first = track(it.next());
      await d.client.createCell({ name: "k3" });
      await d.client.createCell({ name: "k4" });
      await d.client.health();
      expect(first.settled).toBe(false);
      await d.client.removeCell("k3", false);
      const e = (await first.promise).value as EventRecord;
      expect([e.kind, e.subject]).toEqual(["cell.removed", "cell/k3"]);
      const second = track(it.next());
      await d.client.createCell({ name: "k5" });
      await d.client.removeCell("k4", false);
      expect(((await second.promise).value as EventRecord).subject).toBe("cell/k4");
    } finally {
      ac.abort();
    }
  });

  test("planter events --kind (repeatable, comma lists) and --subject", async () => {
    const parse = (out: string) =>
      out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as EventRecord);
    const r = await cli(d.home, ["events", "--json", "--kind", "cell.created,job.finished", "-k", "daemon.*"]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(parse(r.stdout)).toEqual(
      (await all(d)).filter((e) => ["cell.created", "job.finished"].includes(e.kind) || e.kind.startsWith("daemon.")),
    );
    const sub = await cli(d.home, ["events", "--json", "--subject", `job/${job.id}`, "--kind", "job"]);
    expect(parse(sub.stdout).map((e) => e.kind)).toEqual(["job.created", "job.started", "job.finished"]);
    const bad = await cli(d.home, ["events", "--kind", "Job"]);
    expect([bad.code, bad.stdout]).toEqual([1, ""]);
    expect(bad.stderr).toStartWith(
      'planter: kind must be event kinds such as net.connect, or families such as job (job.*), comma-separated; not "Job"',
    );
  });
  test("a filtered read of a long history finds every match in order, answering other requests meanwhile", async () => {
    // 150,000 events of one kind between two of a rare one, written as planterd would.
    const db = new Database(join(d.home, "state", "planter.db"));
    db.run("PRAGMA busy_timeout = 5000");
    db.transaction(() => {
      appendEvent(db, "test.rare", "daemon", { n: 1 });
      for (let i = 0; i < 150_000; i++) appendEvent(db, "test.common", "daemon", { i });
      appendEvent(db, "test.rare", "daemon", { n: 2 });
    })();
    db.close();
    const ac = new AbortController();
    const it = d.client.events({ kind: ["test.rare"] }, ac.signal)[Symbol.asyncIterator]();
    try {
      expect(((await it.next()).value as EventRecord).data).toEqual({ n: 1 });
      // The rest of the table is looked through a window at a time: a request sent now is
      // answered before the read gets to the second match.
      const second = track(it.next());
      const health = await d.client.health();
      expect([health, second.settled]).toEqual([{ ok: true }, false]);
      expect(((await second.promise).value as EventRecord).data).toEqual({ n: 2 });
      expect((await it.next()).done).toBe(true);
    } finally {
      ac.abort();
    }
  }, 60_000);
});

describe("expired cursors", () => {
  test("a cursor older than the retained events is E_CURSOR_EXPIRED with the oldest valid cursor", async () => {
    const home = tempHome("pe");
    let d = await daemon(home);
    for (const name of ["x1", "x2", "x3", "x4", "x5"]) await d.client.createCell({ name });
    const before = await all(d);
    const stream = streamOf(before[0]?.cursor as string);
    expect(await d.stop()).toBe(0);

    // Prune by hand what retention would: everything up to and including seq 4.
    const db = new Database(join(home, "state", "planter.db"));
    db.run("DELETE FROM events WHERE seq <= 4");
    db.close();
    d = await daemon(home);

    const kept = await all(d);
    expect(kept.map((e) => e.cursor)).toEqual(
      [5, 6, 7, 8, 9].map((n) => `${stream}:${n}`), // x3..x5, daemon.stopped, daemon.started
    );
    expect(kept.slice(0, 3)).toEqual(before.slice(4, 7));
    expect(what(kept.slice(3)).map((e) => e.kind)).toEqual(["daemon.stopped", "daemon.started"]);

    for (const old of [0, 1, 3]) {
      const err = await all(d, { cursor: `${stream}:${old}` }).catch((e) => e);
      expect(err).toBeInstanceOf(PlanterError);
      expect(err.toBody()).toEqual({
        code: "E_CURSOR_EXPIRED",
        message: `cursor ${stream}:${old} has expired: events before ${stream}:5 were pruned`,
        hint: "resume from the oldest valid cursor (some events were missed)",
        details: { oldest_cursor: `${stream}:4` },
      });
    }
    // The oldest valid cursor resumes with everything retained; 410 is the status.
    expect(await all(d, { cursor: `${stream}:4` })).toEqual(kept);
    const res = await fetch(`http://planterd/v1/events?cursor=${stream}:2`, { unix: d.socket });
    expect(res.status).toBe(410);
    await res.body?.cancel();
    // No cursor still means "from the oldest retained event".
    expect((await all(d))[0]?.cursor).toBe(`${stream}:5`);

    const r = await cli(home, ["events", "--cursor", `${stream}:2`]);
    expect(r).toEqual({
      code: 1,
      stdout: "",
      stderr: `planter: cursor ${stream}:2 has expired: events before ${stream}:5 were pruned\nhint: resume from the oldest valid cursor (some events were missed)\n`,
    });
  });
});

describe("restarts", () => {
  /** The default grace: a job that ends on SIGTERM never sees an escalation. */
  const config = "[jobs]\nkill_grace_ms = 5000\n";

  test("a cursor resumes after a restart, with the daemon's stop, adoption and start in between", async () => {
    const home = tempHome("pe");
    let d = await daemon(home, config);
    const job = await d.client.createJob({ argv: ["sleep", "300"] });
    expect(job.state).toBe("running");
    const es = await all(d);
    const last = es.at(-1)?.cursor as string;
    const stream = streamOf(last);
    const oldPid = d.proc.pid;
    expect(await d.stop()).toBe(0);

    d = await daemon(home, config);
    const resumed = await all(d, { cursor: last });
    expect(what(resumed)).toEqual([
      { kind: "daemon.stopped", subject: "daemon", data: { pid: oldPid } },
      { kind: "job.adopted", subject: `job/${job.id}`, data: { pid: job.pid } },
      {
        kind: "daemon.started",
        subject: "daemon",
        data: { pid: d.proc.pid, version: expect.any(String), via: "bind", adopted: 1, finished: 0, lost: 0 },
      },
    ]);
    expect(resumed.map((e) => e.cursor)).toEqual([1, 2, 3].map((n) => `${stream}:${seq(last) + n}`));
    // The whole stream is the old events and then these.
    expect(await all(d)).toEqual([...es, ...resumed]);

    // Following from the newest cursor after the restart sees the adopted job's kill and end.
    const ac = new AbortController();
    const it = d.client.events({ cursor: resumed.at(-1)?.cursor, follow: true }, ac.signal)[Symbol.asyncIterator]();
    try {
      await d.client.killJob(job.id, {});
      const got: EventRecord[] = [];
      while (got.at(-1)?.kind !== "job.finished") got.push((await it.next()).value as EventRecord);
      expect(what(got)).toEqual([
        {
          kind: "job.kill_requested",
          subject: `job/${job.id}`,
          data: { signal: "TERM", force: false, reason: "terminated_by_user", ...audit },
        },
        {
          kind: "job.finished",
          subject: `job/${job.id}`,
          data: { state: "killed", reason: "terminated_by_user", exit_code: 143, signal: "TERM", message: null },
        },
      ]);
    } finally {
      ac.abort();
    }
    await it.next().catch(() => undefined);
  });
});
