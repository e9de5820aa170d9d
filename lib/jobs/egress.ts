/**
 * The egress proxies of running jobs with a network allow list (plans/design.md "Egress (#15)"):
 * for each, listeners made in the job's network namespace (lib/net/listen.ts) served by one
 * `EgressProxy` in planterd, and its records written as `net.connect` events.
 */
import { lookup } from "node:dns/promises";
import { closeSync, readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import * as v from "valibot";
import { PlanterError } from "../api/errors.ts";
import { EventBatch } from "../daemon/batch.ts";
import type { PendingEvent } from "../daemon/context.ts";
import { takeListeners } from "../net/listen.ts";
import type { NetRules } from "../net/policy.ts";
import { type ConnectionBudget, type ConnectRecord, EgressProxy, type Resolver } from "../net/proxy.ts";
import { startTime } from "./proc.ts";

/** Records of one job written per second at most; the rest are counted in one `net.suppressed`. */
export const RECORDS_PER_SECOND = 50;
/** Records written together in one transaction (or after FLUSH_MS). */
const BATCH = 64;
const FLUSH_MS = 50;

/** The file in a job's dir naming its sandbox's first process (for adoption after a restart). */
export const EGRESS_FILE = "egress.json";
const Saved = v.union([
  // bwrap: the sandbox's first process, whose network namespace gets the listeners.
  v.object({ pid: v.pipe(v.number(), v.integer(), v.minValue(1)), start: v.nullable(v.string()) }),
  // Seatbelt: the host loopback port the job's profile allows.
  v.object({ port: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535)) }),
]);

interface Served {
  proxy: EgressProxy;
  servers: net.Server[];
  window: number;
  inWindow: number;
  suppressed: number;
}

export interface EgressOptions {
  /** Write events in one transaction (planterd's `ctx.write`). */
  write: (fn: (events: PendingEvent[]) => void) => void;
  /** Names answered before DNS (`[network] hosts`: tests, pinned hosts). */
  hosts: Record<string, string[]>;
  /** argv of `planter net-listen` (lib/self.ts). */
  helper: string[];
  /** Proxied connections open at once of all of one job user's jobs (`[network] proxy_connections_per_uid`). */
  maxPerUid?: number;
}

/** A resolver that answers `hosts` first, then the system's. */
export function resolverOf(hosts: Record<string, string[]>): Resolver {
  return async (name) => {
    const fixed = hosts[name.toLowerCase()];
    if (fixed) return fixed.map((address) => ({ address }));
    return lookup(name, { all: true, verbatim: true });
  };
}

export class Egress {
  private readonly served = new Map<string, Served>();
  /** Jobs whose set-up is under way: a stop meanwhile cancels it. */
  private readonly starting = new Set<string>();
  private readonly batch: EventBatch;
  private readonly resolve: Resolver;
  /** Connections open now through the proxies of each job user's jobs. */
  private readonly perUid = new Map<number, number>();

  constructor(private readonly o: EgressOptions) {
    this.resolve = resolverOf(o.hosts);
    this.batch = new EventBatch(o.write, "network records", FLUSH_MS, BATCH);
  }

  /** The budget every proxy of `uid`'s jobs shares (`[network] proxy_connections_per_uid`). */
  private budget(uid: number): ConnectionBudget {
    const max = this.o.maxPerUid ?? Number.POSITIVE_INFINITY;
    return {
      max,
      take: () => {
        const n = this.perUid.get(uid) ?? 0;
        if (n >= max) return false;
        this.perUid.set(uid, n + 1);
        return true;
      },
      release: () => {
        const n = this.perUid.get(uid) ?? 0;
        if (n <= 1) this.perUid.delete(uid);
        else this.perUid.set(uid, n - 1);
      },
    };
  }

  /** Jobs served now. */
  get size(): number {
    return this.served.size;
  }

  /** Whether job `id` has its proxy. */
  serving(id: string): boolean {
    return this.served.has(id);
  }

  /**
   * A new job's set-up is under way (its sandbox's gate, lib/sandbox/gate.ts, waits for its pid):
   * a `stop` from here on cancels it.
   */
  expect(id: string): void {
    this.starting.add(id);
  }

  /**
   * A new job's proxy, once its gate knows the sandbox's first process (`pid`): its listeners made
   * in that process's network namespace, and served. False when the job was stopped since
   * `expect` (nothing is left served); throws PlanterError when the set-up failed — the caller
   * stops the job (its sandbox, still at its gate, never runs).
   */
  async start(id: string, rules: NetRules, pid: number, dir: string, uid: number): Promise<boolean> {
    try {
      if (!this.starting.has(id)) return false;
      const start = startTime(pid);
      writeFileSync(join(dir, EGRESS_FILE), JSON.stringify({ pid, start }), { mode: 0o600 });
      const fds = await takeListeners(pid, start, this.o.helper);
      if (!this.starting.has(id)) {
        for (const fd of fds) closeSync(fd);
        return false;
      }
      await this.serve(id, rules, fds, uid);
      return true;
    } finally {
      this.starting.delete(id);
    }
  }

