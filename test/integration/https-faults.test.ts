/**
 * The https transport against endpoints that fail on purpose (TLS servers made here on
 * 127.0.0.1): one that refuses, one that hangs, one that drops the answer mid-body, one that
 * answers 503. Small bounds (PLANTER_RETRY's) stand for 1 s → 32 s: the waits between rounds,
 * the total bound, the per-attempt timeout, failover to a healthy endpoint and the 30 s skip are
 * checked; a request that is not idempotent is sent once.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { backoffMs, boundsFrom, HttpsTransport, type RetryBounds, skipFile } from "../../lib/targets/https.ts";
import { freePort } from "../ssh-fixture.ts";
import { haveOpenssl, makePki, type TestPki } from "../tls-fixture.ts";

let pki: TestPki;
type Behaviour = "ok" | "hang" | "drop" | "503";
interface Fake {
  url: string;
  hits: number;
  close(): void;
}
const fakes: Fake[] = [];

/** A TLS server on 127.0.0.1 that answers every request as `b` says, counting requests. */
async function fake(b: Behaviour): Promise<Fake> {
  const f: Fake = { url: "", hits: 0, close: () => undefined };
  const server: TlsServer = createTlsServer(
    { cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) },
    (socket) => {
      let buf = "";
      socket.on("data", (d) => {
        buf += d.toString("latin1");
        if (!buf.includes("\r\n\r\n")) return;
        buf = "";
        f.hits++;
        const body = JSON.stringify({ ok: true, from: f.url });
        if (b === "hang") return; // reads the request, never answers
        if (b === "drop") {
          socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"ok":`);
          setTimeout(() => socket.destroy(), 10);
          return;
        }
        const status = b === "503" ? "503 Service Unavailable" : "200 OK";
        const text = b === "503" ? '{"error":{"code":"E_UNAVAILABLE","message":"busy"}}' : body;
        socket.write(
          `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
        );
      });
      socket.on("error", () => undefined);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  f.url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  f.close = () => server.close();
  fakes.push(f);
  return f;
}

/** A URL nothing listens on: connections are refused. */
const refusing = () => `https://127.0.0.1:${freePort()}`;

// A generous per-attempt timeout (a loaded machine's TLS handshake can take a few hundred ms); the
// hang test sets a short one of its own.
const BOUNDS: RetryBounds = { initial: 40, max: 160, total: 700, timeout: 3000, skip: 30_000 };
const HANG: RetryBounds = { ...BOUNDS, timeout: 200 };

/** A transport whose waits between rounds are recorded (and still slept). */
function transport(urls: string[], bounds = BOUNDS) {
  const waits: number[] = [];
  const t = new HttpsTransport("t", urls, { ca: pki.ca }, bounds, async (ms) => {
    waits.push(ms);
    await Bun.sleep(ms);
  });
  return { t, waits };
}

const get = (t: HttpsTransport, path = "/v1/version") => t.fetch("GET", path, undefined, {}, undefined, true);
const post = (t: HttpsTransport, idempotent: boolean) =>
  t.fetch("POST", "/v1/jobs", "{}", { "content-type": "application/json" }, undefined, idempotent);

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string; ms: number }> {
  const t0 = performance.now();
  try {
    await p;
  } catch (e) {
    return { code: (e as { code: string }).code, message: (e as Error).message, ms: performance.now() - t0 };
  }
  throw new Error("expected a failure");
}

/** Each wait lies within [½, 1] of initial·2ⁿ capped at max. */
function checkWaits(waits: number[], b: RetryBounds) {
  expect(waits.length).toBeGreaterThan(0);
  waits.forEach((w, n) => {
    const full = Math.min(b.max, b.initial * 2 ** n);
    expect(w).toBeGreaterThanOrEqual(Math.floor(full / 2));
    expect(w).toBeLessThanOrEqual(full);
  });
  // No round began past the total bound.
  expect(waits.reduce((a, w) => a + w, 0)).toBeLessThanOrEqual(b.total);
}

beforeAll(() => {
  if (haveOpenssl) pki = makePki();
});
afterAll(() => {
  for (const f of fakes) f.close();
  if (haveOpenssl) rmSync(pki.dir, { recursive: true, force: true });
});

