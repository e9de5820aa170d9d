/**
 * The API client: HTTP/1.1 + JSON over the Unix socket, one connection per request. The
 * connection is made with node:net so that the peer's credentials can be read from its fd:
 * nothing is sent before the socket path and the listening process are found trustworthy
 * (lib/api/trust.ts). node:http then speaks HTTP over that very connection.
 */
import { request as httpRequest, type IncomingMessage } from "node:http";
import { createConnection, type Socket } from "node:net";
import { peerReader, socketFd } from "../daemon/peer.ts";
import type { Cell, EventRecord, Job, LogChunk, VersionInfo } from "./contract.ts";
import { type ErrorBody, PlanterError } from "./errors.ts";
import { checkPeerUid, checkSocketPath } from "./trust.ts";

/** The peer reader of this platform, built once (null where there is none). */
let readerOnce: ReturnType<typeof peerReader> | undefined;

function abortError(): Error {
  const e = new Error("the request was aborted");
  e.name = "AbortError";
  return e;
}

export class Client {
  /**
   * `unreachableHint` replaces the default hint when the socket does not answer (a Lima VM's,
   * say); `trust` names uids trusted besides the caller's and root's (never from the CLI).
   */
  constructor(
    readonly socketPath: string,
    private readonly unreachableHint?: string,
    private readonly trust: readonly number[] = [],
  ) {}

  /** A connection to the socket whose listener runs as this user or root; nothing is sent on it yet. */
  private async connect(signal?: AbortSignal): Promise<Socket> {
    const me = process.getuid?.();
    if (me !== undefined) checkSocketPath(this.socketPath, me, this.trust);
    if (signal?.aborted) throw abortError();
    const socket = createConnection({ path: this.socketPath });
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        socket.destroy();
        reject(abortError());
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      socket.once("connect", () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
      socket.once("error", (e) => {
        signal?.removeEventListener("abort", onAbort);
        reject(unreachable(this.socketPath, e, this.unreachableHint));
      });
    });
    if (me !== undefined) {
      readerOnce ??= peerReader().catch(() => null);
      const read = await readerOnce;
      const fd = socketFd(socket);
      const peer = read && fd !== null ? read(fd) : null;
      try {
        if (read && !peer)
          throw new PlanterError(
            "E_UNTRUSTED_DAEMON",
            `refusing to use the planterd socket ${this.socketPath}: the credentials of the process listening on it cannot be read`,
          );
        if (peer) checkPeerUid(this.socketPath, peer.uid, me, this.trust);
      } catch (e) {
        socket.destroy();
        throw e;
      }
    }
    return socket;
  }

  /** Send one request on a checked connection; the response once its head has arrived (any status). */
  private async send(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<IncomingMessage> {
    const socket = await this.connect(signal);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string | number> = { connection: "close" };
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = Buffer.byteLength(payload);
    }
    return await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest({ method, path, host: "planterd", headers, createConnection: () => socket }, resolve);
      const onAbort = () => {
        req.destroy(abortError());
        socket.destroy();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      req.once("close", () => signal?.removeEventListener("abort", onAbort));
      req.once("error", (e) =>
        reject(e.name === "AbortError" ? e : unreachable(this.socketPath, e, this.unreachableHint)),
      );
      req.end(payload);
    });
  }

  /** The response to a request, refused with the daemon's error unless it is a 2xx. */
  private async fetch(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<IncomingMessage> {
    const res = await this.send(method, path, body, signal);
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    const text = await readAll(res);
    let parsed: { error?: ErrorBody } | null = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
    if (parsed?.error?.code) throw PlanterError.fromBody(parsed.error);
    throw new PlanterError("E_INTERNAL", `planterd answered HTTP ${status}: ${text.slice(0, 200)}`);
  }

  /** One request, one JSON answer. */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.fetch(method, path, body, signal);
    try {
      return JSON.parse(await readAll(res)) as T;
    } catch (e) {
      throw signal?.aborted ? abortError() : e;
    }
  }

  /** A JSON-lines answer, value by value. */
  async *lines<T>(path: string, signal?: AbortSignal): AsyncGenerator<T> {
    const res = await this.fetch("GET", path, undefined, signal);
    const decoder = new TextDecoder();
    let buf = "";
    const chunks = (res as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await chunks.next();
      } catch (e) {
        throw signal?.aborted ? abortError() : e;
      }
      if (next.done) break;
      buf += decoder.decode(next.value, { stream: true });
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) yield JSON.parse(line) as T;
        nl = buf.indexOf("\n");
      }
    }
    if (signal?.aborted) throw abortError();
    if (buf.trim()) yield JSON.parse(buf) as T;
  }

  version = () => this.request<VersionInfo>("GET", "/v1/version");
  health = () => this.request<{ ok: boolean }>("GET", "/v1/health");

  createCell = (body: Record<string, unknown>) => this.request<Cell>("POST", "/v1/cells", body);
  listCells = () => this.request<{ cells: Cell[] }>("GET", "/v1/cells");
  getCell = (name: string) => this.request<Cell>("GET", `/v1/cells/${encodeURIComponent(name)}`);
  removeCell = (name: string, force: boolean) =>
    this.request<{ removed: string; jobs_removed: number }>(
      "DELETE",
      `/v1/cells/${encodeURIComponent(name)}${force ? "?force=1" : ""}`,
    );

  createJob = (body: Record<string, unknown>) => this.request<Job>("POST", "/v1/jobs", body);
  listJobs = (q: Record<string, string | number | undefined>) =>
    this.request<{ jobs: Job[]; next_after: string | null }>("GET", `/v1/jobs${query(q)}`);
  getJob = (id: string) => this.request<Job>("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  killJob = (id: string, body: { signal?: string; force?: boolean }) =>
    this.request<Job>("POST", `/v1/jobs/${encodeURIComponent(id)}/kill`, body);
  waitJob = (id: string, timeoutMs: number, signal?: AbortSignal) =>
    this.request<{ job: Job; timed_out: boolean }>(
      "GET",
      `/v1/jobs/${encodeURIComponent(id)}/wait${query({ timeout_ms: timeoutMs })}`,
      undefined,
      signal,
    );
  removeJob = (id: string) => this.request<{ removed: string }>("DELETE", `/v1/jobs/${encodeURIComponent(id)}`);
  logs = (id: string, q: Record<string, string | number | undefined>, signal?: AbortSignal) =>
    this.request<LogChunk>("GET", `/v1/jobs/${encodeURIComponent(id)}/logs${query(q)}`, undefined, signal);
  events = (q: Record<string, string | number | undefined>, signal?: AbortSignal) =>
    this.lines<EventRecord>(`/v1/events${query(q)}`, signal);
}

/** A query string from the defined values. */
export function query(q: Record<string, string | number | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
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

/** The whole body of a response, as text. */
async function readAll(res: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of res as AsyncIterable<Buffer>) parts.push(chunk);
  return Buffer.concat(parts).toString("utf8");
}

function unreachable(socketPath: string, e: unknown, hint?: string): PlanterError {
  const code = (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? "error";
  return new PlanterError("E_DAEMON_UNREACHABLE", `cannot reach planterd at ${socketPath} (${code})`, {
    hint:
      hint ??
      "start it with `planter daemon` (or `systemctl --user start planterd.socket` once installed); set PLANTER_SOCKET or --socket if it listens elsewhere",
  });
}
