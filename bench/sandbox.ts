/**
 * 6. Sandboxed jobs under bubblewrap: (a) POST /v1/jobs ["/bin/true"] against a bare spawn of bwrap
 * with the argv the daemon renders; (b) `dist/planter run -- true` end to end, beside firejail and
 * Anthropic's sandbox runtime (srt, installed into the daemon's temp dir for the run).
 */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import type { Job } from "../lib/api/contract.ts";
import { bwrapPlan, renderArgs } from "../lib/sandbox/bwrap.ts";
import { HOST_ENV } from "../lib/sandbox/env.ts";
import { complete } from "../lib/sandbox/policy.ts";
import { hostRequest, spawnPlan } from "../lib/sandbox/run.ts";
import { seccompProgram } from "../lib/sandbox/seccomp.ts";
import { baseEnv } from "../test/harness.ts";
import { type BenchDaemon, BINARY, header, median, note, report, spread, withDaemon } from "./common.ts";
import { ensureFreshBinary } from "./fresh.ts";

const BENCH = "6 sandbox";
/** Jobs must run under bwrap: a daemon that cannot sandbox fails them rather than falling back. */
const ENFORCED = '[sandbox]\nmode = "enforced"\n';
const ITERATIONS = 150;
const WARMUP = 10;
const RUNS = 30;
const RUN_WARMUP = 3;
const SRT_PACKAGE = "@anthropic-ai/sandbox-runtime";

