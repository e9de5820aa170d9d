/**
 * 9. TerminalFilter throughput: 10 MB of job output through the filter `planter run` and `planter
 * logs` put between a job and a terminal, in the chunk sizes the log API hands out. Runs alone
 * (`bun bench/terminal.ts`) or from bench/run.ts; no daemon.
 */
import { loadavg } from "node:os";
import { TerminalFilter } from "../lib/cli/terminal.ts";
import { header, median, note, report } from "./common.ts";

const BENCH = "9 terminal";
const SIZE = 10 * 1024 * 1024;
const ROUNDS = 7;
/** Well above what a terminal draws: a filter at this rate is never what a user waits for. */
const GOAL_MBS = 100;

/** `SIZE` bytes made of `line` repeated. */
function stream(line: string): Uint8Array {
  const one = Buffer.from(line, "utf8");
  const out = new Uint8Array(SIZE);
  for (let at = 0; at < SIZE; at += one.length) out.set(one.subarray(0, Math.min(one.length, SIZE - at)), at);
  return out;
}

const SAMPLES: Record<string, Uint8Array> = {
  "plain ASCII lines": stream("   Compiling serde v1.0.197 (/home/u/src/serde) in 0.42s, 12 warnings\n"),
  "coloured build lines": stream(
    "\x1b[1m\x1b[32m   Compiling\x1b[0m serde v1.0.197 \x1b[2m(/home/u/src)\x1b[0m \x1b[38;5;208mwarn\x1b[39m\r\n",
  ),
  "UTF-8 text": stream("Größe ändern — 日本語のテキスト — ě ğ Ŝ ț — naïve café\n"),
  "progress bars, dropped seqs": stream(
    "\r\x1b[2K\x1b[36m[=====>    ]\x1b[0m 52% \x1b]0;build 52%\x07\x1b[?25l\x1b[6n\x1b[1A\n",
  ),
};

/** MB/s of one pass over `data` in `chunk`-byte pushes. */
function pass(data: Uint8Array, chunk: number): number {
  const f = new TerminalFilter();
  let kept = 0;
  const t0 = performance.now();
  for (let at = 0; at < data.length; at += chunk) kept += f.push(data.subarray(at, at + chunk)).length;
  kept += f.end().length;
  const ms = performance.now() - t0;
  if (kept === 0) throw new Error("the filter kept nothing");
  return data.length / 1e6 / (ms / 1000);
}

export async function terminalBench(): Promise<void> {
  header(`9. TerminalFilter throughput: ${SIZE / 1024 / 1024} MiB per sample, median of ${ROUNDS} passes`);
  note(
    `load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  for (const chunk of [64 * 1024, 1024 * 1024]) {
    for (const [name, data] of Object.entries(SAMPLES)) {
      pass(data, chunk);
      const rates = Array.from({ length: ROUNDS }, () => pass(data, chunk));
      report(BENCH, `${name}, ${chunk / 1024} KiB pushes`, median(rates), "MB/s", "ge", GOAL_MBS, 0);
    }
  }
}

if (import.meta.main) await terminalBench();