describe.skipIf(!haveOpenssl)("https transport under faults", () => {
  test("the bounds: 1 s → 32 s by default, doubled and capped, drawn in [½, 1]; PLANTER_RETRY sets them", () => {
    expect(boundsFrom(undefined)).toEqual({ initial: 1000, max: 32_000, total: 60_000, timeout: 10_000, skip: 30_000 });
    const d = boundsFrom(undefined);
    expect([0, 1, 2, 3, 4, 5, 6, 9].map((n) => backoffMs(d, n, () => 1))).toEqual([
      1000, 2000, 4000, 8000, 16_000, 32_000, 32_000, 32_000,
    ]);
    expect(backoffMs(d, 0, () => 0)).toBe(500);
    expect(boundsFrom("initial=5,total=50")).toMatchObject({ initial: 5, total: 50, max: 32_000 });
    expect(() => boundsFrom("initial=x")).toThrow(/PLANTER_RETRY: bad part/);
    expect(() => boundsFrom("often=1")).toThrow(/PLANTER_RETRY: bad part/);
  });

  test("refused: rounds after backoff until the total bound, then one error naming the endpoint", async () => {
    const url = refusing();
    const { t, waits } = transport([url]);
    const f = await failure(get(t));
    expect(f.code).toBe("E_DAEMON_UNREACHABLE");
    expect(f.message).toContain(`${url}: connection refused`);
    checkWaits(waits, BOUNDS);
    expect(f.ms).toBeLessThan(BOUNDS.total + BOUNDS.timeout + 500);
  });

  test("503: every round tried again (the server counts them), bounded", async () => {
    const s = await fake("503");
    const { t, waits } = transport([s.url]);
    const f = await failure(get(t));
    expect(f.message).toContain("HTTP 503");
    checkWaits(waits, BOUNDS);
    expect(s.hits).toBe(waits.length + 1);
  });

  test("a hang: each attempt ends at the timeout; the whole stays within total + one timeout", async () => {
    const s = await fake("hang");
    const { t, waits } = transport([s.url], HANG);
    const f = await failure(get(t));
    expect(f.message).toContain(`no answer within ${HANG.timeout} ms`);
    expect(s.hits).toBe(waits.length + 1);
    expect(f.ms).toBeGreaterThanOrEqual(HANG.timeout * s.hits);
    expect(f.ms).toBeLessThan(HANG.total + HANG.timeout + 500);
  });

  test("a drop mid-body: the read is tried on the next endpoint at once and succeeds; the dropper is skipped", async () => {
    const bad = await fake("drop");
    const good = await fake("ok");
    const { t, waits } = transport([bad.url, good.url]);
    const res = await get(t);
    expect(await res.json()).toEqual({ ok: true, from: good.url });
    expect([bad.hits, good.hits, waits.length]).toEqual([1, 1, 0]);
    // Skipped for `skip` ms: the next reads all go to the good one.
    for (let i = 0; i < 4; i++) await get(t);
    expect([bad.hits, good.hits]).toEqual([1, 5]);
    expect(t.health().map((h) => [h.url, h.skipped])).toEqual([
      [bad.url, true],
      [good.url, false],
    ]);
  });

  test("failover: a refusing endpoint then a good one; reads go round-robin over healthy endpoints", async () => {
    const down = refusing();
    const a = await fake("ok");
    const b = await fake("ok");
    const { t } = transport([down, a.url, b.url]);
    for (let i = 0; i < 8; i++) await get(t);
    expect(a.hits + b.hits).toBe(8);
    expect(Math.abs(a.hits - b.hits)).toBeLessThanOrEqual(1);
    expect(t.health()[0]?.skipped).toBe(true);
  });

  test("a skipped endpoint comes back after the skip time", async () => {
    const flaky = await fake("503");
    const good = await fake("ok");
    const { t } = transport([flaky.url, good.url], { ...BOUNDS, skip: 100 });
    await get(t);
    const before = flaky.hits;
    await Bun.sleep(150);
    for (let i = 0; i < 2; i++) await get(t);
    expect(flaky.hits).toBeGreaterThan(before);
  });

  test("skip times outlive the transport (the next command's): a dropped endpoint is left out there too", async () => {
    const bad = await fake("drop");
    const good = await fake("ok");
    const dir = join(pki.dir, "state");
    const first = new HttpsTransport("t", [bad.url, good.url], { ca: pki.ca }, BOUNDS, Bun.sleep, skipFile(dir, "t"));
    for (let i = 0; i < 2; i++) await get(first);
    expect(bad.hits).toBe(1);
    expect(statSync(join(dir, "t.https.json")).mode & 0o777).toBe(0o600);
    const next = new HttpsTransport("t", [bad.url, good.url], { ca: pki.ca }, BOUNDS, Bun.sleep, skipFile(dir, "t"));
    for (let i = 0; i < 4; i++) await get(next);
    expect([bad.hits, good.hits]).toEqual([1, 6]);
    // A skip time further ahead than the bound is not believed (a file written by anything else).
    writeFileSync(join(dir, "t.https.json"), JSON.stringify({ [bad.url]: Date.now() + 10 * BOUNDS.skip }));
    const third = new HttpsTransport("t", [bad.url, good.url], { ca: pki.ca }, BOUNDS, Bun.sleep, skipFile(dir, "t"));
    expect(third.health()[0]?.skipped).toBe(false);
  });

  test("not idempotent: sent once after a failure that may have reached planterd; a refused connection moves on", async () => {
    const hang = await fake("hang");
    const good = await fake("ok");
    const { t, waits } = transport([hang.url, good.url], { ...BOUNDS, timeout: 1000 });
    const f = await failure(post(t, false));
    expect(f.message).toContain("the request may have been carried out, so it is not sent again");
    expect([hang.hits, good.hits, waits.length]).toEqual([1, 0, 0]);
    const { t: t2 } = transport([refusing(), good.url]);
    expect((await post(t2, false)).status).toBe(200);
    expect(good.hits).toBe(1);
    // With a request_ref (idempotent), the hang is left for the next endpoint.
    const { t: t3 } = transport([hang.url, good.url], { ...BOUNDS, timeout: 1000 });
    expect((await post(t3, true)).status).toBe(200);
    expect([hang.hits, good.hits]).toEqual([2, 2]);
  });
});
