/**
 * The byte streams against a real planterd: `GET /v1/jobs/{id}/logs/raw` (a log's bytes, followed
 * to the job's end) and `POST /v1/jobs?attach=1` (the job, its output and its end in one
 * response). Framing, follow, a job killed mid-stream, refusals that are the JSON API's, a reader
 * that stops (planterd reads no further) and clients that go away leaving nothing behind. Read
 * with fetch and raw sockets, independently of the CLI's own reader; the CLI's use of them is in
 * logs, cli, output, signals and terminal tests.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  closeSync,
  fstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { FrameDecoder, type FrameEvent } from "../../lib/api/frames.ts";
import { jobFiles } from "../../lib/jobs/recorder.ts";
import { baseEnv, cleanup, cli, cliStream, type DaemonHandle, PLANTER, raw, startDaemon, waitFor } from "../harness.ts";

let d: DaemonHandle;
let work: string;

beforeAll(async () => {
  d = await startDaemon();
  work = join(d.home, "work");
  mkdirSync(work);
});
afterAll(async () => {
  for (const j of (await d.client.listJobs({ state: "running", limit: 1000 })).jobs)
    await d.client.killJob(j.id, { force: true }).catch(() => undefined);
  await d.stop();
  cleanup(d.home);
});

const finished = async (id: string) => (await d.client.waitJob(id, 30_000)).job;
const get = (path: string, init: RequestInit = {}) => fetch(`http://planterd${path}`, { unix: d.socket, ...init });
const rawPath = (id: string, q = "") => `/v1/jobs/${id}/logs/raw${q}`;

/** Bytes with every value, NULs and invalid UTF-8 included. */
function blob(n: number, seed = 7919): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * seed + (i >> 8) + (i >> 16)) & 0xff;
  return b;
}

let gates = 0;
/** A gate: a job blocks at `wait` until the test calls `open()`. */
function gate() {
  const file = join(work, `gate-${++gates}`);
  return { wait: `while [ ! -e '${file}' ]; do sleep 0.01; done`, open: () => writeFileSync(file, "") };
}

/** Read a fetch body as it comes; `text` grows, `done` settles at its end (or its error). */
function reader(res: Response) {
  const r = { text: "", bytes: 0, ended: false, error: null as Error | null, done: Promise.resolve() };
  r.done = (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const c of res.body as ReadableStream<Uint8Array>) {
        r.bytes += c.length;
        r.text += decoder.decode(c, { stream: true });
      }
    } catch (e) {
      r.error = e as Error;
    }
    r.ended = true;
  })();
  return r;
}

type Pace = (chunks: AsyncIterable<Uint8Array>) => AsyncIterable<Uint8Array>;

/** POST /v1/jobs?attach=1 and decode every frame of the answer (read through `pace`, if any). */
async function attach(body: Record<string, unknown>, q = "?attach=1", pace?: Pace) {
  const res = await get(`/v1/jobs${q}`, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
  });
  return { res, frames: frames(res, pace) };
}

/** The frames of a response as they arrive (log pieces as they come). */
async function* frames(res: Response, pace?: Pace): AsyncGenerator<FrameEvent> {
  const dec = new FrameDecoder();
  const body = res.body as ReadableStream<Uint8Array>;
  for await (const chunk of pace ? pace(body) : body) yield* dec.push(chunk);
  expect(dec.atBoundary).toBe(true);
}

/** Every frame of a finished stream: the job records, and each log joined. */
async function collect(events: AsyncGenerator<FrameEvent>) {
  const jobs: Job[] = [];
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const order: string[] = [];
  for await (const e of events) {
    order.push(e.kind);
    if (e.kind === "job") jobs.push(e.job);
    else (e.kind === "stdout" ? out : err).push(Buffer.from(e.data));
  }
  return { jobs, stdout: Buffer.concat(out), stderr: Buffer.concat(err), order };
}

