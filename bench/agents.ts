/**
 * The agent observer (#16): 60 fake agents (test/fixtures/agents) in 3 private tmux servers of
 * 20 panes each, observed by a real planterd. Figures:
 * - observer CPU with the 60 agents idle (planterd and the tmux clients it runs; the tmux
 *   servers' own share beside it), goal ≤ 2 % of a core;
 * - state visible after a hook report (POST /v1/agents/events to the delta on a watch), p95 at
 *   10 reports/s, goal ≤ 250 ms;
 * - state visible through the poller (keys typed into a pane to the delta on a watch), p95 at 10
 *   changes/s over the 60 panes, goal ≤ 1.5 s.
 */

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Agent, AgentState, AgentWatchLine } from "../lib/agents/model.ts";
import { ROOT } from "../test/harness.ts";
import {
  BENCH_CONFIG,
  type BenchDaemon,
  cpuMs,
  header,
  median,
  note,
  percentile,
  procStatusKb,
  report,
  spread,
  withDaemon,
} from "./common.ts";

const FAKES = join(ROOT, "test", "fixtures", "agents");
const SERVERS = 3;
const PANES = 20;
const RATE = 10;
const RUN_S = 20;
const KINDS = ["claude", "codex", "gemini"] as const;

/** CPU of a process and of its reaped children (utime, stime, cutime, cstime) in ms. */
function cpuWithChildren(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10;
  } catch {
    return Number.NaN;
  }
}

function tmux(sock: string, ...args: string[]) {
  return Bun.spawnSync(["tmux", "-S", sock, ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "" },
  });
}

/** The server's pid (for its CPU). */
const serverPid = (sock: string) => Number(tmux(sock, "display-message", "-p", "#{pid}").stdout.toString().trim());

/** What a bench gets: the daemon, the tmux sockets, the panes and the agents seen in them. */
interface Observed {
  d: BenchDaemon;
  socks: string[];
  panes: { sock: string; pane: string }[];
  agents: Agent[];
}

