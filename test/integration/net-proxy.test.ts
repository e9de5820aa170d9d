/**
 * The egress proxy for real, on loopback only: origin servers on 127.0.0.1, 127.0.0.2 and ::1,
 * names from a resolver the test injects (a map to loopback addresses; allow_local or IP rules
 * let them through), clients over the Unix socket (node:net, raw bytes) and over a TCP bridge
 * (curl, Bun's fetch, git).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NetRules } from "../../lib/net/policy.ts";
import { type ConnectRecord, EgressProxy, type ProxyLimits, type Resolver } from "../../lib/net/proxy.ts";
import { type Bridge, bridge } from "../fixtures/net-bridge.ts";

const dir = mkdtempSync(join(tmpdir(), "planter-net-"));
type Origin = { port: number; hits: number; stop: () => void };
const origins: Record<string, Origin> = {};

/** An HTTP origin that answers who it is and what it got. */
function origin(name: string, hostname: string): Origin {
  const o: Origin = { port: 0, hits: 0, stop: () => {} };
  const server = Bun.serve({
    hostname,
    port: 0,
    async fetch(req) {
      o.hits++;
      const u = new URL(req.url);
      const body = req.body ? (await req.arrayBuffer()).byteLength : 0;
      if (u.pathname.startsWith("/big/")) return new Response(new Uint8Array(Number(u.pathname.slice(5))).fill(97));
      return new Response(
        `${name} ${req.method} ${u.pathname}${u.search} host=${req.headers.get("host")} body=${body} pc=${req.headers.get("proxy-connection")}`,
      );
    },
  });
  o.port = server.port as number;
  o.stop = () => server.stop(true);
  return o;
}

/** A TCP echo server (for tunnels that are not HTTP). */
let echo: net.Server;
let echoPort = 0;

beforeAll(async () => {
  origins.a = origin("A", "127.0.0.1");
  origins.b = origin("B", "127.0.0.2");
  origins.six = origin("SIX", "::1");
  echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
  echoPort = (echo.address() as net.AddressInfo).port;
});

afterAll(() => {
  for (const o of Object.values(origins)) o.stop();
  echo.close();
  rmSync(dir, { recursive: true, force: true });
});

// ---------- the proxy under test ----------

let proxy: EgressProxy | null = null;
let tcp: Bridge | null = null;
let records: ConnectRecord[] = [];
let lookups: string[] = [];
let n = 0;

const NAMES: Record<string, string[]> = {
  "origin.test": ["127.0.0.1"],
  "www.origin.test": ["127.0.0.1"],
  "evil.origin.test": ["127.0.0.1"],
  "six.test": ["::1"],
  "b.test": ["127.0.0.2"],
  "mixed.test": ["127.0.0.2", "127.0.0.1"],
  "mapped.test": ["::ffff:127.0.0.1"],
  "meta.test": ["169.254.169.254"],
};

/** Start a proxy with these rules on a fresh socket; `resolve` defaults to the NAMES map. */
async function start(rules: Partial<NetRules>, o: { resolve?: Resolver; limits?: Partial<ProxyLimits> } = {}) {
  records = [];
  lookups = [];
  const path = join(dir, `p${++n}.sock`);
  const resolve: Resolver =
    o.resolve ??
    (async (name) => {
      lookups.push(name);
      const a = NAMES[name];
      if (!a) throw new Error(`ENOTFOUND ${name}`);
      return a.map((address) => ({ address }));
    });
  proxy = new EgressProxy({
    rules: { allow: [], deny: [], allow_local: false, ...rules },
    onRecord: (r) => records.push(r),
    resolve,
    limits: o.limits,
  });
  await proxy.listen(path);
  tcp = await bridge(path);
  return path;
}

afterEach(async () => {
  await tcp?.close();
  await proxy?.close();
  tcp = null;
  proxy = null;
});

