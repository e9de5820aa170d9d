/**
 * The API client: HTTP/1.1 + JSON over the Unix socket, with Bun's fetch (native: no node:http,
 * whose loading cost every command ~10 ms). Nothing is sent before the socket is found
 * trustworthy (lib/api/trust.ts): its path and directory are checked before every request, and
 * once per client the process listening on it, by its credentials on a connection of its own
 * (`Bun.connect` gives the fd for SO_PEERCRED) on which nothing is ever sent. A listener swapped
 * in between would need the socket's directory, which the path check keeps to the user and root.
 */
import { closeSync } from "node:fs";
import { peerReader } from "../daemon/peer.ts";
import { acceptTimeoutMs, whenRead } from "./accepted.ts";
import { FINAL_STATES } from "./contract.ts";
import { type ErrorBody, EXIT, PlanterError } from "./errors.ts";
import {
  pathOf,
  queryOf,
  ROUTES,
  type Route,
  type RouteBodyIn,
  type RouteParams,
  type RouteQueryIn,
  type RouteReply,
  type Routes,
} from "./routes.ts";
import { abortError, type ByteStream, openStream } from "./stream.ts";
import { checkPeerUid, checkSocketPath } from "./trust.ts";

/**
 * A target reached otherwise than over a local Unix socket (https: lib/targets/https.ts): it sends
 * requests and opens byte streams itself, with its own retries and failover. Loaded on first use.
 */
export interface RemoteTransport {
  /** One request; `idempotent` says it may be sent again after a failure (GET, or a body with a request_ref). */
  fetch(
    method: string,
    path: string,
    body: string | Uint8Array | undefined,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    idempotent: boolean,
  ): Promise<Response>;
  /** A byte stream (logs, an attached run). */
  stream(method: string, path: string, body: string | undefined, signal: AbortSignal | undefined): Promise<ByteStream>;
  /** A WebSocket to `path` (an attached terminal), not yet open. */
  websocket(path: string): WebSocket;
  /** A failure got past so far (an endpoint that failed while another answered, or is left out now). */
  trouble?(): Trouble | null;
}

/** A failure a client got past: where (an endpoint's URL, when known) and what. */
export interface Trouble {
  endpoint: string | null;
  error: string;
}

/** How a Client reaches a target that is not a plain local socket. */
export interface ClientOptions {
  /**
   * Run before the first request (an ssh target starts its master and forward here). `stale`:
   * the way it prepared was found dead (nothing listens on the socket): make it anew.
   */
  prepare?: (stale?: boolean) => Promise<void>;
  /** A target spoken to by a transport of its own (https); the socket path is then only a label. */
  remote?: () => Promise<RemoteTransport>;
  /**
   * Bounds for a socket reached through something that can hang (an ssh forward): each request's
   * answer must begin within `timeoutMs` (plus the wait it asks for), and a read is tried again
   * `retries` times after `backoffMs`, doubled each time, with jitter.
   */
  retry?: { timeoutMs: number; retries: number; backoffMs: number };
}

/**
 * A bounded wait for an answer (`ms` plus what the request itself asks to wait): aborted when the
 * timer fires; the caller clears the timer once what it bounds is in (the socket: the head; https:
 * the whole JSON answer). No bound without `ms`.
 */
export function bound(ms: number | undefined, path: string, signal?: AbortSignal) {
  if (ms === undefined) return { limit: null, timer: null, sig: signal };
  const limit = new AbortController();
  const timer = setTimeout(() => limit.abort(), ms + waitOf(path));
  return { limit, timer, sig: signal ? AbortSignal.any([signal, limit.signal]) : limit.signal };
}