describe("GET /v1/jobs/{id}/logs/raw", () => {
  const data = blob(1_000_003);
  let job: Job;

  beforeAll(async () => {
    const file = join(work, "blob");
    writeFileSync(file, data);
    job = await finished((await d.client.createJob({ argv: ["sh", "-c", `cat '${file}'; printf 'E\\0R' >&2`] })).id);
    expect([job.state, job.exit_code]).toEqual(["exited", 0]);
  });

  test("the whole log byte for byte, as an octet-stream with its offset and size in headers", async () => {
    const res = await get(rawPath(job.id));
    expect(res.status).toBe(200);
    expect({
      type: res.headers.get("content-type"),
      stream: res.headers.get("planter-stream"),
      offset: res.headers.get("planter-offset"),
      size: res.headers.get("planter-size"),
    }).toEqual({ type: "application/octet-stream", stream: "stdout", offset: "0", size: String(data.length) });
    expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
  });

  test("from an offset, and stderr", async () => {
    for (const at of [0, 1, 262_143, 262_144, 999_999, data.length]) {
      const res = await get(rawPath(job.id, `?offset=${at}`));
      expect(res.headers.get("planter-offset")).toBe(String(at));
      expect(Buffer.from(await res.arrayBuffer()).equals(data.subarray(at))).toBe(true);
    }
    const err = await get(rawPath(job.id, "?stream=stderr&offset=1"));
    expect([err.headers.get("planter-size"), Buffer.from(await err.arrayBuffer()).toString("latin1")]).toEqual([
      "3",
      "\0R",
    ]);
    // A finished job's follow is its log, then the end.
    const f = await get(rawPath(job.id, "?follow=1&offset=999000"));
    expect(Buffer.from(await f.arrayBuffer()).equals(data.subarray(999_000))).toBe(true);
  });

  test("refusals are the JSON chunk API's, before any byte, and change nothing", async () => {
    const cases = [
      `?offset=${data.length + 1}`,
      "?offset=-1",
      "?offset=9007199254740992",
      `?offset=1${"0".repeat(400)}`,
      "?offset=1e3",
      "?offset=",
      "?stream=stdin",
      "?stream=stdout&stream=../../etc/passwd",
      "?follow=yes",
    ];
    for (const q of cases) {
      const asRaw = await raw(d.socket, "GET", rawPath(job.id, q));
      const asJson = await raw(d.socket, "GET", `/v1/jobs/${job.id}/logs${q}`);
      if (q === "?offset=" || q.includes("&stream=")) {
        // An empty offset is the default, and a repeated parameter's first value counts: both answer from byte 0 of stdout.
        expect([asRaw.status, asJson.status]).toEqual([200, 200]);
        expect(Buffer.from(await (await get(rawPath(job.id, q))).arrayBuffer()).equals(data)).toBe(true);
        continue;
      }
      expect({ q, status: asRaw.status, body: asRaw.json }).toEqual({ q, status: asJson.status, body: asJson.json });
      expect(asRaw.status).toBe(400);
    }
    const unknown = await raw(d.socket, "GET", rawPath(job.id, "?max_bytes=10"));
    expect([unknown.status, unknown.json.error?.message, unknown.json.error?.hint]).toEqual([
      400,
      'unknown query parameter "max_bytes"',
      "allowed: stream, offset, follow",
    ]);
    const missing = await raw(d.socket, "GET", rawPath("j-nope"));
    expect([missing.status, missing.json.error?.code, missing.json.error?.message]).toEqual([
      404,
      "E_NOT_FOUND",
      'no job "j-nope"',
    ]);
    const post = await raw(d.socket, "POST", rawPath(job.id), "{}");
    expect([post.status, post.json.error?.hint]).toEqual([405, "allowed: GET"]);
    // The log is as it was, and planterd serves on.
    expect(Buffer.from(await (await get(rawPath(job.id))).arrayBuffer()).equals(data)).toBe(true);
  });

  test("follow sends bytes as they are written and ends once the job has ended", async () => {
    const [g1, g2] = [gate(), gate()];
    const j = await d.client.createJob({
      argv: ["sh", "-c", `printf first; ${g1.wait}; printf ' second'; ${g2.wait}; printf ' third' >&2; printf ' last'`],
    });
    const r = reader(await get(rawPath(j.id, "?follow=1")));
    await waitFor(() => r.text === "first", "the first bytes");
    // Without follow, a running job's log ends where it is now.
    expect(await (await get(rawPath(j.id))).text()).toBe("first");
    expect(r.ended).toBe(false);
    g1.open();
    await waitFor(() => r.text === "first second", "the bytes written after the stream began");
    expect(r.ended).toBe(false);
    g2.open();
    await r.done;
    expect([r.text, r.error]).toEqual(["first second last", null]);
    expect((await d.client.getJob(j.id)).state).toBe("exited");
  });

  test("a job killed mid-stream ends the stream, with every byte it wrote", async () => {
    const j = await d.client.createJob({ argv: ["sh", "-c", "echo ready; while :; do sleep 1; done"] });
    const r = reader(await get(rawPath(j.id, "?follow=1")));
    await waitFor(() => r.text === "ready\n", "the job's first line");
    await d.client.killJob(j.id, { force: true });
    await r.done;
    expect([r.text, r.error]).toEqual(["ready\n", null]);
    expect((await d.client.getJob(j.id)).state).toBe("killed");
  });
});

