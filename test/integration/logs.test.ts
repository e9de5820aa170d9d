/**
 * Job logs over the API and the CLI: chunked reads that resume exactly, stream selection,
 * follow (waiting for bytes, for the job's end, or for wait_ms), `eof` and `complete`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Job, LogChunk } from "../../lib/api/contract.ts";
import { PlanterError } from "../../lib/api/errors.ts";
import {
  baseEnv,
  bwrapReady,
  cleanup,
  cli,
  cliStream,
  type DaemonHandle,
  PLANTER,
  raw,
  startDaemon,
  track,
  waitFor,
} from "../harness.ts";

/** Small chunks so that modest outputs span many of them; a short cap on follow waits. */
const CHUNK = 4096;
const MAX_WAIT_MS = 3000;

let d: DaemonHandle;
/** Gate files and fixtures of this file's jobs. */
let work: string;

beforeAll(async () => {
  d = await startDaemon({ config: `[logs]\nmax_chunk_bytes = ${CHUNK}\nmax_wait_ms = ${MAX_WAIT_MS}\n` });
  work = join(d.home, "work");
  mkdirSync(work);
});
afterAll(async () => {
  // Gated jobs outlive planterd by design: end any that a failed test left waiting.
  for (const j of (await d.client.listJobs({ state: "running", limit: 1000 })).jobs) {
    await d.client.killJob(j.id, { force: true }).catch(() => undefined);
  }
  await d.stop();
  cleanup(d.home);
});

type Stream = "stdout" | "stderr";
type Q = Record<string, string | number | undefined>;

const logs = (id: string, q: Q = {}) => d.client.logs(id, q);
const bytes = (c: LogChunk) => Buffer.from(c.data, "base64");
const finished = async (id: string) => (await d.client.waitJob(id, 20_000)).job;

/** Read a whole stream chunk by chunk from offset 0, checking that every chunk resumes where the last ended. */
async function readAll(id: string, q: Q = {}): Promise<{ data: Buffer; chunks: LogChunk[] }> {
  const chunks: LogChunk[] = [];
  let offset = 0;
  for (;;) {
    const c = await logs(id, { ...q, offset });
    expect(c.offset).toBe(offset);
    expect(c.next_offset).toBe(offset + bytes(c).length);
    chunks.push(c);
    offset = c.next_offset;
    if (c.eof) break;
  }
  return { data: Buffer.concat(chunks.map(bytes)), chunks };
}

let gates = 0;
/** A gate: a job blocks at `wait` until the test calls `open()`, which creates the file it waits for. */
function gate() {
  const file = join(work, `gate-${++gates}`);
  return {
    wait: `while [ ! -e '${file}' ]; do sleep 0.01; done`,
    open: () => writeFileSync(file, ""),
  };
}

/** A running job that prints `parts[0]`, then each further part after its gate opens, then exits. */
async function staged(parts: string[], stream: Stream = "stdout") {
  const gs = parts.slice(1).map(() => gate());
  const redirect = stream === "stderr" ? " >&2" : "";
  const script = parts.map((p, i) => `${i > 0 ? `${gs[i - 1]?.wait}; ` : ""}printf '%s' '${p}'${redirect}`).join("; ");
  const job = await d.client.createJob({ argv: ["sh", "-c", script] });
  expect(job.state).toBe("running");
  return { job, gates: gs };
}

/** Wait until a stream holds `size` bytes. */
const grown = (id: string, size: number, stream: Stream = "stdout") =>
  waitFor(
    async () => (await logs(id, { stream, max_bytes: 0 })).size >= size,
    `${stream} of ${id} to reach ${size} bytes`,
  );