/** The wait a request asks planterd for (`timeout_ms` of a job wait, `wait_ms` of a log follow), in ms. */
export function waitOf(path: string): number {
  // An MCP call answers when its tool is done: a run waits up to 600 s (lib/mcp/tools.ts).
  if (path === "/mcp") return 610_000;
  const q = path.indexOf("?");
  if (q < 0) return 0;
  const params = new URLSearchParams(path.slice(q + 1));
  const n = Number(params.get("timeout_ms") ?? params.get("wait_ms") ?? 0);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** The peer reader of this platform, built once (null where there is none). */
let readerOnce: ReturnType<typeof peerReader> | undefined;

export class Client {
  private listenerChecked: Promise<void> | null = null;

  /**
   * `unreachableHint` replaces the default hint when the socket does not answer (a Lima VM's,
   * say); `trust` names uids trusted besides the caller's and root's (never from the CLI).
   */
  constructor(
    readonly socketPath: string,
    private readonly unreachableHint?: string,
    private readonly trust: readonly number[] = [],
    private readonly opts: ClientOptions = {},
  ) {}

  private prepared: Promise<void> | null = null;
  private remoteOnce: Promise<RemoteTransport> | null = null;
  private remoteMade: RemoteTransport | null = null;
  /** The first failure a retry got past (an ssh forward that answered at the second try). */
  private recovered: Trouble | null = null;

  /** A failure this client got past (target health: degraded), or null. */
  trouble(): Trouble | null {
    return this.recovered ?? this.remoteMade?.trouble?.() ?? null;
  }

  /** The target's own preparation (once; again after a failure; anew when `stale`). */
  private async prepare(stale = false): Promise<void> {
    if (!this.opts.prepare) return;
    if (stale) this.prepared = this.opts.prepare(true);
    this.prepared ??= this.opts.prepare();
    try {
      await this.prepared;
    } catch (e) {
      this.prepared = null;
      throw e;
    }
  }

  private remote(): Promise<RemoteTransport> | null {
    if (!this.opts.remote) return null;
    this.remoteOnce ??= this.opts.remote().then(
      (t) => {
        this.remoteMade = t;
        return t;
      },
      (e) => {
        this.remoteOnce = null;
        throw e;
      },
    );
    return this.remoteOnce;
  }

  /**
   * Who is behind the socket, as every request checks first: the path and its directory (owner,
   * mode), then the listening process's uid. Throws E_UNTRUSTED_DAEMON (or why it cannot connect).
   */
  verify(): Promise<void> {
    return this.check();
  }

  /** The socket's path now, and (once) the uid of the process listening on it. */
  private async check(): Promise<void> {
    await this.prepare();
    const me = process.getuid?.();
    if (me === undefined) return;
    checkSocketPath(this.socketPath, me, this.trust);
    try {
      await this.listener(me);
    } catch (e) {
      // A prepared way whose socket is there with nothing listening (an ssh master that died; its
      // forward's socket file stays): prepared anew, once. Nothing was sent: the connect failed.
      if (!this.opts.prepare || !(e instanceof PlanterError) || e.code !== "E_DAEMON_UNREACHABLE") throw e;
      await this.prepare(true);
      checkSocketPath(this.socketPath, me, this.trust);
      await this.listener(me);
    }
  }

  private async listener(me: number): Promise<void> {
    this.listenerChecked ??= this.checkListener(me);
    try {
      await this.listenerChecked;
    } catch (e) {
      this.listenerChecked = null; // an unreachable daemon may answer later; a refusal is said again
      throw e;
    }
  }

  private async checkListener(me: number): Promise<void> {
    let socket: Awaited<ReturnType<typeof Bun.connect>>;
    try {
      socket = await Bun.connect({ unix: this.socketPath, socket: { data() {} } });
    } catch (e) {
      throw unreachable(this.socketPath, e, this.unreachableHint);
    }
    try {
      readerOnce ??= peerReader().catch(() => null);
      const fd = (socket as unknown as { fd?: number }).fd ?? -1;
      this.verifyListener(await readerOnce, fd, me);
      // Only once its uid is trusted: does it read at all (lib/api/accepted.ts)? An empty line,
      // which HTTP servers skip before a request: no request, nothing in planterd's audit.
      socket.write("\r\n");
      let ended = false;
      await whenRead(fd, this.socketPath, acceptTimeoutMs(), () => ended).finally(() => {
        ended = true;
      });
    } finally {
      socket.end();
    }
  }

  /**
   * The socket's path checked now, and the check of its listener's uid to run on the connection a
   * request then makes (before a byte is sent on it).
   */
  private async onConnection(me: number): Promise<(fd: number) => void> {
    checkSocketPath(this.socketPath, me, this.trust);
    readerOnce ??= peerReader().catch(() => null);
    const read = await readerOnce;
    return (fd) => this.verifyListener(read, fd, me);
  }

  /** Refuse a listener whose uid is not the caller's, root's or a trusted one (or cannot be read). */
  private verifyListener(read: Awaited<ReturnType<typeof peerReader>> | null, fd: number, me: number): void {
    const peer = read && fd >= 0 ? read(fd) : null;
    if (read && !peer)
      throw new PlanterError(
        "E_UNTRUSTED_DAEMON",
        `refusing to use the planterd socket ${this.socketPath}: the credentials of the process listening on it cannot be read`,
      );
    if (peer) checkPeerUid(this.socketPath, peer.uid, me, this.trust);
  }

  /** The response to a request, refused with the daemon's error unless it is a 2xx. */
  private async fetch(
    method: string,
    path: string,
    body?: unknown,
    signal?: AbortSignal,
    accept: readonly number[] = [],
    /** The answer is one JSON value, read whole (not lines that may never end). */
    whole = false,
  ): Promise<Response> {
    if (signal?.aborted) throw abortError();
    // Bytes go as they are (a route's `bytesBody`); anything else as JSON.
    const bytes = body instanceof Uint8Array;
    const payload = body === undefined ? undefined : bytes ? body : JSON.stringify(body);
    const headers: Record<string, string> =
      body === undefined ? {} : { "content-type": bytes ? "application/octet-stream" : "application/json" };
    // A request that may be sent again: a read, or a body with a request_ref (planterd replays it).
    const idempotent = method === "GET" || (!bytes && Boolean((body as { request_ref?: unknown })?.request_ref));
    const remote = this.remote();
    const res = remote
      ? await (await remote).fetch(method, path, payload, headers, signal, idempotent)
      : await this.socketFetch(method, path, payload, headers, signal, idempotent, whole);
    if (!res.ok && !accept.includes(res.status)) throw answerError(res.status, await res.text());
    return res;
  }

  /** A request over the socket; with `opts.retry`, bounded and (when idempotent) tried again. */
  private async socketFetch(
    method: string,
    path: string,
    body: string | Uint8Array | undefined,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    idempotent: boolean,
    whole = false,
  ): Promise<Response> {
    const retry = this.opts.retry;
    const attempts = retry && idempotent ? retry.retries + 1 : 1;
    let first: PlanterError | null = null;
    for (let attempt = 0; ; attempt++) {
      const { limit, timer, sig } = bound(retry?.timeoutMs, path, signal);
      try {
        let res: Response;
        if (whole && this.listenerChecked === null && !(body instanceof Uint8Array) && process.getuid) {
          // The client's first request, when its answer is one JSON value: on its own connection,
          // the listener checked on it (one connection instead of two; through an ssh forward, one
          // channel instead of two). Lines (a watch, a follow) keep the usual way: read as they come.
          const s = await this.openVerified(method, path, body, sig);
          const text = await s.text();
          res = new Response(text === "" ? null : text, { status: s.status, headers: s.headers });
        } else {
          await this.check();
          res = await fetch(`http://planterd${path}`, { unix: this.socketPath, method, body, headers, signal: sig });
        }
        if (first) this.recovered ??= { endpoint: null, error: first.message };
        return res;
      } catch (e) {
        if (signal?.aborted) throw abortError();
        const err = this.failure(e, limit?.signal.aborted ?? false, idempotent);
        first ??= err;
        if (err.code === "E_UNTRUSTED_DAEMON" || attempt + 1 >= attempts) throw err;
        // The way there may be what broke (an ssh master gone): prepared and checked anew.
        this.prepared = null;
        this.listenerChecked = null;
        await Bun.sleep((retry?.backoffMs ?? 0) * 2 ** attempt * (0.5 + Math.random()));
      } finally {
        if (timer) clearTimeout(timer);
      }
    }
  }

  /** The error a failed socket request gives: its own, a timeout's, or "unreachable". */
  private failure(e: unknown, timedOut: boolean, idempotent: boolean): PlanterError {
    if (e instanceof PlanterError) return e;
    if (timedOut)
      return new PlanterError(
        "E_UNAVAILABLE",
        `no answer from ${this.socketPath} within ${this.opts.retry?.timeoutMs} ms${idempotent ? "" : " (the request may have been carried out)"}`,
        { hint: this.unreachableHint },
      ).withExit(EXIT.unreachable);
    if ((e as Error).name === "AbortError") throw abortError();
    return unreachable(this.socketPath, e, this.unreachableHint);
  }

  /**
   * A byte stream on a connection of its own (lib/api/stream.ts), after the same checks as every
   * request; refused with the daemon's error unless it is a 2xx.
   */
  private async stream(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<ByteStream> {
    if (signal?.aborted) throw abortError();
    const remote = this.remote();
    if (remote) {
      const s = await (await remote).stream(
        method,
        path,
        body === undefined ? undefined : JSON.stringify(body),
        signal,
      );
      if (s.status < 200 || s.status > 299) throw answerError(s.status, await s.text());
      return s;
    }
    const s = await this.openVerified(method, path, body === undefined ? undefined : JSON.stringify(body), signal);
    if (s.status < 200 || s.status > 299) throw answerError(s.status, await s.text());
    return s;
  }

  /**
   * A request on a connection of its own (lib/api/stream.ts). The listener is checked on that
   * same connection when no request of this client checked it yet (one connection instead of
   * two), else as every request's. A refused connect sent nothing: a prepared way found dead (an
   * ssh master gone, its forward's socket left) is made anew, once.
   */
  private async openVerified(
    method: string,
    path: string,
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<ByteStream> {
    await this.prepare();
    const me = process.getuid?.();
    let verify: ((fd: number) => void) | undefined;
    if (me !== undefined && this.listenerChecked === null) verify = await this.onConnection(me);
    else await this.check();
    const open = () => openStream(this.socketPath, method, path, body, signal, verify, acceptTimeoutMs());
    let s: ByteStream;
    try {
      try {
        s = await open();
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (!this.opts.prepare || (code !== "ECONNREFUSED" && code !== "ENOENT")) throw e;
        await this.prepare(true);
        if (me !== undefined) checkSocketPath(this.socketPath, me, this.trust);
        s = await open();
      }
    } catch (e) {
      if (e instanceof PlanterError) throw e;
      if ((e as Error).name === "AbortError" || signal?.aborted) throw abortError();
      throw unreachable(this.socketPath, e, this.unreachableHint);
    }
    if (verify) this.listenerChecked ??= Promise.resolve();
    return s;
  }

  /** One request, one JSON answer (a 2xx, or a status of `accept`). */
  private async request<T>(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    accept: readonly number[],
  ): Promise<T> {
    const res = await this.fetch(method, path, body, signal, accept, true);
    try {
      return (await res.json()) as T;
    } catch (e) {
      throw signal?.aborted ? abortError() : e;
    }
  }

  /** A JSON-lines answer, value by value. */
  private async *lines<T>(path: string, signal?: AbortSignal): AsyncGenerator<T> {
    const res = await this.fetch("GET", path, undefined, signal);
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk, { stream: true });
        let nl = buf.indexOf("\n");
        while (nl >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim()) yield JSON.parse(line) as T;
          nl = buf.indexOf("\n");
        }
      }
    } catch (e) {
      throw signal?.aborted ? abortError() : e;
    }
    if (signal?.aborted) throw abortError();
    if (buf.trim()) yield JSON.parse(buf) as T;
  }

  /**
   * One route of the table (lib/api/routes.ts): its path from `params`, its query string from
   * `query`, its typed body; the reply typed by the route. JSON routes only; lines and bytes
   * routes have methods of their own below.
   */
  call<T extends Route>(route: T, args: CallArgs<T>, signal?: AbortSignal): Promise<RouteReply<T>> {
    return this.request<RouteReply<T>>(route.method, target(route, args), args.body, signal, route.ok);
  }

  /**
   * One JSON-RPC message to planterd's MCP server (POST /mcp; `planter mcp`), after the same
   * checks as every request. Any status comes back: the bridge turns refusals into JSON-RPC errors.
   */
  async mcp(body: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    if (signal?.aborted) throw abortError();
    const all = { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers };
    // Sent once (a tool call is no read), and with no bound on its answer's head: a run's answer
    // comes when its wait is over.
    const remote = this.remote();
    if (remote) return (await remote).fetch("POST", "/mcp", body, all, signal, false);
    await this.check();
    try {
      return await fetch("http://planterd/mcp", { unix: this.socketPath, method: "POST", body, headers: all, signal });
    } catch (e) {
      if ((e as Error).name === "AbortError" || signal?.aborted) throw abortError();
      throw unreachable(this.socketPath, e, this.unreachableHint);
    }
  }

  version = () => this.call(ROUTES.version, {});
  health = () => this.call(ROUTES.health, {});
  ready = () => this.call(ROUTES.ready, {});

  createCell = (body: RouteBodyIn<Routes["createCell"]>) => this.call(ROUTES.createCell, { body });
  listCells = () => this.call(ROUTES.listCells, {});
  getCell = (name: string) => this.call(ROUTES.getCell, { params: { name } });
  updateCell = (name: string, body: RouteBodyIn<Routes["updateCell"]>) =>
    this.call(ROUTES.updateCell, { params: { name }, body });
  removeCell = (name: string, force: boolean) => this.call(ROUTES.removeCell, { params: { name }, query: { force } });

  createJob = (body: RouteBodyIn<Routes["createJob"]>) => this.call(ROUTES.createJob, { body });
  listJobs = (query: RouteQueryIn<Routes["listJobs"]>) => this.call(ROUTES.listJobs, { query });
  getJob = (id: string) => this.call(ROUTES.getJob, { params: { id } });
  killJob = (id: string, body: RouteBodyIn<Routes["killJob"]>) => this.call(ROUTES.killJob, { params: { id }, body });
  waitJob = (id: string, timeoutMs: number, signal?: AbortSignal) =>
    this.call(ROUTES.waitJob, { params: { id }, query: { timeout_ms: timeoutMs } }, signal);
  removeJob = (id: string) => this.call(ROUTES.removeJob, { params: { id } });
  logs = (id: string, query: RouteQueryIn<Routes["logs"]>, signal?: AbortSignal) =>
    this.call(ROUTES.logs, { params: { id }, query }, signal);
  /** A log's bytes from an offset (GET …/logs/raw); with follow, until the job has ended. */
  logStream = (id: string, query: RouteQueryIn<Routes["logStream"]>, signal?: AbortSignal) =>
    this.stream("GET", target(ROUTES.logStream, { params: { id }, query }), undefined, signal);
  /**
   * A log file itself (GET …/logs/fd): a read-only descriptor planterd passes over its Unix socket
   * (lib/api/fdpass.ts), and the log's size when it was opened; the caller closes it. Null where
   * no descriptor can come (not Linux, a target reached through ssh or https, a planterd without
   * the route, a connection that does not pass one): read the bytes then (logStream).
   */
  async logFd(id: string, stream: "stdout" | "stderr"): Promise<{ fd: number; size: number } | null> {
    if (process.platform !== "linux" || this.opts.remote || this.opts.prepare) return null;
    const me = process.getuid?.();
    const verify = me === undefined ? () => {} : await this.onConnection(me);
    const { requestWithFds } = await import("./fdpass.ts");
    const path = target(ROUTES.logFd, { params: { id }, query: { stream } });
    let a: Awaited<ReturnType<typeof requestWithFds>>;
    try {
      a = await requestWithFds(
        this.socketPath,
        `GET ${path} HTTP/1.1\r\nHost: planterd\r\nConnection: close\r\n\r\n`,
        verify,
        acceptTimeoutMs(),
      );
    } catch (e) {
      if (e instanceof PlanterError) throw e;
      throw unreachable(this.socketPath, e, this.unreachableHint);
    }
    const [fd, ...extra] = a.fds;
    for (const x of extra) closeSync(x);
    const size = Number(a.headers["planter-size"]);
    if (a.status === 200 && fd !== undefined && Number.isSafeInteger(size) && size >= 0) return { fd, size };
    if (fd !== undefined) closeSync(fd);
    if (a.status === 200) return null;
    const err = answerError(a.status, Buffer.from(a.body).toString());
    // A planterd without the route, or one that passes no descriptor here: the bytes, as before.
    if (err.code === "E_BAD_REQUEST" || (err.code === "E_NOT_FOUND" && err.message.startsWith("no such endpoint"))) {
      return null;
    }
    throw err;
  }
  /** Submit a job and read it, its output and its end from one response (lib/api/frames.ts). */
  runJob = (body: RouteBodyIn<Routes["createJob"]>, signal?: AbortSignal) =>
    this.stream("POST", target(ROUTES.createJob, { query: { attach: true } }), body, signal);
  writeStdin = (id: string, body: RouteBodyIn<Routes["writeStdin"]>, query?: RouteQueryIn<Routes["writeStdin"]>) =>
    this.call(ROUTES.writeStdin, { params: { id }, body, query });
  /** Input for a job as raw bytes (the body as it is: no base64); `eof` in the query ends it after them. */
  writeStdinBytes = (id: string, data: Uint8Array, query?: RouteQueryIn<Routes["writeStdin"]>) =>
    this.request<RouteReply<Routes["writeStdin"]>>(
      ROUTES.writeStdin.method,
      target(ROUTES.writeStdin, { params: { id }, query }),
      data,
      undefined,
      ROUTES.writeStdin.ok,
    );
  screen = (id: string) => this.call(ROUTES.screen, { params: { id } });
  /**
   * A terminal job's WebSocket (GET …/attach), open: its first text message is `{job, writer}`,
   * then one terminal frame per binary message (lib/tty/protocol.ts), and `{job}` once it ended.
   */
  async attach(id: string, query: RouteQueryIn<Routes["attach"]>): Promise<WebSocket> {
    await this.prepare();
    // A refused upgrade says nothing to a WebSocket: the usual refusals are asked first, in words.
    const job = await this.call(ROUTES.getJob, { params: { id } });
    if (!job.tty)
      throw new PlanterError("E_BAD_REQUEST", `job ${job.id} has no terminal`, {
        hint: "only a job started with a terminal (planter run -t) can be attached to",
      });
    if (FINAL_STATES.has(job.state))
      throw new PlanterError("E_CONFLICT", `job ${job.id} has ended (${job.state})`, {
        hint: `its output is in its log: planter logs ${job.id} (--screen for the last screen)`,
      });
    const path = target(ROUTES.attach, { params: { id }, query });
    const remote = this.remote();
    const ws = remote ? (await remote).websocket(path) : new WebSocket(`ws+unix://${this.socketPath}:${path}`);
    ws.binaryType = "arraybuffer";
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(null);
      ws.onclose = (e) => reject(e);
    }).catch((e: CloseEvent | null) => {
      throw new PlanterError("E_CONFLICT", `cannot attach to job ${id}${e?.reason ? `: ${e.reason}` : ""}`, {
        hint: `see planter job status ${id}`,
      });
    });
    return ws;
  }
  events = (query: RouteQueryIn<Routes["events"]>, signal?: AbortSignal) =>
    this.lines<RouteReply<Routes["events"]>>(target(ROUTES.events, { query }), signal);

  listAgents = (query: RouteQueryIn<Routes["listAgents"]> = {}) => this.call(ROUTES.listAgents, { query });
  /** Agents as they change: a snapshot (or a reset and one), then deltas, until `signal` aborts. */
  watchAgents = (query: RouteQueryIn<Routes["watchAgents"]>, signal?: AbortSignal) =>
    this.lines<RouteReply<Routes["watchAgents"]>>(target(ROUTES.watchAgents, { query }), signal);
  reportAgent = (body: RouteBodyIn<Routes["reportAgent"]>) => this.call(ROUTES.reportAgent, { body });
  agentSend = (id: string, body: RouteBodyIn<Routes["agentSend"]>) =>
    this.call(ROUTES.agentSend, { params: { id }, body });
  agentKill = (id: string, body: RouteBodyIn<Routes["agentKill"]>) =>
    this.call(ROUTES.agentKill, { params: { id }, body });
  agentOutput = (id: string, query: RouteQueryIn<Routes["agentOutput"]>) =>
    this.call(ROUTES.agentOutput, { params: { id }, query });
}

