/** Job logs: chunked reads by offset, and follow that waits for bytes or the job's end. */
import { FINAL_STATES, type LogChunk } from "../../api/contract.ts";
import { badRequest } from "../../api/errors.ts";
import { jobFiles } from "../../jobs/recorder.ts";
import { fileSize, readChunk } from "../../logs/read.ts";
import { jobDir } from "../../paths.ts";
import type { Context } from "../context.ts";
import { checkJobAccess } from "../launch.ts";
import { allowQuery, boolParam, intParam, ok, type Reply, type Req } from "../router.ts";
import { requireJob } from "./jobs.ts";

export async function read(ctx: Context, req: Req): Promise<Reply> {
  allowQuery(req.query, ["stream", "offset", "max_bytes", "follow", "wait_ms"]);
  const stream = req.query.get("stream") || "stdout";
  if (stream !== "stdout" && stream !== "stderr")
    throw badRequest(`stream must be stdout or stderr, not ${JSON.stringify(stream)}`);
  const maxChunk = ctx.config.logs.max_chunk_bytes;
  const offset = intParam(req.query, "offset", 0, 0, Number.MAX_SAFE_INTEGER);
  const maxBytes = intParam(req.query, "max_bytes", maxChunk, 0, Number.MAX_SAFE_INTEGER);
  const follow = boolParam(req.query, "follow");
  const waitMs = intParam(req.query, "wait_ms", ctx.config.logs.max_wait_ms, 0, 3_600_000);
  const id = req.params.id as string;
  let job = requireJob(ctx, id);
  checkJobAccess(ctx, req.peer, job);
  const file = jobFiles(jobDir(ctx.paths.stateDir, id))[stream];
  let size = fileSize(file);
  if (offset > size && job.log_truncated && FINAL_STATES.has(job.state)) {
    // A follower read past the quota before the log was cut to it: nothing more will come.
    const body: LogChunk = { stream, offset, next_offset: offset, size, data: "", eof: true, complete: true };
    return ok(body);
  }
  if (offset > size) {
    throw badRequest(
      `offset ${offset} is beyond the end of ${stream} (${size} bytes)`,
      "resume from next_offset of the last chunk",
      {
        size,
      },
    );
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
