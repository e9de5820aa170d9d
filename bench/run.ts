#!/usr/bin/env bun
/**
 * planter benchmarks: `bun bench/run.ts [api] [spawn] [follow] [cli] [rss] [sandbox] [authz] [limits] [terminal] [hardening] [hostexec] [history] [walk] [logs] [procs] [throughput] [net] [egress] [tty] [attach] [launch] [events] [stdin] [agents] [agents-soak] [targets] [mcp] [vm]` (all but procs, egress, tty, launch, events, agents, agents-soak, targets and vm by default).
 * Each benchmark starts its own planterd in a fresh /tmp dir, is bounded in count and time,
 * prints its figures beside their goals, and cleans up. Goals are targets, not tests: the exit
 * code is 0 unless a benchmark could not run.
 */
import { loadavg } from "node:os";
import { agentsBench, agentsSoakBench } from "./agents.ts";
import { apiBench } from "./api.ts";
import { attachBench } from "./attach.ts";
import { authzBench } from "./authz.ts";
import { cliBench } from "./cli.ts";
import { disposeAll, figures, summaryTable, within } from "./common.ts";
import { egressBench } from "./egress.ts";
import { eventsBench } from "./events.ts";
import { followBench } from "./follow.ts";
import { hardeningBench } from "./hardening.ts";
import { historyBench } from "./history.ts";
import { hostexecBench } from "./hostexec.ts";
import { launchBench } from "./launch.ts";
import { limitsBench } from "./limits.ts";
import { logsBench } from "./logs.ts";
import { mcpBench } from "./mcp.ts";
import { netBench } from "./net.ts";
import { procsBench } from "./procs.ts";
import { rssBench } from "./rss.ts";
import { sandboxBench } from "./sandbox.ts";
import { spawnBench } from "./spawn.ts";
import { stdinBench } from "./stdin.ts";
import { targetsBench } from "./targets.ts";
import { terminalBench } from "./terminal.ts";
import { throughputBench } from "./throughput.ts";
import { ttyBench } from "./tty.ts";
import { vmBench } from "./vm.ts";
import { walkBench } from "./walk.ts";

/** `named`: run only when asked for by name (too heavy for the default run). */
const BENCHES: Record<string, { run: () => Promise<void>; limitMs: number; named?: boolean }> = {
  api: { run: apiBench, limitMs: 60_000 },
  spawn: { run: spawnBench, limitMs: 60_000 },
  follow: { run: followBench, limitMs: 60_000 },
  cli: { run: cliBench, limitMs: 60_000 },
  rss: { run: rssBench, limitMs: 90_000 },
  sandbox: { run: sandboxBench, limitMs: 360_000 },
  authz: { run: authzBench, limitMs: 150_000 },
  limits: { run: limitsBench, limitMs: 150_000 },
  terminal: { run: terminalBench, limitMs: 60_000 },
  hardening: { run: hardeningBench, limitMs: 300_000 },
  hostexec: { run: hostexecBench, limitMs: 60_000 },
  history: { run: historyBench, limitMs: 180_000 },
  walk: { run: walkBench, limitMs: 180_000 },
  logs: { run: logsBench, limitMs: 240_000 },
  procs: { run: procsBench, limitMs: 2_400_000, named: true },
  throughput: { run: throughputBench, limitMs: 600_000 },
  net: { run: netBench, limitMs: 300_000 },
  egress: { run: egressBench, limitMs: 300_000, named: true },
  attach: { run: attachBench, limitMs: 120_000 },
  stdin: { run: stdinBench, limitMs: 180_000 },
  tty: { run: ttyBench, limitMs: 600_000, named: true },
  launch: { run: launchBench, limitMs: 900_000, named: true },
  events: { run: eventsBench, limitMs: 600_000, named: true },
  agents: { run: agentsBench, limitMs: 600_000, named: true },
  "agents-soak": { run: agentsSoakBench, limitMs: 4_200_000, named: true },
  mcp: { run: mcpBench, limitMs: 300_000 },
  targets: { run: targetsBench, limitMs: 300_000, named: true },
  vm: { run: vmBench, limitMs: 1_200_000, named: true },
};

const wanted = process.argv.slice(2);
for (const w of wanted) {
  if (!(w in BENCHES)) {
    console.error(`unknown benchmark ${JSON.stringify(w)}; choose from: ${Object.keys(BENCHES).join(" ")}`);
    process.exit(2);
  }
}
const names = wanted.length ? wanted : Object.keys(BENCHES).filter((n) => !BENCHES[n]?.named);

let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${sig}: cleaning up …`);
    void disposeAll().finally(() => process.exit(130));
  });
}

const os = await Bun.file("/etc/os-release")
  .text()
  .then((t) => t.match(/^PRETTY_NAME="?([^"\n]*)"?/m)?.[1] ?? "?")
  .catch(() => "?");
console.log(
  `planter benchmarks — ${new Date().toISOString()} — ${os}, ${navigator.hardwareConcurrency} cores, ` +
    `bun ${Bun.version}, ${process.platform}-${process.arch}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
);

const started = performance.now();
const failed: string[] = [];
for (const name of names) {
  const b = BENCHES[name] as (typeof BENCHES)[string];
  try {
    await within(b.limitMs, `benchmark ${name}`, b.run());
  } catch (e) {
    failed.push(name);
    console.error(`  ! benchmark ${name} failed: ${(e as Error).stack ?? e}`);
    await disposeAll();
  }
}

console.log(`\n== Summary (${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
console.log(summaryTable());
const met = figures.filter((f) => f.met).length;
console.log(`\n${met} of ${figures.length} goals met${failed.length ? `; failed to run: ${failed.join(", ")}` : ""}`);
process.exit(failed.length ? 1 : 0);