/** What a call of a route passes: its path parameters, query values and body, as the route types them. */
export type CallArgs<T extends Route> = (keyof RouteParams<T> extends never
  ? { params?: undefined }
  : { params: RouteParams<T> }) & { query?: RouteQueryIn<T> } & (T["body"] extends null
    ? { body?: undefined }
    : { body: RouteBodyIn<T> });

/** A route's path and query string. */
function target<T extends Route>(route: T, args: { params?: Record<string, string>; query?: object }): string {
  return pathOf(route.path, args.params ?? {}) + queryOf(args.query as Record<string, unknown> | undefined);
}

/**
 * How to start the local planterd, for the "unreachable" hint: through the mode's systemd socket
 * unit where a service manager runs, else directly (as root for a system install).
 */
export function startHint(o: { mode: "user" | "system"; uid: number; systemd: boolean }): string {
  const sudo = o.mode === "system" && o.uid !== 0 ? "sudo " : "";
  const elsewhere = "; set PLANTER_SOCKET or --socket if it listens elsewhere";
  if (o.systemd) {
    const ctl = o.mode === "user" ? "systemctl --user" : `${sudo}systemctl`;
    return `start it with \`${ctl} start planterd.socket\` once installed, or run \`${sudo}planter daemon\`${elsewhere}`;
  }
  return `no systemd runs here: start it in the background with \`${sudo}planter daemon &\` (\`${sudo}planter doctor\` prints the command that keeps its log)${elsewhere}`;
}

/** The error an answer other than 2xx carries: the daemon's envelope, or what it said instead. */
function answerError(status: number, text: string): PlanterError {
  let parsed: { error?: ErrorBody } | null = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (parsed?.error?.code) return PlanterError.fromBody(parsed.error);
  return new PlanterError("E_INTERNAL", `planterd answered HTTP ${status}: ${text.slice(0, 200)}`);
}

function unreachable(socketPath: string, e: unknown, hint?: string): PlanterError {
  const code = (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? "error";
  return new PlanterError("E_DAEMON_UNREACHABLE", `cannot reach planterd at ${socketPath} (${code})`, {
    hint:
      hint ??
      "start it with `planter daemon` (or `systemctl --user start planterd.socket` once installed); set PLANTER_SOCKET or --socket if it listens elsewhere",
  });
}
