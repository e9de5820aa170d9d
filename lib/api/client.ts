/** The API client: HTTP/1.1 + JSON over the Unix socket (Bun's fetch speaks it natively). */
import type { Cell, EventRecord, Job, LogChunk, VersionInfo } from "./contract.ts";
import { type ErrorBody, PlanterError } from "./errors.ts";

export class Client {
  /** `unreachableHint` replaces the default hint when the socket does not answer (a Lima VM's, say). */
  constructor(
    readonly socketPath: string,
    private readonly unreachableHint?: string,
  ) {}

  private async fetch(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`http://planterd${path}`, {
        unix: this.socketPath,
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
        headers: body === undefined ? undefined : { "content-type": "application/json" },
        signal,
      });
    } catch (e) {
      if ((e as Error).name === "AbortError") throw e;
      throw unreachable(this.socketPath, e, this.unreachableHint);
    }
    if (!res.ok) {
      const text = await res.text();
      let parsed: { error?: ErrorBody } | null = null;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null;
      }
      if (parsed?.error?.code) throw PlanterError.fromBody(parsed.error);
      throw new PlanterError("E_INTERNAL", `planterd answered HTTP ${res.status}: ${text.slice(0, 200)}`);
    }
    return res;
  }

  /** One request, one JSON answer. */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.fetch(method, path, body, signal);
    return (await res.json()) as T;
  }

  /** A JSON-lines answer, value by value. */
  async *lines<T>(path: string, signal?: AbortSignal): AsyncGenerator<T> {
    const res = await this.fetch("GET", path, undefined, signal);
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = "";
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

function unreachable(socketPath: string, e: unknown, hint?: string): PlanterError {
  const code = (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? "error";
  return new PlanterError("E_DAEMON_UNREACHABLE", `cannot reach planterd at ${socketPath} (${code})`, {
    hint:
      hint ??
      "start it with `planter daemon` (or `systemctl --user start planterd.socket` once installed); set PLANTER_SOCKET or --socket if it listens elsewhere",
  });
}
