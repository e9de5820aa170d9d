/** Routing of /v1 requests to handlers; every error becomes the one JSON envelope. */
import type { IncomingMessage } from "node:http";
import { PlanterError } from "../api/errors.ts";
import type { Sink } from "../logs/stream.ts";
import type { Context } from "./context.ts";
import type { Peer } from "./peer.ts";

/** What a handler sees of a request. */
export interface Req {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
  /** Aborted when the client goes away or the daemon shuts down. */
  signal: AbortSignal;
  /** Audit fields recorded with events of mutating requests. */
  audit: Record<string, unknown>;
  /** Who sent it (null where peer credentials are not available). */
  peer: Peer | null;
}

/** A handler's answer: one JSON value, a stream of JSON lines, or a byte stream. */
export type Reply =
  | { status: number; json: unknown }
  | { status: number; lines: (write: (value: unknown) => boolean, signal: AbortSignal) => Promise<void> }
  | { status: number; bytes: ByteBody };

/**
 * A byte stream's content type, extra headers and writer. The response ends when `body` returns;
 * one that returns because the request was aborted (planterd stopping) is cut off instead, so a
 * client never takes a stream that stopped early for a whole one.
 */
export interface ByteBody {
  type: string;
  headers?: Record<string, string>;
  body: (sink: Sink, signal: AbortSignal) => Promise<void>;
}

export const ok = (json: unknown, status = 200): Reply => ({ status, json });

export type Handler = (ctx: Context, req: Req) => Reply | Promise<Reply>;

interface Route {
  method: string;
  parts: string[];
  handler: Handler;
  /** Whether the route takes a JSON body. */
  body: boolean;
}

/** A tiny table router: literal segments and `:name` parameters. */
export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler, body = false): this {
    this.routes.push({ method, parts: pattern.split("/").filter(Boolean), handler, body });
    return this;
  }

  /** Find the route for a method and path; E_NOT_FOUND / 405-style E_BAD_REQUEST otherwise. */
  match(method: string, path: string): { route: Route; params: Record<string, string> } {
    const segs = path.split("/").filter(Boolean);
    const allowed: string[] = [];
    for (const route of this.routes) {
      if (route.parts.length !== segs.length) continue;
      const params: Record<string, string> = {};
      let hit = true;
      for (let i = 0; i < segs.length; i++) {
        const p = route.parts[i] as string;
        const s = segs[i] as string;
        if (p.startsWith(":")) {
          try {
            params[p.slice(1)] = decodeURIComponent(s);
          } catch {
            throw new PlanterError("E_BAD_REQUEST", `malformed path segment ${JSON.stringify(s)}`);
          }
        } else if (p !== s) {
          hit = false;
          break;
        }
      }
      if (!hit) continue;
      if (route.method === method) return { route, params };
      allowed.push(route.method);
    }
    if (allowed.length) {
      throw new PlanterError("E_BAD_REQUEST", `method ${method} is not allowed on ${path}`, {
        status: 405,
        hint: `allowed: ${allowed.join(", ")}`,
      });
    }
    throw new PlanterError("E_NOT_FOUND", `no such endpoint: ${method} ${path}`, {
      hint: 'the API lives under /v1; see README "API"',
    });
  }
}

/** Read a request body up to `limit` bytes; E_PAYLOAD_TOO_LARGE beyond it. */
export async function readBody(req: IncomingMessage, limit: number, timeoutMs = 30_000): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let total = 0;
  const read = (async () => {
    for await (const chunk of req) {
      total += (chunk as Buffer).length;
      if (total > limit) throw tooLarge(limit);
      chunks.push(chunk as Buffer);
    }
  })();
  // A client that trickles its body must not hold the connection forever: answer 408 and close.
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new PlanterError("E_BAD_REQUEST", `the request body did not arrive within ${timeoutMs} ms`, { status: 408 }),
        ),
      timeoutMs,
    );
  });
  try {
    await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks);
}

const tooLarge = (limit: number) =>
  new PlanterError("E_PAYLOAD_TOO_LARGE", `request body is larger than ${limit} bytes`, {
    hint: "send a smaller request (config [api] max_body_bytes sets the limit)",
  });

/** Parse a JSON body; an empty body is `{}`. */
export function parseJson(buf: Buffer): unknown {
  if (buf.length === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(buf.toString("utf8"));
  } catch (e) {
    throw new PlanterError("E_BAD_REQUEST", `malformed JSON body: ${(e as Error).message}`, {
      hint: "send a JSON object with Content-Type: application/json",
    });
  }
  // Arrays would otherwise pass an object schema and be reported key by key ("0", "1", …).
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const what = value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
    throw new PlanterError("E_BAD_REQUEST", `request body must be a JSON object, not ${what}`, {
      hint: "send a JSON object with Content-Type: application/json",
    });
  }
  return value;
}

/** Refuse query parameters a route does not know. */
export function allowQuery(query: URLSearchParams, allowed: readonly string[]): void {
  for (const key of query.keys()) {
    if (!allowed.includes(key)) {
      throw new PlanterError("E_BAD_REQUEST", `unknown query parameter ${JSON.stringify(key)}`, {
        hint: allowed.length ? `allowed: ${allowed.join(", ")}` : "this endpoint takes no query parameters",
      });
    }
  }
}

/** An integer query parameter within [min, max], or `dflt` when absent. */
export function intParam(query: URLSearchParams, name: string, dflt: number, min: number, max: number): number {
  const raw = query.get(name);
  if (raw === null || raw === "") return dflt;
  if (!/^-?\d+$/.test(raw))
    throw new PlanterError("E_BAD_REQUEST", `${name} must be an integer, not ${JSON.stringify(raw)}`);
  // Any number of digits is an integer; one too large to be exact is also beyond `max`.
  const n = Number(raw) || 0;
  if (n < min || n > max)
    throw new PlanterError("E_BAD_REQUEST", `${name} must be between ${min} and ${max}, not ${raw}`);
  return n;
}

/** A boolean query flag: 1/true/0/false. */
export function boolParam(query: URLSearchParams, name: string): boolean {
  const raw = query.get(name);
  if (raw === null || raw === "" || raw === "0" || raw === "false") return false;
  if (raw === "1" || raw === "true") return true;
  throw new PlanterError("E_BAD_REQUEST", `${name} must be 1 or 0, not ${JSON.stringify(raw)}`);
}
