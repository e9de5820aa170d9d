/** Routing of /v1 requests to handlers; every error becomes the one JSON envelope. */
import type { IncomingMessage } from "node:http";
import * as v from "valibot";
import type { WebSocket } from "ws";
import { PlanterError } from "../api/errors.ts";
import type { Route, RouteBody, RouteParams, RouteQuery, RouteReply } from "../api/routes.ts";
import type { Sink } from "../logs/stream.ts";
import type { McpCeiling } from "../mcp/ceiling.ts";
import type { Context } from "./context.ts";
import type { Peer } from "./peer.ts";

/** What a handler sees of a request: its route's parameters, query and body, parsed. */
export interface Req<T extends Route = Route> {
  method: string;
  path: string;
  params: RouteParams<T>;
  query: RouteQuery<T>;
  body: RouteBody<T>;
  /** The body as sent (JSON), for the request_ref hash. */
  raw: unknown;
  /** The body's bytes, when the route takes them as they are (`bytesBody`) and they came so (its body is then `{}`). */
  bytes?: Buffer;
  /** Aborted when the client goes away or the daemon shuts down. */
  signal: AbortSignal;
  /** Audit fields recorded with events of mutating requests. */
  audit: Record<string, unknown>;
  /** Who sent it (null where peer credentials are not available). */
  peer: Peer | null;
  /** Set on requests made through `/mcp` (lib/daemon/dispatch.ts): the ceiling no MCP caller can widen. */
  ceiling?: McpCeiling;
}

/** A handler's answer: one JSON value, a stream of JSON lines, a byte stream, or a file's descriptor. */
export type Reply<R = unknown> =
  | { status: number; json: R }
  | { status: number; lines: (write: (value: R) => boolean, signal: AbortSignal) => Promise<void> }
  | { status: number; bytes: ByteBody }
  /** A file passed as a descriptor with the answer's head (GET …/logs/fd; lib/api/fdpass.ts). */
  | { status: 200; fd: FdBody }
  /** A connection taken over (GET …/attach): called with the WebSocket once the upgrade is done. */
  | { status: 101; upgrade: (ws: WebSocket) => void };

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

/** The file a descriptor answer passes (opened read-only by the server) and the head's extra headers. */
export interface FdBody {
  path: string;
  headers: Record<string, string>;
}

export const ok = <R>(json: R, status = 200): Reply<R> => ({ status, json });

/** The reason requests are aborted with when planterd stops (a client's leaving aborts without one). */
export const STOPPING = "planterd is stopping";

export type Handler<T extends Route = Route> = (
  ctx: Context,
  req: Req<T>,
) => Reply<RouteReply<T>> | Promise<Reply<RouteReply<T>>>;

interface Entry {
  route: Route;
  parts: string[];
  handler: Handler;
}

/** A tiny table router over lib/api/routes.ts: literal segments and `:name` parameters. */
export class Router {
  private readonly entries: Entry[] = [];

  add<T extends Route>(route: T, handler: Handler<T>): this {
    this.entries.push({ route, parts: route.path.split("/").filter(Boolean), handler: handler as unknown as Handler });
    return this;
  }

  /** The routes registered, in order. */
  get routes(): Route[] {
    return this.entries.map((e) => e.route);
  }

  /** Find the route for a method and path; E_NOT_FOUND / 405-style E_BAD_REQUEST otherwise. */
  match(method: string, path: string): { route: Route; handler: Handler; params: Record<string, string> } {
    const segs = path.split("/").filter(Boolean);
    const allowed: string[] = [];
    for (const entry of this.entries) {
      if (entry.parts.length !== segs.length) continue;
      const params: Record<string, string> = {};
      let hit = true;
      for (let i = 0; i < segs.length; i++) {
        const p = entry.parts[i] as string;
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
      if (entry.route.method === method) return { route: entry.route, handler: entry.handler, params };
      allowed.push(entry.route.method);
    }
    if (allowed.length) {
      throw new PlanterError("E_BAD_REQUEST", `method ${method} is not allowed on ${path}`, {
        status: 405,
        hint: `allowed: ${allowed.join(", ")}`,
      });
    }
    throw new PlanterError("E_NOT_FOUND", `no such endpoint: ${method} ${path}`, {
      hint: "the API lives under /v1; see docs/api.md",
    });
  }
}

/**
 * A query string parsed by its route's schemas: unknown names refused with the allowed ones, an
 * empty value taken as absent, the first bad value refused with its name.
 */
export function parseQuery<T extends Route>(route: T, query: URLSearchParams): RouteQuery<T> {
  const allowed = Object.keys(route.query);
  const input: Record<string, string> = {};
  for (const [key, value] of query) {
    if (!allowed.includes(key)) {
      throw new PlanterError("E_BAD_REQUEST", `unknown query parameter ${JSON.stringify(key)}`, {
        hint: allowed.length ? `allowed: ${allowed.join(", ")}` : "this endpoint takes no query parameters",
      });
    }
    if (value !== "" && !(key in input)) input[key] = value;
  }
  const out: Record<string, unknown> = {};
  for (const key of allowed) {
    const r = v.safeParse(route.query[key] as v.GenericSchema, input[key]);
    if (!r.success) throw new PlanterError("E_BAD_REQUEST", `${key} ${r.issues[0]?.message ?? "is not valid"}`);
    out[key] = r.output;
  }
  return out as RouteQuery<T>;
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
