/**
 * `/mcp`: planter's MCP server over Streamable HTTP (lib/mcp/server.ts), on planterd's Unix socket
 * (callers authorized by their peer credentials, like every /v1 request) and, when configured, on
 * a loopback TCP port where a bearer token stands for a configured user (McpTcp).
 *
 * Stateless: each POST gets its own SDK server and transport, bound to its caller (no sessions to
 * hijack or leak, nothing lost when planterd restarts); answers are JSON. The SDK is loaded at the
 * first `/mcp` request, never at planterd's start.
 */
import { timingSafeEqual } from "node:crypto";
import type { Stats } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { PlanterError } from "../api/errors.ts";
import { lookupUser } from "../sandbox/identity.ts";
import { type Decision, decide } from "./authz.ts";
import type { Context } from "./context.ts";
import { type Caller, Dispatch } from "./dispatch.ts";
import { loopbackPeerUid } from "./loopback.ts";
import type { Peer } from "./peer.ts";
import { parseJson, type Router, readBody } from "./router.ts";
import { ConnectionSlots, UNKNOWN_PEER } from "./slots.ts";
import { isLoopback, peerOfUid, readSecretFile } from "./tcp.ts";

/** The key TCP refusals are rate-limited under (uids are ≥ 0; the socket's unknown peers are -1). */
const TCP_DENIAL_KEY = -1_000_001;

/** A JSON-RPC request may carry a file of up to 8 MiB (file_write), as JSON. */
const MCP_BODY_BYTES = 12 * 1024 * 1024;

function sendError(res: ServerResponse, e: PlanterError, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify({ error: e.toBody() });
  res.writeHead(e.status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** Serve one `/mcp` request for `caller`. */
export async function handleMcp(
  ctx: Context,
  router: Router,
  req: IncomingMessage,
  res: ServerResponse,
  caller: Omit<Caller, "ceiling">,
  allowedHosts?: string[],
): Promise<void> {
  if (!ctx.config.mcp.enabled) {
    req.resume();
    return sendError(
      res,
      new PlanterError("E_NOT_FOUND", "the MCP server is off on this planterd", {
        hint: "set [mcp] enabled = true in planterd's config and restart it",
      }),
    );
  }
  // Stateless: no stream to open with GET, no session to end with DELETE.
  if (req.method !== "POST") {
    req.resume();
    return sendError(
      res,
      new PlanterError("E_BAD_REQUEST", `method ${req.method} is not allowed on /mcp`, {
        status: 405,
        hint: "planter's MCP server is stateless: POST each JSON-RPC message",
      }),
      { allow: "POST" },
    );
  }
  let body: unknown;
  try {
    body = parseJsonRpc(await readBody(req, MCP_BODY_BYTES, ctx.config.api.body_timeout_ms));
  } catch (e) {
    return sendError(res, e instanceof PlanterError ? e : new PlanterError("E_BAD_REQUEST", String(e)));
  }
  const [{ StreamableHTTPServerTransport }, { mcpServer }] = await Promise.all([
    import("@modelcontextprotocol/sdk/server/streamableHttp.js"),
    import("../mcp/server.ts"),
  ]);
  const abort = new AbortController();
  res.once("close", () => abort.abort());
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    // JSON, unless the caller asked for progress: then an event stream carries it before the answer.
    enableJsonResponse: !wantsProgress(body),
    ...(allowedHosts ? { enableDnsRebindingProtection: true, allowedHosts } : {}),
  });
  const dispatch = new Dispatch(ctx, router, { ...caller, ceiling: ctx.config.mcp });
  const server = mcpServer(dispatch, abort.signal, ctx.config.mcp.max_output_bytes);
  res.once("close", () => {
    void transport.close();
    void server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, body);
}

/** Whether a message (or one of a batch) is a request with a progress token. */
function wantsProgress(body: unknown): boolean {
  const one = (m: unknown) =>
    typeof m === "object" &&
    m !== null &&
    (m as { params?: { _meta?: { progressToken?: unknown } } }).params?._meta?.progressToken !== undefined;
  return Array.isArray(body) ? body.some(one) : one(body);
}

/** The body of a JSON-RPC POST: an object or a batch (an array), as JSON. */
function parseJsonRpc(buf: Buffer): unknown {
  const text = buf.toString("utf8").trim();
  if (text.startsWith("[")) {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new PlanterError("E_BAD_REQUEST", `malformed JSON body: ${(e as Error).message}`);
    }
  }
  return parseJson(buf);
}

