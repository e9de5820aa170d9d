/** The MCP ceiling's rules, the file tools' path check, the TCP listener's settings and the stdio relay (#17). */
import { describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PlanterError } from "../../lib/api/errors.ts";
import { McpRelay } from "../../lib/cli/mcp.ts";
import { parseConfig } from "../../lib/config.ts";
import { parseListen, readToken } from "../../lib/daemon/mcp.ts";
import { ceilingLimits, ceilingNetwork, ceilingPolicy, checkCeilingMode } from "../../lib/mcp/ceiling.ts";
import { cellPath } from "../../lib/mcp/tools.ts";
import { DEFAULT_POLICY } from "../../lib/sandbox/policy.ts";

const ceiling = (toml: Record<string, unknown> = {}) => parseConfig({ mcp: toml }, "test").mcp;
const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PlanterError);
    return (e as PlanterError).message;
  }
  throw new Error("not refused");
};

describe("the ceiling", () => {
  test("mode: enforced by default; a lower mode is refused, a stricter one kept", () => {
    const c = ceiling();
    expect(c.min_mode).toBe("enforced");
    expect(refusal(() => checkCeilingMode(c, "permissive", "asked by the job"))).toContain(
      "sandbox mode permissive (asked by the job) is below enforced: beyond the MCP ceiling",
    );
    expect(() => checkCeilingMode(c, "enforced", "x")).not.toThrow();
    expect(() => checkCeilingMode(ceiling({ min_mode: "disabled" }), "disabled", "x")).not.toThrow();
  });

  test("network: host refused by default, lists kept with the ceiling's deny entries added", () => {
    const c = ceiling({ network: { deny: ["evil.example"] } });
    expect(refusal(() => ceilingNetwork(c, "host"))).toContain("network host");
    expect(ceilingNetwork(c, "none")).toBe("none");
    const list = ceilingNetwork(c, { allow: ["registry.npmjs.org"], deny: [], allow_local: false });
    expect(list).toMatchObject({ allow: ["registry.npmjs.org"], deny: ["evil.example"] });
    expect(refusal(() => ceilingNetwork(c, { allow: ["x.test"], deny: [], allow_local: true }))).toContain(
      "allow_local",
    );
    const only = ceiling({ network: { allow: ["*.npmjs.org"] } });
    expect(refusal(() => ceilingNetwork(only, { allow: ["github.com"], deny: [], allow_local: false }))).toContain(
      "github.com",
    );
    expect(ceilingNetwork(ceiling({ network: { allow_host: true } }), "host")).toBe("host");
  });

  test("policy: Unix sockets refused unless allowed; read_only applied, not refused", () => {
    const p = { ...DEFAULT_POLICY, unix_sockets: ["/run/x.sock"] };
    expect(refusal(() => ceilingPolicy(ceiling(), p))).toContain("unix_sockets /run/x.sock");
    expect(ceilingPolicy(ceiling({ unix_sockets: true }), p).unix_sockets).toEqual(["/run/x.sock"]);
    const rw = { ...DEFAULT_POLICY, read_write: ["/srv/data"] };
    expect(ceilingPolicy(ceiling({ fs_mode: "read_only" }), rw)).toMatchObject({
      fs_mode: "read_only",
      read_write: [],
    });
    expect(ceilingPolicy(ceiling(), rw)).toMatchObject({ fs_mode: "writable", read_write: ["/srv/data"] });
  });

  test("limits: an ask beyond is refused; inherited and missing ones are brought down to it", () => {
    const c = ceiling({ limits: { timeout_ms: 60_000, max_rss_bytes: 1 << 30 } });
    expect(refusal(() => ceilingLimits(c, { timeout_ms: 60_001 }, {}))).toContain(
      "timeout_ms 60001 is more than 60000",
    );
    expect(ceilingLimits(c, { timeout_ms: 1000 }, { max_log_bytes: 5 })).toEqual({
      timeout_ms: 1000,
      max_rss_bytes: 1 << 30,
      max_log_bytes: 5,
    });
    expect(ceilingLimits(c, undefined, { timeout_ms: 10 ** 9, max_rss_bytes: 1 << 20 })).toEqual({
      timeout_ms: 60_000,
      max_rss_bytes: 1 << 20,
    });
  });
});

describe("file paths inside a cell", () => {
  test("relative, never climbing out, never read as an option", () => {
    expect(cellPath("src/a.ts")).toBe("./src/a.ts");
    expect(cellPath("./src//a.ts/")).toBe("./src/a.ts");
    expect(cellPath("-rf")).toBe("./-rf");
    expect(cellPath(".", true)).toBe(".");
    for (const bad of ["/etc/passwd", "../x", "a/../../x", "a/..", "", ".", "a\0b"]) {
      expect(() => cellPath(bad)).toThrow(PlanterError);
    }
    // A name that only looks like `..` is a name.
    expect(cellPath("...")).toBe("./...");
    expect(cellPath("..a")).toBe("./..a");
  });
});