/** Wait for a condition (never for time). */
async function until(cond: () => boolean, what: string, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** Send bytes over the Unix socket, read until the proxy closes; the whole answer. */
function raw(path: string, ...parts: (string | Uint8Array)[]): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const got: Buffer[] = [];
    s.on("data", (d: Buffer) => got.push(d));
    // A write after the proxy closed (EPIPE) is part of some tests; the answer is what was read.
    s.on("error", () => {});
    s.on("close", () => resolve(Buffer.concat(got)));
    s.on("connect", () => {
      for (const p of parts) s.write(p);
    });
  });
}

/** A SOCKS5 session over the Unix socket: greeting, CONNECT, then `payload`; the bytes after the reply. */
async function socks(path: string, addr: Uint8Array, port: number, payload: string) {
  const req = new Uint8Array([0x05, 0x01, 0x00, ...addr, port >> 8, port & 0xff]);
  const all = await raw(path, new Uint8Array([0x05, 0x01, 0x00]), req, payload);
  return { method: all.subarray(0, 2), reply: all.subarray(2, 12), rest: all.subarray(12).toString() };
}
const socksName = (name: string) => new Uint8Array([0x03, name.length, ...Buffer.from(name)]);
const socksV4 = (a: string) => new Uint8Array([0x01, ...a.split(".").map(Number)]);
const socksV6 = (groups: number[]) => {
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => {
    b.writeUInt16BE(g, i * 2);
  });
  return new Uint8Array([0x04, ...b]);
};

