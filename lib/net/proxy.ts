/**
 * A job's egress proxy: one server per job on a Unix socket (bound into the job's sandbox), speaking
 * HTTP CONNECT, plain HTTP (absolute-form requests, forwarded one per connection) and SOCKS5
 * (CONNECT, no authentication). Every destination is decided by the job's rules (policy.ts): the
 * name first, then planterd resolves it and checks every address, and connects to exactly an
 * address it checked — never a second lookup, so a name cannot rebind between check and use.
 * Every attempt ends in one record through `onRecord` (the `net.connect` event).
 */
import { lookup } from "node:dns/promises";
import { chmodSync, rmSync } from "node:fs";
import * as net from "node:net";
import {
  type Addr,
  type Compiled,
  canonicalHost,
  checkAddress,
  checkHost,
  compile,
  formatAddr,
  type Host,
  type NetRules,
  parseAddr,
  type Verdict,
} from "./policy.ts";

/** One connection attempt, as recorded. */
export interface ConnectRecord {
  /** The destination as the job named it (canonical); "" when the request never named one. */
  host: string;
  port: number;
  decision: "allow" | "deny";
  /** The entry that decided, or a keyword (unlisted, local:CLASS, metadata, bad-request, limit, …). */
  rule: string;
  /** The address connected to (allowed attempts that got that far). */
  address?: string;
  protocol: "connect" | "http" | "socks5" | "unknown";
  bytes_out: number;
  bytes_in: number;
  duration_ms: number;
  /** Why an allowed attempt failed (resolution, connect, timeout), or a refusal's sentence. */
  error?: string;
}

/** Resolve a name to addresses; tests inject a map, planterd uses the system resolver. */
export type Resolver = (name: string) => Promise<{ address: string }[]>;

/** The proxy's limits; each bounds what a hostile job can make planterd hold. */
export interface ProxyLimits {
  /** Open connections at once (the next are closed at once, recorded as `limit`). */
  maxConnections: number;
  /** Bytes of an HTTP request head (request line + headers). */
  maxHeaderBytes: number;
  /** Time to send a complete request head or SOCKS handshake (slowloris). */
  headerTimeoutMs: number;
  /** A tunnel with no bytes either way for this long is closed. */
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  resolveTimeoutMs: number;
}

export const DEFAULT_LIMITS: ProxyLimits = {
  maxConnections: 256,
  maxHeaderBytes: 16 * 1024,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  connectTimeoutMs: 10_000,
  resolveTimeoutMs: 5_000,
};

/**
 * Connections shared by several proxies (every job of one user): what a hostile job makes planterd
 * hold is bounded across its user's jobs too, not only per job. `take` false: none left.
 */
export interface ConnectionBudget {
  readonly max: number;
  take(): boolean;
  release(): void;
}

export interface ProxyOptions {
  rules: NetRules;
  onRecord: (r: ConnectRecord) => void;
  resolve?: Resolver;
  limits?: Partial<ProxyLimits>;
  budget?: ConnectionBudget;
}

const systemResolver: Resolver = (name) => lookup(name, { all: true, verbatim: true });

/** A failure with the record's rule and the answer the protocol gives. */
class Refusal extends Error {
  constructor(
    readonly rule: string,
    message: string,
    readonly kind: "policy" | "bad-request" | "resolve" | "connect" | "timeout" | "too-large",
  ) {
    super(message);
  }
}

/** The egress proxy of one job. */
export class EgressProxy {
  readonly limits: ProxyLimits;
  private readonly rules: Compiled;
  private readonly resolve: Resolver;
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | null = null;