/** POST /v1/jobs ["/bin/true"]; `sandboxMode` overrides the daemon's mode for this job. */
async function postJob(socket: string, sandboxMode?: string): Promise<Job> {
  const res = await fetch("http://planterd/v1/jobs", {
    unix: socket,
    method: "POST",
    body: JSON.stringify({ argv: ["/bin/true"], ...(sandboxMode ? { sandbox: { mode: sandboxMode } } : {}) }),
    headers: { "content-type": "application/json" },
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /v1/jobs: HTTP ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text) as Job;
}

/** The job must have been spawned under bwrap. */
function checkSandboxed(job: Job): void {
  if (job.sandbox.backend !== "bwrap" || (job.state !== "running" && job.state !== "exited")) {
    throw new Error(
      `the enforced daemon answered a ${job.state} job (${job.reason}) on backend ${job.sandbox.backend}: ${job.message}`,
    );
  }
}

/** (a) Daemon spawn under bwrap vs a bare bwrap spawn of the same argv, interleaved. */
async function daemonVsBare(): Promise<void> {
  const bwrap = Bun.which("bwrap");
  if (!bwrap) throw new Error("bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap");
  await withDaemon(
    "source",
    async (d) => {
      const first = await postJob(d.socket);
      checkSandboxed(first);
      const done = await d.client.waitJob(first.id, 10_000);
      if (done.job.state !== "exited" || done.job.exit_code !== 0) {
        throw new Error(`/bin/true under bwrap ended ${done.job.state} ${done.job.exit_code}: ${done.job.message}`);
      }
      // A standalone request like the supervisor's for a job of the default cell (lib/sandbox/run.ts).
      const cell = await d.client.getCell(first.cell);
      const policy = complete(undefined);
      const scratch = mkdtempSync(join(tmpdir(), "planter-bench-"));
      const req = hostRequest({
        argv: ["/bin/true"],
        cellDir: cell.dir,
        policy,
        env: first.env,
        jobDir: scratch,
        scratch,
      });
      if (req.identity) chownSync(scratch, req.identity.uid, req.identity.gid);
      const plan = bwrapPlan(req, bwrap, undefined, { seccomp: seccompProgram({ allowUnixSockets: false }) });
      const spawnBare = (stdio: "ignore" | "pipe") =>
        spawnPlan({ ...plan, env: HOST_ENV, cwd: "/" }, req.identity, scratch, ["ignore", stdio, stdio]);
      const argv = renderArgs(plan);
      const check = spawnBare("pipe");
      const [code, err] = await Promise.all([check.exited, new Response(check.stderr as ReadableStream).text()]);
      if (code !== 0) throw new Error(`bare bwrap exited ${code}: ${err.trim()}`);
      note(
        `daemon: bun scripts/planter.ts daemon, [sandbox] mode = "enforced"; ${Bun.spawnSync([bwrap, "--version"]).stdout.toString().trim()}`,
      );
      note(
        `bare argv (${argv.length} words, the daemon's job policy ${
          JSON.stringify(first.sandbox.policy) === JSON.stringify(policy) ? "equals" : "DIFFERS from"
        } complete(undefined)): ${argv.slice(1, -2).join(" ")}`,
      );

      const bareSpawn: number[] = [];
      const bareExit: number[] = [];
      const apiAnswer: number[] = [];
      const apiExit: number[] = [];
      const plain: number[] = [];
      let enforcement = "";
      const bare = async (measured: boolean) => {
        const t0 = performance.now();
        const p = spawnBare("ignore");
        const t1 = performance.now();
        if (!p.pid) throw new Error("Bun.spawn gave no pid");
        const c = await p.exited;
        const t2 = performance.now();
        if (c !== 0) throw new Error(`bare bwrap exited ${c}`);
        if (measured) {
          bareSpawn.push(t1 - t0);
          bareExit.push(t2 - t0);
        }
      };
      const viaDaemon = async (measured: boolean) => {
        const t0 = performance.now();
        const job = await postJob(d.socket);
        const t1 = performance.now();
        checkSandboxed(job);
        const w = await d.client.waitJob(job.id, 10_000);
        const t2 = performance.now();
        if (w.job.state !== "exited" || w.job.exit_code !== 0) {
          throw new Error(`job ${job.id} ended ${w.job.state} ${w.job.exit_code}: ${w.job.message}`);
        }
        enforcement = w.job.enforcement ?? "none";
        if (measured) {
          apiAnswer.push(t1 - t0);
          apiExit.push(t2 - t0);
        }
      };
      // Control: the same daemon, a job that asks for no sandbox (the daemon's own cost without bwrap).
      const unsandboxed = async (measured: boolean) => {
        const t0 = performance.now();
        const job = await postJob(d.socket, "disabled");
        const t1 = performance.now();
        if (job.sandbox.backend !== "none") throw new Error(`a mode=disabled job ran on ${job.sandbox.backend}`);
        await d.client.waitJob(job.id, 10_000);
        if (measured) plain.push(t1 - t0);
      };
      const steps = [bare, viaDaemon, unsandboxed];
      const deadline = performance.now() + 45_000;
      for (let i = 0; i < WARMUP + ITERATIONS && performance.now() < deadline; i++) {
        const measured = i >= WARMUP;
        // Rotate the order so no step always runs right after another's exit.
        for (let k = 0; k < steps.length; k++) await (steps[(i + k) % steps.length] as typeof bare)(measured);
      }
      if (apiAnswer.length < ITERATIONS) note(`time bound reached after ${apiAnswer.length} iterations`);
      const ratio = median(apiAnswer) / median(bareSpawn);
      report(BENCH, "POST under bwrap p50 ÷ bare bwrap spawn p50", ratio, "×", "le", 1.3, 2);
      note(`POST /v1/jobs until the answer (running):  ${spread(apiAnswer)}`);
      note(`bare Bun.spawn(bwrap argv) until the pid:   ${spread(bareSpawn)}`);
      note(
        `p50 difference ${(median(apiAnswer) - median(bareSpawn)).toFixed(3)} ms; the daemon's Bun.spawn is of the recorder ` +
          `(/bin/sh), which then execs bwrap — its pid is what the answer waits for; limits enforcement: ${enforcement}`,
      );
      note(
        `control, same daemon, job with sandbox mode disabled: ${spread(plain)}; bwrap's share of the answer ` +
          `${(median(apiAnswer) - median(plain)).toFixed(3)} ms at p50`,
      );
      note(`context, until exit — via the daemon (POST, then /wait): ${spread(apiExit)}`);
      note(`context, until exit — bare bwrap (Bun.spawn, exited):    ${spread(bareExit)}`);
      note(`context, until exit: daemon p50 ÷ bare p50 = ${(median(apiExit) / median(bareExit)).toFixed(2)}×`);
    },
    ENFORCED,
  );
}

// ---------------------------------------------------------------- (b) end to end

interface Tool {
  name: string;
  argv: string[];
  env: Record<string, string>;
  times: number[];
}

/** apt-get install a package (root with apt-get only); null when done, else why not. */
async function aptInstall(pkg: string): Promise<string | null> {
  if (process.getuid?.() !== 0) return "not root";
  const apt = Bun.which("apt-get");
  if (!apt) return "no apt-get on this host";
  const p = Bun.spawn([apt, "install", "-y", pkg], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  const timer = setTimeout(() => p.kill("SIGKILL"), 120_000);
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  clearTimeout(timer);
  return code === 0 ? null : `apt-get install -y ${pkg} exited ${code}: ${err.trim().split("\n").slice(-1)[0]}`;
}

/** firejail, installed with apt-get when missing; null (with a note) when it cannot be had. */
async function firejail(env: Record<string, string>): Promise<Tool | null> {
  let bin = Bun.which("firejail");
  if (!bin) {
    note("firejail not found: apt-get install -y firejail …");
    const why = await aptInstall("firejail");
    bin = Bun.which("firejail");
    if (!bin) {
      note(`firejail skipped: it could not be installed (${why ?? "not on PATH after install"})`);
      return null;
    }
  }
  const version = Bun.spawnSync([bin, "--version"]).stdout.toString().split("\n")[0]?.trim();
  note(`firejail: ${bin} (${version})`);
  return { name: "firejail", argv: [bin, "--quiet", "--noprofile", "--net=none", "true"], env, times: [] };
}

/**
 * srt from npm, installed under `dir` (inside the daemon's temp home, removed with it); it runs
 * with its built-in defaults (no ~/.srt-settings.json needed) and TMPDIR inside `dir`, because it
 * leaves an srt-mux-<pid>-0.sock in TMPDIR on every run.
 */
async function srt(dir: string, env: Record<string, string>): Promise<Tool | null> {
  const npm = Bun.which("npm");
  if (!npm) {
    note("srt skipped: npm not found");
    return null;
  }
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const p = Bun.spawn(
    [npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "--no-save", "--loglevel=error", SRT_PACKAGE],
    { cwd: dir, stdin: "ignore", stdout: "ignore", stderr: "pipe" },
  );
  const timer = setTimeout(() => p.kill("SIGKILL"), 120_000);
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  clearTimeout(timer);
  const bin = join(dir, "node_modules", ".bin", "srt");
  if (code !== 0 || !existsSync(bin)) {
    note(`srt skipped: npm install ${SRT_PACKAGE} failed (${code}): ${err.trim().split("\n").slice(-1)[0]}`);
    return null;
  }
  let version = "?";
  try {
    const pkg = join(dir, "node_modules", ...SRT_PACKAGE.split("/"), "package.json");
    version = (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
  } catch {
    // version unknown
  }
  const settings = existsSync(join(env.HOME ?? homedir(), ".srt-settings.json"))
    ? "~/.srt-settings.json"
    : "built-in defaults (no ~/.srt-settings.json)";
  note(
    `srt: ${SRT_PACKAGE}@${version}, npm install ${((performance.now() - t0) / 1000).toFixed(1)} s; \`srt true\` with ${settings}`,
  );
  const tmp = join(dir, "tmp");
  mkdirSync(tmp);
  return { name: "srt", argv: [bin, "true"], env: { ...env, TMPDIR: tmp }, times: [] };
}

/** Run once, checked; wall time in ms, or the reason it failed. */
async function checkedRun(t: Tool, cwd: string): Promise<{ ms: number } | { why: string }> {
  const t0 = performance.now();
  const p = Bun.spawn(t.argv, { cwd, env: t.env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill("SIGKILL"), 90_000);
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const ms = performance.now() - t0;
  clearTimeout(timer);
  if (code === 0) return { ms };
  const text = (err || out).trim().split("\n").slice(-3).join(" | ");
  return {
    why: `exited ${code}${p.signalCode ? ` (${p.signalCode})` : ""} after ${ms.toFixed(0)} ms: ${text || "no output"}`,
  };
}

async function timedRun(t: Tool, cwd: string): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn(t.argv, { cwd, env: t.env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  const code = await p.exited;
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`${t.name}: ${t.argv.join(" ")} exited ${code}`);
  return ms;
}

/** The tools that ran once, checked (each noted; `must` failing is an error, another is skipped). */
async function runnable(candidates: (Tool | null)[], cwd: string, must: Tool): Promise<Tool[]> {
  const ok: Tool[] = [];
  for (const t of candidates) {
    if (!t) continue;
    const r = await checkedRun(t, cwd);
    if ("why" in r) {
      if (t === must) throw new Error(`dist/planter run -- true ${r.why}`);
      note(`${t.name} skipped: \`${t.argv.map((a) => a.split("/").pop()).join(" ")}\` ${r.why}`);
      continue;
    }
    note(`${t.name}: first run ${r.ms.toFixed(1)} ms`);
    ok.push(t);
  }
  return ok;
}

/**
 * Time the tools in rounds, each round running every tool once in a rotating order, up to
 * RUN_WARMUP + RUNS rounds or `boundMs`; returns the rounds counted (after the warm-up).
 */
async function interleaved(tools: Tool[], cwd: string, boundMs: number): Promise<number> {
  const deadline = performance.now() + boundMs;
  let done = 0;
  for (let i = 0; i < RUN_WARMUP + RUNS && performance.now() < deadline; i++) {
    for (let k = 0; k < tools.length; k++) {
      const t = tools[(i + k) % tools.length] as Tool;
      const ms = await timedRun(t, cwd);
      if (i >= RUN_WARMUP) t.times.push(ms);
    }
    if (i >= RUN_WARMUP) done++;
  }
  return done;
}

async function endToEnd(): Promise<void> {
  await ensureFreshBinary();
  await withDaemon(
    "compiled",
    async (d: BenchDaemon) => {
      const env = baseEnv(d.home);
      const cwd = join(d.home, "cwd");
      mkdirSync(cwd);
      const floor: Tool = { name: "/bin/true", argv: ["/bin/true"], env, times: [] };
      const version: Tool = { name: "--version", argv: [BINARY, "--version"], env, times: [] };
      const planter: Tool = { name: "planter", argv: [BINARY, "run", "--", "true"], env, times: [] };
      const candidates = [planter, await firejail(env), await srt(join(d.home, "srt"), env)];
      const tools: Tool[] = [floor, version, ...(await runnable(candidates, cwd, planter))];
      const last = (await d.client.listJobs({ limit: 1 })).jobs[0];
      if (last?.sandbox.backend !== "bwrap") {
        throw new Error(`planter run's job did not run under bwrap (${last?.sandbox.backend ?? "no job"})`);
      }
      note(
        `daemon: dist/planter daemon, enforced; the job ran ${last.state}/${last.exit_code} on ${last.sandbox.backend}`,
      );

      const done = await interleaved(tools, cwd, 60_000);
      if (done < RUNS) note(`time bound reached after ${done} rounds`);
      const p50 = median(planter.times);
      report(BENCH, "dist/planter run -- true (bwrap) p50", p50, "ms", "le", 30, 2);
      for (const t of tools) note(`${t.name.padEnd(9)} ${spread(t.times, 2)}`);
      const ratios = tools
        .filter((t) => t !== planter && t !== floor && t !== version)
        .map(
          (t) =>
            `planter/${t.name} ${(p50 / median(t.times)).toFixed(2)}× (${t.name} p50 ${median(t.times).toFixed(2)} ms)`,
        );
      note(ratios.length ? ratios.join("; ") : "no other sandbox to compare with");
      note(
        "wall time of Bun.spawn until exited, same cwd, interleaved rounds; /bin/true and dist/planter --version are " +
          "floors (the spawn; the CLI's own start); planter run submits, streams the job's output and waits for its end",
      );
    },
    ENFORCED,
  );
}

export async function sandboxBench(): Promise<void> {
  header(
    `6a. Sandboxed spawn: POST /v1/jobs ["/bin/true"] under bwrap vs bare bwrap spawn (${ITERATIONS} each, interleaved)`,
  );
  await daemonVsBare();
  header(`6b. End to end: dist/planter run -- true under bwrap, beside firejail and srt (${RUNS} runs each)`);
  await endToEnd();
}