  /**
   * An adopted job's proxy after a restart: listeners made again in its sandbox's namespace (the
   * port is free again: the previous planterd held it). Throws PlanterError when that fails.
   */
  async adopt(id: string, rules: NetRules, dir: string, uid: number): Promise<void> {
    let saved: v.InferOutput<typeof Saved>;
    try {
      saved = v.parse(Saved, JSON.parse(readFileSync(join(dir, EGRESS_FILE), "utf8")));
    } catch (e) {
      throw new PlanterError(
        "E_SANDBOX_UNAVAILABLE",
        `the job's egress proxy cannot be restored: ${EGRESS_FILE}: ${(e as Error).message}`,
      );
    }
    if ("port" in saved) {
      await this.listenLocal(id, rules, dir, uid, saved.port);
      return;
    }
    this.starting.add(id);
    try {
      const fds = await takeListeners(saved.pid, saved.start, this.o.helper);
      if (!this.starting.has(id)) {
        for (const fd of fds) closeSync(fd);
        return;
      }
      await this.serve(id, rules, fds, uid);
    } finally {
      this.starting.delete(id);
    }
  }

  /**
   * Seatbelt (macOS), where a job shares the host's network stack: its proxy on a host loopback
   * port (`port`, or one the kernel picks), which its profile makes its one TCP destination.
   * Any local process may connect to that port too; it gets the job's list, nothing wider (it
   * has the host's network anyway), and another job's profile allows only its own port.
   */
  async listenLocal(id: string, rules: NetRules, dir: string, uid: number, port = 0): Promise<number> {
    const s = this.served.get(id) ?? this.newServed(id, rules, uid);
    const server = net.createServer({ allowHalfOpen: true }, (c) => s.proxy.handle(c));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("listening", resolve);
        server.once("error", reject);
        server.listen({ host: "127.0.0.1", port, exclusive: true });
      });
    } catch (e) {
      this.stop(id);
      throw new PlanterError(
        "E_SANDBOX_UNAVAILABLE",
        `the job's egress proxy could not listen on 127.0.0.1:${port}: ${(e as Error).message}`,
      );
    }
    server.on("error", (e) => console.error(`planterd: job ${id}: egress listener: ${e.message}`));
    s.servers.push(server);
    const bound = (server.address() as net.AddressInfo).port;
    writeFileSync(join(dir, EGRESS_FILE), JSON.stringify({ port: bound }), { mode: 0o600 });
    return bound;
  }

  private newServed(id: string, rules: NetRules, uid: number): Served {
    const s: Served = {
      proxy: new EgressProxy({
        rules,
        resolve: this.resolve,
        onRecord: (r) => this.record(id, s, r),
        budget: this.budget(uid),
      }),
      servers: [],
      window: 0,
      inWindow: 0,
      suppressed: 0,
    };
    this.served.set(id, s);
    return s;
  }

  private async serve(id: string, rules: NetRules, fds: number[], uid: number): Promise<void> {
    const s = this.newServed(id, rules, uid);
    for (const fd of fds) {
      const server = net.createServer({ allowHalfOpen: true }, (c) => s.proxy.handle(c));
      // An accept that fails (EMFILE) must not take planterd down; the job's connect waits or fails.
      server.on("error", (e) => console.error(`planterd: job ${id}: egress listener: ${e.message}`));
      s.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("listening", resolve);
        server.once("error", reject);
        server.listen({ fd });
      });
    }
  }

  /** Stop serving job `id` (its end), and any set-up under way for it. */
  stop(id: string): void {
    this.starting.delete(id);
    const s = this.served.get(id);
    if (!s) return;
    this.served.delete(id);
    for (const server of s.servers) server.close();
    void s.proxy.close();
    this.flushSuppressed(id, s);
  }

  /** Stop everything (planterd's shutdown): the jobs' listeners are gone until the next adopts them. */
  close(): void {
    for (const id of [...this.served.keys()]) this.stop(id);
    this.flush();
  }

  private record(id: string, s: Served, r: ConnectRecord): void {
    const second = Math.floor(Date.now() / 1000);
    if (second !== s.window) {
      this.flushSuppressed(id, s);
      s.window = second;
      s.inWindow = 0;
    }
    if (++s.inWindow > RECORDS_PER_SECOND) {
      s.suppressed++;
      return;
    }
    this.push({ kind: "net.connect", subject: `job/${id}`, data: { job: id, ...r } });
  }

  private flushSuppressed(id: string, s: Served): void {
    if (!s.suppressed) return;
    this.push({
      kind: "net.suppressed",
      subject: `job/${id}`,
      data: { job: id, count: s.suppressed, per_second: RECORDS_PER_SECOND },
    });
    s.suppressed = 0;
  }

  private push(e: PendingEvent): void {
    this.batch.push(e);
  }

  /** Write the queued records now. */
  flush(): void {
    this.batch.flush();
  }
}