  constructor(private readonly opts: ProxyOptions) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.rules = compile(opts.rules);
    this.resolve = opts.resolve ?? systemResolver;
  }

  /** Connections open now (client sides). */
  get active(): number {
    return this.sockets.size;
  }

  /**
   * Listen on a Unix socket path (replacing a stale socket file there), mode 0600 unless given.
   * The path's directory must be private to planterd and the job: the mode is set after bind.
   */
  async listen(path: string, mode = 0o600): Promise<void> {
    rmSync(path, { force: true });
    const server = net.createServer({ allowHalfOpen: true }, (s) => this.handle(s));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, mode);
    // An accept that fails (EMFILE) must not take planterd down; the job's connect fails instead.
    server.on("error", () => {});
    this.server = server;
  }

  /** Stop listening and close every connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Serve one accepted connection (any listener may hand them over). */
  handle(client: net.Socket): void {
    const started = performance.now();
    if (this.sockets.size >= this.limits.maxConnections) {
      client.destroy();
      this.opts.onRecord({
        ...blank("unknown"),
        decision: "deny",
        rule: "limit",
        error: `more than ${this.limits.maxConnections} connections at once`,
      });
      return;
    }
    const budget = this.opts.budget;
    if (budget && !budget.take()) {
      client.destroy();
      this.opts.onRecord({
        ...blank("unknown"),
        decision: "deny",
        rule: "limit",
        error: `more than ${budget.max} connections at once of the job's user (all its jobs together)`,
      });
      return;
    }
    this.sockets.add(client);
    const c = new Conn(this, client, started);
    client.once("close", () => {
      this.sockets.delete(client);
      budget?.release();
    });
    c.start();
  }

  /** @internal Decide and connect: the checked address is the one connected. */
  async open(target: Host, port: number, rec: ConnectRecord): Promise<net.Socket> {
    if (target.kind === "ip") {
      const v = checkHost(this.rules, target, port);
      setVerdict(rec, v);
      if (v.decision === "deny") throw new Refusal(v.rule, v.reason, "policy");
      return this.connect([[target.addr, v]], port, rec);
    }
    const byName = checkHost(this.rules, target, port);
    setVerdict(rec, byName);
    if (byName.decision === "deny") throw new Refusal(byName.rule, byName.reason, "policy");
    let answers: { address: string }[];
    try {
      answers = await withTimeout(this.resolve(target.name), this.limits.resolveTimeoutMs, "name resolution");
    } catch (e) {
      throw new Refusal(rec.rule, `cannot resolve ${target.name}: ${(e as Error).message}`, "resolve");
    }
    const allowed: [Addr, Verdict][] = [];
    let refused: Verdict | null = null;
    for (const a of answers) {
      const addr = parseAddr(a.address);
      if (!addr) continue;
      const v = checkAddress(this.rules, addr, port, byName, target.name);
      if (v.decision === "allow") allowed.push([addr, v]);
      else refused ??= v;
    }
    if (!allowed.length) {
      if (refused) {
        setVerdict(rec, refused);
        throw new Refusal(refused.rule, refused.reason, "policy");
      }
      throw new Refusal(rec.rule, `${target.name} has no addresses`, "resolve");
    }
    return this.connect(allowed, port, rec);
  }

  /** Connect to the first address that answers; the record names it and the rule that opened it. */
  private async connect(addrs: [Addr, Verdict][], port: number, rec: ConnectRecord): Promise<net.Socket> {
    let last: Error | null = null;
    for (const [a, v] of addrs) {
      const address = formatAddr(a);
      rec.address = address;
      rec.rule = v.rule;
      try {
        return await connectTo(address, a.family, port, this.limits.connectTimeoutMs);
      } catch (e) {
        last = e as Error;
      }
    }
    const timeout = last?.message.includes("timed out");
    throw new Refusal(
      rec.rule,
      `cannot connect to ${rec.address} port ${port}: ${last?.message}`,
      timeout ? "timeout" : "connect",
    );
  }

  /** @internal */
  record(r: ConnectRecord): void {
    this.opts.onRecord(r);
  }
}

const blank = (protocol: ConnectRecord["protocol"]): ConnectRecord => ({
  host: "",
  port: 0,
  decision: "deny",
  rule: "",
  protocol,
  bytes_out: 0,
  bytes_in: 0,
  duration_ms: 0,
});

function setVerdict(rec: ConnectRecord, v: Verdict): void {
  rec.decision = v.decision;
  rec.rule = v.rule;
  if (v.decision === "deny") rec.error = v.reason;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Connect to an address literal (no lookup can happen: it is already one). */
function connectTo(address: string, family: 4 | 6, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: address, port, family, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(timer);
      s.removeAllListeners("error");
      // Until the tunnel adds its own: an error with no listener would throw in planterd.
      s.on("error", () => {});
      resolve(s);
    });
    s.once("error", (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
  });
}

const CRLF2 = Buffer.from("\r\n\r\n");
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Headers that concern the hop to the proxy, never the origin.
const HOP = new Set(["proxy-connection", "proxy-authorization", "connection", "keep-alive", "te", "trailer"]);