const ENV = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, NO_COLOR: "1", TZ: "UTC" };
/** Run a program without blocking this process (the proxy under test serves it). */
async function run(argv: string[], cwd = dir) {
  const p = Bun.spawn(argv, { cwd, env: ENV, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}
const curl = (...args: string[]) => run(["curl", "-sS", "--max-time", "10", ...args]);

// ---------- allowed paths ----------

describe("allowed destinations", () => {
  test("plain HTTP through curl -x: absolute-form forwarded in origin-form, proxy headers dropped, recorded", async () => {
    await start({ allow: ["origin.test"], allow_local: true });
    const r = await curl("-x", `http://127.0.0.1:${tcp?.port}`, `http://origin.test:${origins.a?.port}/p?q=1`);
    expect(r).toEqual({
      code: 0,
      out: `A GET /p?q=1 host=origin.test:${origins.a?.port} body=0 pc=null`,
      err: "",
    });
    await until(() => records.length === 1, "the record");
    expect(records[0]).toMatchObject({
      host: "origin.test",
      port: origins.a?.port,
      decision: "allow",
      rule: "origin.test",
      address: "127.0.0.1",
      protocol: "http",
    });
    expect(records[0]?.bytes_out).toBeGreaterThan(40);
    expect(records[0]?.bytes_in).toBeGreaterThan(40);
    expect(records[0]?.error).toBeUndefined();
    expect(lookups).toEqual(["origin.test"]);
  });

  test("CONNECT through curl -p, a POST body through the tunnel, and a wildcard", async () => {
    await start({ allow: ["*.origin.test"], allow_local: true });
    const r = await curl(
      "-p",
      "-x",
      `http://127.0.0.1:${tcp?.port}`,
      "-d",
      "x".repeat(1000),
      `http://www.origin.test:${origins.a?.port}/c`,
    );
    expect(r.out).toBe(`A POST /c host=www.origin.test:${origins.a?.port} body=1000 pc=null`);
    await until(() => records.length === 1, "the record");
    expect(records[0]).toMatchObject({
      host: "www.origin.test",
      decision: "allow",
      rule: "*.origin.test",
      protocol: "connect",
    });
    expect(records[0]?.bytes_out).toBeGreaterThan(1000);
  });

  test("SOCKS5 through curl socks5h:// (the proxy resolves), and IPv6", async () => {
    await start({ allow: ["origin.test", "six.test"], allow_local: true });
    const a = await curl("-x", `socks5h://127.0.0.1:${tcp?.port}`, `http://origin.test:${origins.a?.port}/s`);
    expect(a.out).toBe(`A GET /s host=origin.test:${origins.a?.port} body=0 pc=null`);
    const six = await curl("-x", `socks5h://127.0.0.1:${tcp?.port}`, `http://six.test:${origins.six?.port}/6`);
    expect(six.out).toBe(`SIX GET /6 host=six.test:${origins.six?.port} body=0 pc=null`);
    await until(() => records.length === 2, "two records");
    expect(records.map((r) => [r.protocol, r.host, r.address, r.decision])).toEqual([
      ["socks5", "origin.test", "127.0.0.1", "allow"],
      ["socks5", "six.test", "::1", "allow"],
    ]);
  });

  test("SOCKS5 address types by hand: domain, IPv4, IPv6 (IP rules open loopback addresses)", async () => {
    const path = await start({ allow: ["origin.test", "127.0.0.1", "[::1]"], allow_local: false });
    const get = "GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    const byName = await socks(path, socksName("origin.test"), origins.a?.port as number, get);
    // origin.test resolves to 127.0.0.1, which the IP rule opens although allow_local is off.
    expect([...byName.method, ...byName.reply]).toEqual([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    expect(byName.rest).toContain("A GET /raw host=x");
    const v4 = await socks(path, socksV4("127.0.0.1"), origins.a?.port as number, get);
    expect(v4.rest).toContain("A GET /raw");
    const v6 = await socks(path, socksV6([0, 0, 0, 0, 0, 0, 0, 1]), origins.six?.port as number, get);
    expect(v6.rest).toContain("SIX GET /raw");
    await until(() => records.length === 3, "three records");
    expect(records.map((r) => [r.host, r.rule, r.decision])).toEqual([
      ["origin.test", "127.0.0.1", "allow"],
      ["127.0.0.1", "127.0.0.1", "allow"],
      ["::1", "::1", "allow"],
    ]);
    expect(lookups).toEqual(["origin.test"]);
  });

  test("HTTPS through https_proxy: curl's CONNECT, TLS to the origin with a CA made here, SNI the name", async () => {
    const ca = join(dir, "tls");
    Bun.spawnSync(["mkdir", "-p", ca]);
    const ssl = (...a: string[]) => run(["openssl", ...a], ca);
    await ssl(
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=planter test CA",
    );
    await ssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "srv.key",
      "-out",
      "srv.csr",
      "-subj",
      "/CN=secure.test",
    );
    writeFileSync(join(ca, "ext"), "subjectAltName=DNS:secure.test\n");
    const signed = await ssl(
      "x509",
      "-req",
      "-in",
      "srv.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "srv.pem",
      "-days",
      "1",
      "-extfile",
      "ext",
    );
    expect(signed.code).toBe(0);
    const tls = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: Bun.file(join(ca, "srv.pem")), key: Bun.file(join(ca, "srv.key")) },
      fetch: (req) => new Response(`secure ${new URL(req.url).pathname}`),
    });
    try {
      await start(
        { allow: [`secure.test:${tls.port}`], allow_local: true },
        { resolve: async () => [{ address: "127.0.0.1" }] },
      );
      const p = Bun.spawn(
        ["curl", "-sS", "--max-time", "10", "--cacert", join(ca, "ca.pem"), `https://secure.test:${tls.port}/tls`],
        {
          env: { ...ENV, https_proxy: `http://127.0.0.1:${tcp?.port}` },
          stdout: "pipe",
          stderr: "pipe",
        },
      );
      const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      expect({ out, err }).toEqual({ out: "secure /tls", err: "" });
      await until(() => records.length === 1, "the record");
      expect(records[0]).toMatchObject({
        protocol: "connect",
        host: "secure.test",
        decision: "allow",
        address: "127.0.0.1",
      });
    } finally {
      tls.stop(true);
    }
  });

  test("Bun's fetch with a proxy", async () => {
    await start({ allow: ["origin.test"], allow_local: true });
    const res = await fetch(`http://origin.test:${origins.a?.port}/f`, { proxy: `http://127.0.0.1:${tcp?.port}` });
    expect(await res.text()).toBe(`A GET /f host=origin.test:${origins.a?.port} body=0 pc=null`);
  });

  test("git clone over http through the proxy", async () => {
    // A bare repository served as static files (git's dumb HTTP protocol).
    const repo = join(dir, "src");
    const git = async (cwd: string, ...a: string[]) => {
      const r = await run(["git", "-c", "user.name=t", "-c", "user.email=t@t", ...a], cwd);
      if (r.code !== 0) throw new Error(`git ${a.join(" ")}: ${r.err}`);
      return r.out;
    };
    Bun.spawnSync(["mkdir", "-p", repo]);
    await git(repo, "init", "-q", "-b", "main");
    writeFileSync(join(repo, "f.txt"), "hello\n");
    await git(repo, "add", ".");
    await git(repo, "commit", "-qm", "one");
    await git(dir, "clone", "-q", "--bare", repo, join(dir, "srv.git"));
    await git(join(dir, "srv.git"), "update-server-info");
    const files = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req) => {
        const f = Bun.file(join(dir, new URL(req.url).pathname));
        return f.size ? new Response(f) : new Response("no", { status: 404 });
      },
    });
    try {
      await start(
        { allow: [`repo.test:${files.port}`], allow_local: true },
        {
          resolve: async () => [{ address: "127.0.0.1" }],
        },
      );
      await git(
        dir,
        "-c",
        `http.proxy=http://127.0.0.1:${tcp?.port}`,
        "clone",
        "-q",
        `http://repo.test:${files.port}/srv.git`,
        "out",
      );
      expect(await Bun.file(join(dir, "out", "f.txt")).text()).toBe("hello\n");
      expect(records.length).toBeGreaterThan(0);
      expect(records.every((r) => r.decision === "allow" && r.rule === `repo.test:${files.port}`)).toBe(true);
    } finally {
      files.stop(true);
    }
  });

  test("a 4 MiB answer and a half-closing client arrive whole", async () => {
    const path = await start({ allow: ["origin.test", "127.0.0.1"], allow_local: true });
    const r = await curl(
      "-x",
      `http://127.0.0.1:${tcp?.port}`,
      "-o",
      "/dev/null",
      "-w",
      "%{size_download}",
      `http://origin.test:${origins.a?.port}/big/4194304`,
    );
    expect(r.out).toBe("4194304");
    // Raw CONNECT to the echo server: the client ends its side and still gets every byte back.
    const got = await new Promise<string>((resolve) => {
      const s = net.connect(path);
      let data = "";
      s.on("data", (d) => {
        data += d;
        if (data.startsWith("HTTP/1.1 200") && data.includes("\r\n\r\n") && !s.writableEnded) {
          s.end("ping-pong");
        }
      });
      s.on("close", () => resolve(data));
      s.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
    });
    expect(got).toBe("HTTP/1.1 200 Connection established\r\n\r\nping-pong");
  });
});

