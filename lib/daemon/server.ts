/**
 * The API server: a node:net listener on the Unix socket (bound here, or inherited from systemd
 * socket activation), whose connections are handed to a node:http server. Bun.serve cannot
 * report peer credentials and mishandles inherited fds, so it is not used.
 */
import { chmodSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createConnection, createServer as createNetServer, type Server, type Socket } from "node:net";
import { PlanterError } from "../api/errors.ts";
import type { Context } from "./context.ts";
import { parseJson, type Reply, type Req, type Router, readBody } from "./router.ts";

export interface Listening {
  /** How the socket was obtained. */
  via: "activation" | "bind";
  close(): Promise<void>;
}

/** Inherited listening fd from systemd socket activation, or null. */
export function activationFd(env = process.env): number | null {
  if (env.LISTEN_PID !== String(process.pid)) return null;
  const n = Number(env.LISTEN_FDS ?? 0);
  if (!Number.isInteger(n) || n < 1) return null;
  return 3;
}

/** Whether something answers on a Unix socket path. */
export function probeSocket(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ path });
    const t = setTimeout(() => finish(false), timeoutMs);
    function finish(v: boolean) {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    }
    s.once("connect", () => finish(true));
    s.once("error", () => finish(false));
  });
}

/** Make the socket path free to bind: refuse a live daemon, remove a stale socket file. */
export async function claimSocketPath(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const st = lstatSync(path);
  if (!st.isSocket()) {
    throw new PlanterError("E_UNAVAILABLE", `${path} exists and is not a socket`, {
      hint: `move it aside: mv ${path} ${path}.old`,
    });
  }
  if (await probeSocket(path)) {
    throw new PlanterError("E_UNAVAILABLE", `another planterd is already serving on ${path}`, {
      hint: "stop it first (planter daemon runs one instance per socket), or use another PLANTER_HOME or --socket",
    });
  }
  unlinkSync(path); // stale: the daemon that made it is gone
}

export class ApiServer {
  private readonly net: Server;
  private readonly http = createHttpServer({ keepAliveTimeout: 5000 });
  private readonly inflight = new Set<AbortController>();
  private readonly sockets = new Set<Socket>();
  private closing = false;

  constructor(
    private readonly ctx: Context,
    private readonly router: Router,
  ) {
    this.http.on("request", (req, res) => void this.handle(req, res));
    this.http.on("clientError", (_err, socket) => {
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
    this.net = createNetServer({ allowHalfOpen: false }, (socket) => this.accept(socket));
    ctx.inflight = () => this.inflight.size;
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
    this.http.emit("connection", socket);
  }

  /** Listen on the inherited fd when socket-activated, else bind `path` (mode 0600). */
  async listen(path: string, fd: number | null): Promise<Listening> {
    if (fd !== null) {
      await new Promise<void>((resolve, reject) => {
        this.net.once("error", reject);
        this.net.listen({ fd }, () => resolve());
      });
      return { via: "activation", close: () => this.close(null) };
    }
    await claimSocketPath(path);
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.net.once("error", reject);
        this.net.listen({ path }, () => resolve());
      });
    } finally {
      process.umask(old);
    }
    chmodSync(path, 0o600);
    return { via: "bind", close: () => this.close(path) };
  }

  /** Stop accepting, end long polls, let in-flight requests finish (at most `graceMs`). */
  private async close(path: string | null, graceMs = 5000): Promise<void> {
    this.closing = true;
    this.net.close();
    for (const c of this.inflight) c.abort();
    const deadline = Date.now() + graceMs;
    while (this.inflight.size && Date.now() < deadline) await Bun.sleep(10);
    for (const s of this.sockets) s.destroy();
    if (path) {
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const abort = new AbortController();
    this.inflight.add(abort);
    res.once("close", () => abort.abort());
    try {
      const url = new URL(req.url ?? "/", "http://planterd");
      const method = req.method ?? "GET";
      const { route, params } = this.router.match(method, url.pathname);
      let body: unknown = {};
      if (route.body) body = parseJson(await readBody(req, this.ctx.config.api.max_body_bytes));
      else req.resume();
      const r: Req = {
        method,
        path: url.pathname,
        params,
        query: url.searchParams,
        body,
        signal: abort.signal,
        audit: {},
      };
      const reply = await route.handler(this.ctx, r);
      await this.send(res, reply, abort.signal);
    } catch (e) {
      this.sendError(res, e);
    } finally {
      this.inflight.delete(abort);
    }
  }

  private async send(res: ServerResponse, reply: Reply, signal: AbortSignal): Promise<void> {
    if ("json" in reply) {
      const text = JSON.stringify(reply.json);
      res.writeHead(reply.status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    res.writeHead(reply.status, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    res.flushHeaders();
    try {
      await reply.lines((v) => res.write(`${JSON.stringify(v)}\n`), signal);
    } finally {
      if (!res.writableEnded) res.end();
    }
  }

  private sendError(res: ServerResponse, e: unknown): void {
    const err =
      e instanceof PlanterError
        ? e
        : new PlanterError("E_INTERNAL", `internal error: ${(e as Error)?.message ?? String(e)}`, {
            hint: "this is a planterd bug; the daemon log has the details",
          });
    if (!(e instanceof PlanterError)) console.error("planterd: internal error:", e);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const text = JSON.stringify({ error: err.toBody() });
    res.writeHead(err.status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }
}
