/**
 * A job's stdin without a terminal (#14, lib/jobs/stdin.ts). (a) 64 MiB through `planter run -i
 * -- wc -c < FILE` (the CLI reads the file and writes it in 512 KiB requests; planterd writes each
 * into the job's pipe) against the job reading the same file itself (`planter run -- wc -c FILE`:
 * planter's run without the input) and a bare `wc -c < FILE`, interleaved. Goal: 64 MiB in ≤ 2 s
 * (≥ 32 MiB/s); the same 64 MiB through the API alone, base64 in JSON against the bytes as they are
 * (context for the design). (b) A line written with `POST …/stdin` into `cat` until it is in the job's log
 * (`logs?follow=1`): p95 ≤ 10 ms, the echo goal of attached terminals.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { baseEnv, PLANTER } from "../test/harness.ts";
import { header, note, percentile, report, spread, withDaemon } from "./common.ts";

const BENCH = "19 stdin";
const MIB = 1024 * 1024;
const SIZE = 64 * MIB;
const RUNS = 3;
const LINES = 200;

async function timed(argv: string[], env: Record<string, string>, stdin: string | null): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn(argv, { env, stdin: stdin ? Bun.file(stdin) : "ignore", stdout: "pipe", stderr: "inherit" });
  const out = (await new Response(p.stdout).text()).trim().split(/\s+/)[0];
  if ((await p.exited) !== 0 || out !== String(SIZE)) throw new Error(`${argv.join(" ")} counted ${out}`);
  return performance.now() - t0;
}

export async function stdinBench(): Promise<void> {
  header(`${BENCH}: 64 MiB through planter run -i, and a line through POST …/stdin into cat`);
  await withDaemon("source", async (d) => {
    const file = join(d.home, "input.bin");
    writeFileSync(file, Buffer.alloc(SIZE, 0x61));
    const env = baseEnv(d.home);
    const cli = [process.execPath, PLANTER];
    const piped: number[] = [];
    const itself: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      piped.push(await timed([...cli, "run", "-i", "--", "wc", "-c"], env, file));
      itself.push(await timed([...cli, "run", "--", "wc", "-c", file], env, null));
      bare.push(await timed(["wc", "-c"], env, file));
    }
    note(`run -i: ${spread(piped, 0)}`);
    note(`run reading the file itself: ${spread(itself, 0)}`);
    note(`bare wc -c: ${spread(bare, 0)}`);
    const ms = percentile(piped, 50);
    note(
      `run -i: ${((SIZE / MIB) * (1000 / ms)).toFixed(0)} MiB/s (p50 of ${RUNS}); the input's own cost ${(ms - percentile(itself, 50)).toFixed(0)} ms`,
    );
    report(BENCH, "64 MiB through run -i, p50", ms, "ms", "le", 2000);

    // The API alone, the two bodies of POST …/stdin interleaved: base64 in JSON (512 KiB a write,
    // under the 1 MiB body limit) and the bytes as they are (1 MiB a write).
    const data = Buffer.alloc(SIZE, 0x61);
    const through = async (raw: boolean) => {
      const job = await d.client.createJob({ argv: ["wc", "-c"], stdin: true });
      const step = raw ? MIB : MIB / 2;
      const t0 = performance.now();
      for (let at = 0; at < SIZE; at += step) {
        const piece = data.subarray(at, at + step);
        if (raw) await d.client.writeStdinBytes(job.id, piece);
        else await d.client.writeStdin(job.id, { data: piece.toString("base64") });
      }
      await d.client.writeStdin(job.id, { eof: true });
      const end = (await d.client.waitJob(job.id, 60_000)).job;
      if (end.exit_code !== 0) throw new Error(`wc -c ended ${end.state}`);
      return performance.now() - t0;
    };
    const json: number[] = [];
    const bytes: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      json.push(await through(false));
      bytes.push(await through(true));
    }
    note(`API, base64 in JSON: ${spread(json, 0)}`);
    note(`API, bytes as they are: ${spread(bytes, 0)}`);

    const job = await d.client.createJob({ argv: ["cat"], stdin: true });
    let offset = 0;
    const times: number[] = [];
    for (let i = 0; i < LINES; i++) {
      const line = `line ${i}\n`;
      const t0 = performance.now();
      await d.client.writeStdin(job.id, { data: Buffer.from(line).toString("base64") });
      let seen = "";
      while (!seen.endsWith(line)) {
        const c = await d.client.logs(job.id, { offset, follow: true, wait_ms: 5000 });
        seen += Buffer.from(c.data, "base64").toString();
        offset = c.next_offset;
      }
      times.push(performance.now() - t0);
    }
    await d.client.writeStdin(job.id, { eof: true });
    note(
      `p50 ${percentile(times, 50).toFixed(2)} ms, p99 ${percentile(times, 99).toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms`,
    );
    report(BENCH, "a line into cat until it is in the log, p95", percentile(times, 95), "ms", "le", 10);
  });
}
