/**
 * 17. Egress proxy (#15): lib/net/proxy.ts between curl and an origin in another process, on
 * loopback. Three paths, interleaved: direct; through the proxy on a TCP listener it serves itself
 * (what a listener made in the job's network namespace and held by planterd would be); through
 * the TCP→Unix bridge compiled as its own program and the proxy's Unix socket (the in-sandbox
 * bridge). Also the bridge program's start time and RSS, and the compiled planter's, for the
 * in-sandbox design (plans/design.md "Egress (#15)"). Runs alone (`bun bench/net.ts`).
 */
import { mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { EgressProxy } from "../lib/net/proxy.ts";
import { header, median, note, percentile, procStatusKb, report } from "./common.ts";

const BENCH = "17 net";
const ROOT = join(import.meta.dir, "..");
const BIG = 100 * 1024 * 1024;
const ROUNDS = 5;
const SETUP_N = 60;
const CONCURRENT = 200;

async function firstLine(s: ReadableStream<Uint8Array>): Promise<string> {
  const reader = s.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return text.trim();
}

async function curl(args: string[]): Promise<string> {
  const p = Bun.spawn(["curl", "-sS", "--max-time", "120", ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`curl ${args.join(" ")}: exit ${code}: ${err}`);
  return out;
}

/** Compile a script the way .ci/compile does (minified bytecode). */
async function compile(entry: string, out: string): Promise<void> {
  const p = Bun.spawn(
    ["bun", "build", "--compile", "--minify", "--bytecode", "--format=esm", entry, "--outfile", out],
    {
      cwd: ROOT,
      stdout: "ignore",
      stderr: "pipe",
    },
  );
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`bun build ${entry}: ${err}`);
}

type Variants = Record<string, { opts: string[]; url: (path: string) => string }>;
const each = (urls: string[]) => urls.flatMap((u) => ["-o", "/dev/null", u]);

/** Start the bridge program 5 times (start to listening); the last one keeps running. */
async function startBridge(bin: string, sock: string): Promise<{ proc: ReturnType<typeof Bun.spawn>; port: number }> {
  const starts: number[] = [];
  for (let i = 0; ; i++) {
    const t0 = performance.now();
    const b = Bun.spawn([bin, sock], { stdout: "pipe", stderr: "inherit" });
    const port = Number(await firstLine(b.stdout as ReadableStream<Uint8Array>));
    starts.push(performance.now() - t0);
    if (i === 4) {
      const list = starts.map((x) => x.toFixed(1)).join(", ");
      note(`bridge program start to listening: median ${median(starts).toFixed(1)} ms (${list})`);
      return { proc: b, port };
    }
    b.kill();
    await b.exited;
  }
}

/** 100 MiB downloads on each path, interleaved, after one warm-up round. */
async function downloads(variants: Variants): Promise<void> {
  const times: Record<string, number[]> = {};
  for (let r = 0; r < ROUNDS + 1; r++) {
    for (const [name, v] of Object.entries(variants)) {
      const out = await curl([...v.opts, "-w", "%{time_total} %{size_download}", ...each([v.url(`/big/${BIG}`)])]);
      const [t, size] = out.split(" ").map(Number) as [number, number];
      if (size !== BIG) throw new Error(`${name}: got ${size} bytes`);
      if (r > 0) times[name] = [...(times[name] ?? []), t * 1000];
    }
  }
  for (const [name, t] of Object.entries(times)) {
    const rate = BIG / 1e6 / (median(t) / 1000);
    note(
      `${name}: median ${median(t).toFixed(0)} ms (${rate.toFixed(0)} MB/s); ${t.map((x) => x.toFixed(0)).join(", ")}`,
    );
  }
  const direct = median(times.direct ?? []);
  report(BENCH, "100 MiB via the proxy / direct", median(times.proxy ?? []) / direct, "×", "le", 1.1);
  report(BENCH, "100 MiB via bridge + proxy / direct", median(times.bridge ?? []) / direct, "×", "le", 1.1);
}

/** Time to first byte of small requests, each on a new connection (two interleaved rounds). */
async function setup(variants: Variants): Promise<void> {
  const times: Record<string, number[]> = {};
  for (let r = 0; r < 2; r++) {
    for (const [name, v] of Object.entries(variants)) {
      const urls = Array.from({ length: SETUP_N }, () => v.url("/small"));
      const out = await curl([...v.opts, "-H", "Connection: close", "-w", "%{time_starttransfer}\\n", ...each(urls)]);
      const got = out
        .trim()
        .split("\n")
        .map((x) => Number(x) * 1000);
      if (got.length !== SETUP_N) throw new Error(`${name}: ${got.length} answers`);
      times[name] = [...(times[name] ?? []), ...got.slice(5)];
    }
  }
  for (const [name, t] of Object.entries(times)) {
    note(`${name}: first byte p50 ${median(t).toFixed(2)} ms, p95 ${percentile(t, 95).toFixed(2)} ms`);
  }
  const direct = median(times.direct ?? []);
  report(BENCH, "set-up added by the proxy, p50", median(times.proxy ?? []) - direct, "ms", "le", 1);
  report(BENCH, "set-up added by bridge + proxy, p50", median(times.bridge ?? []) - direct, "ms", "le", 1);
}

/** CONCURRENT slow requests at once through one proxy. */
async function concurrent(proxy: EgressProxy, opts: string[], url: (path: string) => string): Promise<void> {
  let peak = 0;
  const watch = setInterval(() => {
    peak = Math.max(peak, proxy.active);
  }, 5);
  const urls = Array.from({ length: CONCURRENT }, () => url("/slow/1500"));
  const par = ["--parallel", "--parallel-immediate", "--parallel-max", String(CONCURRENT)];
  const out = await curl([...par, ...opts, "-w", "%{http_code}\\n", ...each(urls)]);
  clearInterval(watch);
  const ok = out
    .trim()
    .split("\n")
    .filter((c) => c === "200").length;
  note(`peak open connections in the proxy: ${peak}`);
  report(BENCH, `${CONCURRENT} concurrent via one proxy: answered`, ok, "", "ge", CONCURRENT, 0);
  note(`the proxy's process (this one): VmRSS ${(procStatusKb(process.pid, "VmRSS") / 1024).toFixed(1)} MB`);
}

/** The compiled planter's start and RSS (an in-sandbox bridge would be this binary). */
async function planterBinary(dir: string): Promise<void> {
  const planter = join(dir, "planter");
  const build = Bun.spawn([join(ROOT, ".ci/compile"), planter], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
  if ((await build.exited) !== 0) return note("compiled planter: .ci/compile failed, not measured");
  const runs: number[] = [];
  let rss = 0;
  for (let i = 0; i < 8; i++) {
    const t0 = performance.now();
    const v = Bun.spawn(["/usr/bin/time", "-f", "%M", planter, "--version"], { stdout: "ignore", stderr: "pipe" });
    const err = await new Response(v.stderr).text();
    await v.exited;
    runs.push(performance.now() - t0);
    rss = Math.max(rss, Number(err.trim().split("\n").pop()));
  }
  note(
    `compiled planter --version: median ${median(runs.slice(2)).toFixed(1)} ms, max RSS ${(rss / 1024).toFixed(1)} MB`,
  );
}

export async function netBench(): Promise<void> {
  header(`17. Egress proxy: ${BIG / 1024 / 1024} MiB downloads, connection set-up, ${CONCURRENT} at once`);
  note(
    `load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  const dir = mkdtempSync(join(tmpdir(), "pb-net-"));
  const origin = Bun.spawn(["bun", join(ROOT, "bench/net-origin-fixture.ts")], { stdout: "pipe", stderr: "inherit" });
  const proxy = new EgressProxy({
    rules: { allow: ["origin.bench"], deny: [], allow_local: true },
    onRecord: () => {},
    resolve: async () => [{ address: "127.0.0.1" }],
    limits: { maxConnections: 1024 },
  });
  const srv = net.createServer({ allowHalfOpen: true }, (s) => proxy.handle(s));
  let bridgeProc: ReturnType<typeof Bun.spawn> | null = null;
  try {
    const oport = Number(await firstLine(origin.stdout as ReadableStream<Uint8Array>));
    const sock = join(dir, "egress.sock");
    await proxy.listen(sock);
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    const pport = (srv.address() as net.AddressInfo).port;
    const bridgeBin = join(dir, "net-bridge");
    await compile("bench/net-bridge-fixture.ts", bridgeBin);
    const b = await startBridge(bridgeBin, sock);
    bridgeProc = b.proc;
    const idleRss = procStatusKb(b.proc.pid, "VmRSS") / 1024;
    const url = (path: string) => `http://origin.bench:${oport}${path}`;
    const variants: Variants = {
      direct: { opts: [], url: (path) => `http://127.0.0.1:${oport}${path}` },
      proxy: { opts: ["-p", "-x", `http://127.0.0.1:${pport}`], url },
      bridge: { opts: ["-p", "-x", `http://127.0.0.1:${b.port}`], url },
    };
    await downloads(variants);
    const mb = (f: string) => (procStatusKb(b.proc.pid, f) / 1024).toFixed(1);
    note(`bridge RSS: ${idleRss.toFixed(1)} MB idle, ${mb("VmRSS")} MB after the downloads (VmHWM ${mb("VmHWM")} MB)`);
    await setup(variants);
    await concurrent(proxy, variants.proxy?.opts ?? [], url);
    await planterBinary(dir);
  } finally {
    bridgeProc?.kill();
    origin.kill();
    srv.close();
    await proxy.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await netBench();