describe("chunked reads", () => {
  /** 100 003 bytes holding every byte value, NULs and invalid UTF-8 included. */
  const blob = Buffer.alloc(100_003);
  for (let i = 0; i < blob.length; i++) blob[i] = (i * 7919 + (i >> 8)) & 0xff;
  let job: Job;

  beforeAll(async () => {
    const file = join(work, "blob");
    writeFileSync(file, blob);
    job = await finished((await d.client.createJob({ argv: ["sh", "-c", `cat '${file}'; printf 'E\\0R' >&2`] })).id);
    expect([job.state, job.exit_code]).toEqual(["exited", 0]);
  });

  test("default chunks are bounded by max_chunk_bytes and concatenate to the whole binary output", async () => {
    const { data, chunks } = await readAll(job.id);
    expect(data.equals(blob)).toBe(true);
    expect(chunks.length).toBe(Math.ceil(blob.length / CHUNK));
    expect(chunks.map((c) => bytes(c).length)).toEqual([...Array(chunks.length - 1).fill(CHUNK), blob.length % CHUNK]);
    expect({ ...chunks[0], data: "…" }).toEqual({
      stream: "stdout",
      offset: 0,
      next_offset: CHUNK,
      size: blob.length,
      data: "…",
      eof: false,
      complete: false,
    });
    expect({ ...chunks.at(-1), data: "…" }).toEqual({
      stream: "stdout",
      offset: blob.length - (blob.length % CHUNK),
      next_offset: blob.length,
      size: blob.length,
      data: "…",
      eof: true,
      complete: true,
    });
    // Only the last chunk is eof, and complete with it.
    expect(chunks.map((c) => [c.eof, c.complete])).toEqual([
      ...Array(chunks.length - 1).fill([false, false]),
      [true, true],
    ]);
  });

  test("max_bytes reads resume exactly at next_offset", async () => {
    for (const max of [1, 777, CHUNK, CHUNK + 1, 1_000_000]) {
      const size = Math.min(max, CHUNK);
      if (max === 1) {
        // One byte at a time for a short stretch from an odd offset.
        let at = 12_345;
        const got: Buffer[] = [];
        for (let i = 0; i < 50; i++) {
          const c = await logs(job.id, { offset: at, max_bytes: 1 });
          expect([c.offset, c.next_offset, c.eof]).toEqual([at, at + 1, false]);
          got.push(bytes(c));
          at = c.next_offset;
        }
        expect(Buffer.concat(got).equals(blob.subarray(12_345, 12_395))).toBe(true);
        continue;
      }
      const { data, chunks } = await readAll(job.id, { max_bytes: max });
      expect(data.equals(blob)).toBe(true);
      expect(chunks.slice(0, -1).every((c) => bytes(c).length === size)).toBe(true);
      expect(chunks.length).toBe(Math.ceil(blob.length / size));
    }
  });

  test("a read from the middle returns exactly those bytes; max_bytes=0 only reports the size", async () => {
    const c = await logs(job.id, { offset: 99_000, max_bytes: 2000 });
    expect(bytes(c).equals(blob.subarray(99_000))).toBe(true);
    expect([c.next_offset, c.eof, c.complete]).toEqual([blob.length, true, true]);
    expect(await logs(job.id, { offset: 50, max_bytes: 0 })).toEqual({
      stream: "stdout",
      offset: 50,
      next_offset: 50,
      size: blob.length,
      data: "",
      eof: false,
      complete: false,
    });
  });

  test("stream=stderr selects stderr, NUL bytes included", async () => {
    const c = await logs(job.id, { stream: "stderr" });
    expect(c).toEqual({
      stream: "stderr",
      offset: 0,
      next_offset: 3,
      size: 3,
      data: Buffer.from("E\0R").toString("base64"),
      eof: true,
      complete: true,
    });
    const out = await logs(job.id, { stream: "stdout", offset: blob.length - 2 });
    expect(bytes(out).equals(blob.subarray(-2))).toBe(true);
  });

  test("an offset beyond the end is 400 with the stream's size", async () => {
    for (const [stream, size] of [
      ["stdout", blob.length],
      ["stderr", 3],
    ] as const) {
      const r = await raw(d.socket, "GET", `/v1/jobs/${job.id}/logs?stream=${stream}&offset=${size + 1}`);
      expect({ status: r.status, body: r.json }).toEqual({
        status: 400,
        body: {
          error: {
            code: "E_BAD_REQUEST",
            message: `offset ${size + 1} is beyond the end of ${stream} (${size} bytes)`,
            hint: "resume from next_offset of the last chunk",
            details: { size },
          },
        },
      });
    }
  });

  test("a job that never started has empty, complete logs", async () => {
    const j = await d.client.createJob({ argv: ["/nonexistent/program"] });
    expect([j.state, j.reason]).toEqual(["failed", "spawn_error"]);
    for (const stream of ["stdout", "stderr"] as const) {
      expect(await logs(j.id, { stream, follow: 1 })).toEqual({
        stream,
        offset: 0,
        next_offset: 0,
        size: 0,
        data: "",
        eof: true,
        complete: true,
      });
    }
    const r = await raw(d.socket, "GET", `/v1/jobs/${j.id}/logs?offset=1`);
    expect([r.status, r.json.error?.code, r.json.error?.details]).toEqual([400, "E_BAD_REQUEST", { size: 0 }]);
  });
});