/** `host:port` or `[v6]:port`, loopback only. */
export function parseListen(spec: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(spec);
  const host = m ? (m[1] ?? m[2] ?? "") : "";
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port < 1 || port > 65535) {
    throw new PlanterError("E_CONFIG", `[mcp] listen ${JSON.stringify(spec)} is not host:port`, {
      hint: 'e.g. listen = "127.0.0.1:8377" or "[::1]:8377"',
    });
  }
  if (!isLoopback(host)) {
    throw new PlanterError("E_CONFIG", `[mcp] listen ${spec} is not a loopback address`, {
      hint: "the MCP TCP listener serves this host only: 127.0.0.1, ::1 or localhost (reach it from elsewhere through a tunnel)",
    });
  }
  return { host, port };
}

/** The bearer token of the TCP listener: a file of planterd's user, 0600, not empty. */
export function readToken(file: string): Buffer {
  let st: Stats;
  let text: string;
  try {
    ({ st, text } = readSecretFile(file));
  } catch (e) {
    throw new PlanterError("E_CONFIG", `[mcp] token_file ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`, {
      hint: `make one: (umask 077; openssl rand -hex 32 > ${file})`,
    });
  }
  const me = process.getuid?.() ?? 0;
  if (!st.isFile() || st.uid !== me || (st.mode & 0o077) !== 0) {
    throw new PlanterError(
      "E_CONFIG",
      `[mcp] token_file ${file} must be a regular file of planterd's user (uid ${me}) with mode 0600`,
      { hint: `chown ${me} ${file} && chmod 600 ${file}` },
    );
  }
  const token = Buffer.from(text.trim());
  if (token.length < 16) {
    throw new PlanterError("E_CONFIG", `[mcp] token_file ${file} holds less than 16 characters`, {
      hint: `make a long random one: (umask 077; openssl rand -hex 32 > ${file})`,
    });
  }
  return token;
}

/** Who TCP callers act as: `[mcp] as_user`, else planterd's own user in user mode. */
export function tcpIdentity(ctx: Context): Peer {
  const name = ctx.config.mcp.as_user;
  if (!name) {
    if (ctx.paths.mode === "system") {
      throw new PlanterError("E_CONFIG", "[mcp] listen needs as_user in system mode", {
        hint: 'name the user TCP callers act as: as_user = "alice" (their jobs run as that user)',
      });
    }
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    return { pid: null, uid, gid, groups: [gid] };
  }
  const u = lookupUser(name);
  if (!u) throw new PlanterError("E_CONFIG", `[mcp] as_user ${name} is no user of this host`);
  // As on [api.tcp]: a bearer token is one copied file away from anyone, so it never stands for root.
  if (u.uid === 0)
    throw new PlanterError("E_CONFIG", `[mcp] as_user ${name} (uid 0): TCP callers never act as root`, {
      hint: 'name an unprivileged user: as_user = "alice" (root uses the socket: planter mcp)',
    });
  // Its groups as login would give them (as [api.tcp]'s identities get theirs).
  return peerOfUid(u.uid);
}

/** The loopback TCP listener of `/mcp`: nothing else of planterd's API is served there. */
export class McpTcp {
  private readonly http = createHttpServer({ keepAliveTimeout: 5000 });
  private net: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new WeakMap<Socket, Timer>();

  constructor(
    private readonly ctx: Context,
    private readonly router: Router,
  ) {}

  /** Close `socket` unless a request arrives within `ms`. */
  private arm(socket: Socket, ms: number): void {
    clearTimeout(this.timers.get(socket));
    this.timers.set(
      socket,
      setTimeout(() => socket.destroy(), ms),
    );
  }

