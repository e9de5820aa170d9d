/**
 * An agent job's report channel (#16): a FIFO of the job's (`agentFifo`), bound into its sandbox at
 * REPORT_IN_SANDBOX, where the agent's hooks write `EVENT<TAB>JSON` lines (lib/agents/hooks.ts).
 * planterd holds it open read-write (no end of file when a hook closes it; a hook's open never
 * waits) and turns each line into an `AgentEventIn` for that job. The channel carries that job's
 * agent events and nothing else: no path into planter's API or state, and nothing a line says
 * can name another job or pane (the runtime is the job's, set here).
 */
import { dlopen, FFIType } from "bun:ffi";
import { chownSync, closeSync, constants, lstatSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import { LIBC } from "../libc.ts";
import type { AgentEventIn, AgentKind, AgentState } from "./model.ts";

/**
 * The report FIFO of job `id`: in the state dir's `reports` (as root 0711 like `cells`: the job's
 * user, as whom bwrap opens its bind sources, passes through it; the FIFO itself is that user's, 0600).
 */
export const agentFifo = (stateDir: string, id: string) => join(stateDir, "reports", `${id}.fifo`);
/** The job dir's record of the agent it runs (read again at re-adoption). */
export const AGENT_FILE = "agent.json";

/** Lines read per second at most; the rest are counted and dropped (a flooding job). */
export const REPORT_LINES_PER_SECOND = 100;
/** A line longer than this is dropped (hooks cut theirs at REPORT_LINE_BYTES). */
const MAX_LINE = 8192;

/**
 * How a report FIFO is opened by planter's own holders of it (planterd's reader, the job's recorder
 * or terminal holder): read-write, so the open never waits for a partner and a hook's close is no
 * end of file; never through a symlink.
 */
export const REPORT_OPEN = constants.O_RDWR | constants.O_NONBLOCK | constants.O_NOFOLLOW;

let mkfifoFn: ((path: Uint8Array, mode: number) => number) | null | undefined;

/** Make the job's FIFO (mode 0600, owned by the job's user when given). */
export function makeReportFifo(path: string, owner: { uid: number; gid: number } | null): void {
  if (mkfifoFn === undefined) {
    try {
      mkfifoFn = dlopen(LIBC, {
        mkfifo: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
      }).symbols.mkfifo as (path: Uint8Array, mode: number) => number;
    } catch {
      mkfifoFn = null;
    }
  }
  if (!mkfifoFn) throw new Error("mkfifo is not available");
  rmSync(path, { force: true });
  if (mkfifoFn(new TextEncoder().encode(`${path}\0`), 0o600) !== 0) throw new Error(`mkfifo ${path} failed`);
  if (owner) chownSync(path, owner.uid, owner.gid);
  if (!lstatSync(path).isFIFO()) throw new Error(`${path} is not a FIFO`);
}

/** One parsed line: the event name and the CLI's JSON (null when cut or not JSON). */
export interface ReportLine {
  event: string;
  json: Record<string, unknown> | null;
  raw: string;
}

export function parseLine(line: string): ReportLine | null {
  const tab = line.indexOf("\t");
  if (tab <= 0 || tab > 64) return null;
  const event = line.slice(0, tab);
  if (!/^[A-Za-z-]+$/.test(event)) return null;
  const raw = line.slice(tab + 1);
  let json: Record<string, unknown> | null = null;
  try {
    const j = JSON.parse(raw);
    if (j && typeof j === "object" && !Array.isArray(j)) json = j as Record<string, unknown>;
  } catch {
    json = null; // cut at REPORT_LINE_BYTES: the fields below are looked for in the text
  }
  return { event, json, raw };
}

/** A field of the line's JSON, or (cut JSON) the first `"name":"value"` in its text. */
function field(l: ReportLine, name: string): string | null {
  const v = l.json?.[name];
  if (typeof v === "string") return v;
  const m = new RegExp(`"${name}"\\s*:\\s*"((?:[^"\\\\]|\\\\.){0,200})"`).exec(l.raw);
  return m ? (m[1] as string) : null;
}

/** What a Claude Code hook event means. */
function claudeState(l: ReportLine): { state: AgentState; detail: string | null } | null {
  const tool = field(l, "tool_name");
  switch (l.event) {
    case "SessionStart":
      return { state: "waiting_input", detail: null };
    case "UserPromptSubmit":
      return { state: "running", detail: null };
    case "PreToolUse":
    case "PostToolUse":
      return { state: "running", detail: tool };
    case "PermissionRequest":
      return { state: "waiting_approval", detail: tool };
    case "Notification": {
      const type = field(l, "notification_type");
      const message = field(l, "message");
      if (type === "permission_prompt" || /permission/i.test(message ?? ""))
        return { state: "waiting_approval", detail: message };
      if (type === "idle_prompt" || /waiting for your input/i.test(message ?? ""))
        return { state: "waiting_input", detail: message };
      return null;
    }
    case "Stop":
      return { state: "completed", detail: null };
    case "SubagentStop":
    case "PreCompact":
      return { state: "running", detail: null };
    case "SessionEnd":
      return { state: "idle", detail: field(l, "reason") };
    default:
      return null;
  }
}

/** What a Codex notify means (`agent-turn-complete`: the turn ended, Codex waits for input). */
function codexState(l: ReportLine): { state: AgentState; detail: string | null } | null {
  if (l.event !== "notify") return null;
  const type = field(l, "type");
  // Not the assistant's last message as the detail: events are read by every peer, and kept.
  if (type === "agent-turn-complete") return { state: "completed", detail: null };
  return null;
}

/** What a Gemini CLI hook event means (Gemini CLI 0.61: Claude Code's hooks under other names). */
function geminiState(l: ReportLine): { state: AgentState; detail: string | null } | null {
  switch (l.event) {
    case "SessionStart":
      return { state: "waiting_input", detail: null };
    case "BeforeAgent":
    case "PreCompress":
      return { state: "running", detail: null };
    case "BeforeTool":
    case "AfterTool":
      return { state: "running", detail: field(l, "tool_name") };
    case "Notification":
      // ToolPermission: the confirmation box ("Allow execution of …?"), drawn as the hook runs.
      return field(l, "notification_type") === "ToolPermission"
        ? { state: "waiting_approval", detail: field(l, "message") }
        : null;
    case "AfterAgent":
      return { state: "completed", detail: null };
    case "SessionEnd":
      return { state: "idle", detail: field(l, "reason") };
    default:
      return null;
  }
}

/**
 * The event a line reports, for the job's agent (`runtime`: the job's own), or null when the
 * line means nothing planter knows. `seq` orders the lines of one channel.
 */
export function lineEvent(
  kind: AgentKind,
  l: ReportLine,
  runtime: AgentEventIn["runtime"],
  seq: number,
  now: number,
): AgentEventIn | null {
  const meaning = kind === "claude" ? claudeState(l) : kind === "codex" ? codexState(l) : geminiState(l);
  if (!meaning) return null;
  return {
    agent: kind,
    source: kind === "codex" ? "notify" : "hook",
    runtime,
    kind: l.event,
    state: meaning.state,
    at: now,
    source_seq: seq,
    ...(meaning.detail ? { detail: printable(meaning.detail).slice(0, 1024) } : {}),
  };
}

/** Control characters out (a detail is shown in terminals). */
const printable = (s: string) =>
  [...s].map((c) => ((c.codePointAt(0) as number) < 0x20 || (c >= "\u007f" && c <= "\u009f") ? " " : c)).join("");

/**
 * Reads one job's FIFO: each complete line to `onLine`, at most REPORT_LINES_PER_SECOND (the
 * rest counted for `onDropped`). `close()` stops it and closes the FIFO.
 */
export class ReportReader {
  private fd: number;
  private reader: { cancel(): Promise<void> } | null = null;
  private closed = false;
  private window = 0;
  private inWindow = 0;
  dropped = 0;

  constructor(
    path: string,
    private readonly onLine: (line: string) => void,
  ) {
    // Read-write: a hook that closes its end is no end of file here, and the FIFO always has a reader.
    this.fd = openSync(path, REPORT_OPEN);
    void this.pump();
  }

  private async pump(): Promise<void> {
    let buf = "";
    const decoder = new TextDecoder();
    try {
      const reader = Bun.file(this.fd).stream().getReader();
      this.reader = reader;
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closed) break;
        buf += decoder.decode(value, { stream: true });
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          this.take(line);
        }
        // A line with no end in sight: dropped whole.
        if (buf.length > MAX_LINE) {
          buf = "";
          this.dropped++;
        }
      }
    } catch (e) {
      if (!this.closed) console.error(`planterd: agent report channel: ${(e as Error).message}`);
    }
  }

  private take(line: string): void {
    if (line.length > MAX_LINE) {
      this.dropped++;
      return;
    }
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.window) {
      this.window = second;
      this.inWindow = 0;
    }
    if (++this.inWindow > REPORT_LINES_PER_SECOND) {
      this.dropped++;
      return;
    }
    try {
      this.onLine(line);
    } catch (e) {
      console.error(`planterd: agent report: ${(e as Error).message}`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader?.cancel().catch(() => {});
    try {
      closeSync(this.fd);
    } catch {
      // the stream closed it
    }
  }
}
