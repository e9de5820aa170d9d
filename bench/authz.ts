/**
 * 7. Authorization and load: (a) what the per-connection peer check costs — GET /v1/jobs/{id} on
 * a new connection per request against one kept-alive connection, and the check itself
 * (SO_PEERCRED through bun:ffi, groups, decide) timed in this process; (b) 100 concurrent clients
 * of mixed reads and job submissions for 30 s: errors and the daemon's RSS over time.
 */

import { createConnection, createServer, type Socket } from "node:net";
import { join } from "node:path";
import type { Job } from "../lib/api/contract.ts";
import { loadConfig } from "../lib/config.ts";
import { decide, resolvePolicy } from "../lib/daemon/authz.ts";
import { type Peer, peerReader, procGroups, socketFd } from "../lib/daemon/peer.ts";
import { resolvePaths } from "../lib/paths.ts";
import { baseEnv } from "../test/harness.ts";
import {
  allJobs,
  type BenchDaemon,
  cpuMs,
  type DaemonKind,
  header,
  median,
  note,
  percentile,
  procStatusKb,
  report,
  spread,
  withDaemon,
} from "./common.ts";
import { ensureFreshBinary } from "./fresh.ts";

const BENCH = "7 authz";
const REQUESTS = 2000;
const REQ_WARMUP = 200;
const CALLS = 10_000;
const CLIENTS = 100;
const LOAD_MS = 30_000;
/** Share of requests that submit a job, and the bounds on submissions: rate and total. */
const SUBMIT_SHARE = 0.1;
const SUBMIT_RATE = 100;
const MAX_JOBS = 3000;

// ---------------------------------------------------------------- raw HTTP over node:net

/** Parse one HTTP/1.1 response off the front of `buf` (Content-Length bodies): status and its length, or null. */
function parseResponse(buf: Buffer): { status: number; length: number } | null {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const head = buf.subarray(0, end).toString("latin1");
  const status = Number(head.slice(9, 12));
  const m = head.match(/\r\ncontent-length:\s*(\d+)/i);
  const length = end + 4 + (m ? Number(m[1]) : 0);
  return buf.length >= length ? { status, length } : null;
}

/** GET on a connection of its own (`Connection: close`): the daemon accepts, checks the peer, answers, closes. */
function getOnNewConnection(socket: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = createConnection({ path: socket });
    let buf = Buffer.alloc(0);
    c.once("connect", () => c.write(`GET ${path} HTTP/1.1\r\nHost: planterd\r\nConnection: close\r\n\r\n`));
    c.on("data", (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
    });
    c.once("end", () => {
      c.destroy();
      const r = parseResponse(buf);
      if (r?.status === 200) resolve(r.status);
      else reject(new Error(`GET ${path} on a new connection: ${r ? `HTTP ${r.status}` : "no complete response"}`));
    });
    c.once("error", reject);
  });
}

/** One kept-alive connection with the same raw client, for the comparison. */
class KeepAlive {
  private readonly c: Socket;
  private buf = Buffer.alloc(0);
  private waiting: ((r: { status: number }) => void) | null = null;
  private failed: Error | null = null;
  readonly ready: Promise<void>;

  constructor(socket: string) {
    this.c = createConnection({ path: socket });
    this.ready = new Promise((resolve, reject) => {
      this.c.once("connect", () => resolve());
      this.c.once("error", reject);
    });
    this.c.on("error", (e) => {
      this.failed = e;
    });
    this.c.on("data", (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      const r = parseResponse(this.buf);
      if (!r || !this.waiting) return;
      this.buf = this.buf.subarray(r.length);
      const w = this.waiting;
      this.waiting = null;
      w(r);
    });
  }

  async get(path: string): Promise<void> {
    if (this.failed) throw this.failed;
    const r = await new Promise<{ status: number }>((resolve) => {
      this.waiting = resolve;
      this.c.write(`GET ${path} HTTP/1.1\r\nHost: planterd\r\n\r\n`);
    });
    if (r.status !== 200) throw new Error(`GET ${path} (keep-alive): HTTP ${r.status}`);
  }

  close(): void {
    this.c.destroy();
  }
}

