/**
 * Terminal jobs (#14): attach over a WebSocket, stdin without attaching, the screen. planterd is
 * one more controller of the job's terminal holder (lib/tty): each attached client gets a
 * connection of its own to the holder's `tty.sock`, and the frames pass as they are, one per
 * WebSocket message (lib/tty/protocol.ts) — but input, resizes and end of input only from the
 * job's writer: the first client attached without read_only, or every client that asks to share
 * the input. The holder keeps the screen, fans out the output and redraws a client that fell behind.
 */
import { existsSync } from "node:fs";
import type { WebSocket } from "ws";
import { FINAL_STATES, type Job, type ScreenInfo } from "../../api/contract.ts";
import { conflict, PlanterError } from "../../api/errors.ts";
import type { Routes } from "../../api/routes.ts";
import { jobFiles } from "../../jobs/recorder.ts";
import { jobDir } from "../../paths.ts";
import type { JobRow } from "../../state/jobs.ts";
import { HolderConnection } from "../../tty/controller.ts";
import { FrameReader, frame, KIND, MAX_PAYLOAD } from "../../tty/protocol.ts";
import { screenOfLog } from "../../tty/screen.ts";
import { holderSocket } from "../../tty/start.ts";
import type { Context } from "../context.ts";
import { checkJobAccess } from "../launch.ts";
import { ok, type Reply, type Req } from "../router.ts";
import { requireJob } from "./common.ts";
import { viewFor } from "./jobs.ts";

/** Output queued for a client past which planterd stops reading its holder connection. */
const CLIENT_HIGH = 1 << 20;

/** Who is attached to each terminal job, and who may type. */
export class Terminals {
  private readonly jobs = new Map<string, { clients: Set<WebSocket>; writer: WebSocket | null }>();

  attached(id: string): { clients: number; writer: boolean } {
    const t = this.jobs.get(id);
    return { clients: t?.clients.size ?? 0, writer: Boolean(t?.writer) };
  }

  /** Add a client; it writes when it asked to share, or when no one writes yet. */
  add(id: string, ws: WebSocket, o: { readOnly: boolean; share: boolean }): boolean {
    let t = this.jobs.get(id);
    if (!t) {
      t = { clients: new Set(), writer: null };
      this.jobs.set(id, t);
    }
    t.clients.add(ws);
    if (o.readOnly) return false;
    if (o.share) return true;
    if (t.writer) return false;
    t.writer = ws;
    return true;
  }

  remove(id: string, ws: WebSocket): void {
    const t = this.jobs.get(id);
    if (!t) return;
    t.clients.delete(ws);
    if (t.writer === ws) t.writer = null;
    if (!t.clients.size) this.jobs.delete(id);
  }

  close(): void {
    for (const t of this.jobs.values()) for (const ws of t.clients) ws.terminate();
    this.jobs.clear();
  }
}

/** The job, a terminal job, the peer's own; its holder's socket (E_CONFLICT once the terminal is gone). */
function terminalOf(ctx: Context, req: Req<Routes["attach"] | Routes["writeStdin"] | Routes["screen"]>) {
  const job = requireJob(ctx, req.params.id);
  checkJobAccess(ctx, req.peer, job);
  if (!job.tty) {
    throw new PlanterError("E_BAD_REQUEST", `job ${job.id} has no terminal`, {
      hint: "only a job started with a terminal (planter run -t, tty in POST /v1/jobs) can be attached to",
    });
  }
  const socket = holderSocket(jobDir(ctx.paths.stateDir, job.id));
  return { job, socket, live: !FINAL_STATES.has(job.state) && existsSync(socket) };
}

const gone = (job: JobRow) =>
  conflict(
    `job ${job.id} has ${FINAL_STATES.has(job.state) ? "ended" : "no terminal any more (its holder is gone)"}`,
    `its output is in its log: planter logs ${job.id} (--screen for the last screen)`,
  );

