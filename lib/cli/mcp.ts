/**
 * `planter mcp`: planter's MCP server over stdio, for an agent's MCP config
 * (`{"command": "planter", "args": ["mcp"]}`). It is a relay: each JSON-RPC message read from
 * stdin (one per line) is POSTed to planterd's `/mcp` on its socket, after the client's usual
 * checks of that socket, and each answer is written to stdout as one line. The tools, the
 * ceiling and the audit are planterd's; this process holds nothing and loads no MCP code.
 * A `notifications/cancelled` aborts the request it names (planterd sees the client go).
 */
import { defineCommand } from "citty";
import type { Client } from "../api/client.ts";
import { type ErrorBody, PlanterError } from "../api/errors.ts";
import { client, clientArgs } from "./args.ts";
import { examples } from "./help.ts";
import { exitAfterOutput, write } from "./output.ts";

type Id = string | number;
interface Message {
  jsonrpc?: string;
  id?: Id | null;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
}

/** A JSON-RPC error line for request `id`. */
function errorLine(id: Id | null, code: number, message: string, data?: unknown): string {
  return `${JSON.stringify({ jsonrpc: "2.0", id, error: { code, message, ...(data === undefined ? {} : { data }) } })}\n`;
}

/** The relay, reading lines from `input` and writing lines with `out`. */
export class McpRelay {
  private readonly inflight = new Map<Id, AbortController>();
  private readonly pending = new Set<Promise<void>>();
  private protocol: string | null = null;

  constructor(
    private readonly api: Pick<Client, "mcp">,
    private readonly out: (line: string) => Promise<void>,
  ) {}

  /** Relay every line of `input`; returns once it ended and every answer was written. */
  async run(input: AsyncIterable<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of input) {
      buf += decoder.decode(chunk, { stream: true });
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        this.line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
      }
    }
    this.line(buf + decoder.decode());
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  private line(text: string): void {
    const raw = text.trim();
    if (!raw) return;
    let msg: Message;
    try {
      msg = JSON.parse(raw);
    } catch (e) {
      void this.out(errorLine(null, -32700, `parse error: ${(e as Error).message}`));
      return;
    }
    if (msg && msg.method === "notifications/cancelled") {
      const id = msg.params?.requestId as Id | undefined;
      if (id !== undefined) this.inflight.get(id)?.abort();
    }
    const p = this.send(raw, msg).finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  private async send(raw: string, msg: Message): Promise<void> {
    const id = requestId(msg);
    const abort = new AbortController();
    if (id !== null) this.inflight.set(id, abort);
    try {
      const headers: Record<string, string> = this.protocol ? { "mcp-protocol-version": this.protocol } : {};
      const res = await this.api.mcp(raw, headers, abort.signal);
      const type = res.headers.get("content-type") ?? "";
      // An event stream (a call that reports progress) is passed on event by event, as it comes.
      if (res.ok && type.includes("text/event-stream") && res.body) {
        for await (const m of sseEvents(res.body)) await this.out(`${m}\n`);
        return;
      }
      const body = await res.text();
      if (res.status === 202 || !body.trim()) return;
      if (!res.ok) return await this.refused(id, res.status, body);
      if (msg.method === "initialize") this.protocol = protocolOf(body) ?? this.protocol;
      await this.out(`${body.trim()}\n`);
    } catch (e) {
      // Cancelled: the client expects no answer; a notification has none to get.
      if (abort.signal.aborted || id === null) return;
      const err = e instanceof PlanterError ? e : new PlanterError("E_INTERNAL", (e as Error).message);
      await this.out(errorLine(id, -32603, `${err.code}: ${err.message}${err.hint ? ` (${err.hint})` : ""}`));
    } finally {
      if (id !== null) this.inflight.delete(id);
    }
  }

  /** planterd refused a message (not a JSON-RPC answer): the request gets a JSON-RPC error saying why. */
  private async refused(id: Id | null, status: number, body: string): Promise<void> {
    let e: ErrorBody | null = null;
    try {
      e = JSON.parse(body).error ?? null;
    } catch {
      e = null;
    }
    // A JSON-RPC error the SDK's transport made (a bad version, a bad message) goes as it is.
    if (!e?.code && body.includes('"jsonrpc"')) return this.out(`${body.trim()}\n`);
    if (id === null) return;
    const message = e?.code
      ? `${e.code}: ${e.message}${e.hint ? ` (${e.hint})` : ""}`
      : `planterd answered HTTP ${status}`;
    await this.out(errorLine(id, -32603, message, e?.code ? e : undefined));
  }
}

/** The id of a request (null: a notification or an answer, which get no answer). */
function requestId(msg: Message): Id | null {
  if (!msg || typeof msg !== "object" || msg.method === undefined) return null;
  return msg.id === undefined || msg.id === null ? null : msg.id;
}

/** The data of each event of a text/event-stream body (one JSON-RPC message each), as each completes. */
async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  const take = (block: string): string | null => {
    const data = block
      .split(/\r?\n/)
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, ""))
      .join("\n");
    return data.trim() ? data.replace(/\n/g, " ") : null;
  };
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true });
    let end = /\r?\n\r?\n/.exec(buf);
    while (end) {
      const m = take(buf.slice(0, end.index));
      buf = buf.slice(end.index + end[0].length);
      if (m) yield m;
      end = /\r?\n\r?\n/.exec(buf);
    }
  }
  const last = take(buf + decoder.decode());
  if (last) yield last;
}

function protocolOf(line: string): string | null {
  try {
    const v = JSON.parse(line).result?.protocolVersion;
    return typeof v === "string" ? v : null;
  } catch {
    return null;
  }
}

export const mcp = defineCommand({
  meta: {
    name: "mcp",
    description:
      "Serve planter's MCP tools over stdio (run, job_*, cell_*, file_*, events) for an agent's MCP config: each message goes to planterd's /mcp as you, under its [mcp] ceiling (docs/mcp.md)",
  },
  args: { ...clientArgs },
  async run({ args }) {
    const api = client(args);
    const relay = new McpRelay(api, (line) => write(1, line));
    await relay.run(Bun.stdin.stream());
    await exitAfterOutput(0);
  },
});

examples(mcp, [
  "planter mcp  # serve MCP on stdin/stdout (an agent starts it)",
  "claude mcp add planter -- planter mcp  # let Claude Code run its commands in planter's cells",
]);