// ---------------------------------------------------------------- (a) cost of the peer check

/** getsockopt(SO_PEERCRED) alone through bun:ffi, as lib/daemon/peer.ts calls it. */
async function bareGetsockopt(): Promise<(fd: number) => number> {
  const { dlopen, FFIType, ptr } = await import("bun:ffi");
  const lib = dlopen("libc.so.6", {
    getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  });
  const buf = new Int32Array(3);
  const len = new Uint32Array(1);
  return (fd) => {
    len[0] = 12;
    return lib.symbols.getsockopt(fd, 1, 17, ptr(buf), ptr(len));
  };
}

/** Per-call µs of `fn`, `n` times. */
function timeCalls(n: number, fn: () => void): number[] {
  const out: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn();
    out[i] = (performance.now() - t0) * 1000;
  }
  return out;
}

const us = (s: number[]) =>
  `p50 ${percentile(s, 50).toFixed(2)} / p90 ${percentile(s, 90).toFixed(2)} / p99 ${percentile(s, 99).toFixed(2)} µs`;

/** The check in this process, on the accepted end of a connection to a listener of our own. */
async function inProcess(d: BenchDaemon): Promise<void> {
  const path = join(d.home, "peer.sock");
  let accepted: (s: Socket) => void = () => undefined;
  const got = new Promise<Socket>((resolve) => {
    accepted = resolve;
  });
  const server = createServer((s) => accepted(s));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ path }, () => resolve());
  });
  const client = createConnection({ path });
  try {
    const s = await got;
    const fd = socketFd(s);
    if (fd === null)
      throw new Error("no fd on the accepted socket (socketFd): the daemon could not check peers either");
    const read = await peerReader();
    if (!read) throw new Error(`no peer reader on ${process.platform}`);
    // The daemon's policy, resolved as lib/daemon/main.ts does.
    const paths = resolvePaths(baseEnv(d.home));
    const policy = resolvePolicy(loadConfig(paths.configPath).authz, paths.mode, process.getuid?.() ?? 0);
    const peer = read(fd);
    const decision = decide(policy, peer);
    if (!peer || !decision.allow) throw new Error(`the peer check refused this process: ${JSON.stringify(peer)}`);

    for (let i = 0; i < 1000; i++) decide(policy, read(fd)); // warm-up (JIT)
    const full = timeCalls(CALLS, () => {
      decide(policy, read(fd));
    });
    report(BENCH, "peer check p50 (FFI + groups + decide)", percentile(full, 50), "µs", "le", 50, 2);
    note(`peerReader()(fd) + decide(), ${CALLS} calls in-process: ${us(full)} (goal 50 µs = 0.05 ms)`);

    const raw = await bareGetsockopt();
    const ffi = timeCalls(CALLS, () => {
      if (raw(fd) !== 0) throw new Error("getsockopt(SO_PEERCRED) failed");
    });
    const pid = peer.pid ?? process.pid;
    const groups = timeCalls(CALLS, () => {
      procGroups(pid);
    });
    const allow = timeCalls(CALLS, () => {
      decide(policy, peer);
    });
    const stranger: Peer = { pid: null, uid: 64_000, gid: 64_000, groups: [64_000, 64_001, 64_002] };
    const deny = timeCalls(CALLS, () => {
      decide(policy, stranger);
    });
    note(
      `breakdown p50: getsockopt through bun:ffi ${percentile(ffi, 50).toFixed(2)} µs; /proc/<pid>/status groups ` +
        `${percentile(groups, 50).toFixed(2)} µs; decide() allow ${percentile(allow, 50).toFixed(2)} µs, refuse ${percentile(deny, 50).toFixed(2)} µs`,
    );
    note(
      `peer ${JSON.stringify(peer)}; policy uids [${policy.uids.join(", ")}], groups [${policy.groupNames.join(", ")}] (${paths.mode} mode)`,
    );
  } finally {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function peerCost(): Promise<void> {
  await withDaemon("source", async (d) => {
    const job = await d.client.createJob({ argv: ["/bin/true"] });
    await d.client.waitJob(job.id, 10_000);
    const path = `/v1/jobs/${job.id}`;
    const ka = new KeepAlive(d.socket);
    await ka.ready;
    try {
      for (let i = 0; i < REQ_WARMUP; i++) {
        await getOnNewConnection(d.socket, path);
        await ka.get(path);
      }
      const fresh: number[] = [];
      const kept: number[] = [];
      let freshCpu = 0;
      let keptCpu = 0;
      const deadline = performance.now() + 20_000;
      // Blocks of 100, alternating, so that daemon CPU can be read per kind.
      while (fresh.length < REQUESTS && performance.now() < deadline) {
        let c0 = cpuMs(d.pid);
        for (let i = 0; i < 100; i++) {
          const t0 = performance.now();
          await getOnNewConnection(d.socket, path);
          fresh.push(performance.now() - t0);
        }
        freshCpu += cpuMs(d.pid) - c0;
        c0 = cpuMs(d.pid);
        for (let i = 0; i < 100; i++) {
          const t0 = performance.now();
          await ka.get(path);
          kept.push(performance.now() - t0);
        }
        keptCpu += cpuMs(d.pid) - c0;
      }
      note(`GET ${path}, raw node:net client, daemon bun scripts/planter.ts daemon (pid ${d.pid}):`);
      note(`new connection per request (Connection: close): ${spread(fresh)}`);
      note(`one kept-alive connection:                      ${spread(kept)}`);
      note(
        `a new connection adds ${(median(fresh) - median(kept)).toFixed(3)} ms at p50 (connect, accept, peer check, ` +
          `HTTP parser, close); daemon CPU ${((freshCpu / fresh.length) * 1000).toFixed(0)} µs/request on new ` +
          `connections vs ${((keptCpu / kept.length) * 1000).toFixed(0)} µs kept alive (10 ms tick resolution)`,
      );
    } finally {
      ka.close();
    }
    await inProcess(d);
  });
}

// ---------------------------------------------------------------- (b) 100 clients, 30 s

type Op = "get" | "list" | "logs" | "submit";

/** The request each operation makes (`id`: a job's, for get and logs). */
const LOAD_REQUESTS: Record<Op, (id: string) => { url: string; init?: RequestInit }> = {
  get: (id) => ({ url: `/v1/jobs/${id}` }),
  list: () => ({ url: "/v1/jobs?limit=20" }),
  logs: (id) => ({ url: `/v1/jobs/${id}/logs` }),
  submit: () => ({
    url: "/v1/jobs",
    init: {
      method: "POST",
      body: JSON.stringify({ argv: ["/bin/true"] }),
      headers: { "content-type": "application/json" },
    },
  }),
};

async function load(kind: DaemonKind): Promise<void> {
  const label = kind === "source" ? "source daemon" : "dist/planter daemon";
  await withDaemon(kind, async (d) => {
    const seed = await d.client.createJob({ argv: ["/bin/echo", "a line from the seed job"] });
    await d.client.waitJob(seed.id, 10_000);
    const ids: string[] = [seed.id];
    const lat: Record<Op, number[]> = { get: [], list: [], logs: [], submit: [] };
    const errors = new Map<string, number>();
    let errorCount = 0;
    let total = 0;
    let submitted = 0;
    let failedJobs = 0;
    const fail = (what: string) => {
      errorCount++;
      errors.set(what, (errors.get(what) ?? 0) + 1);
    };

    const rss: { t: number; kb: number }[] = [];
    const start = performance.now();
    const end = start + LOAD_MS;
    const sampler = setInterval(
      () => rss.push({ t: performance.now() - start, kb: procStatusKb(d.pid, "VmRSS") }),
      1000,
    );
    const cpu0 = cpuMs(d.pid);
    const mayJob = () => submitted < Math.min(MAX_JOBS, ((performance.now() - start) / 1000) * SUBMIT_RATE);

    // One request of `op`, timed; a submitted job joins those the reads pick from.
    const send = async (op: Op, id: string) => {
      if (op === "submit") submitted++;
      const { url, init = {} } = LOAD_REQUESTS[op](id);
      total++;
      const t0 = performance.now();
      try {
        const res = await fetch(`http://planterd${url}`, { ...init, unix: d.socket });
        const text = await res.text();
        lat[op].push(performance.now() - t0);
        if (res.status < 200 || res.status > 299) fail(`${op}: HTTP ${res.status} ${text.slice(0, 160)}`);
        else if (op === "submit") {
          const job = JSON.parse(text) as Job;
          ids.push(job.id);
          if (job.state === "failed") failedJobs++;
        }
      } catch (e) {
        fail(`${op}: ${(e as Error).message}`);
      }
    };
    const client = async () => {
      while (performance.now() < end) {
        const r = Math.random();
        const op: Op =
          r < SUBMIT_SHARE && mayJob()
            ? "submit"
            : ((["get", "list", "logs"] as const)[Math.floor(Math.random() * 3)] as Op);
        await send(op, ids[Math.floor(Math.random() * ids.length)] as string);
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    clearInterval(sampler);
    const elapsed = performance.now() - start;
    const cpu = cpuMs(d.pid) - cpu0;
    rss.push({ t: elapsed, kb: procStatusKb(d.pid, "VmRSS") });

    // VmRSS moves by a few MB with each GC: compare the medians of the samples at 9–11 s and 28–30 s.
    const around = (from: number, to: number) =>
      median(rss.filter((x) => x.t >= from * 1000 - 500 && x.t <= to * 1000 + 500).map((x) => x.kb));
    const r10 = around(9, 11);
    const r30 = around(28, 30);
    const growth = ((r30 - r10) / r10) * 100;
    report(BENCH, `${label}: errors in ${(elapsed / 1000).toFixed(0)} s`, errorCount, "", "le", 0, 0);
    report(BENCH, `${label}: VmRSS growth 10 s → 30 s`, growth, "%", "le", 10, 1);
    note(
      `${total} requests, ${((total / elapsed) * 1000).toFixed(0)} req/s from ${CLIENTS} clients (Bun fetch, keep-alive); ` +
        `daemon CPU ${((cpu / elapsed) * 100).toFixed(0)}% of one core`,
    );
    for (const op of ["get", "list", "logs", "submit"] as const) {
      note(`${op.padEnd(6)} ${String(lat[op].length).padStart(6)}: ${spread(lat[op], 2)}`);
    }
    note(
      `VmRSS MB by second: ${rss.map((s) => (s.kb / 1024).toFixed(0)).join(" ")}; ` +
        `median of 9–11 s ${(r10 / 1024).toFixed(1)}, of 28–30 s ${(r30 / 1024).toFixed(1)}, ` +
        `VmHWM ${(procStatusKb(d.pid, "VmHWM") / 1024).toFixed(1)}`,
    );
    for (const [what, n] of [...errors].slice(0, 5)) note(`error ×${n}: ${what}`);

    // Let the jobs finish, then account for them.
    const settle = performance.now() + 15_000;
    while (performance.now() < settle && (await allJobs(d.client, "running")).length > 0) await Bun.sleep(50);
    const jobs = await allJobs(d.client);
    const states = new Map<string, number>();
    for (const j of jobs) {
      const k = `${j.state}/${j.exit_code}`;
      states.set(k, (states.get(k) ?? 0) + 1);
    }
    note(
      `${submitted} jobs submitted (≤ ${SUBMIT_RATE}/s, ≤ ${MAX_JOBS}), ${failedJobs} answered failed; after settling: ` +
        `${[...states].map(([k, n]) => `${k} ${n}`).join(", ")}; VmRSS ${(procStatusKb(d.pid, "VmRSS") / 1024).toFixed(1)} MB`,
    );
  });
}

export async function authzBench(): Promise<void> {
  header(`7a. Peer check: GET /v1/jobs/{id} on a new connection per request vs kept alive; the check in-process`);
  await peerCost();
  header(
    `7b. ${CLIENTS} concurrent clients for ${LOAD_MS / 1000} s: reads (job, list, logs) and ~${SUBMIT_SHARE * 100}% /bin/true submissions`,
  );
  await load("source");
  await ensureFreshBinary();
  await load("compiled");
}