describe("the TCP listener's settings", () => {
  test("loopback addresses only", () => {
    expect(parseListen("127.0.0.1:8377")).toEqual({ host: "127.0.0.1", port: 8377 });
    expect(parseListen("[::1]:9")).toEqual({ host: "::1", port: 9 });
    expect(parseListen("localhost:1")).toEqual({ host: "localhost", port: 1 });
    for (const bad of ["0.0.0.0:1", "[::]:1", "10.0.0.1:80", "example.com:80", "127.0.0.1", "127.0.0.1:0", ":80"]) {
      expect(() => parseListen(bad)).toThrow(PlanterError);
    }
  });

  test("the token file: the daemon's user's, 0600, long enough", () => {
    const dir = mkdtempSync("/tmp/pt-tok-");
    const f = join(dir, "t");
    writeFileSync(f, "0123456789abcdef-long-enough\n", { mode: 0o600 });
    expect(readToken(f).toString()).toBe("0123456789abcdef-long-enough");
    chmodSync(f, 0o640);
    expect(() => readToken(f)).toThrow("mode 0600");
    writeFileSync(join(dir, "s"), "short", { mode: 0o600 });
    expect(() => readToken(join(dir, "s"))).toThrow("less than 16");
    expect(() => readToken(join(dir, "none"))).toThrow("ENOENT");
  });
});

describe("the stdio relay", () => {
  type Sent = { body: string; headers: Record<string, string>; signal?: AbortSignal };
  function relay(answer: (s: Sent) => Promise<Response>) {
    const sent: Sent[] = [];
    const out: string[] = [];
    const r = new McpRelay(
      {
        mcp: (body: string, headers: Record<string, string>, signal?: AbortSignal) => {
          const s = { body, headers, signal };
          sent.push(s);
          return answer(s);
        },
      },
      async (line) => {
        out.push(line);
      },
    );
    return { r, sent, out };
  }
  const lines = (...msgs: unknown[]) =>
    (async function* () {
      for (const m of msgs) yield new TextEncoder().encode(typeof m === "string" ? m : `${JSON.stringify(m)}\n`);
    })();

  test("each message goes on as it is; answers come back one per line; the protocol version follows", async () => {
    const { r, sent, out } = relay(async (s) => {
      const m = JSON.parse(s.body);
      if (m.method === "initialize")
        return Response.json({ jsonrpc: "2.0", id: m.id, result: { protocolVersion: "2025-11-25" } });
      if (m.id === undefined) return new Response(null, { status: 202 });
      return Response.json({ jsonrpc: "2.0", id: m.id, result: { tools: [] } });
    });
    await r.run(lines({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }));
    await r.run(
      lines({ jsonrpc: "2.0", method: "notifications/initialized" }, { jsonrpc: "2.0", id: 2, method: "tools/list" }),
    );
    expect(out.map((l) => JSON.parse(l).id)).toEqual([1, 2]);
    expect(sent.map((s) => s.headers["mcp-protocol-version"] ?? "none")).toEqual(["none", "2025-11-25", "2025-11-25"]);
    expect(out.every((l) => l.endsWith("\n") && !l.slice(0, -1).includes("\n"))).toBe(true);
  });

  test("a line split across reads, a bad line, a refusal, an unreachable planterd", async () => {
    const { r, out } = relay(async (s) => {
      const m = JSON.parse(s.body);
      if (m.id === 2)
        return Response.json(
          { error: { code: "E_UNAUTHORIZED_PEER", message: "not you", hint: "ask" } },
          { status: 403 },
        );
      if (m.id === 3) throw new PlanterError("E_DAEMON_UNREACHABLE", "cannot reach planterd");
      return Response.json({ jsonrpc: "2.0", id: m.id, result: {} });
    });
    await r.run(
      lines(
        '{"jsonrpc":"2.0","id":1,',
        '"method":"ping"}\nnot json\n',
        { jsonrpc: "2.0", id: 2, method: "x" },
        { jsonrpc: "2.0", id: 3, method: "y" },
      ),
    );
    const got = out.map((l) => JSON.parse(l));
    expect(got.find((m) => m.id === 1)?.result).toEqual({});
    expect(got.find((m) => m.id === null)?.error.code).toBe(-32700);
    expect(got.find((m) => m.id === 2)?.error).toMatchObject({
      code: -32603,
      message: "E_UNAUTHORIZED_PEER: not you (ask)",
    });
    expect(got.find((m) => m.id === 3)?.error.message).toContain("E_DAEMON_UNREACHABLE");
  });

  test("notifications/cancelled aborts the request it names, which then gets no answer", async () => {
    let release: () => void = () => undefined;
    const { r, out } = relay(
      (s) =>
        new Promise<Response>((resolve, reject) => {
          const m = JSON.parse(s.body);
          if (m.method === "notifications/cancelled") return resolve(new Response(null, { status: 202 }));
          s.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
          release = () => resolve(Response.json({ jsonrpc: "2.0", id: m.id, result: {} }));
        }),
    );
    await r.run(
      lines(
        { jsonrpc: "2.0", id: 7, method: "tools/call", params: {} },
        { jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: 7 } },
      ),
    );
    release();
    expect(out).toEqual([]);
  });
});
