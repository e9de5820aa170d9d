/**
 * 20. Egress through a real job (#15): planterd (compiled when dist/planter exists, else source)
 * as root with bwrap; an origin on 127.0.0.1 in this process's child; a job in a cell with an
 * allow list reaching it by name through its proxy, against a job in a cell with the host's
 * network reaching it directly, interleaved. curl runs inside the jobs and reports its own times.
 * `bun bench/run.ts egress`.
 */
import { existsSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import type { Job } from "../lib/api/contract.ts";
import { BINARY, daemon, header, median, note, percentile, report } from "./common.ts";

const BENCH = "20 egress";
const BIG = 100 * 1024 * 1024;
const ROUNDS = 5;
const SETUP_N = 60;
const CONCURRENT = 200;
const LAUNCHES = 20;

export async function egressBench(): Promise<void> {
  header(`${BENCH}: a list job's proxy against the host's network, inside jobs (load ${loadavg()[0]?.toFixed(1)})`);
  // The origin in a process of its own, as a real server would be.
  const origin = Bun.spawn(
    [
      process.execPath,
      "-e",
      `const big = new Uint8Array(${BIG}).fill(97);
       const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (r) => new URL(r.url).pathname === "/big" ? new Response(big) : new Response("ok\\n") });
       console.log(s.port);`,
    ],
    { stdout: "pipe", stderr: "inherit" },
  );
  const reader = origin.stdout.getReader();
  const port = Number(new TextDecoder().decode((await reader.read()).value).trim());
  const kind = existsSync(BINARY) ? "compiled" : "source";
  const config = `[sandbox]\nmode = "enforced"\nwarm_ms = 0\n[network.hosts]\n"origin.test" = ["127.0.0.1"]\n`;
  const d = await daemon(kind, config);
  try {
    await d.client.createCell({
      name: "list",
      sandbox: { policy: { network: { allow: ["origin.test"], allow_local: true } } },
    } as never);
    await d.client.createCell({ name: "host", sandbox: { policy: { network: "host" } } } as never);
    await d.client.createCell({ name: "none", sandbox: { policy: { network: "none" } } } as never);
    const run = async (cell: string, script: string): Promise<{ out: string; ms: number }> => {
      const t = performance.now();
      const j = await d.client.createJob({ cell, argv: ["/bin/sh", "-c", script] } as never);
      const end = (await d.client.waitJob(j.id, 300_000)).job as Job;
      const ms = performance.now() - t;
      const out = readFileSync(join(d.home, "state", "jobs", j.id, "stdout"), "utf8");
      if (end.exit_code !== 0) throw new Error(`job in ${cell} ended ${end.state} ${end.exit_code}: ${out}`);
      return { out, ms };
    };
    const url = (host: string, path: string) => `http://${host}:${port}${path}`;
    const via = { list: "origin.test", host: "127.0.0.1" } as const;

    // 100 MiB, curl's own total time.
    const big: Record<string, number[]> = { list: [], host: [] };
    for (let i = 0; i < ROUNDS; i++) {
      for (const cell of ["list", "host"] as const) {
        const r = await run(cell, `curl -sS -o /dev/null -w '%{time_total}' ${url(via[cell], "/big")}`);
        big[cell]?.push(Number(r.out) * 1000);
      }
    }
    const bigRatio = median(big.list ?? []) / median(big.host ?? []);
    note(
      `100 MiB: proxy ${median(big.list ?? []).toFixed(0)} ms, direct ${median(big.host ?? []).toFixed(0)} ms (medians of ${ROUNDS})`,
    );
    report(BENCH, "100 MiB through the proxy / direct", bigRatio, "×", "le", 1.1);

    // Set-up: time to the first byte of a tiny answer, SETUP_N sequential requests in one job.
    const first = async (cell: "list" | "host") => {
      const script = `for i in $(seq ${SETUP_N}); do curl -sS -o /dev/null -w '%{time_starttransfer}\\n' ${url(via[cell], "/")}; done`;
      return (await run(cell, script)).out
        .trim()
        .split("\n")
        .map((x) => Number(x) * 1000);
    };
    const setup: Record<string, number[]> = { list: [], host: [] };
    for (let i = 0; i < 2; i++) for (const cell of ["list", "host"] as const) setup[cell]?.push(...(await first(cell)));
    const added = percentile(setup.list ?? [], 50) - percentile(setup.host ?? [], 50);
    note(
      `first byte p50: proxy ${percentile(setup.list ?? [], 50).toFixed(2)} ms, direct ${percentile(setup.host ?? [], 50).toFixed(2)} ms (curl's CONNECT-less HTTP proxying: one request each)`,
    );
    report(BENCH, "connection set-up added, p50", added, "ms", "le", 1);

    // 200 at once through one job's proxy.
    const many = await run(
      "list",
      `seq ${CONCURRENT} | xargs -P ${CONCURRENT} -I{} curl -sS -o /dev/null -w '%{http_code}\\n' ${url(via.list, "/")} | sort | uniq -c`,
    );
    const ok = Number(/(\d+) 200/.exec(many.out)?.[1] ?? 0);
    report(BENCH, `${CONCURRENT} concurrent connections answered`, ok, "", "ge", CONCURRENT, 0);

    // What a list job's start costs: `true` in a list cell against one with no network.
    const launch: Record<string, number[]> = { list: [], none: [] };
    for (let i = 0; i < LAUNCHES; i++) {
      for (const cell of ["list", "none"] as const) launch[cell]?.push((await run(cell, "true")).ms);
    }
    note(
      `submit → end of \`true\`: list ${median(launch.list ?? []).toFixed(1)} ms, none ${median(launch.none ?? []).toFixed(1)} ms (medians of ${LAUNCHES}; ${kind} planterd)`,
    );
  } finally {
    await d.dispose();
    origin.kill();
  }
}

if (import.meta.main) await egressBench();