/** One client connection: the handshake, then a tunnel. */
class Conn {
  private buf: Buffer = Buffer.alloc(0);
  private phase: "head" | "deciding" | "tunnel" | "done" = "head";
  private readonly rec: ConnectRecord;
  private headTimer: ReturnType<typeof setTimeout>;
  private upstream: net.Socket | null = null;
  private finished = false;
  private onData = (chunk: Buffer) => this.feed(chunk);

  constructor(
    private readonly proxy: EgressProxy,
    private readonly client: net.Socket,
    private readonly started: number,
  ) {
    this.rec = blank("unknown");
    this.headTimer = setTimeout(() => this.headTimeout(), proxy.limits.headerTimeoutMs);
  }

  start(): void {
    this.client.on("data", this.onData);
    this.client.on("error", () => this.finish());
    this.client.on("close", () => this.finish());
    this.client.on("end", () => {
      if (this.phase === "head")
        this.fail(new Refusal("bad-request", "the client closed before a complete request", "bad-request"));
    });
  }

  private headTimeout(): void {
    if (this.phase !== "head" && this.phase !== "deciding") return;
    const ms = this.proxy.limits.headerTimeoutMs;
    this.fail(new Refusal("timeout", `no complete request within ${ms} ms`, "timeout"));
  }

  private feed(chunk: Buffer): void {
    if (this.phase !== "head") {
      // Bytes after the request head while the destination is decided: kept for the tunnel.
      this.buf = Buffer.concat([this.buf, chunk]);
      if (this.buf.length > this.proxy.limits.maxHeaderBytes * 4) this.client.pause();
      return;
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    try {
      if (this.rec.protocol === "socks5" || this.buf[0] === 0x05) this.socks();
      else if (this.buf[0] === 0x04)
        throw new Refusal("bad-request", "SOCKS4 is not served; use SOCKS5 (socks5h://)", "bad-request");
      else this.http();
    } catch (e) {
      this.fail(e as Error);
    }
  }

  // ---------- HTTP ----------

  private http(): void {
    this.rec.protocol = "http";
    const end = this.buf.indexOf(CRLF2);
    const max = this.proxy.limits.maxHeaderBytes;
    if (end < 0) {
      if (this.buf.length > max) throw new Refusal("bad-request", `request head larger than ${max} bytes`, "too-large");
      return;
    }
    if (end + 4 > max) throw new Refusal("bad-request", `request head larger than ${max} bytes`, "too-large");
    const head = this.buf.subarray(0, end).toString("latin1");
    const rest = this.buf.subarray(end + 4);
    const [line = "", ...lines] = head.split("\r\n");
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.([01])$/.exec(line);
    if (!m)
      throw new Refusal("bad-request", `malformed request line ${JSON.stringify(line.slice(0, 100))}`, "bad-request");
    const [, method, target, minor] = m as unknown as [string, string, string, string];
    const headers: [string, string][] = [];
    for (const l of lines) {
      const i = l.indexOf(":");
      const name = l.slice(0, i);
      if (i <= 0 || !TOKEN.test(name))
        throw new Refusal("bad-request", `malformed header line ${JSON.stringify(l.slice(0, 100))}`, "bad-request");
      headers.push([name, l.slice(i + 1).trim()]);
    }
    if (method === "CONNECT") {
      this.rec.protocol = "connect";
      const { host, port } = splitAuthority(target);
      this.buf = Buffer.from(rest);
      this.go(host, port, () => this.client.write("HTTP/1.1 200 Connection established\r\n\r\n"));
      return;
    }
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      throw new Refusal(
        "bad-request",
        "planter's egress proxy takes absolute URLs (http://host/path) or CONNECT host:port",
        "bad-request",
      );
    }
    if (url.protocol !== "http:") {
      throw new Refusal(
        "bad-request",
        `${url.protocol}// through a plain proxy request: use CONNECT (https_proxy) for it`,
        "bad-request",
      );
    }
    // One parse decides what is checked, connected and asked for: the URL parser's.
    const host = url.hostname;
    const port = url.port ? Number(url.port) : 80;
    const upgrade = headers.some(([n]) => n.toLowerCase() === "upgrade");
    const kept = headers.filter(([n]) => !HOP.has(n.toLowerCase()));
    if (!kept.some(([n]) => n.toLowerCase() === "host")) kept.unshift(["Host", url.host]);
    const out = [
      `${method} ${url.pathname}${url.search} HTTP/1.${minor}`,
      ...kept.map(([n, val]) => `${n}: ${val}`),
      // One request per connection: the next could name another host, and is never parsed here.
      upgrade ? "Connection: Upgrade" : "Connection: close",
      "",
      "",
    ].join("\r\n");
    this.buf = Buffer.concat([Buffer.from(out, "latin1"), rest]);
    this.go(host, port, () => {});
  }