describe("running jobs and follow", () => {
  test("complete is false while the job runs, and true once it ended and every byte is read", async () => {
    const { job, gates } = await staged(["abcdef", "ghij"]);
    await grown(job.id, 6);
    expect(await logs(job.id)).toEqual({
      stream: "stdout",
      offset: 0,
      next_offset: 6,
      size: 6,
      data: Buffer.from("abcdef").toString("base64"),
      eof: true,
      complete: false,
    });
    gates[0]?.open();
    expect((await finished(job.id)).state).toBe("exited");
    // Ended, but not all read: not complete.
    const head = await logs(job.id, { offset: 0, max_bytes: 4 });
    expect([bytes(head).toString(), head.eof, head.complete]).toEqual(["abcd", false, false]);
    const mid = await logs(job.id, { offset: 4, max_bytes: 4 });
    expect([bytes(mid).toString(), mid.eof, mid.complete]).toEqual(["efgh", false, false]);
    const tail = await logs(job.id, { offset: 8, max_bytes: 4 });
    expect([bytes(tail).toString(), tail.next_offset, tail.eof, tail.complete]).toEqual(["ij", 10, true, true]);
    // At the end of a finished job, follow does not wait.
    expect(await logs(job.id, { offset: 10, follow: 1, wait_ms: 600_000 })).toEqual({
      stream: "stdout",
      offset: 10,
      next_offset: 10,
      size: 10,
      data: "",
      eof: true,
      complete: true,
    });
  });

  test("follow sees bytes appended while the request waits", async () => {
    const { job, gates } = await staged(["first", "second", "third"]);
    await grown(job.id, 5);
    // From behind the end, follow answers at once with what is there.
    const now = await logs(job.id, { offset: 0, follow: 1 });
    expect([bytes(now).toString(), now.eof, now.complete]).toEqual(["first", true, false]);

    const waiting = track(logs(job.id, { offset: 5, follow: 1, wait_ms: 600_000 }));
    // Another round trip: the follow request has arrived and is parked, not answered empty.
    await d.client.health();
    expect(waiting.settled).toBe(false);
    gates[0]?.open();
    const c = await waiting.promise;
    expect([c.offset, bytes(c).toString(), c.next_offset, c.eof, c.complete]).toEqual([5, "second", 11, true, false]);

    // A second wait on the same log, then the end of the job.
    const next = track(logs(job.id, { offset: 11, follow: 1 }));
    await d.client.health();
    expect(next.settled).toBe(false);
    gates[1]?.open();
    const c2 = await next.promise;
    expect(bytes(c2).toString()).toBe("third");
    await finished(job.id);
    const last = await logs(job.id, { offset: c2.next_offset, follow: 1 });
    expect([last.data, last.eof, last.complete]).toEqual(["", true, true]);
  });

  test("follow on stderr sees stderr bytes", async () => {
    const { job, gates } = await staged(["e1", "e2"], "stderr");
    await grown(job.id, 2, "stderr");
    const waiting = track(logs(job.id, { stream: "stderr", offset: 2, follow: 1 }));
    await d.client.health();
    expect(waiting.settled).toBe(false);
    gates[0]?.open();
    const c = await waiting.promise;
    expect([c.stream, bytes(c).toString(), c.offset, c.next_offset]).toEqual(["stderr", "e2", 2, 4]);
    expect((await logs(job.id)).size).toBe(0);
    await finished(job.id);
  });

  test("a follow waiting at the end is woken by the job's end and says complete", async () => {
    const { job, gates } = await staged(["only", ""]);
    await grown(job.id, 4);
    const started = Date.now();
    const waiting = track(logs(job.id, { offset: 4, follow: 1, wait_ms: 600_000 }));
    await d.client.health();
    expect(waiting.settled).toBe(false);
    gates[0]?.open();
    const c = await waiting.promise;
    expect(c).toEqual({
      stream: "stdout",
      offset: 4,
      next_offset: 4,
      size: 4,
      data: "",
      eof: true,
      complete: true,
    });
    // Woken by the end, not by the daemon's cap on waits.
    expect(Date.now() - started).toBeLessThan(MAX_WAIT_MS);
  });

  test("follow with wait_ms returns eof, not complete, when nothing arrives", async () => {
    const { job, gates } = await staged(["zz", "after"]);
    await grown(job.id, 2);
    const started = Date.now();
    const c = await logs(job.id, { offset: 2, follow: 1, wait_ms: 250 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(240);
    expect(c).toEqual({ stream: "stdout", offset: 2, next_offset: 2, size: 2, data: "", eof: true, complete: false });
    // wait_ms=0 does not wait at all.
    expect(await logs(job.id, { offset: 2, follow: 1, wait_ms: 0 })).toEqual(c);
    gates[0]?.open();
    await finished(job.id);
  });

  test("a wait_ms longer than the daemon's max_wait_ms is cut to it", async () => {
    const { job, gates } = await staged(["x", "y"]);
    await grown(job.id, 1);
    const started = Date.now();
    const c = await logs(job.id, { offset: 1, follow: 1, wait_ms: 3_600_000 });
    const took = Date.now() - started;
    expect([c.data, c.eof, c.complete]).toEqual(["", true, false]);
    expect(took).toBeGreaterThanOrEqual(MAX_WAIT_MS - 10);
    expect(took).toBeLessThan(MAX_WAIT_MS + 2000);
    gates[0]?.open();
    await finished(job.id);
  }, 15_000);

  test("an offset beyond the end of a running job's log is 400", async () => {
    const { job, gates } = await staged(["abc", ""]);
    await grown(job.id, 3);
    const r = await raw(d.socket, "GET", `/v1/jobs/${job.id}/logs?offset=4&follow=1`);
    expect([r.status, r.json.error?.code, r.json.error?.details]).toEqual([400, "E_BAD_REQUEST", { size: 3 }]);
    gates[0]?.open();
    await finished(job.id);
  });
});

/** Run the CLI and keep stdout as bytes. */
async function cliBytes(args: string[]) {
  const proc = Bun.spawn([process.execPath, PLANTER, ...args], {
    env: baseEnv(d.home),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).arrayBuffer(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout: Buffer.from(stdout), stderr };
}

describe("a log file replaced by a symlink or a FIFO (planterd never follows one nor waits on one)", () => {
  /** A finished job whose stdout file is then replaced by `make` (the old file removed first). */
  async function replaced(make: (log: string) => void) {
    const job = await finished((await d.client.createJob({ argv: ["sh", "-c", "echo own output"] })).id);
    const log = join(d.home, "state", "jobs", job.id, "stdout");
    rmSync(log);
    make(log);
    return { job, log };
  }
  /** A request that must answer within 5 s (a planterd blocked on an open answers nothing). */
  const answer = async (path: string) => {
    const res = await fetch(`http://planterd${path}`, { unix: d.socket, signal: AbortSignal.timeout(5000) } as never);
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()).toString() };
  };

  test("a symlink to another file: nothing of what it points to, by any read", async () => {
    const secret = join(work, "not-the-log");
    writeFileSync(secret, "SECRET-NOT-A-LOG\n");
    const { job } = await replaced((log) => symlinkSync(secret, log));
    for (const q of ["logs", "logs?follow=1&wait_ms=10", "logs/raw", "logs/fd"]) {
      const r = await answer(`/v1/jobs/${job.id}/${q}`);
      expect(r.body).not.toContain("SECRET");
      expect(Buffer.from(r.body).toString("base64")).not.toContain(Buffer.from("SECRET").toString("base64"));
      if (q === "logs") expect(JSON.parse(r.body)).toMatchObject({ size: 0, data: "", eof: true });
    }
    const printed = await cli(d.home, ["logs", job.id]);
    expect(printed).toEqual({ code: 0, stdout: "", stderr: "" });
  });

  test("a FIFO: every read answers at once with nothing (no open that waits for a writer), and planterd goes on", async () => {
    const { job, log } = await replaced((l) => Bun.spawnSync(["mkfifo", l]));
    try {
      for (const q of ["logs", "logs?follow=1&wait_ms=10", "logs/raw", "logs/fd"]) {
        const r = await answer(`/v1/jobs/${job.id}/${q}`);
        expect([q, r.status]).toEqual([q, q === "logs/fd" ? 400 : 200]);
      }
      expect(await cli(d.home, ["logs", job.id])).toEqual({ code: 0, stdout: "", stderr: "" });
      expect((await answer("/v1/health")).status).toBe(200);
    } finally {
      // A planterd blocked on the FIFO's open (before the fix) is let go: a writer comes.
      try {
        closeSync(openSync(log, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // no reader waits
      }
    }
  });

  test("a log quota's cut never reaches the file a symlink in the log's place points to", async () => {
    const victim = join(work, "victim");
    writeFileSync(victim, "v".repeat(1000));
    const g = gate();
    const job = await d.client.createJob({
      argv: ["sh", "-c", `${g.wait}; head -c 100 /dev/zero`],
      limits: { max_log_bytes: 10 },
    });
    const log = join(d.home, "state", "jobs", job.id, "stdout");
    rmSync(log);
    symlinkSync(victim, log);
    g.open();
    await finished(job.id);
    await waitFor(async () => (await d.client.getJob(job.id)).state !== "running", "the job's end");
    // The job's own end is settled (its quota cut, had there been a log to cut) once it is recorded.
    expect(readFileSync(victim, "utf8")).toBe("v".repeat(1000));
  });
});

describe("planter logs", () => {
  /** 3 000 numbered lines: ~35 KB, many chunks. */
  const lines = Array.from({ length: 3000 }, (_, i) => `line ${i + 1}`);
  const text = `${lines.join("\n")}\n`;
  let job: Job;

  beforeAll(async () => {
    const file = join(work, "lines.txt");
    writeFileSync(file, text);
    job = await finished(
      (await d.client.createJob({ argv: ["sh", "-c", `cat '${file}'; echo oops >&2; echo again >&2`] })).id,
    );
    expect(job.state).toBe("exited");
  });

  test("prints the whole stdout across chunks", async () => {
    expect(await cli(d.home, ["logs", job.id])).toEqual({ code: 0, stdout: text, stderr: "" });
  });

  test("prints binary output byte for byte", async () => {
    const blob = Buffer.from(Array.from({ length: 3 * CHUNK + 17 }, (_, i) => (i * 31) & 0xff));
    const file = join(work, "cli-blob");
    writeFileSync(file, blob);
    const j = await finished((await d.client.createJob({ argv: ["cat", file] })).id);
    const r = await cliBytes(["logs", j.id]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(r.stdout.equals(blob)).toBe(true);
  });

  test("--stderr prints stderr", async () => {
    expect(await cli(d.home, ["logs", "--stderr", job.id])).toEqual({ code: 0, stdout: "oops\nagain\n", stderr: "" });
  });

  test("--offset N starts at byte N", async () => {
    const at = text.indexOf("line 2999");
    expect(await cli(d.home, ["logs", job.id, "--offset", String(at)])).toEqual({
      code: 0,
      stdout: "line 2999\nline 3000\n",
      stderr: "",
    });
    expect(await cli(d.home, ["logs", "--stderr", "--offset", "5", job.id])).toEqual({
      code: 0,
      stdout: "again\n",
      stderr: "",
    });
    expect(await cli(d.home, ["logs", job.id, "--offset", String(text.length)])).toEqual({
      code: 0,
      stdout: "",
      stderr: "",
    });
  });

  test("--offset beyond the end fails with the API's message and hint", async () => {
    const r = await cli(d.home, ["logs", job.id, "--offset", String(text.length + 1)]);
    expect(r).toEqual({
      code: 1,
      stdout: "",
      stderr: `planter: offset ${text.length + 1} is beyond the end of stdout (${text.length} bytes)\nhint: resume from next_offset of the last chunk\n`,
    });
  });

  test("--tail N prints the last N lines", async () => {
    expect(await cli(d.home, ["logs", job.id, "--tail", "3"])).toEqual({
      code: 0,
      stdout: "line 2998\nline 2999\nline 3000\n",
      stderr: "",
    });
    expect((await cli(d.home, ["logs", job.id, "--tail", "2500"])).stdout).toBe(`${lines.slice(500).join("\n")}\n`);
    expect((await cli(d.home, ["logs", job.id, "--tail", "5000"])).stdout).toBe(text);
    expect((await cli(d.home, ["logs", job.id, "-n", "0"])).stdout).toBe("");
    expect((await cli(d.home, ["logs", "--stderr", job.id, "--tail", "1"])).stdout).toBe("again\n");
  });

  test("--tail counts a last line without a newline", async () => {
    const j = await finished((await d.client.createJob({ argv: ["printf", "a\nb\nc"] })).id);
    expect(await cli(d.home, ["logs", j.id, "--tail", "2"])).toEqual({ code: 0, stdout: "b\nc", stderr: "" });
  });

  test("an unknown job fails with the API's message and hint", async () => {
    expect(await cli(d.home, ["logs", "j-nope"])).toEqual({
      code: 1,
      stdout: "",
      stderr: 'planter: no job "j-nope"\nhint: list jobs with `planter job ls`\n',
    });
  });

  test("-f follows the job until it ends", async () => {
    const { job: j, gates } = await staged(["one\n", "two\n", "three\n"]);
    const live = cliStream(d.home, ["logs", "-f", j.id]);
    const proc = live.proc;
    await waitFor(() => live.out === "one\n", "the first line from logs -f");
    expect(proc.exitCode).toBeNull();
    gates[0]?.open();
    await waitFor(() => live.out === "one\ntwo\n", "the second line from logs -f");
    expect(proc.exitCode).toBeNull();
    gates[1]?.open();
    expect({ ...(await live.done()), out: live.out }).toEqual({ code: 0, out: "one\ntwo\nthree\n", stderr: "" });
    expect((await d.client.getJob(j.id)).state).toBe("exited");
  });

  test("output that cannot be written (a full disk: /dev/full) fails with why; a reader gone (| head) stays quiet", async () => {
    const sh = async (cmd: string) => {
      const p = Bun.spawn(["bash", "-c", cmd, "bash", process.execPath, PLANTER, job.id], {
        env: baseEnv(d.home),
        stdout: "pipe",
        stderr: "pipe",
      });
      const [out, err, code] = await Promise.all([
        new Response(p.stdout).text(),
        new Response(p.stderr).text(),
        p.exited,
      ]);
      return { code, out, err };
    };
    // The file's descriptor copied (sendfile), the JSON chunks, and --raw: each an error, never exit 0.
    for (const flags of ["", "--json", "--raw", "-f"]) {
      const r = await sh(`"$1" "$2" logs ${flags} "$3" > /dev/full`);
      expect([flags, r.code, r.err]).toEqual([
        flags,
        1,
        expect.stringMatching(/^planter: cannot write to stdout: ENOSPC: no space left on device, \w+\n$/),
      ]);
    }
    for (const flags of ["", "--json"]) {
      const r = await sh(`"$1" "$2" logs ${flags} "$3" | head -c 10; echo " status \${PIPESTATUS[0]}"`);
      expect([flags, r.out.endsWith(" status 0\n"), r.err]).toEqual([flags, true, ""]);
    }
  });

  test("-f on a finished job prints everything and exits", async () => {
    expect(await cli(d.home, ["logs", "-f", job.id])).toEqual({ code: 0, stdout: text, stderr: "" });
    expect(await cli(d.home, ["logs", "-f", "--stderr", "--tail", "1", job.id])).toEqual({
      code: 0,
      stdout: "again\n",
      stderr: "",
    });
  });
});

test("logs of an unknown job are E_NOT_FOUND through the client too", async () => {
  const err = await logs("j-nope").catch((e) => e);
  expect(err).toBeInstanceOf(PlanterError);
  expect([err.code, err.message]).toEqual(["E_NOT_FOUND", 'no job "j-nope"']);
  expect(existsSync(join(d.home, "state", "jobs", "j-nope"))).toBe(false);
});

describe("a sandboxed job's log (through the recorder's pumps)", () => {
  let s: DaemonHandle;
  beforeAll(async () => {
    s = await startDaemon({ config: '[sandbox]\nmode = "enforced"\n' });
  });
  afterAll(async () => {
    await s.stop();
    cleanup(s.home);
  });

  test("shows output while the job runs, with the default log quota in force", async () => {
    if (!(await bwrapReady(s))) return;
    const j = await s.client.createJob({ argv: ["sh", "-c", "echo ready; echo err >&2; sleep 300"] });
    expect(j.limits.max_log_bytes).toBeGreaterThan(0);
    const text = async (stream: "stdout" | "stderr") =>
      Buffer.from((await s.client.logs(j.id, { stream })).data, "base64").toString();
    await waitFor(
      async () => (await text("stdout")) === "ready\n" && (await text("stderr")) === "err\n",
      "live output",
    );
    expect((await s.client.getJob(j.id)).state).toBe("running");
    await s.client.killJob(j.id, { force: true });
    await s.client.waitJob(j.id, 30_000);
  });
});
