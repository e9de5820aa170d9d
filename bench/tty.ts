/**
 * 17. Terminal jobs (#14): the terminal holder (lib/tty, the compiled binary's `tty-holder`) beside
 * tmux as the holder and `script` — what plans/interactive.md decides on.
 * (a) spawn to a running job, and each holder's RSS with a job idle behind it;
 * (b) keystroke echo: one byte in, its echo out, through a controller connection (tmux: a
 *     control-mode client), against the bare PTY, the job `cat` in raw mode echoing itself;
 * (c) 100 MB of text through the terminal to a reader: `script`, the holder (log + controller),
 *     tmux (pipe-pane to a log), rounds interleaved.
 * Runs alone (`bun bench/tty.ts`) or as `bun bench/run.ts tty`; builds dist/planter when missing.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { jobFiles, prepareStatus, recorderArgv } from "../lib/jobs/recorder.ts";
import { HolderConnection } from "../lib/tty/controller.ts";
import { CTTY_ARGV, holderSocket, type StartedHolder, startHolder } from "../lib/tty/start.ts";
import { waitFor } from "../test/harness.ts";
import { BINARY, header, median, note, percentile, procStatusKb, report } from "./common.ts";

const BENCH = "17 tty";
const ENV = { PATH: "/usr/bin:/bin", TERM: "xterm-256color", HOME: "/tmp", LANG: "C.UTF-8" };
const MB = 1024 * 1024;
const FLOOD = 100 * MB;
const KEYS = 300;

let root = "";
const newDir = (name: string) => {
  const d = mkdtempSync(join(root, `${name}-`));
  return d;
};

async function holder(cmd: string[], cols = 80, rows = 24): Promise<{ h: StartedHolder; dir: string }> {
  const dir = newDir("job");
  const f = jobFiles(dir);
  prepareStatus(f.status);
  const h = await startHolder(
    {
      argv: recorderArgv(f.status, [...CTTY_ARGV, ...cmd]),
      cwd: dir,
      env: ENV,
      cols,
      rows,
      log: f.stdout,
      socket: holderSocket(dir),
      log_limit: null,
    },
    { binary: BINARY, stderr: "inherit" },
  );
  return { h, dir };
}

function tmux(sock: string, ...args: string[]) {
  const r = Bun.spawnSync(["tmux", "-S", sock, "-f", "/dev/null", ...args], { env: ENV, stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`tmux ${args[0]}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

const rssMb = (pid: number) => procStatusKb(pid, "VmRSS") / 1024;

// ------------------------------------------------------------------- (a) spawn and RSS

/** kB of a /proc/<pid>/smaps_rollup field (Anonymous, Pss, Rss), or NaN. */
function rollupKb(pid: number, field: string): number {
  try {
    const m = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

async function spawnAndRss(): Promise<void> {
  header(`${BENCH} (a) spawn to a running job; memory with 5 jobs idle at once (interleaved)`);
  const spawnMs = { holder: [] as number[], tmux: [] as number[] };
  const mem = { rss: [] as number[], anon: [] as number[], pss: [] as number[], tmux: [] as number[] };
  const holders: { h: StartedHolder; c: HolderConnection }[] = [];
  const socks: string[] = [];
  for (let i = 0; i < 5; i++) {
    let t0 = performance.now();
    const { h, dir } = await holder(["cat"]);
    spawnMs.holder.push(performance.now() - t0);
    const c = await HolderConnection.connect(holderSocket(dir));
    await c.snapshot();
    holders.push({ h, c });
    const sock = join(newDir("tmux"), "sock");
    t0 = performance.now();
    tmux(sock, "new-session", "-d", "-x", "80", "-y", "24", "--", "cat");
    spawnMs.tmux.push(performance.now() - t0);
    socks.push(sock);
  }
  // Measured with all five up: the binary's pages are shared between holders (and with planterd).
  for (const { h } of holders) {
    mem.rss.push(rssMb(h.holder));
    mem.anon.push(rollupKb(h.holder, "Anonymous") / 1024);
    mem.pss.push(rollupKb(h.holder, "Pss") / 1024);
  }
  for (const sock of socks) mem.tmux.push(rssMb(Number(tmux(sock, "display", "-p", "#{pid}"))));
  note(
    `holder: spawn to a running job p50 ${median(spawnMs.holder).toFixed(1)} ms (compiled, from Bun.spawn to its Ready line)`,
  );
  note(`tmux new-session -d: p50 ${median(spawnMs.tmux).toFixed(1)} ms`);
  note(
    `holder memory p50: RSS ${median(mem.rss).toFixed(1)} MB, of it anonymous ${median(mem.anon).toFixed(1)} MB; PSS ${median(mem.pss).toFixed(1)} MB`,
  );
  note(`tmux server RSS p50 ${median(mem.tmux).toFixed(1)} MB`);
  for (const { h, c } of holders) {
    c.eof();
    c.close();
    await h.proc.exited;
  }
  for (const sock of socks) tmux(sock, "kill-server");
}

// ------------------------------------------------------------------- (b) echo

/**
 * Echoes each key itself (raw mode, as a TUI does) and ends at the key after the last measured
 * one (tmux does not pass on the output of a pane's last moment).
 */
const RAW_CAT = ["sh", "-c", `stty raw -echo; echo ready; exec dd bs=1 count=${KEYS + 1} status=none`];

async function echoHolder(): Promise<number[]> {
  const { h, dir } = await holder(RAW_CAT);
  let seen = "";
  let wake = null as (() => void) | null;
  const c = await HolderConnection.connect(holderSocket(dir), {
    output: (d) => {
      seen += new TextDecoder().decode(d);
      wake?.();
    },
  });
  await waitFor(async () => (await c.snapshot()).lines[0] === "ready", "the raw cat");
  const out: number[] = [];
  for (let i = 0; i < KEYS; i++) {
    const key = String.fromCharCode(97 + (i % 26));
    seen = "";
    const t0 = performance.now();
    const got = new Promise<void>((r) => {
      wake = () => seen.includes(key) && r();
    });
    c.input(key);
    await got;
    out.push(performance.now() - t0);
  }
  c.input(".");
  await h.proc.exited;
  c.close();
  return out;
}

async function echoBare(): Promise<number[]> {
  let seen = "";
  let wake = null as (() => void) | null;
  const p = Bun.spawn(RAW_CAT, {
    env: ENV,
    terminal: {
      cols: 80,
      rows: 24,
      data: (_t, d) => {
        seen += new TextDecoder().decode(d);
        wake?.();
      },
    },
  });
  await waitFor(() => seen.includes("ready"), "the raw cat");
  const out: number[] = [];
  for (let i = 0; i < KEYS; i++) {
    const key = String.fromCharCode(97 + (i % 26));
    seen = "";
    const t0 = performance.now();
    const got = new Promise<void>((r) => {
      wake = () => seen.includes(key) && r();
    });
    p.terminal?.write(key);
    await got;
    out.push(performance.now() - t0);
  }
  p.terminal?.write(".");
  await p.exited;
  return out;
}

async function echoTmux(): Promise<number[]> {
  const sock = join(newDir("tmux"), "sock");
  tmux(sock, "new-session", "-d", "-x", "80", "-y", "24", "--", ...RAW_CAT);
  const cc = Bun.spawn(["tmux", "-S", sock, "-f", "/dev/null", "-C", "attach"], {
    env: ENV,
    stdin: "pipe",
    stdout: "pipe",
  });
  let seen = "";
  let wake = null as (() => void) | null;
  void (async () => {
    for await (const chunk of cc.stdout) {
      seen += new TextDecoder().decode(chunk);
      wake?.();
    }
  })();
  await waitFor(() => tmux(sock, "capture-pane", "-p").includes("ready"), "the raw cat");
  const out: number[] = [];
  for (let i = 0; i < KEYS; i++) {
    const key = String.fromCharCode(97 + (i % 26));
    seen = "";
    const t0 = performance.now();
    const got = new Promise<void>((r) => {
      wake = () => seen.includes(`%output %0 ${key}`) && r();
    });
    cc.stdin.write(`send-keys -l ${key}\n`);
    cc.stdin.flush();
    await got;
    out.push(performance.now() - t0);
  }
  cc.kill();
  tmux(sock, "kill-server");
  return out;
}

async function echo(): Promise<void> {
  header(`${BENCH} (b) keystroke echo, ${KEYS} keys × 2 rounds, raw-mode cat echoing (interleaved)`);
  const all = { holder: [] as number[], bare: [] as number[], tmux: [] as number[] };
  for (let round = 0; round < 2; round++) {
    all.bare.push(...(await echoBare()));
    all.holder.push(...(await echoHolder()));
    all.tmux.push(...(await echoTmux()));
  }
  const line = (xs: number[]) =>
    `p50 ${percentile(xs, 50).toFixed(3)} / p95 ${percentile(xs, 95).toFixed(3)} / p99 ${percentile(xs, 99).toFixed(3)} ms`;
  report(BENCH, "keystroke echo through the holder, p95", percentile(all.holder, 95), "ms", "le", 10, 3);
  note(`holder: ${line(all.holder)}`);
  note(`bare PTY (Bun.Terminal, no holder): ${line(all.bare)}`);
  note(`tmux control-mode client: ${line(all.tmux)}`);
}

// ------------------------------------------------------------------- (c) throughput

async function floodScript(file: string): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn(["script", "-qec", `cat ${file}`, "/dev/null"], { env: ENV, stdin: "ignore", stdout: "pipe" });
  let n = 0;
  for await (const chunk of p.stdout) n += chunk.length;
  await p.exited;
  if (n < FLOOD) throw new Error(`script passed ${n} bytes`);
  return performance.now() - t0;
}

async function floodHolder(file: string): Promise<{ ms: number; cpu: number; hwm: number }> {
  const t0 = performance.now();
  const { h, dir } = await holder(["sh", "-c", `read x; cat ${file}`]);
  let n = 0;
  let ended = false;
  const c = await HolderConnection.connect(holderSocket(dir), {
    output: (d) => {
      n += d.length;
    },
    end: () => {
      ended = true;
    },
  });
  c.input("\r");
  await h.proc.exited;
  await waitFor(() => ended, "the end frame");
  const ms = performance.now() - t0;
  const logged = statSync(jobFiles(dir).stdout).size;
  if (logged < FLOOD) throw new Error(`the holder logged ${logged} bytes`);
  note(
    `  holder round: ${ms.toFixed(0)} ms, controller got ${(n / MB).toFixed(1)} MB (a lagging controller is skipped ahead, then redrawn)`,
  );
  const usage = h.proc.resourceUsage();
  // cpuTime in µs, maxRSS in bytes.
  return {
    ms,
    cpu: usage ? Number(usage.cpuTime.total) / 1000 : Number.NaN,
    hwm: usage ? Number(usage.maxRSS) : Number.NaN,
  };
}

async function floodTmux(file: string): Promise<number> {
  const dir = newDir("tmux");
  const sock = join(dir, "sock");
  const log = join(dir, "log");
  const t0 = performance.now();
  tmux(sock, "new-session", "-d", "-x", "80", "-y", "24", "--", "sh", "-c", `read x; cat ${file}`);
  tmux(sock, "pipe-pane", "-o", `cat >${log}`);
  tmux(sock, "send-keys", "Enter");
  await waitFor(
    () => Bun.spawnSync(["tmux", "-S", sock, "has-session"], { stderr: "ignore" }).exitCode !== 0,
    "tmux's end",
    120_000,
  );
  const ms = performance.now() - t0;
  await waitFor(() => existsSync(log) && statSync(log).size >= FLOOD, "tmux's log", 30_000);
  return ms;
}

async function throughput(): Promise<void> {
  header(`${BENCH} (c) 100 MB of text lines through a terminal to a reader (3 rounds, interleaved)`);
  const file = join(root, "flood.txt");
  const line = `${"planter terminal throughput ".repeat(3).slice(0, 79)}\n`;
  writeFileSync(file, line.repeat(Math.ceil(FLOOD / line.length)));
  const ms = { script: [] as number[], holder: [] as number[], tmux: [] as number[] };
  let cpu = 0;
  let hwm = 0;
  for (let round = 0; round < 3; round++) {
    ms.script.push(await floodScript(file));
    const h = await floodHolder(file);
    ms.holder.push(h.ms);
    cpu = Math.max(cpu, h.cpu);
    hwm = Math.max(hwm, h.hwm);
    ms.tmux.push(await floodTmux(file));
  }
  const ratio = median(ms.holder) / median(ms.script);
  report(BENCH, "100 MB through the holder / through script", ratio, "×", "le", 2, 2);
  note(
    `script: p50 ${median(ms.script).toFixed(0)} ms; holder: p50 ${median(ms.holder).toFixed(0)} ms; tmux: p50 ${median(ms.tmux).toFixed(0)} ms`,
  );
  note(
    `holder over a flood: peak RSS ${(hwm / MB).toFixed(1)} MB; CPU of the holder and the job it reaped ${cpu.toFixed(0)} ms`,
  );
}

export async function ttyBench(): Promise<void> {
  if (!existsSync(BINARY)) {
    const r = Bun.spawnSync([join(import.meta.dir, "..", ".ci", "compile"), BINARY], {
      stdout: "inherit",
      stderr: "inherit",
    });
    if (r.exitCode !== 0) throw new Error("cannot build dist/planter");
  }
  if (!Bun.which("tmux") || !Bun.which("script"))
    throw new Error("tmux and script are needed: apt-get install -y tmux bsdutils");
  root = mkdtempSync("/tmp/ptty-");
  try {
    await spawnAndRss();
    await echo();
    await throughput();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  console.log(
    `bench tty — ${new Date().toISOString()} — load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  mkdirSync(join(import.meta.dir, "..", "dist"), { recursive: true });
  await ttyBench();
  process.exit(0);
}
