/**
 * The report channels of running agent jobs (#16): one FIFO per job (lib/agents/report.ts), read
 * while the job runs and again after a planterd restart, each line turned into an `AgentEventIn`
 * for that job's agent and handed on (the observer's ingest), and recorded as an
 * `agent.reported` event.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import { AGENT_KINDS, type AgentEventIn, type AgentKind, runtimeId } from "../agents/model.ts";
import { AGENT_FILE, agentFifo, lineEvent, makeReportFifo, parseLine, ReportReader } from "../agents/report.ts";
import { EventBatch } from "../daemon/batch.ts";
import type { PendingEvent } from "../daemon/context.ts";

const Saved = v.object({ kind: v.picklist(AGENT_KINDS) });

interface Open {
  kind: AgentKind;
  reader: ReportReader;
  seq: number;
  dropped: number;
}

export interface AgentChannelOptions {
  /** Write events in one transaction (planterd's `ctx.write`). */
  write: (fn: (events: PendingEvent[]) => void) => void;
  /** The job's agent process now, "PID:START" (its recorder or terminal holder), or null before it runs. */
  processOf: (id: string) => string | null;
  /** planterd's state dir (the FIFOs are in its `reports`). */
  stateDir: string;
}

/** Events are written together at most this often. */
const FLUSH_MS = 50;

export class AgentChannels {
  private readonly open = new Map<string, Open>();
  private readonly batch: EventBatch;
  /** Where each event goes besides the event log (the observer's ingest, once it runs). */
  onEvent: ((e: AgentEventIn) => void) | null = null;

  constructor(private readonly o: AgentChannelOptions) {
    this.batch = new EventBatch(o.write, "agent events", FLUSH_MS);
  }

  /**
   * The FIFO of a new agent job (`dir`: its dir, for the record), owned by `owner` (the job's
   * user), read from now on: before the job is spawned. A FIFO keeps what is written into it only
   * while someone holds it open — a hook that writes and closes before planterd opens it loses its
   * line (the kernel frees the pipe's buffer with its last descriptor). Opened after the spawn, a
   * job faster than planterd between the spawn and the open (a loaded host) lost its first report.
   */
  prepare(id: string, dir: string, kind: AgentKind, owner: { uid: number; gid: number } | null): string {
    const fifo = agentFifo(this.o.stateDir, id);
    makeReportFifo(fifo, owner);
    writeFileSync(join(dir, AGENT_FILE), JSON.stringify({ kind }), { mode: 0o600 });
    this.watch(id, dir, kind);
    if (!this.open.has(id)) throw new Error(`the agent report channel ${fifo} cannot be read`);
    return fifo;
  }

  /** Read job `id`'s channel in `dir` (a new job, or one re-adopted: its record says which agent). */
  watch(id: string, dir: string, kind?: AgentKind): void {
    if (this.open.has(id)) return;
    let k = kind;
    if (!k) {
      const file = join(dir, AGENT_FILE);
      if (!existsSync(file)) return;
      try {
        k = v.parse(Saved, JSON.parse(readFileSync(file, "utf8"))).kind;
      } catch (e) {
        console.error(`planterd: job ${id}: ${AGENT_FILE}: ${(e as Error).message}`);
        return;
      }
    }
    const agent = k;
    let reader: ReportReader;
    try {
      reader = new ReportReader(agentFifo(this.o.stateDir, id), (line) => this.line(id, line));
    } catch (e) {
      console.error(`planterd: job ${id}: its agent report channel cannot be read: ${(e as Error).message}`);
      return;
    }
    // source_seq orders this job's reports in the observer, across planterd restarts too: it
    // starts at the clock's ms, never below what an earlier planterd counted to.
    this.open.set(id, { kind: agent, reader, seq: Date.now(), dropped: 0 });
  }

  /** Stop reading job `id`'s channel; at its end (`remove`) the FIFO goes too. */
  close(id: string, remove = false): void {
    const o = this.open.get(id);
    if (o) {
      this.open.delete(id);
      o.reader.close();
      if (o.reader.dropped) {
        this.record({
          kind: "agent.report_dropped",
          subject: `job/${id}`,
          data: { job: id, lines: o.reader.dropped },
        });
      }
    }
    if (remove) rmSync(agentFifo(this.o.stateDir, id), { force: true });
  }

  closeAll(): void {
    for (const id of [...this.open.keys()]) this.close(id);
    this.flush();
  }

  private line(id: string, text: string): void {
    const o = this.open.get(id);
    if (!o) return;
    const l = parseLine(text);
    if (l) this.emit(id, o, l, ++o.seq, Date.now(), 0);
  }

  private emit(
    id: string,
    o: Open,
    l: ReturnType<typeof parseLine> & {},
    seq: number,
    at: number,
    tries: number,
  ): void {
    if (this.open.get(id) !== o) return;
    const process = this.o.processOf(id);
    if (!process) {
      // A hook faster than the job's start is recorded (a terminal job's holder says it runs a
      // moment later): the line waits for it, keeping its place (seq), a few seconds at most.
      if (tries < 50) setTimeout(() => this.emit(id, o, l, seq, at, tries + 1), 100);
      else console.error(`planterd: job ${id}: a ${l.event} report dropped: the job's process was never recorded`);
      return;
    }
    const runtime = { tmux_socket: null, server: null, pane_id: null, process, job_id: id };
    const e = lineEvent(o.kind, l, runtime, seq, at);
    if (!e) return;
    this.record({
      kind: "agent.reported",
      subject: `job/${id}`,
      data: {
        job: id,
        runtime_id: runtimeId(runtime),
        agent: e.agent,
        source: e.source,
        event: e.kind,
        state: e.state,
        detail: e.detail ?? null,
      },
    });
    try {
      this.onEvent?.(e);
    } catch (err) {
      console.error(`planterd: job ${id}: agent event: ${(err as Error).message}`);
    }
  }

  /** Queue an event: they are written together (lib/daemon/batch.ts). */
  private record(e: PendingEvent): void {
    this.batch.push(e);
  }

  /** Write the queued events now. */
  flush(): void {
    this.batch.flush();
  }
}
