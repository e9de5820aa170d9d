#!/usr/bin/env bun
/** `logs` / `planter logs`: read and follow a job's logs over the API. */
import { closeSync } from "node:fs";
import { defineCommand } from "citty";
import type { Client } from "../lib/api/client.ts";
import { PlanterError } from "../lib/api/errors.ts";
import { client, clientArgs, jsonArg, parseCount, rawArg, usage } from "../lib/cli/args.ts";
import { examples } from "../lib/cli/help.ts";
import { runCli } from "../lib/cli/main.ts";
import { onOutputGone, outputFailed, printable, printJson, write } from "../lib/cli/output.ts";
import { isTerminal } from "../lib/cli/tty.ts";
import { jobOutput, lostAt, type Stream, streamLog, tailOffset } from "../lib/logs/follow.ts";

const logs = defineCommand({
  meta: {
    name: "logs",
    description:
      "Print a job's stdout (or --stderr). -f follows until the job ends. --offset resumes where an earlier read stopped " +
      "(with --json every chunk is a JSON line with next_offset and base64 data, as the API sends it); --tail N starts at the last N lines",
  },
  args: {
    id: { type: "positional", description: "job id", required: true },
    follow: { type: "boolean", alias: "f", description: "keep printing as the job writes, until it ends" },
    stderr: { type: "boolean", description: "read stderr instead of stdout" },
    screen: {
      type: "boolean",
      description:
        "a terminal job's screen now (or as it was at its end), as text; with --json its lines, cursor and redraw",
    },
    offset: { type: "string", description: "start at this byte offset", valueHint: "N" },
    tail: { type: "string", alias: "n", description: "start at the last N lines", valueHint: "N" },
    ...rawArg,
    ...clientArgs,
    ...jsonArg,
    verbose: { type: "boolean", description: "print stacks with errors" },
  },
  async run({ args }) {
    if (args.offset !== undefined && args.tail !== undefined) throw usage("--offset and --tail cannot be combined");
    const api = client(args);
    if (args.screen) {
      if (args.follow || args.stderr || args.offset !== undefined || args.tail !== undefined)
        throw usage("--screen takes no -f, --stderr, --offset or --tail");
      const s = await api.screen(args.id);
      if (args.json) printJson(s);
      // The text of the cells: never control sequences, whatever the job drew.
      else await write(1, `${s.lines.map((l) => printable(l)).join("\n")}\n`);
      return 0;
    }
    const stream: Stream = args.stderr ? "stderr" : "stdout";
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    let offset = args.offset !== undefined ? parseCount(args.offset, "--offset") : 0;
    if (args.tail !== undefined) offset = await tailOffset(api, args.id, stream, parseCount(args.tail, "--tail"));
    // Bytes as they are (a pipe, a file, --raw): the log file itself where planterd can pass it
    // (lib/api/fdpass.ts), copied by the kernel; with -f planterd only says when it grew or ended.
    if (!args.json && (args.raw || !isTerminal(1))) {
      const copied = await copyByFd(api, args.id, stream, offset, Boolean(args.follow), stop.signal).catch((e) => {
        if (stop.signal.aborted) return "done" as const;
        throw e;
      });
      if (copied === "done") return 0;
      if (copied !== null) offset = copied;
    }
    // JSON carries the bytes in base64: never filtered.
    const out = args.json ? jsonLines(stream, offset) : jobOutput(1, Boolean(args.raw));
    // A reader gone (`| head`, a closed terminal): stop quietly, as cat would, rather than read on
    // into nowhere.
    const gone = new Promise<void>((resolve) => onOutputGone((fd) => fd === 1 && resolve()));
    try {
      await Promise.race([
        (async () => {
          await streamLog(api, args.id, stream, offset, out.write, {
            follow: Boolean(args.follow),
            signal: stop.signal,
          });
          await out.end();
        })(),
        gone.then(() => stop.abort()),
      ]);
    } catch (e) {
      if (stop.signal.aborted) return 0;
      throw e;
    }
    return 0;
  },
});

/** A log's bytes as the API's JSON chunks, a line each (base64: never filtered). */
function jsonLines(stream: Stream, from: number) {
  let offset = from;
  return {
    write: async (d: Uint8Array) => {
      const line = { stream, offset, next_offset: offset + d.length, data: Buffer.from(d).toString("base64") };
      offset += d.length;
      await write(1, `${JSON.stringify(line)}\n`);
    },
    end: async () => undefined,
  };
}

/**
 * Copy the log from `offset` to stdout through its file's descriptor, up to its size now; with
 * `follow`, on as planterd says it grew (a JSON read of no bytes that waits: `max_bytes=0`) until
 * the job has ended and every byte is copied. "done" when nothing is left to do (stdout's reader
 * gone, EPIPE, counts: quietly, as cat; stdout failed otherwise, a full disk: the command fails at
 * its end); the offset reached when the API's bytes must do the rest
 * (a wait it refused: a log cut to its quota, say); null when no descriptor came or `offset` lies
 * past the log's end (the API then says so).
 */
async function copyByFd(
  api: Client,
  id: string,
  stream: Stream,
  offset: number,
  follow: boolean,
  signal: AbortSignal,
): Promise<number | "done" | null> {
  const got = await api.logFd(id, stream);
  if (!got) return null;
  try {
    if (offset > got.size) return null;
    const { copyFile } = await import("../lib/api/fdpass.ts");
    let at = await copyFile(got.fd, 1, offset, got.size);
    if (!follow) return "done";
    for (;;) {
      let c: Awaited<ReturnType<Client["logs"]>>;
      try {
        c = await api.logs(id, { stream, offset: at, follow: true, max_bytes: 0 }, signal);
      } catch (e) {
        if (e instanceof PlanterError && e.code === "E_BAD_REQUEST") return at;
        // planterd gone (stopped, restarted) between two waits: where to read on, as a stream cut says.
        if (e instanceof PlanterError && (e.code === "E_DAEMON_UNREACHABLE" || e.code === "E_UNAVAILABLE"))
          throw lostAt(api, id, stream, at, true);
        throw e;
      }
      if (c.complete) return "done";
      if (c.size <= at) continue;
      const next = await copyFile(got.fd, 1, at, c.size);
      // The file shorter than planterd said (cut meanwhile): the API's bytes know what follows.
      if (next < c.size) return next;
      at = next;
    }
  } catch (e) {
    // Not planterd's: the copy to stdout failed. A reader gone ends it quietly, as cat; anything
    // else (ENOSPC) fails the command at its end, with why (lib/cli/output.ts).
    if (e instanceof PlanterError) throw e;
    outputFailed(1, e);
    return "done";
  } finally {
    closeSync(got.fd);
  }
}

examples(logs, [
  "planter logs j-0mxd2qotc7185",
  "planter logs -f --stderr j-0mxd2qotc7185",
  "planter logs --tail 20 j-0mxd2qotc7185",
  "planter logs --screen j-0mxd2qotc7185     # what a terminal job shows now",
]);

export default logs;

if (import.meta.main) await runCli(logs, process.argv.slice(2), "logs");