/** 60 fake agents in 3 private tmux servers, a planterd observing them, all seen waiting for input; then `run`. */
async function withObservedAgents(title: string, run: (o: Observed) => Promise<void>): Promise<void> {
  header(title);
  if (!Bun.which("tmux")) {
    note("skipped: no tmux");
    return;
  }
  const dir = mkdtempSync("/tmp/pb-agents-");
  const socks = Array.from({ length: SERVERS }, (_, i) => join(dir, `tmux-${i}.sock`));
  const panes: { sock: string; pane: string }[] = [];
  try {
    for (const sock of socks) {
      for (let i = 0; i < PANES; i++) {
        const kind = KINDS[i % KINDS.length] as string;
        const args = i === 0 ? ["new-session", "-d", "-s", "b", "-x", "100", "-y", "30"] : ["new-window", "-t", "b:"];
        const r = tmux(sock, ...args, "-P", "-F", "#{pane_id}", join(FAKES, kind));
        if (r.exitCode !== 0) throw new Error(`tmux: ${r.stderr.toString()}`);
        panes.push({ sock, pane: r.stdout.toString().trim() });
      }
    }
    const config = `${BENCH_CONFIG}[agents]\ntmux_dirs = []\ntmux_sockets = ${JSON.stringify(socks)}\n`;
    await withDaemon(
      "source",
      async (d) => {
        const t0 = performance.now();
        let agents: Agent[] = [];
        for (;;) {
          agents = (await d.client.listAgents()).agents.filter((a) => a.state === "waiting_input");
          if (agents.length >= panes.length) break;
          if (performance.now() - t0 > 30_000) throw new Error(`only ${agents.length} of ${panes.length} agents seen`);
          await Bun.sleep(50);
        }
        note(
          `all ${panes.length} agents seen waiting for input after ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        );
        await run({ d, socks, panes, agents });
      },
      config,
    );
  } finally {
    for (const s of socks) tmux(s, "kill-server");
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function agentsBench(): Promise<void> {
  await withObservedAgents(
    `agents: ${SERVERS * PANES} fake agents in ${SERVERS} tmux servers`,
    async ({ d, socks, panes, agents }) => {
      const byPane = new Map(agents.map((a) => [`${a.runtime.tmux_socket} ${a.runtime.pane_id}`, a]));

      // ---- idle: every screen still for over a minute, then 30 s measured.
      const measure = async (seconds: number) => {
        const c0 = cpuWithChildren(d.pid);
        const s0 = socks.map((s) => cpuMs(serverPid(s)));
        const w0 = performance.now();
        await Bun.sleep(seconds * 1000);
        const wall = performance.now() - w0;
        const own = ((cpuWithChildren(d.pid) - c0) / wall) * 100;
        const servers = (socks.reduce((sum, s, i) => sum + cpuMs(serverPid(s)) - (s0[i] as number), 0) / wall) * 100;
        return { own, servers };
      };
      const warm = await measure(20);
      note(
        `first 20 s (screens still for under a minute: every ${1000} ms): planterd ${warm.own.toFixed(2)} %, tmux servers ${warm.servers.toFixed(2)} %`,
      );
      await Bun.sleep(45_000);
      const idle = await measure(30);
      report("agents", "observer CPU, 60 idle agents", idle.own, "% core", "le", 2);
      note(`the 3 tmux servers answering it: ${idle.servers.toFixed(2)} % of a core`);

      // ---- a watch: when each runtime reaches each state.
      const seen: { id: string; state: AgentState; at: number }[] = [];
      const stop = new AbortController();
      const watching = (async () => {
        try {
          for await (const l of d.client.watchAgents({}, stop.signal) as AsyncGenerator<AgentWatchLine>) {
            if (l.type === "delta") seen.push({ id: l.agent.runtime_id, state: l.agent.state, at: performance.now() });
          }
        } catch {
          // stopped
        }
      })();
      const when = async (id: string, state: AgentState, after: number, ms = 5000) => {
        const deadline = performance.now() + ms;
        for (;;) {
          const hit = seen.find((s) => s.id === id && s.state === state && s.at >= after);
          if (hit) return hit.at - after;
          if (performance.now() > deadline) return Number.POSITIVE_INFINITY;
          await Bun.sleep(2);
        }
      };

      // ---- hooks: 10 reports a second, each a new state for a random agent.
      const hookStates: AgentState[] = ["running", "waiting_approval", "running", "completed"];
      const hookLat: Promise<number>[] = [];
      let seq = 0;
      const all = [...byPane.values()];
      const c1 = cpuWithChildren(d.pid);
      const h0 = performance.now();
      for (let i = 0; i < RATE * RUN_S; i++) {
        const a = all[i % all.length] as Agent;
        const state = hookStates[Math.floor(i / all.length) % hookStates.length] as AgentState;
        const at = performance.now();
        hookLat.push(
          d.client
            .reportAgent({
              agent: a.agent,
              source: "hook",
              runtime: a.runtime,
              kind: "bench",
              state,
              at: Date.now(),
              source_seq: ++seq,
            })
            .then(() => when(a.runtime_id, state, at)),
        );
        await Bun.sleep(Math.max(0, h0 + ((i + 1) * 1000) / RATE - performance.now()));
      }
      const hooks = await Promise.all(hookLat);
      note(
        `hook reports: ${spread(hooks)}; planterd CPU meanwhile ${(((cpuWithChildren(d.pid) - c1) / (performance.now() - h0)) * 100).toFixed(2)} %`,
      );
      report("agents", "state visible after a hook report, p95", percentile(hooks, 95), "ms", "le", 250, 1);
      // The hooks go stale and the poller takes over again.
      await Bun.sleep(5000);

      // ---- the poller: 10 changes a second, each keys typed into a pane whose last change was seen.
      const cycle: [string, AgentState][] = [
        ["run", "running"],
        ["ask", "waiting_approval"],
        ["yes", "running"],
        ["done", "completed"],
      ];
      const step = new Map<string, number>();
      const busy = new Set<string>();
      const pollLat: Promise<number>[] = [];
      const c2 = cpuWithChildren(d.pid);
      const p0 = performance.now();
      for (let i = 0; i < RATE * RUN_S; i++) {
        const free = panes.filter((p) => !busy.has(`${p.sock} ${p.pane}`));
        const p = free[Math.floor(Math.random() * free.length)];
        if (p) {
          const key = `${p.sock} ${p.pane}`;
          const a = byPane.get(key) as Agent;
          const k = step.get(key) ?? 0;
          step.set(key, k + 1);
          const [keys, state] = cycle[k % cycle.length] as [string, AgentState];
          busy.add(key);
          tmux(p.sock, "send-keys", "-t", p.pane, keys, "Enter");
          const at = performance.now();
          pollLat.push(
            when(a.runtime_id, state, at).finally(() => {
              busy.delete(key);
            }),
          );
        }
        await Bun.sleep(Math.max(0, p0 + ((i + 1) * 1000) / RATE - performance.now()));
      }
      const polled = await Promise.all(pollLat);
      note(
        `poller: ${spread(polled, 0)}; planterd CPU meanwhile ${(((cpuWithChildren(d.pid) - c2) / (performance.now() - p0)) * 100).toFixed(2)} %`,
      );
      report("agents", "state visible through the poller, p95", percentile(polled, 95), "ms", "le", 1500, 0);
      stop.abort();
      await watching;
    },
  );
}

/** The soak's length: an hour (PLANTER_SOAK_S to try it shorter). */
const SOAK_S = Number(process.env.PLANTER_SOAK_S ?? 3600);

/**
 * The observer for an hour under a steady load: a watch open throughout, 2 hook reports a second,
 * one change a second typed into a pane for the poller, `agents ls` every 5 s. planterd's RSS is
 * sampled every minute; one sample swings by ±5 % with the collector, so the growth is the median of
 * the last 10 minutes over the median of minutes 5–14 (start-up and the first caches warmed).
 * Goal ≤ 5 %.
 */
export async function agentsSoakBench(): Promise<void> {
  const title = `agents soak: ${SERVERS * PANES} fake agents for ${(SOAK_S / 60).toFixed(0)} min`;
  await withObservedAgents(title, async ({ d, panes, agents }) => {
    const rssKb = () => procStatusKb(d.pid, "VmRSS");
    const samples: { min: number; kb: number }[] = [{ min: 0, kb: rssKb() }];
    const stop = new AbortController();
    let deltas = 0;
    const watching = (async () => {
      try {
        for await (const l of d.client.watchAgents({}, stop.signal) as AsyncGenerator<AgentWatchLine>)
          if (l.type === "delta") deltas++;
      } catch {
        // stopped
      }
    })();
    const hookStates: AgentState[] = ["running", "waiting_approval", "running", "completed"];
    const cycle = ["run", "ask", "yes", "done"];
    const t0 = performance.now();
    let seq = 0;
    let tick = 0;
    let failures = 0;
    while (performance.now() - t0 < SOAK_S * 1000) {
      tick++;
      for (let k = 0; k < 2; k++) {
        const a = agents[(tick * 2 + k) % agents.length] as Agent;
        await d.client
          .reportAgent({
            agent: a.agent,
            source: "hook",
            runtime: a.runtime,
            kind: "bench",
            state: hookStates[tick % hookStates.length] as AgentState,
            at: Date.now(),
            source_seq: ++seq,
          })
          .catch(() => failures++);
      }
      const p = panes[tick % panes.length] as { sock: string; pane: string };
      tmux(p.sock, "send-keys", "-t", p.pane, cycle[Math.floor(tick / panes.length) % cycle.length] as string, "Enter");
      if (tick % 5 === 0) await d.client.listAgents().catch(() => failures++);
      const min = Math.floor((performance.now() - t0) / 60_000);
      if (min > (samples[samples.length - 1]?.min ?? 0)) {
        samples.push({ min, kb: rssKb() });
        note(
          `minute ${min}: planterd VmRSS ${(rssKb() / 1024).toFixed(1)} MB, ${deltas} deltas watched, ${failures} failed requests`,
        );
      }
      await Bun.sleep(Math.max(0, t0 + tick * 1000 - performance.now()));
    }
    stop.abort();
    await watching;
    const kb = (xs: { kb: number }[]) => xs.map((x) => x.kb);
    const base = median(kb(samples.filter((s) => s.min >= 5 && s.min <= 14)));
    const last = median(kb(samples.slice(-10)));
    note(
      `RSS: start ${((samples[0]?.kb ?? 0) / 1024).toFixed(1)} MB, minutes 5–14 ${(base / 1024).toFixed(1)} MB, last 10 minutes ${(last / 1024).toFixed(1)} MB (medians); VmHWM ${(procStatusKb(d.pid, "VmHWM") / 1024).toFixed(1)} MB; ${seq} hook reports, ${deltas} deltas, ${failures} failed requests`,
    );
    if (base > 0 && SOAK_S >= 1500)
      report("agents", "RSS growth over the soak", ((last - base) / base) * 100, "%", "le", 5, 2);
    else note("too short for a growth figure (it needs minutes 5–14 and 10 more)");
  });
}