  async listen(): Promise<{ host: string; port: number } | null> {
    // Anyone on this host can connect: bounded like the socket (connections, slow headers, idle).
    const api = this.ctx.config.api;
    // Connections are accepted by a node:net server and handed to node:http, as on the socket:
    // Bun's node:http honours neither maxConnections nor its own "connection" event.
    // Slots as on the socket (lib/daemon/slots.ts), by the uid the kernel says owns the client's
    // end (lib/daemon/loopback.ts): no local user, token or not, can take another's, and
    // planterd's own uid and root keep theirs.
    const slots = new ConnectionSlots(() => ({
      shared: api.max_connections,
      perUid: api.max_connections_per_uid,
      owner: process.getuid?.() ?? 0,
    }));
    this.net = createNetServer({ allowHalfOpen: false }, (socket) => {
      const uid = loopbackPeerUid(socket) ?? UNKNOWN_PEER;
      if (slots.take(uid)) {
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      // Bun's node:http honours neither headersTimeout nor keepAliveTimeout on a connection handed
      // to it: a connection that sends no request within header_timeout_ms (at first, and
      // idle_timeout_ms after each answer) is closed here.
      this.arm(socket, api.header_timeout_ms);
      socket.once("close", () => {
        clearTimeout(this.timers.get(socket));
        slots.release(uid);
        this.sockets.delete(socket);
      });
      this.http.emit("connection", socket);
    });
    this.http.headersTimeout = api.header_timeout_ms;
    this.http.requestTimeout = Math.max(api.body_timeout_ms, 610_000);
    this.http.keepAliveTimeout = api.idle_timeout_ms;
    const spec = this.ctx.config.mcp.listen;
    if (!spec || !this.ctx.config.mcp.enabled) return null;
    const { host, port } = parseListen(spec);
    const file = this.ctx.config.mcp.token_file;
    if (!file) {
      throw new PlanterError(
        "E_CONFIG",
        "[mcp] listen is set without token_file: refusing to serve MCP on TCP unauthenticated",
        {
          hint: "set token_file to a 0600 file holding a long random token",
        },
      );
    }
    const token = readToken(file);
    const peer = tcpIdentity(this.ctx);
    const decision: Decision = decide(this.ctx.authz, peer);
    if (!decision.allow) {
      throw new PlanterError("E_CONFIG", `[mcp] as_user (uid ${peer.uid}) may not use planterd: ${decision.message}`, {
        hint: decision.hint,
      });
    }
    const who = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    const allowedHosts = [who, `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`];
    this.http.on("request", (req, res) => {
      const socket = req.socket as Socket;
      clearTimeout(this.timers.get(socket));
      res.once("finish", () => {
        if (!socket.destroyed) this.arm(socket, api.idle_timeout_ms);
      });
      const url = new URL(req.url ?? "/", "http://planterd");
      if (url.pathname !== "/mcp") {
        req.resume();
        return sendError(
          res,
          new PlanterError("E_NOT_FOUND", `no such endpoint: ${url.pathname}`, { hint: "this port serves /mcp only" }),
        );
      }
      const given = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
      const ok =
        given !== undefined && Buffer.byteLength(given) === token.length && timingSafeEqual(Buffer.from(given), token);
      if (!ok) {
        req.resume();
        // Recorded at most once per 10 s (with how many were left out): a flood fills no disk.
        const suppressed = this.ctx.denials.shouldRecord(TCP_DENIAL_KEY);
        if (suppressed !== null)
          this.ctx.writeOrDefer((ev) =>
            ev.push({
              kind: "authz.denied",
              subject: "daemon",
              data: {
                via: "mcp-tcp",
                address: req.socket.remoteAddress ?? null,
                path: url.pathname,
                given: given !== undefined,
                suppressed,
              },
            }),
          );
        return sendError(
          res,
          new PlanterError("E_UNAUTHORIZED_PEER", "a bearer token is needed", {
            status: 401,
            hint: "send Authorization: Bearer <the token in [mcp] token_file>",
          }),
          { "www-authenticate": 'Bearer realm="planter"' },
        );
      }
      const audit = { peer_uid: peer.uid, peer_pid: null, via: "mcp", mcp_transport: "tcp" };
      void handleMcp(this.ctx, this.router, req, res, { peer, audit }, allowedHosts).catch((e) =>
        sendError(res, e instanceof PlanterError ? e : new PlanterError("E_INTERNAL", String(e))),
      );
    });
    const net = this.net;
    await new Promise<void>((resolve, reject) => {
      net.once("error", reject);
      net.listen({ host, port }, () => resolve());
    });
    const addr = net.address();
    return typeof addr === "object" && addr ? { host, port: addr.port } : { host, port };
  }

  close(): void {
    this.net?.close();
    for (const s of this.sockets) s.destroy();
  }
}