  // ---------- SOCKS5 ----------

  private socksStage: "greeting" | "request" = "greeting";

  private socks(): void {
    this.rec.protocol = "socks5";
    const b = this.buf;
    if (this.socksStage === "greeting") {
      if (b.length < 2) return;
      const n = b[1] as number;
      if (b.length < 2 + n) return;
      const methods = b.subarray(2, 2 + n);
      if (!methods.includes(0x00)) {
        this.client.end(Buffer.from([0x05, 0xff]));
        throw new Refusal("bad-request", "SOCKS5 client offers no 'no authentication' method", "bad-request");
      }
      this.client.write(Buffer.from([0x05, 0x00]));
      this.socksStage = "request";
      this.buf = b.subarray(2 + n);
      // The request's first byte is 5 too: route it here again.
      if (this.buf.length) this.socks();
      return;
    }
    if (b.length < 5) return;
    if (b[0] !== 0x05) throw new Refusal("bad-request", "malformed SOCKS5 request", "bad-request");
    const at = socksAddress(b);
    if (at === null) return;
    if (typeof at === "number") {
      const msg = at === 0x08 ? `SOCKS5 address type ${b[3]} is not supported` : "empty SOCKS5 domain name";
      this.socksFail(at, new Refusal("bad-request", msg, "bad-request"));
    }
    const port = b.readUInt16BE(at.off);
    this.buf = Buffer.from(b.subarray(at.off + 2));
    if (b[1] !== 0x01) {
      const msg = `SOCKS5 command ${b[1]} is not supported (CONNECT only)`;
      this.socksFail(0x07, new Refusal("bad-request", msg, "bad-request"));
    }
    if (port === 0) this.socksFail(0x01, new Refusal("bad-request", "port 0", "bad-request"));
    this.go(at.host, port, () => this.client.write(Buffer.from([0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0])));
  }

  private socksFail(code: number, e: Refusal): never {
    this.client.end(Buffer.from([0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0]));
    throw Object.assign(e, { answered: true });
  }

  // ---------- decision and tunnel ----------

  private go(hostText: string, port: number, established: () => void): void {
    this.phase = "deciding";
    const host = canonicalHost(hostText);
    if (typeof host === "string") throw new Refusal("bad-request", host, "bad-request");
    this.rec.host = host.kind === "name" ? host.name : formatAddr(host.addr);
    this.rec.port = port;
    this.proxy.open(host, port, this.rec).then(
      (up) => this.tunnel(up, established),
      (e) => this.fail(e as Error),
    );
  }

  private tunnel(up: net.Socket, established: () => void): void {
    if (this.phase === "done" || this.client.destroyed) {
      up.destroy();
      return;
    }
    clearTimeout(this.headTimer);
    this.phase = "tunnel";
    this.upstream = up;
    this.rec.decision = "allow";
    established();
    if (this.buf.length) {
      this.rec.bytes_out += this.buf.length;
      up.write(this.buf);
    }
    this.buf = Buffer.alloc(0);
    this.client.off("data", this.onData);
    this.client.resume();
    const idle = this.proxy.limits.idleTimeoutMs;
    let last = Date.now();
    const pipe = (from: net.Socket, to: net.Socket, count: (n: number) => void) => {
      let waiting = false;
      from.on("data", (chunk: Buffer) => {
        last = Date.now();
        count(chunk.length);
        if (!to.write(chunk) && !waiting) {
          waiting = true;
          from.pause();
          to.once("drain", () => {
            waiting = false;
            from.resume();
          });
        }
      });
      from.on("end", () => to.end());
      from.on("error", () => this.finish());
    };
    pipe(this.client, up, (n) => {
      this.rec.bytes_out += n;
    });
    pipe(up, this.client, (n) => {
      this.rec.bytes_in += n;
    });
    // The client half-closed while the destination was decided: pass that on.
    if (this.client.readableEnded) up.end();
    // The origin gone: what it sent is flushed to the client, whose close finishes the record.
    up.on("close", () => {
      if (!this.client.destroyed) this.client.end();
    });
    // One timer for both directions: a tunnel is idle only when neither side sends.
    const timer = setInterval(
      () => {
        if (Date.now() - last < idle) return;
        this.rec.error = `idle for ${idle} ms`;
        this.finish();
      },
      Math.min(idle, 1000),
    );
    this.client.once("close", () => clearInterval(timer));
  }

