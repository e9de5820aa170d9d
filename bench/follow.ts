/**
 * 3. Log follow latency: a job prints wall-clock timestamps at intervals; a client follows its
 * stdout with GET /v1/jobs/{id}/logs?follow=1&offset=N&wait_ms=… and compares each line's
 * arrival with the timestamp in it (same machine, same CLOCK_REALTIME).
 */
import type { LogChunk } from "../lib/api/contract.ts";
import { get, header, note, percentile, report, spread, withDaemon } from "./common.ts";

const BENCH = "3 follow";
const SAMPLES = 100;
const WARMUP = 5;
const INTERVAL_S = 0.04;

/**
 * Wall clock in ms with sub-ms precision: the monotonic clock, offset to CLOCK_REALTIME at the
 * moment Date.now() ticks over to a new millisecond (so the offset is exact to a few µs).
 */
function wallClock(): () => number {
  const t = Date.now();
  let now = Date.now();
  while (now === t) now = Date.now();
  const offset = now - performance.now();
  return () => performance.now() + offset;
}

/** A job that prints its wall-clock time (seconds, µs or ns precision) every INTERVAL_S. */
function timestampJob(lines: number): string[] {
  const bash = Bun.which("bash");
  if (bash) {
    // EPOCHREALTIME is a builtin variable: no fork between reading the clock and the write.
    return [bash, "-c", `for ((i=0;i<${lines};i++)); do echo "$EPOCHREALTIME"; sleep ${INTERVAL_S}; done`];
  }
  return ["/bin/sh", "-c", `i=0; while [ $i -lt ${lines} ]; do date +%s.%N; sleep ${INTERVAL_S}; i=$((i+1)); done`];
}

export async function followBench(): Promise<void> {
  header(`3. Log follow latency: logs?follow=1 loop, ${SAMPLES} timestamped lines every ${INTERVAL_S * 1000} ms`);
  await withDaemon("source", async (d) => {
    const argv = timestampJob(SAMPLES + WARMUP);
    const job = await d.client.createJob({ argv });
    if (job.state !== "running") throw new Error(`the job is ${job.state} (${job.reason}): ${job.message}`);
    const lat: number[] = [];
    let offset = 0;
    let partial = "";
    let seen = 0;
    let requests = 0;
    const realNow = wallClock();
    const deadline = performance.now() + 30_000;
    for (;;) {
      if (performance.now() > deadline) throw new Error(`follow: gave up with ${lat.length} samples`);
      const text = await get(d.socket, `/v1/jobs/${job.id}/logs?follow=1&offset=${offset}&wait_ms=5000`);
      const received = realNow();
      requests++;
      const c = JSON.parse(text) as LogChunk;
      partial += Buffer.from(c.data, "base64").toString("utf8");
      offset = c.next_offset;
      let nl = partial.indexOf("\n");
      while (nl >= 0) {
        const line = partial.slice(0, nl).trim().replace(",", ".");
        partial = partial.slice(nl + 1);
        nl = partial.indexOf("\n");
        const stamp = Number(line) * 1000;
        if (!Number.isFinite(stamp)) throw new Error(`follow: unexpected line ${JSON.stringify(line)}`);
        if (seen++ >= WARMUP) lat.push(received - stamp);
      }
      if (c.complete) break;
    }
    const skew = Date.now() - realNow();
    report(BENCH, "p95 follow latency", percentile(lat, 95), "ms", "le", 20, 2);
    note(`p50 ${percentile(lat, 50).toFixed(2)} ms; ${spread(lat, 2)}`);
    note(
      `${requests} follow requests for ${seen} lines; job argv[0] ${argv[0]}; ` +
        `clock check at the end: Date.now() − calibrated clock = ${skew.toFixed(2)} ms (expect −1..0)`,
    );
  });
}