// ---------- refusals ----------

describe("refusals", () => {
  test("deny wins, unlisted names and ports: 403 with the reason, no lookup, no connection", async () => {
    const path = await start({
      allow: ["*.origin.test", `origin.test:${origins.a?.port}`],
      deny: ["evil.origin.test"],
      allow_local: true,
    });
    const denied = (
      await raw(path, `GET http://evil.origin.test:${origins.a?.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`)
    ).toString();
    expect(denied).toStartWith("HTTP/1.1 403 Forbidden\r\n");
    expect(denied).toContain("X-Planter-Egress: evil.origin.test\r\n");
    expect(denied).toEndWith(`\r\n\r\nplanter: evil.origin.test:${origins.a?.port} is denied by "evil.origin.test"\n`);
    const unlisted = (await raw(path, "CONNECT other.test:443 HTTP/1.1\r\n\r\n")).toString();
    expect(unlisted).toContain("403 Forbidden");
    expect(unlisted).toContain("planter: other.test:443 is not in the allow list");
    const port = (await raw(path, "CONNECT origin.test:22 HTTP/1.1\r\n\r\n")).toString();
    expect(port).toContain(`"origin.test:${origins.a?.port}" allows another port only`);
    // curl shows the refusal: the body for plain HTTP, the status for CONNECT.
    const c = await curl("-x", `http://127.0.0.1:${tcp?.port}`, `http://nope.test:${origins.a?.port}/`);
    expect(c.out).toBe(`planter: nope.test:${origins.a?.port} is not in the allow list\n`);
    const t = await curl("-p", "-x", `http://127.0.0.1:${tcp?.port}`, `http://nope.test:${origins.a?.port}/`);
    expect(t.code).toBe(56);
    expect(t.err).toContain("403");
    await until(() => records.length === 5, "five records");
    expect(records.map((r) => [r.protocol, r.host, r.decision, r.rule])).toEqual([
      ["http", "evil.origin.test", "deny", "evil.origin.test"],
      ["connect", "other.test", "deny", "unlisted"],
      ["connect", "origin.test", "deny", "unlisted"],
      ["http", "nope.test", "deny", "unlisted"],
      ["connect", "nope.test", "deny", "unlisted"],
    ]);
    expect(lookups).toEqual([]);
    // The URL parser's reading decides (a backslash ends the host, as browsers read it).
    const slash = (await raw(path, `GET http://a\\@origin.test:${origins.a?.port}/ HTTP/1.1\r\n\r\n`)).toString();
    expect(slash).toContain("planter: a:80 is not in the allow list");
    records.pop();
    const before = origins.a?.hits;
    await raw(path, `GET http://evil.origin.test:${origins.a?.port}/ HTTP/1.1\r\n\r\n`);
    expect(origins.a?.hits).toBe(before as number);
  });

  test("IP literals in every form: unlisted unless an IP rule names them", async () => {
    const path = await start({ allow: ["origin.test"], allow_local: true });
    for (const h of ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]"]) {
      const a = (await raw(path, `GET http://${h}:${origins.a?.port}/ HTTP/1.1\r\n\r\n`)).toString();
      expect({ h, status: a.split("\r\n")[0] }).toEqual({ h, status: "HTTP/1.1 403 Forbidden" });
    }
    await until(() => records.length === 7, "seven records");
    expect(records.map((r) => r.host)).toEqual([
      "127.0.0.1",
      "127.0.0.1",
      "127.0.0.1",
      "127.0.0.1",
      "127.0.0.1",
      "::1",
      "127.0.0.1",
    ]);
    expect(records.every((r) => r.rule === "unlisted")).toBe(true);
  });

  test("a listed name resolving to a local address is refused after resolution (allow_local off)", async () => {
    const path = await start({ allow: ["origin.test", "six.test", "mapped.test", "meta.test"] });
    const hitsBefore = origins.a?.hits;
    for (const [name, rule] of [
      ["origin.test", "local:loopback"],
      ["six.test", "local:loopback"],
      ["mapped.test", "local:loopback"],
      ["meta.test", "metadata"],
    ]) {
      const a = (await raw(path, `CONNECT ${name}:${origins.a?.port} HTTP/1.1\r\n\r\n`)).toString();
      expect(a).toContain("403 Forbidden");
      expect(a).toContain(`X-Planter-Egress: ${rule}\r\n`);
    }
    expect(origins.a?.hits).toBe(hitsBefore as number);
    await until(() => records.length === 4, "four records");
    expect(records[0]?.error).toBe(
      `origin.test:${origins.a?.port} resolved to 127.0.0.1, a loopback address (allow_local is off)`,
    );
    // SOCKS answers "not allowed by ruleset".
    const s = await socks(path, socksName("origin.test"), origins.a?.port as number, "");
    expect([...s.reply.subarray(0, 2)]).toEqual([5, 2]);
  });

  test("rebinding: each address checked, only a checked one connected, one lookup per connection", async () => {
    // 127.0.0.1 is opened by an IP rule; 127.0.0.2 (origin B) is loopback and stays refused.
    let calls = 0;
    const path = await start(
      { allow: ["flip.test", "mixed.test", "127.0.0.1"] },
      {
        resolve: async (name) => {
          lookups.push(name);
          if (name === "mixed.test") return [{ address: "127.0.0.2" }, { address: "127.0.0.1" }];
          // A name that answers an allowed address, then a refused one.
          return [{ address: ++calls % 2 ? "127.0.0.1" : "127.0.0.2" }];
        },
      },
    );
    const bHits = origins.b?.hits;
    const get = (h: string, port: number) => `GET http://${h}:${port}/r HTTP/1.1\r\nHost: ${h}\r\n\r\n`;
    // The same port on both addresses would be the real attack; the origins differ in port here,
    // so B is asked on its own port: only a second lookup could ever reach it.
    const first = (await raw(path, get("flip.test", origins.b?.port as number))).toString();
    expect(first).toContain("502 Bad Gateway"); // 127.0.0.1 has nothing on B's port: connected there, not to B
    const second = (await raw(path, get("flip.test", origins.b?.port as number))).toString();
    expect(second).toContain("403 Forbidden");
    expect(second).toContain("resolved to 127.0.0.2, a loopback address");
    const mixed = (await raw(path, get("mixed.test", origins.a?.port as number))).toString();
    expect(mixed).toContain("A GET /r");
    expect(origins.b?.hits).toBe(bHits as number);
    expect(lookups).toEqual(["flip.test", "flip.test", "mixed.test"]);
    await until(() => records.length === 3, "three records");
    expect(records.map((r) => [r.host, r.decision, r.address ?? null])).toEqual([
      ["flip.test", "allow", "127.0.0.1"],
      ["flip.test", "deny", null],
      ["mixed.test", "allow", "127.0.0.1"],
    ]);
    expect(records[0]?.error).toContain("ECONNREFUSED");
  });

  test("malformed requests: 400 and a record, nothing forwarded", async () => {
    const path = await start({ allow: ["origin.test"], allow_local: true });
    const cases: [string, string][] = [
      ["garbage\r\n\r\n", "malformed request line"],
      ["GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n", "takes absolute URLs"],
      ["GET https://origin.test/ HTTP/1.1\r\n\r\n", "use CONNECT"],
      ["CONNECT origin.test HTTP/1.1\r\n\r\n", "malformed authority"],
      ["CONNECT origin.test:99999 HTTP/1.1\r\n\r\n", "malformed authority"],
      ["CONNECT a b:1 HTTP/1.1\r\n\r\n", "malformed request line"],
      ["GET http://origin.test/ HTTP/1.1\r\nbad header\r\n\r\n", "malformed header line"],
      ["GET http://exa mple/ HTTP/1.1\r\n\r\n", "malformed request line"],
      ["CONNECT ex%61mple.test:80 HTTP/1.1\r\n\r\n", "is not a host name"],
    ];
    for (const [req, why] of cases) {
      const a = (await raw(path, req)).toString();
      expect({ req, status: a.split("\r\n")[0], why: a.includes(why) }).toEqual({
        req,
        status: "HTTP/1.1 400 Bad Request",
        why: true,
      });
    }
    await until(() => records.length === cases.length, "a record each");
    expect(records.every((r) => r.decision === "deny" && r.rule === "bad-request")).toBe(true);
    // SOCKS: BIND refused with "command not supported", no auth method refused, SOCKS4 refused.
    const bind = await raw(path, new Uint8Array([5, 1, 0]), new Uint8Array([5, 2, 0, 1, 127, 0, 0, 1, 0, 80]));
    expect([...bind]).toEqual([5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    const auth = await raw(path, new Uint8Array([5, 1, 2]));
    expect([...auth]).toEqual([5, 0xff]);
    const s4 = await raw(path, new Uint8Array([4, 1, 0, 80, 127, 0, 0, 1, 0]));
    expect(s4.length).toBe(0);
  });

  test("oversized heads get 431; a slow client is cut at the head timeout; the connection cap holds", async () => {
    const path = await start(
      { allow: ["origin.test"], allow_local: true },
      { limits: { maxHeaderBytes: 1024, headerTimeoutMs: 300, maxConnections: 3 } },
    );
    const big = (await raw(path, `GET http://origin.test/ HTTP/1.1\r\nX: ${"a".repeat(2000)}\r\n\r\n`)).toString();
    expect(big.split("\r\n")[0]).toBe("HTTP/1.1 431 Request Header Fields Too Large");
    // An endless head without its blank line: cut as soon as it passes the limit.
    const endless = (await raw(path, "GET http://origin.test/ HTTP/1.1\r\n", `X: ${"b".repeat(1100)}\r\n`)).toString();
    expect(endless).toContain("431");
    // Slowloris: a head that never completes is answered and closed after headerTimeoutMs.
    const t0 = performance.now();
    const slow = (await raw(path, "GET http://origin.test/ HTTP/1.1\r\nX: 1\r\n")).toString();
    expect(slow).toContain("HTTP/1.1 504 Gateway Timeout");
    expect(slow).toContain("no complete request within 300 ms");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    // Three idle connections fill the cap; the fourth is closed at once and recorded.
    const held = await Promise.all(
      [1, 2, 3].map(
        () =>
          new Promise<net.Socket>((r) => {
            const s = net.connect(path, () => r(s));
            s.on("error", () => {});
          }),
      ),
    );
    await until(() => proxy?.active === 3, "three connections held");
    const refused = await raw(path, "CONNECT origin.test:80 HTTP/1.1\r\n\r\n");
    expect(refused.length).toBe(0);
    for (const s of held) s.destroy();
    await until(() => records.some((r) => r.rule === "limit"), "the limit record");
    expect(records.find((r) => r.rule === "limit")?.error).toBe("more than 3 connections at once");
  });

  test("proxies sharing a user's budget: the user's jobs together hold at most its connections; one freed is usable again by any of them", async () => {
    let open = 0;
    const budget = {
      max: 3,
      take: () => (open < 3 ? (open++, true) : false),
      release: () => {
        open--;
      },
    };
    const mine: ConnectRecord[] = [];
    const rules = { allow: ["origin.test"], deny: [], allow_local: true };
    const mk = async (name: string) => {
      const p = new EgressProxy({ rules, onRecord: (r) => mine.push(r), budget, limits: { maxConnections: 10 } });
      const path = join(dir, `${name}-${++n}.sock`);
      await p.listen(path);
      return { p, path };
    };
    const a = await mk("a");
    const b = await mk("b");
    const hold = (path: string) =>
      new Promise<{ s: net.Socket; closed: () => boolean }>((r) => {
        let closed = false;
        const s = net.connect(path, () => r({ s, closed: () => closed }));
        s.on("close", () => {
          closed = true;
        });
        s.on("error", () => {});
      });
    try {
      const held = [await hold(a.path), await hold(a.path), await hold(b.path)];
      await until(() => a.p.active === 2 && b.p.active === 1, "three connections held across two proxies");
      // Each proxy is far below its own cap of 10: the user's budget refuses the fourth.
      const fourth = await hold(b.path);
      await until(() => fourth.closed(), "the fourth connection closed");
      await until(() => mine.some((r) => r.rule === "limit"), "the limit record");
      expect(mine.find((r) => r.rule === "limit")?.error).toBe(
        "more than 3 connections at once of the job's user (all its jobs together)",
      );
      // One of the first proxy's freed: the second proxy takes a new one.
      held[0]?.s.destroy();
      await until(() => open === 2, "the freed connection given back");
      const again = await hold(b.path);
      await until(() => b.p.active === 2, "the new connection held");
      expect(again.closed()).toBe(false);
      for (const h of [...held, again]) h.s.destroy();
      await until(() => open === 0, "every connection given back");
    } finally {
      await a.p.close();
      await b.p.close();
    }
  });

  test("a name that does not resolve: 502, recorded as allowed with the error", async () => {
    const path = await start({ allow: ["*.test"], allow_local: true });
    const a = (await raw(path, "CONNECT missing.test:80 HTTP/1.1\r\n\r\n")).toString();
    expect(a).toContain("502 Bad Gateway");
    expect(a).toContain("cannot resolve missing.test: ENOTFOUND missing.test");
    await until(() => records.length === 1, "the record");
    expect(records[0]).toMatchObject({ host: "missing.test", decision: "allow", rule: "*.test" });
  });
});
