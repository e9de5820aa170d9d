/** Job logs: chunked reads by offset, follow that waits for bytes or the job's end, and raw byte streams. */
import { FINAL_STATES, type LogChunk } from "../../api/contract.ts";
import { badRequest } from "../../api/errors.ts";
import type { Routes } from "../../api/routes.ts";
import { jobFiles } from "../../jobs/recorder.ts";
import { fileSize, readChunk } from "../../logs/read.ts";
import { pumpLogs } from "../../logs/stream.ts";
import { jobDir } from "../../paths.ts";
import { getJob, type JobRow } from "../../state/jobs.ts";
import type { Context } from "../context.ts";
import { checkJobAccess } from "../launch.ts";
import { ok, type Reply, type Req } from "../router.ts";
import { requireJob } from "./common.ts";

type LogRoute = Routes["logs"] | Routes["logStream"] | Routes["logFd"];

/**
 * The log a request names, checked: the job exists, the peer may read it, the offset is within
 * the log. `done` says a read there has nothing to give, ever (past a log cut to its quota).
 */
function located(ctx: Context, req: Req<LogRoute>, stream: "stdout" | "stderr", offset: number) {
  const id = req.params.id;
  const job = requireJob(ctx, id);
  checkJobAccess(ctx, req.peer, job);
  const file = jobFiles(jobDir(ctx.paths.stateDir, id))[stream];
  const size = fileSize(file);
  // A follower read past the quota before the log was cut to it: nothing more will come.
  const done = offset > size && job.log_truncated && FINAL_STATES.has(job.state);
  if (offset > size && !done) {
    throw badRequest(
      `offset ${offset} is beyond the end of ${stream} (${size} bytes)`,
      "resume from next_offset of the last chunk",
      {
        size,
      },
    );
  }
  return { id, job, file, size, done };
}

export async function read(ctx: Context, req: Req<Routes["logs"]>): Promise<Reply<LogChunk>> {
  const { stream, offset, follow } = req.query;
  const maxChunk = ctx.config.logs.max_chunk_bytes;
  const maxBytes = req.query.max_bytes ?? maxChunk;
  const waitMs = req.query.wait_ms ?? ctx.config.logs.max_wait_ms;
  const at = located(ctx, req, stream, offset);
  const { id, file } = at;
  let { job, size } = at;
  if (at.done) {
    const body: LogChunk = { stream, offset, next_offset: offset, size, data: "", eof: true, complete: true };
    return ok(body);
  }
  if (follow && offset === size && !FINAL_STATES.has(job.state) && waitMs > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.min(waitMs, ctx.config.logs.max_wait_ms));
      const offGrow = ctx.logWatch.wait(file, size, done);
      const offEnd = ctx.bus.onJobEnd(id, done);
      req.signal.addEventListener("abort", done, { once: true });
      function done() {
        clearTimeout(timer);
        offGrow();
        offEnd();
        req.signal.removeEventListener("abort", done);
        resolve();
      }
    });
    job = requireJob(ctx, id);
  }
  // Read the state before the bytes: once a job has ended, every byte it wrote is in the file.
  const ended = FINAL_STATES.has(job.state);
  const chunk = readChunk(file, offset, Math.min(maxBytes, maxChunk));
  size = chunk.size;
  const next = offset + chunk.data.length;
  const body: LogChunk = {
    stream,
    offset,
    next_offset: next,
    size,
    data: chunk.data.toString("base64"),
    eof: next >= size,
    complete: ended && next >= size,
  };
  return ok(body);
}

/** Whether a job has ended (or is gone: a cell removed with --force takes its jobs). */
export function jobOver(ctx: Context, id: string): boolean {
  const job: JobRow | null = getJob(ctx.db, id);
  return !job || FINAL_STATES.has(job.state);
}

/**
 * GET …/logs/raw: the log's bytes from `offset` as application/octet-stream, to its end now, or
 * with follow=1 as the job writes them until it has ended and every byte is sent. The same
 * checks as the JSON chunks (job, peer, offset), before any byte.
 */
export function raw(ctx: Context, req: Req<Routes["logStream"]>): Reply<Uint8Array> {
  const { stream, offset, follow } = req.query;
  const { id, file, size, done } = located(ctx, req, stream, offset);
  return {
    status: 200,
    bytes: {
      type: "application/octet-stream",
      headers: { "planter-stream": stream, "planter-offset": String(offset), "planter-size": String(size) },
      body: async (sink, signal) => {
        if (done) return;
        await pumpLogs({
          logs: [{ stream, file, offset }],
          follow,
          ended: () => jobOver(ctx, id),
          onEnd: (wake) => ctx.bus.onJobEnd(id, wake),
          watch: ctx.logWatch,
          sink,
          signal,
        });
      },
    },
  };
}

/**
 * GET …/logs/fd: the log file itself, as a read-only descriptor passed with the answer's head
 * (the server opens and passes it: lib/api/fdpass.ts), and its size now. The same checks as the
 * other log reads, before anything is opened. The CLI copies it with sendfile(2): nothing of the
 * log goes through planterd.
 */
export function fd(ctx: Context, req: Req<Routes["logFd"]>): Reply<never> {
  const { stream } = req.query;
  const { file, size } = located(ctx, req, stream, 0);
  return { status: 200, fd: { path: file, headers: { "planter-stream": stream, "planter-size": String(size) } } };
}