/** GET /v1/jobs/{id}/attach */
export function attach(ctx: Context, req: Req<Routes["attach"]>): Reply<never> {
  const { job, socket, live } = terminalOf(ctx, req);
  if (!live) throw gone(job);
  const view = (): Job => viewFor(ctx, req.peer, requireJob(ctx, job.id));
  return {
    status: 101,
    upgrade: (ws) => {
      const writes = ctx.terminals.add(job.id, ws, { readOnly: req.query.read_only, share: req.query.share_input });
      ws.send(JSON.stringify({ job: view(), writer: writes }));
      const reader = new FrameReader();
      let holder: Bun.Socket<undefined> | null = null;
      const held: Uint8Array[] = [];
      const done = () => {
        ctx.terminals.remove(job.id, ws);
        holder?.end();
      };
      ws.on("close", done);
      ws.on("error", done);
      ws.on("message", (data, isBinary) => {
        const bytes = new Uint8Array(data as Buffer);
        let frames: { kind: number; payload: Uint8Array }[];
        try {
          if (!isBinary) throw new Error("frames are binary messages");
          frames = reader.push(bytes);
        } catch (e) {
          ws.close(1003, (e as Error).message.slice(0, 120));
          return;
        }
        for (const f of frames) {
          // Input, resizes and end of input only from a writer; snapshot requests from anyone.
          if (f.kind !== KIND.snapshotRequest && !writes) continue;
          if (f.kind !== KIND.input && f.kind !== KIND.resize && f.kind !== KIND.eof && f.kind !== KIND.snapshotRequest)
            continue;
          const out = frame(f.kind, f.payload);
          if (holder) holder.write(out);
          else held.push(out);
        }
      });
      const hr = new FrameReader();
      Bun.connect({
        unix: socket,
        socket: {
          open(s) {
            holder = s;
            for (const f of held.splice(0)) s.write(f);
          },
          data(s, chunk) {
            for (const f of hr.push(chunk)) {
              // A client that does not read holds the holder back, which skips it ahead and redraws it.
              ws.send(frame(f.kind, f.payload), () => {
                if (ws.bufferedAmount < CLIENT_HIGH / 2) s.resume();
              });
              if (ws.bufferedAmount > CLIENT_HIGH) s.pause();
              if (f.kind === KIND.end) {
                // The job as it ended, once its end is recorded (the recorder exits right after).
                const off = ctx.bus.onJobEnd(job.id, finish);
                const t = setTimeout(finish, 5000);
                if (FINAL_STATES.has(requireJob(ctx, job.id).state)) finish();
                function finish() {
                  off();
                  clearTimeout(t);
                  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ job: view() }));
                  ws.close(1000, "the job ended");
                }
              }
            }
          },
          close() {
            if (ws.readyState === ws.OPEN && !FINAL_STATES.has(requireJob(ctx, job.id).state))
              ws.close(1011, "the terminal holder went away");
          },
          error() {},
        },
      }).catch(() => ws.close(1011, "the terminal holder does not answer"));
    },
  };
}

/** POST /v1/jobs/{id}/stdin */
export async function stdin(
  ctx: Context,
  req: Req<Routes["writeStdin"]>,
): Promise<Reply<{ written: number; eof: boolean }>> {
  const { job, socket, live } = terminalOf(ctx, req);
  if (!live) throw gone(job);
  const { data, eof } = inputOf(req);
  const conn = await HolderConnection.connect(socket);
  try {
    if (data.length) conn.input(data);
    if (eof) conn.eof();
    // A snapshot's answer comes after the holder has handled what came before it. A holder that
    // closes instead had the input and is ending with its job (^D to a `cat` ends it at once).
    await conn.snapshot().catch((e: Error) => {
      if (!/closed/.test(e.message)) throw e;
    });
  } finally {
    conn.close();
  }
  return ok({ written: data.length, eof }, 202);
}

/** A stdin write's bytes (base64 in the JSON body, or the body as it is) and whether it ends the input. */
export function inputOf(req: Req<Routes["writeStdin"]>): { data: Buffer; eof: boolean } {
  const data = req.bytes ?? (req.body.data ? Buffer.from(req.body.data, "base64") : Buffer.alloc(0));
  if (data.length > MAX_PAYLOAD) throw new PlanterError("E_PAYLOAD_TOO_LARGE", `at most ${MAX_PAYLOAD} bytes at once`);
  return { data, eof: Boolean(req.body.eof || req.query.eof) };
}

/** GET /v1/jobs/{id}/screen */
export async function screen(ctx: Context, req: Req<Routes["screen"]>): Promise<Reply<ScreenInfo>> {
  const { job, socket, live } = terminalOf(ctx, req);
  if (live) {
    try {
      const conn = await HolderConnection.connect(socket);
      try {
        const snap = await conn.snapshot();
        return ok({ ...snap, lines: snap.lines.map((l) => l.trimEnd()), source: "live" as const });
      } finally {
        conn.close();
      }
    } catch {
      // ended meanwhile: the log has it
    }
  }
  const tty = job.tty as { cols: number; rows: number };
  const snap = await screenOfLog(jobFiles(jobDir(ctx.paths.stateDir, job.id)).stdout, tty.cols, tty.rows);
  return ok({ ...snap, lines: snap.lines.map((l) => l.trimEnd()), source: "log" as const });
}
