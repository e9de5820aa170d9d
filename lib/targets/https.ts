/**
 * An `https://` target's transport (loaded only when one is used): TLS to planterd's TCP listener
 * with the target's CA, client certificate or bearer token, over one or more endpoints.
 *
 * - Reads (GET) and requests carrying a request_ref are idempotent: after a failure (no
 *   connection, no answer in time, a body cut short, a 502/503/504) the next healthy endpoint is
 *   tried at once; once every endpoint failed, the whole round is tried again after an exponential
 *   backoff (1 s, 2 s, … up to 32 s, each drawn between half and all of it), until the total bound
 *   would pass — then the error names every endpoint's last failure.
 * - Anything else is sent once; only a refused connection (nothing was sent) moves it to another
 *   endpoint.
 * - Reads go round-robin over the endpoints not skipped; a failing endpoint is skipped for 30 s.
 * The bounds come from PLANTER_RETRY (`initial=MS,max=MS,total=MS,timeout=MS,skip=MS`), for tests.
 */
import { readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import type { RemoteTransport, Trouble } from "../api/client.ts";
import { bound } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import type { ByteStream } from "../api/stream.ts";
import { abortError } from "../api/stream.ts";
import type { TargetEntry } from "../cli/client-config.ts";
import { privateDir } from "./dir.ts";
import type { Endpoint } from "./url.ts";

/** Retry and failover bounds, in ms. */
export interface RetryBounds {
  /** The first backoff; doubled after each round. */
  initial: number;
  /** The longest backoff. */
  max: number;
  /** No new round starts once this much time would have passed since the request began. */
  total: number;
  /** An attempt's answer must begin within this (plus the wait the request asks for). */
  timeout: number;
  /** How long a failing endpoint is left out of the rotation. */
  skip: number;
}

export const DEFAULT_BOUNDS: RetryBounds = { initial: 1000, max: 32_000, total: 60_000, timeout: 10_000, skip: 30_000 };

/** PLANTER_RETRY's bounds over the defaults; a bad value is a usage error. Pure. */
export function boundsFrom(text: string | undefined): RetryBounds {
  const b = { ...DEFAULT_BOUNDS };
  if (!text) return b;
  for (const part of text.split(",")) {
    const [k, v] = part.split("=");
    if (!k || !(k in b) || !v || !/^\d{1,9}$/.test(v))
      throw new PlanterError("E_USAGE", `PLANTER_RETRY: bad part ${JSON.stringify(part)}`, {
        hint: "write it as initial=MS,max=MS,total=MS,timeout=MS,skip=MS (any of them)",
      });
    b[k as keyof RetryBounds] = Number(v);
  }
  return b;
}

/** The backoff before round `n` (0-based): initial·2ⁿ capped at max, drawn in [½, 1] of it. Pure but for `random`. */
export function backoffMs(b: RetryBounds, n: number, random = Math.random): number {
  const full = Math.min(b.max, b.initial * 2 ** n);
  return Math.round(full * (0.5 + random() / 2));
}

/** One endpoint's state in this process. */
interface EndpointState {
  url: string;
  /** Left out of the rotation until then (ms since the epoch). */
  skipUntil: number;
  lastError: string | null;
}

/** A failure that may be tried again (and on another endpoint). */
class Retryable extends Error {
  constructor(
    message: string,
    /** Nothing reached planterd: safe to send again whatever the request. */
    readonly unsent: boolean,
  ) {
    super(message);
  }
}

/** The token of a token file: the user's own, 0600, read at each use. */
export function readToken(path: string, me = process.getuid?.()): string {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch (e) {
    throw new PlanterError("E_CONFIG", `cannot read the token file ${path}: ${(e as Error).message}`, {
      hint: "planter target add NAME URL --token-file FILE --replace names another",
    });
  }
  if (me !== undefined && st.uid !== me)
    throw new PlanterError("E_CONFIG", `refusing the token file ${path}: it is owned by uid ${st.uid}, not by you`, {
      hint: "a token is yours alone: copy it to a file of yours (mode 0600)",
    });
  if ((st.mode & 0o077) !== 0)
    throw new PlanterError(
      "E_CONFIG",
      `refusing the token file ${path}: mode ${(st.mode & 0o777).toString(8)} lets others read it`,
      { hint: `chmod 600 ${path}` },
    );
  return readFileSync(path, "utf8").trim();
}

/** Statuses that say "this endpoint cannot answer now" rather than "this request is wrong". */
const UNAVAILABLE = new Set([502, 503, 504]);

/** Where a target's endpoints' skip times outlive one command (each CLI command is a process of its own). */
export interface SkipStore {
  load(): Record<string, number>;
  save(skipUntil: Record<string, number>): void;
}

const SkipFile = v.record(v.string(), v.number());

/**
 * Skip times in `dir/NAME.https.json` (the user's 0700 target directory): read at start, written
 * (temp file, rename) when they change. A missing or unreadable file is no skip at all.
 */
export function skipFile(dir: string, name: string): SkipStore {
  const path = join(dir, `${name}.https.json`);
  return {
    load() {
      try {
        const r = v.safeParse(SkipFile, JSON.parse(readFileSync(path, "utf8")));
        return r.success ? r.output : {};
      } catch {
        return {};
      }
    },
    save(skipUntil) {
      try {
        privateDir(dir);
        const tmp = `${path}.${process.pid}.tmp`;
        writeFileSync(tmp, JSON.stringify(skipUntil), { mode: 0o600 });
        renameSync(tmp, path);
      } catch {
        // The skip is an optimisation: without the file, the next command tries every endpoint.
      }
    },
  };
}

/** The transport for a target's https endpoints. */
export class HttpsTransport implements RemoteTransport {
  private readonly endpoints: EndpointState[];
  private next = 0;

  constructor(
    readonly name: string,
    urls: string[],
    private readonly entry: Pick<TargetEntry, "ca" | "cert" | "key" | "token_file">,
    private readonly bounds: RetryBounds,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => Bun.sleep(ms),
    private readonly store?: SkipStore,
    /** Where the rotation starts (the CLI: anywhere, so one-request commands spread over the endpoints). */
    start = 0,
  ) {
    const known = store?.load() ?? {};
    const now = Date.now();
    this.endpoints = urls.map((url) => {
      // A skip longer than `skip` from now was not written by this planter's bounds: not trusted.
      const until = known[url] ?? 0;
      return { url, skipUntil: until > now && until <= now + bounds.skip ? until : 0, lastError: null };
    });
    this.next = start;
  }

  /** Keep the skip times for the next command, when they changed. */
  private persist(before: string): void {
    if (!this.store) return;
    const now = Object.fromEntries(
      this.endpoints.filter((e) => e.skipUntil > Date.now()).map((e) => [e.url, e.skipUntil]),
    );
    if (JSON.stringify(now) !== before) this.store.save(now);
  }

  private skips(): string {
    return JSON.stringify(
      Object.fromEntries(this.endpoints.filter((e) => e.skipUntil > Date.now()).map((e) => [e.url, e.skipUntil])),
    );
  }

  /** The last endpoint failure a request of this transport got past (another endpoint, or a later round, answered). */
  private gotPast: Trouble | null = null;

  /**
   * What makes this target degraded though it answers: an endpoint that failed during this
   * command while another answered, else one left out now for failing within the last `skip`.
   */
  trouble(now = Date.now()): Trouble | null {
    if (this.gotPast) return this.gotPast;
    const left = this.endpoints.find((e) => e.skipUntil > now);
    return left
      ? {
          endpoint: left.url,
          error: left.lastError ?? `failed within the last ${Math.round(this.bounds.skip / 1000)} s`,
        }
      : null;
  }

  /** Each endpoint's last error and whether it is skipped now (for target check). */
  health(now = Date.now()) {
    return this.endpoints.map((e) => ({ url: e.url, skipped: e.skipUntil > now, last_error: e.lastError }));
  }

  private tlsOptions(): Record<string, string> {
    const tls: Record<string, string> = {};
    const file = (what: string, path: string) => {
      try {
        return readFileSync(path, "utf8");
      } catch (e) {
        throw new PlanterError("E_CONFIG", `cannot read the ${what} of target ${this.name}: ${(e as Error).message}`, {
          hint: `planter target add ${this.name} URL --replace with files that exist`,
        });
      }
    };
    if (this.entry.ca) tls.ca = file("CA", this.entry.ca);
    if (this.entry.cert) tls.cert = file("certificate", this.entry.cert);
    if (this.entry.key) tls.key = file("key", this.entry.key);
    return tls;
  }

  /** The endpoints to try, in order: round-robin over those not skipped, then the skipped ones (soonest back first). */
  private order(now: number): EndpointState[] {
    const live = this.endpoints.filter((e) => e.skipUntil <= now);
    const start = live.length ? this.next++ % live.length : 0;
    const skipped = this.endpoints.filter((e) => e.skipUntil > now).sort((a, b) => a.skipUntil - b.skipUntil);
    return [...live.slice(start), ...live.slice(0, start), ...skipped];
  }

  private async attempt(
    e: EndpointState,
    method: string,
    path: string,
    body: string | Uint8Array | undefined,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    buffer: boolean,
  ): Promise<Response> {
    const { limit, timer, sig } = bound(this.bounds.timeout, path, signal);
    const auth: Record<string, string> = this.entry.token_file
      ? { authorization: `Bearer ${readToken(this.entry.token_file)}` }
      : {};
    try {
      let res: Response;
      try {
        res = await fetch(`${e.url}${path}`, {
          method,
          body,
          headers: { ...headers, ...auth },
          signal: sig,
          tls: this.tlsOptions(),
        } as RequestInit);
      } catch (err) {
        if (signal?.aborted) throw abortError();
        if (limit?.signal.aborted) throw new Retryable(`no answer within ${this.bounds.timeout} ms`, false);
        const code = (err as { code?: string }).code ?? "";
        if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|HOSTNAME/i.test(`${code} ${(err as Error).message}`))
          throw new PlanterError(
            "E_UNTRUSTED_DAEMON",
            `refusing target ${this.name} at ${e.url}: its TLS certificate does not check out (${code || (err as Error).message})`,
            {
              hint: `give the CA that signed planterd's certificate: planter target add ${this.name} URL --ca FILE --replace`,
            },
          );
        const refused = code === "ConnectionRefused" || code === "ECONNREFUSED";
        throw new Retryable(`${refused ? "connection refused" : code || (err as Error).message}`, refused);
      }
      if (UNAVAILABLE.has(res.status)) {
        const text = await res.text().catch(() => "");
        throw new Retryable(`HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`, false);
      }
      if (!buffer) return res;
      // A JSON answer is read whole here, so that one cut short is a failure this transport retries.
      try {
        const bytes = await res.arrayBuffer();
        return new Response(bytes, { status: res.status, headers: res.headers });
      } catch {
        if (signal?.aborted) throw abortError();
        throw new Retryable(limit?.signal.aborted ? "the answer stalled" : "the connection closed mid-answer", false);
      }
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  async fetch(
    method: string,
    path: string,
    body: string | Uint8Array | undefined,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    idempotent: boolean,
  ): Promise<Response> {
    // Lines (events, watches) are read as they come: buffered only when the route answers JSON.
    const buffer = !/[?&]follow=(1|true)\b/.test(path) && !path.startsWith("/v1/events") && !path.includes("/watch");
    return this.run((e) => this.attempt(e, method, path, body, headers, signal, buffer), idempotent, signal);
  }

  /**
   * A WebSocket (an attached terminal) to the first endpoint not skipped, with the target's TLS
   * files and token; not retried (a session is not idempotent), and a failure is the caller's to say.
   */
  websocket(path: string): WebSocket {
    const e = this.order(Date.now())[0] as EndpointState;
    const headers: Record<string, string> = this.entry.token_file
      ? { authorization: `Bearer ${readToken(this.entry.token_file)}` }
      : {};
    return new WebSocket(`${e.url.replace(/^https:/, "wss:")}${path}`, {
      headers,
      tls: this.tlsOptions(),
    } as unknown as string[]);
  }

  async stream(method: string, path: string, body: string | undefined, signal: AbortSignal | undefined) {
    const headers: Record<string, string> = body === undefined ? {} : { "content-type": "application/json" };
    const res = await this.run(
      (e) => this.attempt(e, method, path, body, headers, signal, false),
      method === "GET",
      signal,
    );
    return byteStream(res);
  }

  /** Try endpoints and rounds as the module comment says. */
  private async run(
    once: (e: EndpointState) => Promise<Response>,
    idempotent: boolean,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const before = this.skips();
    try {
      return await this.rounds(once, idempotent, signal);
    } finally {
      this.persist(before);
    }
  }

  private async rounds(
    once: (e: EndpointState) => Promise<Response>,
    idempotent: boolean,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const began = Date.now();
    let failed: Trouble | null = null;
    for (let round = 0; ; round++) {
      for (const e of this.order(Date.now())) {
        try {
          const res = await once(e);
          e.skipUntil = 0;
          e.lastError = null;
          if (failed) this.gotPast = failed;
          return res;
        } catch (err) {
          if (!(err instanceof Retryable)) throw err;
          failed = { endpoint: e.url, error: err.message };
          e.lastError = err.message;
          e.skipUntil = Date.now() + this.bounds.skip;
          if (!idempotent && !err.unsent)
            throw new PlanterError(
              "E_DAEMON_UNREACHABLE",
              `target ${this.name} at ${e.url}: ${err.message}; the request may have been carried out, so it is not sent again`,
              { hint: `look before trying again (planter --target ${this.name} job ls)` },
            );
        }
      }
      const wait = backoffMs(this.bounds, round);
      if (Date.now() - began + wait > this.bounds.total) break;
      await this.sleep(wait);
      if (signal?.aborted) throw abortError();
    }
    throw new PlanterError(
      "E_DAEMON_UNREACHABLE",
      `cannot reach target ${this.name} (tried for ${Math.round((Date.now() - began) / 1000)} s): ${this.endpoints.map((e) => `${e.url}: ${e.lastError}`).join("; ")}`,
      { hint: `planter target check ${this.name} says more` },
    );
  }
}

/** A fetch Response as the client's ByteStream (logs, an attached run). */
function byteStream(res: Response): ByteStream {
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    headers[k.toLowerCase()] = v;
  });
  // Taken on the first read: an error answer is read as text instead.
  let reader: { read(): Promise<{ done: boolean; value?: Uint8Array }>; cancel(): Promise<void> } | undefined;
  return {
    status: res.status,
    headers,
    text: () => res.text(),
    close: () => {
      if (reader) void reader.cancel().catch(() => undefined);
      else void res.body?.cancel().catch(() => undefined);
    },
    async *[Symbol.asyncIterator]() {
      reader ??= res.body?.getReader() as typeof reader;
      if (!reader) return;
      for (;;) {
        const { done, value } = await reader.read();
        if (done || !value) return;
        yield value;
      }
    },
  };
}

/** The transport of a registered https target (lib/cli/target.ts). */
export async function httpsTransport(
  name: string,
  endpoints: Extract<Endpoint, { kind: "https" }>[],
  entry: TargetEntry,
  stateDir: string,
): Promise<RemoteTransport> {
  const urls = endpoints.map((e) => `https://${e.host}:${e.port}`);
  const store = urls.length > 1 ? skipFile(stateDir, name) : undefined;
  const start = Math.floor(Math.random() * urls.length);
  return new HttpsTransport(name, urls, entry, boundsFrom(process.env.PLANTER_RETRY), undefined, store, start);
}
