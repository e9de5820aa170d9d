/**
 * The API server: a node:net listener on the Unix socket (bound here, or inherited from systemd
 * socket activation), whose connections are handed to a node:http server. Bun.serve cannot
 * report peer credentials and mishandles inherited fds, so it is not used.
 */
import { chmodSync, closeSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createConnection, createServer as createNetServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { WebSocketServer } from "ws";
import { parseBody } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import { openLog } from "../logs/read.ts";
import type { Sink } from "../logs/stream.ts";
import { storageError } from "../state/storage.ts";
import { type Decision, decide } from "./authz.ts";
import type { Context } from "./context.ts";
import { loopbackPeerUid } from "./loopback.ts";
import { boundPath, type Peer, socketFd } from "./peer.ts";
import {
  type ByteBody,
  type FdBody,
  parseJson,
  parseQuery,
  type Reply,
  type Req,
  type Router,
  readBody,
  STOPPING,
} from "./router.ts";
import { ConnectionSlots, UNKNOWN_PEER } from "./slots.ts";
import { certIdentity, type TcpIdentity, type TcpSetup, tokenIdentity } from "./tcp.ts";

export interface Listening {
  /** How the socket was obtained. */
  via: "activation" | "bind";
  /** The path the listening socket is bound to (for an inherited one, as the kernel says). */
  address(): Promise<string | null>;
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

/**
 * Close a connection from this side, after `last` (and whatever is queued) has been sent: end,
 * then destroy — a peer that never closes its end must not keep the fd (a half-open socket).
 */
export function hangUp(socket: Socket, last?: string): void {
  const destroy = () => socket.destroy();
  socket.once("finish", destroy);
  socket.once("error", destroy);
  // A peer that reads nothing keeps "finish" from coming: the fd goes anyway.
  setTimeout(destroy, 2000).unref();
  if (last === undefined) socket.end();
  else socket.end(last);
}

/** What planterd knows of one connection. */
interface Conn {
  peer: Peer | null;
  decision: Decision;
  timer: Timer | null;
  /** A TCP (TLS) connection: the identity its client certificate proves, if any (lib/daemon/tcp.ts). */
  tcp?: { cert: TcpIdentity | null; identities: readonly TcpIdentity[] };
}

/** Who a request is from: its peer, the policy's decision, and over TCP the identity's name. */
interface Who {
  peer: Peer | null;
  decision: Decision;
  identity?: string;
}

/** The audit fields of a request's events: the peer's uid and pid, and over TCP the identity. */
function auditOf(who: Who): Record<string, unknown> {
  if (!who.peer) return {};
  return who.identity !== undefined
    ? { peer_uid: who.peer.uid, peer_pid: null, identity: who.identity, via: "tcp" }
    : { peer_uid: who.peer.uid, peer_pid: who.peer.pid };
}

export class ApiServer {
  private readonly net: Server;
  private readonly http = createHttpServer({ keepAliveTimeout: 5000 });
  /** WebSockets of attached terminals: frames of at most 1 MiB (lib/tty/protocol.ts) plus the header. */
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: (1 << 20) + 16 });
  private readonly inflight = new Set<AbortController>();
  private readonly sockets = new Set<Socket>();
  private readonly conns = new WeakMap<Socket, Conn>();
  private readonly slots: ConnectionSlots;
  private readonly tcpSlots: ConnectionSlots;
  private readonly tcpServers: ReturnType<typeof createTlsServer>[] = [];
  /** TCP connections in their TLS handshake: the slot each holds and the timer that bounds it. */
  private readonly handshaking = new WeakMap<Socket, { uid: number; release: () => void; timer: Timer }>();
  private closing = false;

  constructor(
    private readonly ctx: Context,
    private readonly router: Router,
    private readonly readPeer: ((fd: number) => Peer | null) | null,
  ) {
    this.http.on("request", (req, res) => void this.handle(req, res));
    this.http.on("upgrade", (req, socket, head) => void this.upgrade(req, socket as Socket, head));
    this.http.on("clientError", (_err, socket) => {
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
    this.net = createNetServer({ allowHalfOpen: false }, (socket) => this.accept(socket));
    const limits = () => ({
      shared: ctx.config.api.max_connections,
      perUid: ctx.config.api.max_connections_per_uid,
      owner: process.getuid?.() ?? UNKNOWN_PEER,
    });
    this.slots = new ConnectionSlots(limits);
    // The TCP listener's own: nothing on TCP (a root-owned forwarder, say) takes the socket's slots.
    this.tcpSlots = new ConnectionSlots(limits);
    ctx.inflight = () => this.inflight.size;
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    // Credentials are read once per connection, before any byte of a request is parsed.
    const fd = socketFd(socket);
    this.admit(socket, fd !== null && this.readPeer ? this.readPeer(fd) : null);
  }

  /**
   * A TLS connection on the TCP listener: a slot under the uid its certificate proves (else the
   * unknown bucket), then the same HTTP server; each request is authenticated in `who`.
   */
  private acceptTcp(socket: TLSSocket, identities: readonly TcpIdentity[]): void {
    const held = this.handshaking.get(socket);
    if (this.closing || !held) {
      socket.destroy();
      return;
    }
    this.handshaking.delete(socket);
    clearTimeout(held.timer);
    const cert = certIdentity(socket, identities);
    // A peer beyond loopback waited in the unknown bucket; a certificate now says whose it is.
    if (held.uid === UNKNOWN_PEER && cert) {
      held.release();
      this.admit(socket, cert.peer, { cert, identities });
      return;
    }
    this.admit(socket, cert?.peer ?? null, { cert, identities }, held);
  }

  /**
   * A TCP connection, before its TLS handshake: it takes a slot at once — of the uid the kernel
   * says owns a loopback client's end (lib/daemon/loopback.ts), else the unknown bucket — or is
   * closed, and the handshake must end within `header_timeout_ms`. Without this, connections
   * that never finish a handshake were held without bound (Bun's TLS server has no handshake
   * timeout): any local user could fill planterd's descriptors.
   */
  private acceptRawTcp(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const uid = loopbackPeerUid(socket) ?? UNKNOWN_PEER;
    if (this.tcpSlots.take(uid)) {
      socket.destroy();
      return;
    }
    let released = false;
    const slot = {
      uid,
      release: () => {
        if (released) return;
        released = true;
        this.tcpSlots.release(uid);
      },
      timer: setTimeout(() => socket.destroy(), this.ctx.config.api.header_timeout_ms),
    };
    this.handshaking.set(socket, slot);
    this.sockets.add(socket);
    socket.once("close", () => {
      clearTimeout(slot.timer);
      this.handshaking.delete(socket);
      this.sockets.delete(socket);
      slot.release();
    });
  }

  /**
   * A connection takes a slot of its peer's uid (lib/daemon/slots.ts) or is refused at once
   * (a TLS connection took one before its handshake: `held`); admitted, it is handed to the HTTP
   * server with its header timer armed.
   */
  private admit(socket: Socket, peer: Peer | null, tcp?: Conn["tcp"], held?: { release: () => void }): void {
    const uid = peer?.uid ?? UNKNOWN_PEER;
    const slots = tcp ? this.tcpSlots : this.slots;
    const refusal = held ? null : slots.take(uid);
    if (refusal) {
      const body = JSON.stringify({ error: { code: "E_UNAVAILABLE", ...refusal } });
      hangUp(
        socket,
        `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    const conn: Conn = { peer, decision: decide(this.ctx.authz, peer), timer: null, ...(tcp ? { tcp } : {}) };
    this.conns.set(socket, conn);
    this.sockets.add(socket);
    socket.once("close", () => {
      this.sockets.delete(socket);
      if (held) held.release();
      else slots.release(uid);
      if (conn.timer) clearTimeout(conn.timer);
    });
    this.arm(socket, conn, this.ctx.config.api.header_timeout_ms);
    this.http.emit("connection", socket);
  }

  /**
   * Who sent `req`: a socket peer as read at accept; over TCP the identity of the request's bearer
   * token or of the connection's certificate (both given: they must agree). Over TCP no identity
   * is refused whatever `[authz] strict` says: unstrict serving is for local peers only.
   */
  private who(conn: Conn | undefined, req: IncomingMessage): Who {
    if (!conn?.tcp) return { peer: conn?.peer ?? null, decision: conn?.decision ?? decide(this.ctx.authz, null) };
    const header = req.headers.authorization;
    const token = header === undefined ? null : tokenIdentity(header, conn.tcp.identities);
    const cert = conn.tcp.cert;
    const refuse = (message: string): Who => ({
      peer: null,
      decision: {
        allow: false,
        message,
        hint: "give the target a token file (--token-file) or a client certificate (--cert/--key) that planterd's [api.tcp] identities name",
      },
    });
    if (header !== undefined && !token) return refuse("the bearer token is not one planterd knows");
    if (token && cert && token !== cert)
      return refuse("the bearer token and the client certificate name different identities");
    const id = token ?? cert;
    if (!id) return refuse("no credentials: a bearer token or a client certificate is required over TCP");
    return { peer: id.peer, decision: decide(this.ctx.authz, id.peer), identity: id.name };
  }

  /** Listen on TCP with TLS as `[api.tcp]` says (lib/daemon/tcp.ts checked it). */
  async listenTcp(setup: TcpSetup): Promise<{ port: number; close(): void }> {
    const server = createTlsServer(setup.tls, (socket) => this.acceptTcp(socket, setup.identities));
    server.on("connection", (socket: Socket) => this.acceptRawTcp(socket));
    // A failed handshake is the client's problem; the listener goes on.
    server.on("tlsClientError", (_e, socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: setup.host, port: setup.port }, () => resolve());
    });
    this.tcpServers.push(server);
    return { port: (server.address() as { port: number }).port, close: () => server.close() };
  }

  /** Close the connection unless a request's headers arrive within `ms` (slow or idle clients). */
  private arm(socket: Socket, conn: Conn, ms: number): void {
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = setTimeout(() => socket.destroy(), ms);
  }

  /** Listen on the inherited fd when socket-activated, else bind `path` (mode 0600). */
  async listen(path: string, fd: number | null): Promise<Listening> {
    if (fd !== null) {
      await new Promise<void>((resolve, reject) => {
        this.net.once("error", reject);
        this.net.listen({ fd }, () => resolve());
      });
      return { via: "activation", address: () => boundPath(fd), close: () => this.close(null) };
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
    return { via: "bind", address: async () => path, close: () => this.close(path) };
  }

  /** Stop accepting, end long polls, let in-flight requests finish (at most `graceMs`). */
  private async close(path: string | null, graceMs = 5000): Promise<void> {
    this.closing = true;
    this.net.close();
    for (const t of this.tcpServers) t.close();
    for (const c of this.inflight) c.abort(STOPPING);
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
    const socket = req.socket as Socket;
    const conn = this.conns.get(socket);
    if (conn?.timer) clearTimeout(conn.timer);
    res.once("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    res.once("finish", () => {
      if (conn && !socket.destroyed) this.arm(socket, conn, this.ctx.config.api.idle_timeout_ms);
    });
    let who: Who | undefined;
    try {
      who = this.who(conn, req);
      const peer = who.peer;
      this.authorize(who, req);
      const url = new URL(req.url ?? "/", "http://planterd");
      const method = req.method ?? "GET";
      if (url.pathname === "/mcp") {
        // The MCP server (lib/daemon/mcp.ts): its tools call the routes below as this peer (over
        // [api.tcp]: the identity its token or certificate proves, named in the audit).
        const { handleMcp } = await import("./mcp.ts");
        const audit = { ...auditOf(who), via: "mcp", ...(who.identity !== undefined ? { mcp_transport: "tls" } : {}) };
        await handleMcp(this.ctx, this.router, req, res, { peer, audit });
        return;
      }
      const { route, handler, params } = this.router.match(method, url.pathname);
      // A database found damaged after start takes no new jobs or cells and removes nothing;
      // reads answer, and a kill still stops a job.
      if (this.ctx.damaged && method !== "GET" && !route.whileDamaged) throw this.ctx.damaged;
      let raw: unknown = {};
      let bytes: Buffer | undefined;
      const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
      if (route.body) {
        const body = await readBody(req, this.ctx.config.api.max_body_bytes, this.ctx.config.api.body_timeout_ms);
        // A route that takes bytes as they are (its `bytesBody` type) gets them instead of a JSON body.
        if (route.bytesBody && type === route.bytesBody) bytes = body;
        else raw = parseJson(body);
      } else req.resume();
      const query = parseQuery(route, url.searchParams);
      const r: Req = {
        method,
        path: url.pathname,
        params,
        query,
        body: (route.body ? parseBody(route.body, raw, route.bodyName ?? "body") : undefined) as Req["body"],
        raw,
        bytes,
        signal: abort.signal,
        audit: auditOf(who),
        peer,
      };
      const reply = await handler(this.ctx, r);
      await this.send(res, reply, abort.signal);
    } catch (e) {
      // A peer the policy refuses gets its 403 and nothing more: the connection is closed.
      this.sendError(res, e, who ? !who.decision.allow : false);
    } finally {
      this.inflight.delete(abort);
    }
  }

  /** Refuse a peer the policy does not allow (403), recording a rate-limited authz.denied event. */
  private authorize(from: Who, req: IncomingMessage): void {
    const { decision, peer } = from;
    const who = {
      uid: peer?.uid ?? null,
      pid: peer?.pid ?? null,
      gid: peer?.gid ?? null,
      ...(from.identity !== undefined ? { identity: from.identity, via: "tcp" } : {}),
    };
    const record = (kind: string, key: number, data: Record<string, unknown>) => {
      const suppressed = this.ctx.denials.shouldRecord(key);
      if (suppressed === null) return;
      // On a full disk the audit event waits (rate-limited above); the peer still gets its answer.
      this.ctx.writeOrDefer((ev) =>
        ev.push({
          kind,
          subject: "daemon",
          data: { ...who, method: req.method ?? "", path: req.url ?? "", suppressed, ...data },
        }),
      );
    };
    if (decision.allow) {
      // Unstrict allowances are keyed apart from denials (negative keys).
      if (decision.warn) record("authz.unstrict", -1 - (peer?.uid ?? 0), { message: decision.warn });
      return;
    }
    record("authz.denied", peer?.uid ?? -1, {});
    throw new PlanterError("E_UNAUTHORIZED_PEER", decision.message, { hint: decision.hint, details: who });
  }

  /**
   * A request to take the connection over (a WebSocket: GET …/attach): the same checks as any
   * request — peer, route, query — then the handler's upgrade; an error is an HTTP answer and the
   * connection closes. The connection then has no idle timer: it lives as long as the session.
   */
  private async upgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const conn = this.conns.get(socket);
    if (conn?.timer) clearTimeout(conn.timer);
    try {
      const who = this.who(conn, req);
      this.authorize(who, req);
      const url = new URL(req.url ?? "/", "http://planterd");
      const method = req.method ?? "GET";
      const { route, handler, params } = this.router.match(method, url.pathname);
      if (route.reply !== "upgrade" || (req.headers.upgrade ?? "").toLowerCase() !== "websocket")
        throw new PlanterError("E_BAD_REQUEST", `${method} ${url.pathname} does not take a connection upgrade`);
      const peer = who.peer;
      const r: Req = {
        method,
        path: url.pathname,
        params,
        query: parseQuery(route, url.searchParams),
        body: undefined as Req["body"],
        raw: {},
        signal: new AbortController().signal,
        audit: auditOf(who),
        peer,
      };
      const reply = await handler(this.ctx, r);
      if (!("upgrade" in reply)) throw new PlanterError("E_INTERNAL", "the handler did not take the connection");
      this.wss.handleUpgrade(req, socket, head, (ws) => reply.upgrade(ws));
    } catch (e) {
      const err = e instanceof PlanterError ? e : new PlanterError("E_INTERNAL", (e as Error).message);
      const body = JSON.stringify({ error: err.toBody() });
      hangUp(
        socket,
        `HTTP/1.1 ${err.status} ${err.code}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
  }

  private async send(res: ServerResponse, reply: Reply, signal: AbortSignal): Promise<void> {
    if ("upgrade" in reply) {
      throw new PlanterError("E_BAD_REQUEST", "this endpoint is a WebSocket: send Upgrade: websocket", {
        status: 426,
      });
    }
    if ("json" in reply) {
      const text = JSON.stringify(reply.json);
      res.writeHead(reply.status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if ("bytes" in reply) {
      await this.sendBytes(res, reply.status, reply.bytes, signal);
      return;
    }
    if ("fd" in reply) {
      await this.sendFd(res, reply.fd);
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

  /**
   * A file passed as a read-only descriptor (SCM_RIGHTS) with the answer's head, written by
   * sendmsg(2) on the connection's own fd (lib/api/fdpass.ts); then the connection is closed, so
   * node:http never writes on it. Only on the Unix socket on Linux: over TCP there is no
   * descriptor to pass (400, and the client reads the bytes instead).
   */
  private async sendFd(res: ServerResponse, f: FdBody): Promise<void> {
    const refuse = (why: string) =>
      new PlanterError("E_BAD_REQUEST", why, { hint: "read the log's bytes: GET /v1/jobs/{id}/logs/raw" });
    if (process.platform !== "linux")
      throw refuse("a file descriptor is passed only on planterd's Unix socket, on Linux");
    const { loadFdPass } = await import("../api/fdpass.ts");
    const pass = await loadFdPass();
    // From here on nothing awaits: the connection's fd is read, the file opened and passed, and
    // both closed within one turn of the event loop, so the fd number cannot have been closed
    // (a client gone) and given to another connection (another uid's) in between.
    const socket = res.socket as Socket | null;
    const conn = socket ? this.conns.get(socket) : undefined;
    const sock = socket && !socket.destroyed ? socketFd(socket) : null;
    if (!socket || !conn || conn.tcp || sock === null) {
      // A pipelined request has no connection of its own yet (the answers before it are not sent).
      throw refuse(
        conn?.tcp
          ? "a file descriptor is passed only on planterd's Unix socket, on Linux"
          : "a file descriptor is passed only as the answer to a request that waits for no other on its connection",
      );
    }
    // The head goes with sendmsg(2), past node:http: an earlier answer still queued would come after it.
    if (socket.writableLength > 0) throw refuse("an earlier answer on this connection is still being sent");
    let file: number;
    try {
      file = openLog(f.path);
    } catch (e) {
      throw refuse(`the log file cannot be opened (${(e as NodeJS.ErrnoException).code})`);
    }
    try {
      const extra = Object.entries(f.headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join("");
      const head = `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncache-control: no-store\r\n${extra}content-length: 0\r\nconnection: close\r\n\r\n`;
      const why = pass(sock, Buffer.from(head, "latin1"), file);
      if (why) console.error(`planterd: could not pass a log file's descriptor: ${why}`);
    } finally {
      closeSync(file);
    }
    socket.destroy();
  }

  /** A byte stream, written no faster than the client reads it. */
  private async sendBytes(res: ServerResponse, status: number, b: ByteBody, signal: AbortSignal): Promise<void> {
    res.writeHead(status, { "content-type": b.type, "cache-control": "no-store", ...b.headers });
    res.flushHeaders();
    const sink: Sink = {
      write: (chunk) =>
        new Promise<void>((resolve) => {
          // A client gone (or planterd stopping): nothing more is written, and nothing waits for a drain.
          if (signal.aborted || res.destroyed) return resolve();
          if (res.write(chunk)) return resolve();
          const go = () => {
            res.off("drain", go);
            res.off("close", go);
            signal.removeEventListener("abort", go);
            resolve();
          };
          res.on("drain", go);
          res.on("close", go);
          signal.addEventListener("abort", go);
        }),
    };
    await b.body(sink, signal);
    if (signal.aborted) res.destroy();
    else res.end();
  }

  private sendError(res: ServerResponse, e: unknown, close = false): void {
    // SQLite found a damaged page on the way: the database is damaged, whatever the checks said.
    const code = (e as { code?: unknown } | null)?.code;
    if (code === "SQLITE_CORRUPT" || code === "SQLITE_NOTADB") e = this.ctx.markDamaged((e as Error).message);
    // A read or write outside ctx.write that hit a full or failing disk is no bug either.
    const storage = storageError(e, this.ctx.paths.stateDir);
    const err =
      e instanceof PlanterError
        ? e
        : (storage ??
          new PlanterError("E_INTERNAL", `internal error: ${(e as Error)?.message ?? String(e)}`, {
            hint: "this is a planterd bug; the daemon log has the details",
          }));
    if (!(e instanceof PlanterError) && !storage) console.error("planterd: internal error:", e);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const text = JSON.stringify({ error: err.toBody() });
    const headers: Record<string, string | number> = {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
    };
    // After a timed-out or oversized body the connection's byte stream is no longer in step: close it.
    if (close || err.status === 408 || err.status === 413) {
      headers.connection = "close";
      const socket = res.socket;
      res.once("finish", () => {
        if (socket) hangUp(socket);
      });
    }
    res.writeHead(err.status, headers);
    res.end(text);
  }
}