  /** Answer a refusal the way the protocol can, then record it. */
  private fail(e: Error): void {
    if (this.phase === "done") return;
    const r = e instanceof Refusal ? e : new Refusal("error", e.message, "connect");
    this.rec.error = r.message;
    // A policy refusal carries its verdict already; an allowed destination that could not be
    // resolved or reached stays "allow" with the error; anything before a decision is a refusal.
    if (r.kind === "policy" || !this.rec.rule) {
      this.rec.decision = "deny";
      this.rec.rule ||= r.rule;
    }
    const answered = (e as { answered?: boolean }).answered;
    if (!answered && !this.client.destroyed) {
      if (this.rec.protocol === "socks5")
        this.client.end(Buffer.from([0x05, socksCode(r), 0x00, 0x01, 0, 0, 0, 0, 0, 0]));
      else if (this.rec.protocol === "http" || this.rec.protocol === "connect") this.client.end(httpAnswer(r));
      else this.client.end();
    }
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.phase = "done";
    clearTimeout(this.headTimer);
    this.rec.duration_ms = Math.round(performance.now() - this.started);
    this.proxy.record({ ...this.rec });
    // Let a refusal's answer reach the client before the socket goes.
    if (this.client.writableEnded) setTimeout(() => this.client.destroy(), 1000).unref?.();
    else this.client.destroy();
    this.upstream?.destroy();
  }
}

function socksCode(r: Refusal): number {
  if (r.kind === "policy") return 0x02; // connection not allowed by ruleset
  if (r.kind === "resolve") return 0x04; // host unreachable
  if (r.kind === "timeout") return 0x06;
  if (r.kind === "connect") return r.message.includes("ECONNREFUSED") ? 0x05 : 0x04;
  return 0x01;
}

function httpAnswer(r: Refusal): string {
  const [status, text] =
    r.kind === "policy"
      ? [403, "Forbidden"]
      : r.kind === "too-large"
        ? [431, "Request Header Fields Too Large"]
        : r.kind === "bad-request"
          ? [400, "Bad Request"]
          : r.kind === "timeout"
            ? [504, "Gateway Timeout"]
            : [502, "Bad Gateway"];
  const body = `planter: ${r.message}\n`;
  return [
    `HTTP/1.1 ${status} ${text}`,
    "Content-Type: text/plain; charset=utf-8",
    `Content-Length: ${Buffer.byteLength(body)}`,
    `X-Planter-Egress: ${r.rule || r.kind}`,
    "Connection: close",
    "",
    body,
  ].join("\r\n");
}

/**
 * A SOCKS5 request's address (from byte 3: type, address) and the offset of its port; null while
 * incomplete; a number is the reply code of a refusal.
 */
function socksAddress(b: Buffer): { host: string; off: number } | number | null {
  const atyp = b[3];
  if (atyp === 0x01) return b.length < 10 ? null : { host: Array.from(b.subarray(4, 8)).join("."), off: 8 };
  if (atyp === 0x04) {
    if (b.length < 22) return null;
    const parts: string[] = [];
    for (let i = 0; i < 8; i++) parts.push(b.readUInt16BE(4 + 2 * i).toString(16));
    return { host: parts.join(":"), off: 20 };
  }
  if (atyp !== 0x03) return 0x08;
  const len = b[4] as number;
  if (b.length < 5 + len + 2) return null;
  return len === 0 ? 0x01 : { host: b.subarray(5, 5 + len).toString("latin1"), off: 5 + len };
}

/** `host:port` or `[v6]:port`, as CONNECT names its destination. */
function splitAuthority(a: string): { host: string; port: number } {
  const m = /^(\[[^\]]*\]|[^:[\]]+):([0-9]{1,5})$/.exec(a);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) {
    throw new Refusal(
      "bad-request",
      `malformed authority ${JSON.stringify(a.slice(0, 100))} (host:port)`,
      "bad-request",
    );
  }
  return { host: m[1] as string, port };
}
