/**
 * Requests made inside planterd for a caller: the MCP server's tools (lib/mcp/) call the /v1 routes
 * through here, so every tool is exactly the route it stands for — the same handler, query and body
 * parsing, authorization by the caller's peer credentials, audit fields and refusals — with the
 * MCP ceiling set on the request. Nothing goes over a socket; nothing is trusted from the tool.
 */
import { parseBody } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import { pathOf, queryOf, type Route, type RouteReply } from "../api/routes.ts";
import type { McpCeiling } from "../mcp/ceiling.ts";
import type { Context } from "./context.ts";
import type { Peer } from "./peer.ts";
import { parseQuery, type Req, type Router } from "./router.ts";

/** What a route is called with: its path parameters, query values and body (as a client would send them). */
export interface DispatchArgs {
  params?: Record<string, string>;
  query?: Record<string, unknown>;
  body?: unknown;
}

/** Who a dispatched request is for. */
export interface Caller {
  peer: Peer | null;
  /** Audit fields recorded with the events of its changes (peer, and how it came: `via: "mcp"`). */
  audit: Record<string, unknown>;
  ceiling?: McpCeiling;
}

export class Dispatch {
  constructor(
    private readonly ctx: Context,
    private readonly router: Router,
    readonly caller: Caller,
  ) {}

  private async reply(route: Route, args: DispatchArgs, signal: AbortSignal) {
    const path = pathOf(route.path, args.params ?? {});
    const { route: matched, handler, params } = this.router.match(route.method, path);
    if (matched !== route) throw new PlanterError("E_INTERNAL", `route ${route.method} ${route.path} is not served`);
    if (this.ctx.damaged && route.method !== "GET" && !route.whileDamaged) throw this.ctx.damaged;
    const raw = route.body ? (args.body ?? {}) : {};
    const req: Req = {
      method: route.method,
      path,
      params,
      query: parseQuery(route, new URLSearchParams(queryOf(args.query))),
      body: (route.body ? parseBody(route.body, raw, route.bodyName ?? "body") : undefined) as Req["body"],
      raw,
      signal,
      audit: this.caller.audit,
      peer: this.caller.peer,
      ceiling: this.caller.ceiling,
    };
    return handler(this.ctx, req);
  }

  /** A JSON route's answer (errors are thrown as the route's PlanterError). */
  async call<T extends Route>(route: T, args: DispatchArgs, signal: AbortSignal): Promise<RouteReply<T>> {
    const r = await this.reply(route, args, signal);
    if ("json" in r) return r.json as RouteReply<T>;
    throw new PlanterError("E_INTERNAL", `${route.method} ${route.path} does not answer one JSON value`);
  }

  /** A JSON-lines route's values, at most `most` of them (the route's own `limit` should bound it too). */
  async lines<T extends Route>(
    route: T,
    args: DispatchArgs,
    signal: AbortSignal,
    most = 10_000,
  ): Promise<RouteReply<T>[]> {
    const r = await this.reply(route, args, signal);
    if (!("lines" in r)) throw new PlanterError("E_INTERNAL", `${route.method} ${route.path} does not answer lines`);
    const out: RouteReply<T>[] = [];
    const stop = new AbortController();
    const both = AbortSignal.any([signal, stop.signal]);
    await r.lines((value) => {
      out.push(value as RouteReply<T>);
      if (out.length >= most) stop.abort();
      return true;
    }, both);
    return out;
  }
}