describe("GET /v1/jobs/{id}/logs/fd (the log file passed as a descriptor)", () => {
  const data = blob(3_000_017, 104_729);
  let job: Job;

  beforeAll(async () => {
    const file = join(work, "blob-fd");
    writeFileSync(file, data);
    job = await finished((await d.client.createJob({ argv: ["sh", "-c", `cat '${file}'; printf 'E\\0R' >&2`] })).id);
    expect([job.state, job.exit_code]).toEqual(["exited", 0]);
  });

  test("the descriptor is the log file itself, read-only and close-on-exec, with its size; stderr too", async () => {
    for (const [stream, want] of [
      ["stdout", data],
      ["stderr", Buffer.from("E\0R", "latin1")],
    ] as const) {
      const got = await d.client.logFd(job.id, stream);
      if (!got) throw new Error("no descriptor came");
      try {
        const log = jobFiles(join(d.home, "state", "jobs", job.id))[stream];
        const [a, b] = [fstatSync(got.fd), statSync(log)];
        expect([a.dev, a.ino, got.size]).toEqual([b.dev, b.ino, want.length]);
        const buf = Buffer.alloc(want.length);
        expect(readSync(got.fd, buf, 0, buf.length, 0)).toBe(want.length);
        expect(buf.equals(want)).toBe(true);
        expect(() => writeSync(got.fd, "x")).toThrow(expect.objectContaining({ code: "EBADF" }));
        // flags: octal, O_CLOEXEC is 02000000; O_ACCMODE 0 (read-only).
        const flags = Number.parseInt(
          /^flags:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${got.fd}`, "utf8"))?.[1] ?? "",
          8,
        );
        expect([flags & 0o2000000, flags & 3]).toEqual([0o2000000, 0]);
      } finally {
        closeSync(got.fd);
      }
    }
  });

  test("without a descriptor (fetch reads no ancillary data) it is an empty 200 with the size; refusals are the JSON API's", async () => {
    const res = await get(`/v1/jobs/${job.id}/logs/fd`);
    expect([res.status, res.headers.get("planter-size"), (await res.arrayBuffer()).byteLength]).toEqual([
      200,
      String(data.length),
      0,
    ]);
    for (const [path, status, code] of [
      ["/v1/jobs/j-nonexistent0/logs/fd", 404, "E_NOT_FOUND"],
      [`/v1/jobs/${job.id}/logs/fd?stream=both`, 400, "E_BAD_REQUEST"],
      [`/v1/jobs/${job.id}/logs/fd?offset=1`, 400, "E_BAD_REQUEST"],
    ] as const) {
      const r = await get(path);
      expect([r.status, ((await r.json()) as { error: { code: string } }).error.code]).toEqual([status, code]);
    }
  });

  test("planter logs copies it whole to a file and a pipe, from an offset, its last lines, and stderr; sendfile does it", async () => {
    const outFile = join(work, "fd-out");
    const sh = async (args: string[], redirect: string) => {
      const p = Bun.spawn(["bash", "-c", `"$@" ${redirect}`, "bash", process.execPath, PLANTER, ...args], {
        env: baseEnv(d.home),
        stdout: "pipe",
        stderr: "pipe",
      });
      const [out, err, code] = await Promise.all([
        new Response(p.stdout).arrayBuffer(),
        new Response(p.stderr).text(),
        p.exited,
      ]);
      return { out: Buffer.from(out), err, code };
    };
    const file = await sh(["logs", job.id], `> '${outFile}'`);
    expect([file.code, file.err]).toEqual([0, ""]);
    expect(readFileSync(outFile).equals(data)).toBe(true);
    const piped = await sh(["logs", "--offset", "999999", job.id], "| cat");
    expect(piped.out.equals(data.subarray(999_999))).toBe(true);
    // The last lines: where the JSON chunks (never a descriptor) start too.
    const tail = await sh(["logs", "--tail", "2", job.id], "| cat");
    const json = await sh(["logs", "--json", "--tail", "2", job.id], "");
    const fromJson = Buffer.concat(
      json.out
        .toString()
        .trim()
        .split("\n")
        .map((l) => Buffer.from((JSON.parse(l) as { data: string }).data, "base64")),
    );
    expect(tail.out.length).toBeGreaterThan(0);
    expect(tail.out.equals(fromJson)).toBe(true);
    expect((await sh(["logs", "--stderr", job.id], "| cat")).out.toString("latin1")).toBe("E\0R");
    // Past the end: the API's refusal, as before.
    const past = await sh(["logs", "--offset", String(data.length + 1), job.id], "> /dev/null");
    expect([past.code, past.err]).toEqual([
      1,
      `planter: offset ${data.length + 1} is beyond the end of stdout (${data.length} bytes)\nhint: resume from next_offset of the last chunk\n`,
    ]);
    if (Bun.which("strace")) {
      const traced = join(work, "fd-strace");
      const t = await sh(
        ["logs", job.id],
        `> '${outFile}'`.replace(
          ">",
          `2>/dev/null > '${outFile}'; strace -f -qq -e trace=sendfile -o '${traced}' "$@" >`,
        ),
      );
      expect(t.code).toBe(0);
      expect(readFileSync(outFile).equals(data)).toBe(true);
      expect(readFileSync(traced, "utf8")).toContain(`sendfile(1, `);
    } else console.warn("strace is not installed: the sendfile path is not shown by a trace");
  });

  test("logs -f of a running job: the file up to its size, then the rest as it comes, every byte once", async () => {
    const g = gate();
    const j = await d.client.createJob({
      argv: ["sh", "-c", `head -c 2000000 /dev/zero | tr '\\0' a; ${g.wait}; head -c 1000000 /dev/zero | tr '\\0' b`],
    });
    await waitFor(async () => (await d.client.logs(j.id, { max_bytes: 0 })).size === 2_000_000, "the first part");
    const p = Bun.spawn(["bash", "-c", '"$@" | cat', "bash", process.execPath, PLANTER, "logs", "-f", j.id], {
      env: baseEnv(d.home),
      stdout: "pipe",
      stderr: "pipe",
    });
    g.open();
    const [out, err, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    expect([code, err, out.length]).toEqual([0, "", 3_000_000]);
    expect(out).toBe("a".repeat(2_000_000) + "b".repeat(1_000_000));
  });

  test("through something that forwards the bytes but no descriptor (an ssh forward, say): the bytes over the API, whole", async () => {
    const dir = join(work, "fwd");
    mkdirSync(dir, { mode: 0o700 });
    const sock = join(dir, "s.sock");
    const seen: string[] = [];
    // A plain relay (node:net, a read(2) per chunk): what an ssh forward does to a descriptor.
    const server = createServer((c) => {
      const up = createConnection({ path: d.socket });
      let first = true;
      c.on("data", (b) => {
        if (first) seen.push(b.toString("latin1").split("\r\n")[0] ?? "");
        first = false;
      });
      c.pipe(up).pipe(c);
      c.on("error", () => up.destroy());
      up.on("error", () => c.destroy());
    });
    await new Promise<void>((r) => server.listen(sock, () => r()));
    try {
      const r = Bun.spawn(["bash", "-c", '"$@" | cat', "bash", process.execPath, PLANTER, "logs", job.id], {
        env: baseEnv(d.home, { PLANTER_SOCKET: sock }),
        stdout: "pipe",
        stderr: "pipe",
      });
      const [out, err, code] = await Promise.all([
        new Response(r.stdout).arrayBuffer(),
        new Response(r.stderr).text(),
        r.exited,
      ]);
      expect([code, err]).toEqual([0, ""]);
      expect(Buffer.from(out).equals(data)).toBe(true);
      expect(seen.map((l) => l.replace(/\?.*? HTTP/, " HTTP"))).toEqual([
        `GET /v1/jobs/${job.id}/logs/fd HTTP/1.1`,
        `GET /v1/jobs/${job.id}/logs/raw HTTP/1.1`,
      ]);
    } finally {
      server.close();
    }
  });
});

describe("POST /v1/jobs?attach=1", () => {
  test("one response: the job, its output in frames, the job as it ended", async () => {
    const { res, frames: f } = await attach({ argv: ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"] });
    expect([res.status, res.headers.get("content-type")]).toEqual([201, "application/x-planter-frames"]);
    const got = await collect(f);
    expect(got.jobs.map((j) => [j.state, j.exit_code])).toEqual([
      ["running", null],
      ["failed", 3],
    ]);
    expect(res.headers.get("planter-job")).toBe(got.jobs[0]?.id as string);
    expect([got.stdout.toString(), got.stderr.toString()]).toEqual(["out\nmore\n", "err\n"]);
    expect([got.order[0], got.order.at(-1)]).toEqual(["job", "job"]);
    // The final record is the job as the API shows it now.
    expect(got.jobs[1]).toEqual(await d.client.getJob(got.jobs[0]?.id as string));
  });

  test("megabytes on both streams arrive whole, through a reader that takes its time", async () => {
    const out = blob(3_000_000, 31);
    const err = blob(2_000_001, 57);
    writeFileSync(join(work, "out.bin"), out);
    writeFileSync(join(work, "err.bin"), err);
    const { frames: f } = await attach({
      argv: ["sh", "-c", `cat '${work}/out.bin' & cat '${work}/err.bin' >&2; wait`],
    });
    const slowly = async function* () {
      let n = 0;
      for await (const e of f) {
        if (++n % 7 === 0) await Bun.sleep(1);
        yield e;
      }
    };
    const got = await collect(slowly());
    expect(got.stdout.equals(out)).toBe(true);
    expect(got.stderr.equals(err)).toBe(true);
  });

  test("192 MB as fast as the job writes, through planter run and logs -f read at 150 MB/s: every byte as written", async () => {
    const data = blob(64_000_000, 131);
    writeFileSync(join(work, "flood.bin"), data);
    const copies = 3;
    const hasher = new Bun.CryptoHasher("sha1");
    for (let i = 0; i < copies; i++) hasher.update(data);
    const want = [data.length * copies, hasher.digest("hex")];
    /** Read a pipe at 150 MB/s (planterd waits on this reader while the job writes on); its length and sha1. */
    const paced = async (pipe: ReadableStream<Uint8Array>) => {
      const h = new Bun.CryptoHasher("sha1");
      const t0 = performance.now();
      let n = 0;
      for await (const c of pipe) {
        h.update(c);
        n += c.length;
        const ahead = t0 + n / 150_000 - performance.now();
        if (ahead > 1) await Bun.sleep(ahead);
      }
      return [n, h.digest("hex")];
    };
    const run = async (args: string[]) => {
      const p = Bun.spawn([process.execPath, PLANTER, ...args], {
        env: baseEnv(d.home),
        stdout: "pipe",
        stderr: "pipe",
      });
      const [out, err, code] = await Promise.all([paced(p.stdout), new Response(p.stderr).text(), p.exited]);
      return { code, out, err };
    };
    const cat = `for i in ${Array.from({ length: copies }, (_, i) => i).join(" ")}; do cat '${work}/flood.bin'; done`;
    expect(await run(["run", "--", "sh", "-c", cat])).toEqual({ code: 0, out: want, err: "" });
    const j = await d.client.createJob({ argv: ["sh", "-c", cat] });
    expect(await run(["logs", "-f", j.id])).toEqual({ code: 0, out: want, err: "" });
    for (const job of (await d.client.listJobs({ limit: 1000 })).jobs.slice(-2)) await d.client.removeJob(job.id);
  }, 60_000);

  test("a job that cannot start: its record, no output, its record again", async () => {
    const { res, frames: f } = await attach({ argv: ["/nonexistent/program"] });
    expect(res.status).toBe(201);
    const got = await collect(f);
    expect(got.order).toEqual(["job", "job"]);
    expect(got.jobs.map((j) => [j.state, j.reason])).toEqual([
      ["failed", "spawn_error"],
      ["failed", "spawn_error"],
    ]);
  });

  test("a refused request is the usual JSON error, and no job is made", async () => {
    const before = (await d.client.listJobs({ limit: 1000 })).jobs.length;
    for (const [q, body, message] of [
      [
        "?attach=1",
        { argv: [] },
        "invalid job: × argv needs at least the program to run → at argv; × argv[0] must not be empty → at argv",
      ],
      ["?attach=2", { argv: ["true"] }, 'attach must be 1 or 0, not "2"'],
      ["?attach=1&follow=1", { argv: ["true"] }, 'unknown query parameter "follow"'],
    ] as const) {
      const r = await raw(d.socket, "POST", `/v1/jobs${q}`, JSON.stringify(body));
      expect([r.status, r.json.error?.code, r.json.error?.message]).toEqual([400, "E_BAD_REQUEST", message]);
    }
    expect((await d.client.listJobs({ limit: 1000 })).jobs.length).toBe(before);
  });

  test("a replayed request_ref streams the first job again (200), not a second one", async () => {
    const body = { argv: ["sh", "-c", "echo once"], request_ref: "attach-replay-1" };
    const first = await collect((await attach(body)).frames);
    const again = await attach(body);
    expect(again.res.status).toBe(200);
    const second = await collect(again.frames);
    expect(second.jobs[0]?.id).toBe(first.jobs[0]?.id as string);
    expect([first.stdout.toString(), second.stdout.toString()]).toEqual(["once\n", "once\n"]);
    expect(second.jobs[1]?.state).toBe("exited");
  });

  test("a job killed mid-stream: the stream ends with the killed job", async () => {
    const { frames: f } = await attach({ argv: ["sh", "-c", "echo ready; while :; do sleep 1; done"] });
    let id = "";
    let out = "";
    let last: Job | null = null;
    for await (const e of f) {
      if (e.kind === "job") {
        if (!id) id = e.job.id;
        else last = e.job;
      } else if (e.kind === "stdout") {
        out += Buffer.from(e.data).toString();
        if (out === "ready\n") await d.client.killJob(id, { force: true });
      }
    }
    expect([out, last?.state, last?.reason, last?.signal]).toEqual(["ready\n", "killed", "forced_kill", "KILL"]);
  });
});

/** What planterd holds that a stream could leave behind: requests in flight, fds, inotify watches. */
async function held() {
  const ready = (await raw(d.socket, "GET", "/v1/ready")).json as { requests_in_flight: number };
  let fds = 0;
  let watches = 0;
  const targets: string[] = [];
  for (const fd of readdirSync(`/proc/${d.proc.pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${d.proc.pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    // Bun's one inotify instance is made at the first watch and kept: its watches are what count.
    if (!target.includes("inotify")) fds++;
    targets.push(target.replace(/\d+/g, "N"));
    if (target.includes("inotify")) {
      const info = readFileSync(`/proc/${d.proc.pid}/fdinfo/${fd}`, "utf8");
      watches += info.split("\n").filter((l) => l.startsWith("inotify wd:")).length;
    }
  }
  // This request itself is in flight.
  return { inflight: ready.requests_in_flight - 1, fds, watches, targets: targets.sort().join(" ") };
}

/** A raw connection that sends `request` and counts what it reads; with `stall`, it stops reading after the first bytes. */
function rawClient(request: string, stall = false) {
  const s: Socket = createConnection({ path: d.socket });
  const c = { socket: s, bytes: 0 };
  s.on("data", (b) => {
    c.bytes += b.length;
    if (stall) {
      stall = false;
      s.pause();
    }
  });
  s.on("error", () => undefined);
  s.write(request);
  return c;
}

describe("a client that goes away or stops reading", () => {
  test("gone mid-follow (planterd waiting for bytes), mid-flood and mid-run: nothing is left in planterd", async () => {
    // What planterd holds with no job running and no request but this one: the baseline.
    await waitFor(async () => (await d.client.listJobs({ state: "running" })).jobs.length === 0, "no job running");
    await waitFor(async () => (await held()).inflight === 0, "no request in flight");
    const before = await held();
    // A job that writes a line every 10 ms, and a finished one with 30 MB of log.
    const slow = await d.client.createJob({ argv: ["sh", "-c", "while :; do echo tick; sleep 0.01; done"] });
    const big = await finished(
      (await d.client.createJob({ argv: ["sh", "-c", "head -c 30000000 /dev/zero | tr '\\0' y"] })).id,
    );
    const body = JSON.stringify({ argv: ["sh", "-c", "while :; do echo run; sleep 0.01; done"] });
    const clients = [
      rawClient(`GET ${rawPath(slow.id, "?follow=1")} HTTP/1.1\r\nHost: x\r\n\r\n`),
      // stderr stays empty: this one waits for bytes all along.
      rawClient(`GET ${rawPath(slow.id, "?follow=1&stream=stderr")} HTTP/1.1\r\nHost: x\r\n\r\n`),
      // The flood's reader stops reading: planterd waits on it.
      rawClient(`GET ${rawPath(big.id)} HTTP/1.1\r\nHost: x\r\n\r\n`, true),
      rawClient(
        `POST /v1/jobs?attach=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      ),
    ];
    await waitFor(() => clients.every((c) => c.bytes > 0), "every stream to have begun");
    expect((await held()).inflight).toBe(4);
    for (const c of clients) c.socket.destroy();
    await waitFor(async () => (await held()).inflight === 0, "planterd to end every stream");
    // The attached job runs on (a client going away is not a kill).
    const running = (await d.client.listJobs({ state: "running", limit: 1000 })).jobs;
    expect(running.map((j) => j.argv[2]).sort()).toEqual([
      "while :; do echo run; sleep 0.01; done",
      "while :; do echo tick; sleep 0.01; done",
    ]);
    for (const j of running) await d.client.killJob(j.id, { force: true });
    for (const j of running) await finished(j.id);
    // Every log fd, socket and inotify watch a stream took is given back.
    await waitFor(async () => {
      const now = await held();
      return now.inflight === 0 && now.fds <= before.fds && now.watches <= before.watches;
    }, "planterd to let go of everything the streams held").catch(async (e) => {
      throw new Error(`${e.message}: before ${JSON.stringify(before)}, now ${JSON.stringify(await held())}`);
    });
  }, 60_000);

  test("a reader that stops: planterd reads no further than it takes, and serves everyone else meanwhile", async () => {
    const big = await finished(
      (await d.client.createJob({ argv: ["sh", "-c", "head -c 64000000 /dev/zero | tr '\\0' z"] })).id,
    );
    const rss = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${d.proc.pid}/status`, "utf8"))?.[1]) * 1024;
    const base = rss();
    const c = rawClient(`GET ${rawPath(big.id)} HTTP/1.1\r\nHost: x\r\n\r\n`, true);
    await waitFor(() => c.bytes > 0, "the stream to begin");
    // A planterd that read on regardless would have read and queued all 64 MB before answering
    // these (its reads and writes never yield); one that waits for the reader holds a chunk or two.
    for (let i = 0; i < 20; i++) expect((await d.client.health()).ok).toBe(true);
    expect((await held()).inflight).toBe(1);
    expect(rss() - base).toBeLessThan(24 * 1024 * 1024);
    // Nor does it hold the log open while it waits for the reader.
    const open = readdirSync(`/proc/${d.proc.pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${d.proc.pid}/fd/${fd}`).includes(big.id);
      } catch {
        return false;
      }
    });
    expect(open).toEqual([]);
    // Then it reads, and gets all of it.
    c.socket.resume();
    await waitFor(() => c.bytes > 64_000_000, "the whole log", 30_000);
    c.socket.destroy();
  }, 60_000);
});

test("planter logs whose reader goes away (| head) stops at once, quietly, as cat does", async () => {
  const big = await finished(
    (await d.client.createJob({ argv: ["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x"] })).id,
  );
  const slow = await d.client.createJob({ argv: ["sh", "-c", "while :; do echo x; sleep 0.01; done"] });
  for (const args of [
    ["logs", big.id],
    ["logs", "--json", big.id],
    ["logs", "-f", slow.id],
  ]) {
    // bash prints planter's exit code once planter has exited; the reader takes 10 bytes and leaves.
    const p = Bun.spawn(
      [
        "bash",
        "-c",
        '"$@" 2>"$ERR" | head -c 10 >/dev/null; echo "${PIPESTATUS[0]}"',
        "bash",
        process.execPath,
        PLANTER,
        ...args,
      ],
      { env: { ...baseEnv(d.home), ERR: join(work, "head-err") }, stdout: "pipe", stderr: "inherit" },
    );
    expect({ args, code: (await new Response(p.stdout).text()).trim() }).toEqual({ args, code: "0" });
    expect(readFileSync(join(work, "head-err"), "utf8")).toBe("");
  }
  await d.client.killJob(slow.id, { force: true });
});

test("planterd stopping mid-stream cuts the streams: the CLI says where to read on, and that works", async () => {
  const s = await startDaemon();
  let again: DaemonHandle | null = null;
  try {
    const g = join(s.home, "gate");
    const wait = `while [ ! -e '${g}' ]; do sleep 0.01; done`;
    const j = await s.client.createJob({ argv: ["sh", "-c", `echo one; ${wait}; echo two`] });
    const logs = cliStream(s.home, ["logs", "-f", j.id]);
    const run = cliStream(s.home, ["run", "--", "sh", "-c", `echo started; ${wait}; echo finished`]);
    const fetched = reader(await fetch(`http://planterd${rawPath(j.id, "?follow=1")}`, { unix: s.socket }));
    await waitFor(
      () => logs.out === "one\n" && run.out === "started\n" && fetched.text === "one\n",
      "every stream to have begun",
    );
    expect(await s.stop()).toBe(0);
    const [l, r] = [await logs.done(), await run.done()];
    await fetched.done;
    // Not a clean end: each reader knows the stream was cut.
    expect(fetched.error).not.toBeNull();
    expect(l).toEqual({
      code: 3,
      stderr: `planter: lost the connection to planterd at ${s.socket} at byte 4 of stdout of job ${j.id}\nhint: read on from there: planter logs -f --offset 4 ${j.id}\n`,
    });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      /^planter: lost the connection to planterd at .* while job (j-[0-9a-z]+) ran\nhint: the job goes on and keeps its output: planter logs -f \1; its exit code: planter job wait \1\n$/,
    );
    // The jobs went on without planterd; the next one reads on where the cut left off.
    writeFileSync(g, "");
    again = await startDaemon({ home: s.home });
    await again.client.waitJob(j.id, 30_000);
    expect(await cli(s.home, ["logs", "-f", "--offset", "4", j.id])).toEqual({ code: 0, stdout: "two\n", stderr: "" });
    const id = /job (j-[0-9a-z]+) ran/.exec(r.stderr)?.[1] as string;
    expect((await cli(s.home, ["job", "wait", id])).code).toBe(0);
    expect((await cli(s.home, ["logs", id])).stdout).toBe("started\nfinished\n");
  } finally {
    for (const h of [s, again]) if (h && h.proc.exitCode === null) await h.stop();
    cleanup(s.home);
  }
}, 60_000);

test("planter run in one request still says at once that a permissive job runs without a sandbox", async () => {
  // A planterd that finds no bwrap on its PATH: a permissive job falls back to none.
  const shims = join(work, "no-bwrap");
  mkdirSync(shims);
  chmodSync(shims, 0o755);
  for (const tool of ["sh", "echo", "sleep"]) symlinkSync(Bun.which(tool) as string, join(shims, tool));
  const p = await startDaemon({ env: { PATH: shims }, config: '[sandbox]\nmode = "permissive"\n' });
  try {
    const g = gate();
    const live = cliStream(p.home, ["run", "--", "sh", "-c", `echo out; ${g.wait}`]);
    // The warning comes with the job's first record, before the job ends.
    await waitFor(() => live.out === "out\n", "the job's output");
    const [job] = (await p.client.listJobs({})).jobs as [Job];
    expect(job.state).toBe("running");
    g.open();
    const done = await live.done();
    expect(done).toEqual({
      code: 0,
      stderr: `planter: warning: job ${job.id} runs WITHOUT a sandbox (mode permissive, no sandbox backend works here); run \`planter doctor\`\n`,
    });
  } finally {
    await p.stop();
    cleanup(p.home);
  }
});

/** Only as root: planterd as root serves other uids, each to its own jobs. */
describe.skipIf(process.getuid?.() !== 0)("another uid", () => {
  let r: DaemonHandle;
  const HOSTILE = 65533;
  beforeAll(async () => {
    r = await startDaemon({ config: `[authz]\nallowed_uids = [65534, ${HOSTILE}]\n` });
    chmodSync(r.home, 0o755);
    chmodSync(join(r.home, "run"), 0o755);
    chmodSync(r.socket, 0o666);
  });
  afterAll(async () => {
    await r.stop();
    cleanup(r.home);
  });

  /** A request as `uid` (a script of its own: the test process is root); status and body. */
  async function as(uid: number, method: string, path: string, body?: unknown) {
    const script = `
      const res = await fetch("http://planterd" + ${JSON.stringify(path)}, { unix: ${JSON.stringify(r.socket)},
        method: ${JSON.stringify(method)}, body: ${JSON.stringify(body === undefined ? null : JSON.stringify(body))},
        headers: { "content-type": "application/json" } });
      const b = Buffer.from(await res.arrayBuffer());
      console.log(JSON.stringify({ status: res.status, type: res.headers.get("content-type"), body: b.toString("base64") }));
    `;
    const p = Bun.spawn(
      ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", process.execPath, "-e", script],
      { env: { PATH: "/usr/bin:/bin", HOME: "/tmp" }, cwd: "/tmp", stdout: "pipe", stderr: "pipe" },
    );
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (!out.trim()) throw new Error(`the request as uid ${uid} failed: ${err}`);
    const o = JSON.parse(out) as { status: number; type: string; body: string };
    const bytes = Buffer.from(o.body, "base64");
    return {
      status: o.status,
      type: o.type,
      bytes,
      json: o.type?.includes("json") ? JSON.parse(bytes.toString()) : null,
    };
  }

  test("a peer writing or ending another's job's stdin is refused, and nothing reaches the job", async () => {
    const job = await r.client.createJob({ argv: ["cat"], stdin: true });
    for (const uid of [65534, HOSTILE]) {
      const w = await as(uid, "POST", `/v1/jobs/${job.id}/stdin`, {
        data: Buffer.from("forged\n").toString("base64"),
        eof: true,
      });
      expect([w.status, w.json.error.code]).toEqual([403, "E_UNAUTHORIZED_PEER"]);
    }
    expect((await r.client.getJob(job.id)).stdin).toEqual({ open: true });
    await r.client.writeStdin(job.id, { data: Buffer.from("own\n").toString("base64"), eof: true });
    expect((await r.client.waitJob(job.id, 20_000)).job.exit_code).toBe(0);
    expect(Buffer.from((await r.client.logs(job.id, {})).data, "base64").toString()).toBe("own\n");
    // The tests below count this daemon's jobs.
    await r.client.removeJob(job.id);
  });

  test("a peer asking for another's job stream is refused as the JSON API refuses it, with nothing of the log", async () => {
    const body = { argv: ["sh", "-c", "echo root-secret; echo more >&2"], request_ref: "root-ref" };
    const own = await collect((await attachTo(r, body)).frames);
    const id = own.jobs[0]?.id as string;
    expect(own.stdout.toString()).toBe("root-secret\n");
    for (const uid of [65534, HOSTILE]) {
      const json = await as(uid, "GET", `/v1/jobs/${id}/logs`);
      expect([json.status, json.json.error.code]).toEqual([403, "E_UNAUTHORIZED_PEER"]);
      for (const q of ["", "?follow=1", "?stream=stderr", "?offset=0&follow=1&stream=stderr"]) {
        const streamed = await as(uid, "GET", `/v1/jobs/${id}/logs/raw${q}`);
        expect({ status: streamed.status, body: streamed.json }).toEqual({ status: 403, body: json.json });
        expect(streamed.bytes.includes("root-secret")).toBe(false);
      }
      // Nor the file itself: refused before anything is opened.
      for (const q of ["", "?stream=stderr"]) {
        const passed = await as(uid, "GET", `/v1/jobs/${id}/logs/fd${q}`);
        expect({ status: passed.status, body: passed.json }).toEqual({ status: 403, body: json.json });
      }
      // Replaying root's request (same ref, same body) with attach would read its output: refused.
      const replay = await as(uid, "POST", "/v1/jobs?attach=1", body);
      expect({ status: replay.status, body: replay.json }).toEqual({ status: 403, body: json.json });
      expect(replay.bytes.includes("root-secret")).toBe(false);
    }
    expect((await r.client.listJobs({ limit: 100 })).jobs.length).toBe(1);
  });

  test("each uid streams its own jobs, through the CLI too; root reads them all; the others' are refused", async () => {
    const mine = await cli(r.home, ["run", "--", "sh", "-c", "echo mine; echo also >&2; exit 4"], {
      uid: 65534,
      env: { PLANTER_SOCKET: r.socket, HOME: "/tmp" },
    });
    expect(mine).toEqual({ code: 4, stdout: "mine\n", stderr: "also\n" });
    const id = (await r.client.listJobs({ limit: 100 })).jobs.find((j) => j.argv[2]?.includes("echo mine"))
      ?.id as string;
    const logsAs = (uid: number) => cli(r.home, ["logs", id], { uid, env: { PLANTER_SOCKET: r.socket, HOME: "/tmp" } });
    expect(await logsAs(65534)).toEqual({ code: 0, stdout: "mine\n", stderr: "" });
    expect((await as(0, "GET", `/v1/jobs/${id}/logs/raw`)).bytes.toString()).toBe("mine\n");
    const hostile = await logsAs(HOSTILE);
    expect([hostile.code, hostile.stdout]).toEqual([1, ""]);
    expect(hostile.stderr).toContain(`planter: job ${id} runs as uid 65534, not as you (uid ${HOSTILE})`);
  }, 60_000);
});

/** POST /v1/jobs?attach=1 to another daemon. */
async function attachTo(h: DaemonHandle, body: Record<string, unknown>) {
  const res = await fetch("http://planterd/v1/jobs?attach=1", {
    unix: h.socket,
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
  });
  return { res, frames: frames(res) };
}
