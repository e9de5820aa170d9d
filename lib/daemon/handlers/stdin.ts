/**
 * POST /v1/jobs/{id}/stdin: input for a job. A terminal job's goes to its terminal holder
 * (lib/daemon/handlers/tty.ts); a job created with `stdin` has a pipe (lib/jobs/stdin.ts), and the
 * answer comes once the bytes are in it: then they are the job's to read, whatever happens to
 * planterd next. A job that does not read keeps a write waiting at most `wait_ms`; the refusal
 * says how much of it went in (`details.written`), so a client sends the rest and nothing twice.
 */
import { FINAL_STATES } from "../../api/contract.ts";
import { badRequest, conflict, type PlanterError } from "../../api/errors.ts";
import type { Routes } from "../../api/routes.ts";
import { closeStdin, type StdinStop, StdinStopped, writeStdin } from "../../jobs/stdin.ts";
import { jobDir } from "../../paths.ts";
import type { JobRow } from "../../state/jobs.ts";
import type { Context } from "../context.ts";
import { checkJobAccess } from "../launch.ts";
import { ok, type Reply, type Req } from "../router.ts";
import { requireJob } from "./common.ts";
import { inputOf, stdin as terminalInput } from "./tty.ts";

type Written = { written: number; eof: boolean };

/** POST /v1/jobs/{id}/stdin */
export async function write(ctx: Context, req: Req<Routes["writeStdin"]>): Promise<Reply<Written>> {
  const job = requireJob(ctx, req.params.id);
  checkJobAccess(ctx, req.peer, job);
  if (job.tty) return terminalInput(ctx, req);
  if (!job.stdin) {
    throw badRequest(
      `job ${job.id} has no stdin: it reads /dev/null`,
      "a job takes input when it is started with it: planter run -i (a pipe) or -t (a terminal); stdin: true or tty in POST /v1/jobs",
    );
  }
  const { data, eof } = inputOf(req);
  const dir = jobDir(ctx.paths.stateDir, job.id);
  const deadline = Date.now() + req.query.wait_ms;
  // One write after another per job: each request's bytes stay together, an end comes after them.
  return ctx.stdins.run(job.id, async () => {
    const now = requireJob(ctx, job.id);
    if (now.state === "pending")
      throw conflict(`job ${job.id} has not started yet`, `send its input once it runs: planter job status ${job.id}`);
    if (FINAL_STATES.has(now.state)) throw stopped(now, "gone", 0, data.length);
    let written = 0;
    if (data.length) {
      try {
        written = await writeStdin(dir, data, deadline, req.signal);
      } catch (e) {
        if (e instanceof StdinStopped) throw stopped(now, e.why, e.written, data.length, req.query.wait_ms);
        throw e;
      }
    }
    if (eof) endInput(ctx, job.id, "request", req.audit);
    return ok({ written, eof }, 202);
  });
}

/**
 * End a job's input (lib/jobs/stdin.ts), recorded once as `job.stdin_closed` with who asked: a
 * request (`eof`) or the attached `planter run -i` that went away (`client_gone`).
 */
export function endInput(
  ctx: Context,
  id: string,
  by: "request" | "client_gone",
  audit: Record<string, unknown>,
): void {
  if (!closeStdin(jobDir(ctx.paths.stateDir, id))) return;
  ctx.writeOrDefer((ev) => ev.push({ kind: "job.stdin_closed", subject: `job/${id}`, data: { by, ...audit } }));
}

/** The refusal of a write that did not put all of its bytes in (409, `details: {stdin, written}`). */
function stopped(job: JobRow, why: StdinStop, written: number, length: number, waited = 0): PlanterError {
  const details = { stdin: why, written };
  if (why === "closed")
    return conflict(
      `the stdin of job ${job.id} is closed: its input was ended (eof)`,
      "a job's input ends once; run a new job for more",
      details,
    );
  if (why === "gone")
    return conflict(
      `job ${job.id} no longer reads its stdin: it ${FINAL_STATES.has(job.state) ? "has ended" : "is ending"}${written ? ` (${written} of ${length} bytes were written before)` : ""}`,
      `see how it ended: planter job status ${job.id}`,
      details,
    );
  return conflict(
    `job ${job.id} did not read its stdin for ${waited} ms: ${written} of ${length} bytes were written`,
    `send the rest (from byte ${written} of this write) when it reads again (wait_ms waits longer), or end its input with eof`,
    details,
  );
}
