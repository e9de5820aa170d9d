/**
 * planter's MCP server (#17) through the official SDK's own client: over stdio (`planter mcp`, the
 * relay to planterd's /mcp), over Streamable HTTP on planterd's Unix socket, and over the loopback
 * TCP listener with its bearer token. Real planterd, real bwrap (enforced: the ceiling's default).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema, CreateTaskResultSchema, ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { baseEnv, cleanup, type DaemonHandle, hogTcp, PLANTER, startDaemon, tempHome, waitFor } from "../harness.ts";

type Result = {
  isError?: boolean;
  structuredContent?: Record<string, unknown>;
  content: { type: string; text?: string }[];
};

const TOOL_NAMES = [
  "run",
  "job_status",
  "job_list",
  "job_output",
  "job_stdin",
  "job_kill",
  "job_wait",
  "cell_list",
  "cell_create",
  "file_list",
  "file_read",
  "file_write",
  "events",
];

async function stdioClient(d: DaemonHandle): Promise<McpClient> {
  const c = new McpClient({ name: "planter-test", version: "1" });
  await c.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [PLANTER, "mcp"],
      env: baseEnv(d.home),
      stderr: "pipe",
    }),
  );
  return c;
}

async function socketClient(d: DaemonHandle): Promise<McpClient> {
  const c = new McpClient({ name: "planter-test-http", version: "1" });
  await c.connect(
    new StreamableHTTPClientTransport(new URL("http://planterd/mcp"), {
      fetch: (url, init) => fetch(url, { ...init, unix: d.socket } as RequestInit),
    }),
  );
  return c;
}

const call = async (c: McpClient, name: string, args: Record<string, unknown>) =>
  (await c.callTool({ name, arguments: args })) as Result;
// biome-ignore lint/suspicious/noExplicitAny: structured results are read loosely in tests
type Loose = Record<string, any>;
const sc = (r: Result) => {
  if (r.isError && !r.structuredContent) return JSON.parse(r.content[1]?.text ?? "{}") as Loose;
  if (!r.structuredContent) throw new Error(`no structured content: ${JSON.stringify(r)}`);
  return r.structuredContent as Loose;
};

describe("MCP over stdio (planter mcp)", () => {
  let d: DaemonHandle;
  let c: McpClient;
  beforeAll(async () => {
    d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\n' });
    c = await stdioClient(d);
  });
  afterAll(async () => {
    await c?.close();
    for (const j of (await d.client.listJobs({ state: "running" })).jobs)
      await d.client.killJob(j.id, { force: true }).catch(() => undefined);
    await d.stop();
    cleanup(d.home);
  });

  test("tools are listed with input and output schemas; the server says it does tasks", async () => {
    const { tools } = await c.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual([...TOOL_NAMES].sort());
    for (const t of tools) {
      expect(t.inputSchema.type).toBe("object");
      expect(t.outputSchema?.type).toBe("object");
      expect(t.description?.length).toBeGreaterThan(20);
    }
    expect(tools.find((t) => t.name === "run")?.execution?.taskSupport).toBe("optional");
    expect(c.getServerCapabilities()?.tasks?.requests?.tools?.call).toBeDefined();
  });

  test("run answers the status and the output of a sandboxed job", async () => {
    const r = await call(c, "run", { command: "echo hello; echo oops >&2; id -u", wait_s: 30 });
    expect(r.isError).toBeFalsy();
    const s = sc(r);
    expect(s.done).toBe(true);
    expect(s.job.state).toBe("exited");
    expect(s.job.exit_code).toBe(0);
    expect(s.job.sandbox).toMatchObject({ mode: "enforced", backend: "bwrap", network: "none" });
    expect(s.stdout.text.split("\n")[0]).toBe("hello");
    expect(Number(s.stdout.text.split("\n")[1])).not.toBe(0); // never host root
    expect(s.stderr.text).toBe("oops\n");
    expect(r.content[0]?.text).toContain("exit 0");
    // The job is planter's like any other: status, logs, events.
    const job = await d.client.getJob(s.job.id);
    expect(job.argv).toEqual(["sh", "-c", "echo hello; echo oops >&2; id -u"]);
    // A job without a timeout gets the ceiling's.
    expect(job.limits.timeout_ms).toBe(3_600_000);
  });

  test("a failing command is an error result with its exit code; argv runs without a shell", async () => {
    const r = await call(c, "run", { command: "exit 7" });
    expect(r.isError).toBe(true);
    expect(sc(r).job.exit_code).toBe(7);
    const a = await call(c, "run", { argv: ["printf", "%s|", "a b", "$HOME"] });
    expect(sc(a).stdout.text).toBe("a b|$HOME|");
  });

  test("huge output: the head and the tail, with a note of what is left out and where", async () => {
    const r = await call(c, "run", { command: "seq 1 200000", wait_s: 60 });
    const s = sc(r);
    const whole = `${Array.from({ length: 200000 }, (_, i) => i + 1).join("\n")}\n`;
    expect(s.stdout.bytes).toBe(whole.length);
    expect(s.stdout.truncated).toBe(true);
    expect(s.stdout.text.length).toBeLessThan(16 * 1024 + 300);
    expect(s.stdout.text.startsWith("1\n2\n3\n")).toBe(true);
    expect(s.stdout.text.endsWith("199999\n200000\n")).toBe(true);
    const note =
      /\[… (\d+) bytes of stdout not shown: job_output \{"job": "([^"]+)", "stream": "stdout", "offset": (\d+)\}/.exec(
        s.stdout.text,
      );
    expect(note).not.toBeNull();
    // The part left out reads back exactly.
    const offset = Number(note?.[3]);
    const part = await call(c, "job_output", { job: s.job.id, offset, max_bytes: 100 });
    expect(sc(part).text).toBe(whole.slice(offset, offset + 100));
    expect(sc(part).next_offset).toBe(offset + 100);
  });

  test("a run that takes longer than the client's timeout: progress keeps the request alive", async () => {
    const progress: { progress: number; message?: string }[] = [];
    const r = (await c.callTool({ name: "run", arguments: { command: "sleep 5; echo slept", wait_s: 30 } }, undefined, {
      timeout: 3500,
      resetTimeoutOnProgress: true,
      onprogress: (p) => progress.push(p),
    })) as Result;
    expect(sc(r).stdout.text).toBe("slept\n");
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress[0]?.message).toMatch(/^job j-\S+ still running after \d+ s$/);
    // Without progress the same client timeout ends the request (the job goes on in planterd).
    const plain = await c
      .callTool({ name: "run", arguments: { command: "sleep 5", wait_s: 30 } }, undefined, { timeout: 1500 })
      .catch((e) => e);
    expect(plain).toBeInstanceOf(McpError);
    expect((plain as McpError).code).toBe(ErrorCode.RequestTimeout);
  });

  test("a long job goes on: wait, stdin, kill; its status says how it ended", async () => {
    const r = await call(c, "run", { command: "read line; echo got $line; sleep 600", stdin: "hi there\n", wait_s: 0 });
    const id = sc(r).job.id as string;
    expect(sc(r).done).toBe(false);
    await waitFor(
      async () => sc(await call(c, "job_output", { job: id })).text === "got hi there\n",
      "the job's answer",
    );
    const w = await call(c, "job_wait", { job: id, timeout_s: 0.2 });
    expect(sc(w).timed_out).toBe(true);
    const k = await call(c, "job_kill", { job: id });
    expect(k.isError).toBeFalsy();
    const end = await call(c, "job_wait", { job: id, timeout_s: 30 });
    expect(sc(end).job.state).toBe("killed");
    expect(sc(end).job.reason).toBe("terminated_by_user");
    expect(end.isError).toBe(true);
    expect(sc(await call(c, "job_status", { job: id })).job.state).toBe("killed");
    const list = sc(await call(c, "job_list", { limit: 5 }));
    expect(list.jobs.map((j: { id: string }) => j.id)).toContain(id);
  });

  test("job_stdin writes into a job's input and ends it", async () => {
    const r = await call(c, "run", { command: "cat", stdin: "", wait_s: 0 });
    const id = sc(r).job.id as string;
    // stdin "" with eof closes it at once: cat ends with nothing.
    expect(sc(await call(c, "job_wait", { job: id })).job.exit_code).toBe(0);
    const t = await d.client.createJob({ argv: ["cat"], stdin: true });
    const s = await call(c, "job_stdin", { job: t.id, text: "abc", eof: true });
    expect(sc(s)).toEqual({ written: 3, eof: true });
    expect(sc(await call(c, "job_wait", { job: t.id })).stdout.text).toBe("abc");
  });

  test("a terminal job: its screen in run's answer and in job_output; job_stdin types into it", async () => {
    const r = await call(c, "run", {
      command: "printf 'ready\\n'; read x; printf 'typed %s\\n' \"$x\"; sleep 600",
      tty: { cols: 40, rows: 6 },
      wait_s: 0,
    });
    const id = sc(r).job.id as string;
    const screen = async () => sc(await call(c, "job_output", { job: id, screen: true })).screen as string[];
    await waitFor(async () => (await screen()).includes("ready"), "the job's first line on its screen");
    await call(c, "job_stdin", { job: id, text: "hello\r" });
    await waitFor(async () => (await screen()).includes("typed hello"), "the typed line");
    const w = sc(await call(c, "job_wait", { job: id, timeout_s: 0 }));
    expect(w.screen).toContain("typed hello");
    expect(w.stderr).toBeNull();
    await call(c, "job_kill", { job: id, force: true });
  });

  test("errors: an unknown tool and bad arguments are MCP errors; planter's refusals are error results", async () => {
    const unknown = await c.callTool({ name: "no_such_tool", arguments: {} }).catch((e) => e);
    expect(unknown).toBeInstanceOf(McpError);
    expect((unknown as McpError).code).toBe(ErrorCode.InvalidParams);
    const bad = await c.callTool({ name: "run", arguments: { command: "true", argv: ["true"] } }).catch((e) => e);
    expect(bad).toBeInstanceOf(McpError);
    expect((bad as McpError).message).toContain("give either command or argv");
    const missing = await call(c, "job_status", { job: "j-nonexistent" });
    expect(missing.isError).toBe(true);
    expect(sc(missing).error.code).toBe("E_NOT_FOUND");
  });

  test("the ceiling: no lower mode, no host network, no limit above it, no Unix socket", async () => {
    const low = await call(c, "run", { command: "true", mode: "disabled" });
    expect(low.isError).toBe(true);
    expect(sc(low).error.message).toContain("beyond the MCP ceiling");
    await d.client.createCell({ name: "wide", sandbox: { policy: { network: "host" } } });
    const host = await call(c, "run", { cell: "wide", command: "true" });
    expect(host.isError).toBe(true);
    expect(sc(host).error.message).toContain("network host");
    // Narrowed by the caller, the same cell is fine.
    const narrowed = await call(c, "run", { cell: "wide", command: "true", policy: { network: "none" } });
    expect(narrowed.isError).toBeFalsy();
    // The vm backend is the route's to refuse or run: here (no KVM that boots a guest) a clear refusal.
    const vm = await call(c, "run", { command: "true", backend: "vm" });
    if (vm.isError) expect(sc(vm).error.code).toBe("E_SANDBOX_UNAVAILABLE");
    else expect(sc(vm).job.sandbox.backend).toBe("vm");
    const long = await call(c, "run", { command: "true", limits: { timeout_ms: 3_600_001 } });
    expect(sc(long).error.message).toContain("timeout_ms 3600001 is more than 3600000");
    const cell = await call(c, "cell_create", { name: "open", network: "host" });
    expect(cell.isError).toBe(true);
    expect((await d.client.listCells()).cells.map((x) => x.name)).not.toContain("open");
    // Nothing of it changed anything: no job ran for the refusals.
    const ids = (await d.client.listJobs({ cell: "wide" })).jobs;
    expect(ids.length).toBe(1);
  });

  test("files: write, list, read inside the cell; confined as the cell's jobs are", async () => {
    const w = await call(c, "file_write", { path: "src/a.txt", text: "hello\nworld\n", make_dirs: true });
    expect(sc(w)).toEqual({ path: "src/a.txt", bytes: 12, append: false });
    await call(c, "file_write", { path: "src/a.txt", text: "more\n", append: true });
    const l = sc(await call(c, "file_list", { path: "src" }));
    expect(l.entries).toEqual([{ name: "a.txt", type: "file", size: 17 }]);
    const root = sc(await call(c, "file_list", {}));
    expect(root.entries.map((e: { name: string }) => e.name)).toContain("src");
    const r = sc(await call(c, "file_read", { path: "src/a.txt", offset: 6, max_bytes: 5 }));
    expect(r).toMatchObject({ text: "world", size: 17, offset: 6, bytes: 5, eof: false });
    const bin = await call(c, "file_write", {
      path: "b.bin",
      base64: Buffer.from([0, 255, 10, 128]).toString("base64"),
    });
    expect(bin.isError).toBeFalsy();
    expect(sc(await call(c, "file_read", { path: "b.bin" })).base64).toBe(
      Buffer.from([0, 255, 10, 128]).toString("base64"),
    );
    for (const p of ["../x", "/etc/passwd", "src/../../x", ""]) {
      const e = await call(c, "file_read", { path: p });
      expect(e.isError).toBe(true);
    }
    const cellDir = (await d.client.getCell("default")).dir;
    symlinkSync(join(d.home, "state"), join(cellDir, "state-link"));
    // A link the cell holds to planter's state: the sandbox shows it empty, as to every job.
    const through = await call(c, "file_list", { path: "state-link" });
    expect(sc(through).entries).toEqual([]);
    const db = await call(c, "file_read", { path: "state-link/planter.db" });
    expect(db.isError).toBe(true);
    // A read-only cell takes no writes.
    await d.client.createCell({ name: "ro", sandbox: { policy: { fs_mode: "read_only" } } });
    const ro = await call(c, "file_write", { cell: "ro", path: "x", text: "no" });
    expect(ro.isError).toBe(true);
    expect(sc(ro).error.message).toMatch(/Read-only file system|Permission denied/);
    // A huge directory is listed in part, and says so.
    const many = await call(c, "run", { command: "mkdir many && cd many && seq 1 10005 | xargs touch" });
    expect(many.isError).toBeFalsy();
    const big = sc(await call(c, "file_list", { path: "many" }));
    expect(big.entries.length).toBe(10_000);
    expect(big.truncated).toBe(true);
    // The file tools' jobs are gone again; their events stay.
    expect((await d.client.listJobs({ cell: "ro" })).jobs).toEqual([]);
  });

  test("events since a cursor carry the MCP audit; logs are resources", async () => {
    const r = await call(c, "run", { command: "echo res" });
    const id = sc(r).job.id as string;
    const ev = sc(await call(c, "events", { kind: ["job.created"], subject: `job/${id}` }));
    expect(ev.events.length).toBe(1);
    expect(ev.events[0].data.via).toBe("mcp");
    expect(ev.next_cursor).toBe(ev.events[0].cursor);
    const after = sc(await call(c, "events", { cursor: ev.next_cursor, subject: `job/${id}`, kind: ["job.created"] }));
    expect(after.events).toEqual([]);
    const { resourceTemplates } = await c.listResourceTemplates();
    expect(resourceTemplates.map((t) => t.uriTemplate)).toContain("planter://jobs/{job}/stdout");
    const res = await c.readResource({ uri: `planter://jobs/${id}/stdout` });
    expect(res.contents[0]).toMatchObject({ text: "res\n", mimeType: "text/plain" });
    const { resources } = await c.listResources();
    expect(resources.map((x) => x.uri)).toContain(`planter://jobs/${id}/stdout`);
  });

  test("a run as an MCP task is its job: status, result, cancel, even across a planterd restart", async () => {
    const created = await c.request(
      { method: "tools/call", params: { name: "run", arguments: { command: "sleep 600" }, task: { ttl: 60_000 } } },
      CreateTaskResultSchema,
    );
    const taskId = created.task.taskId;
    expect(created.task.status).toBe("working");
    expect((await d.client.getJob(taskId)).state).toBe("running");
    const quick = await c.request(
      { method: "tools/call", params: { name: "run", arguments: { command: "echo done" }, task: {} } },
      CreateTaskResultSchema,
    );
    const result = await c.experimental.tasks.getTaskResult(quick.task.taskId, CallToolResultSchema);
    expect((result.structuredContent as Loose).stdout.text).toBe("done\n");
    // planterd goes and comes back: the task is still there, as its job is.
    await d.kill9();
    d = await startDaemon({ home: d.home });
    const c2 = await stdioClient(d);
    try {
      expect((await c2.experimental.tasks.getTask(taskId)).status).toBe("working");
      await c2.experimental.tasks.cancelTask(taskId);
      await waitFor(async () => (await d.client.getJob(taskId)).state === "killed", "the cancelled task's job killed");
      expect((await c2.experimental.tasks.getTask(taskId)).status).toBe("cancelled");
    } finally {
      await c2.close();
    }
  });
});

describe("MCP over HTTP: planterd's socket and the loopback TCP listener", () => {
  let d: DaemonHandle;
  let port: number;
  let tokenDir = "";
  let tokenFile = "";
  const token = "t0ken-for-the-mcp-test-0123456789";
  beforeAll(async () => {
    port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const home = tempHome("pm");
    // The token lies outside planter's dirs (state, socket, config): jobs must not see it anyway.
    // (/var/tmp: a job's /tmp is its own, so a token there would be out of its sight anyway.)
    tokenDir = mkdtempSync("/var/tmp/pt-tok-");
    chmodSync(tokenDir, 0o755);
    tokenFile = join(tokenDir, "token");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    d = await startDaemon({
      home,
      config: `[sandbox]\nmode = "enforced"\n[api]\nmax_connections_per_uid = 8\nheader_timeout_ms = 2000\n[authz]\nallowed_uids = [65534]\n[mcp]\nlisten = "127.0.0.1:${port}"\ntoken_file = "${tokenFile}"\nas_user = "nobody"\n`,
    });
    await waitFor(() => d.stderr().includes("MCP on http://127.0.0.1:"), "the TCP listener");
  });
  afterAll(async () => {
    await d.stop();
    cleanup(d.home);
    rmSync(tokenDir, { recursive: true, force: true });
  });

  test("on the socket: the SDK's Streamable HTTP client runs a job", async () => {
    const c = await socketClient(d);
    try {
      const r = await call(c, "run", { command: "echo via-socket" });
      expect(sc(r).stdout.text).toBe("via-socket\n");
      // The token file is covered in every job's view (empty), wherever the config puts it.
      const seen = await call(c, "run", {
        argv: ["sh", "-c", 'if [ -s "$1" ]; then echo visible; else echo hidden; fi', "-", tokenFile],
      });
      expect(sc(seen).stdout.text).toBe("hidden\n");
    } finally {
      await c.close();
    }
  });

  test("on TCP: refused without the token or with another; with it, the caller is as_user", async () => {
    const url = `http://127.0.0.1:${port}/mcp`;
    const init = { jsonrpc: "2.0", id: 1, method: "tools/list" };
    const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
    const none = await fetch(url, { method: "POST", headers, body: JSON.stringify(init) });
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toContain("Bearer");
    const wrong = await fetch(url, {
      method: "POST",
      headers: { ...headers, authorization: `Bearer ${token.slice(0, -1)}X` },
      body: JSON.stringify(init),
    });
    expect(wrong.status).toBe(401);
    const other = await fetch(`http://127.0.0.1:${port}/v1/jobs`, { headers: { authorization: `Bearer ${token}` } });
    expect(other.status).toBe(404);
    const c = new McpClient({ name: "planter-test-tcp", version: "1" });
    await c.connect(
      new StreamableHTTPClientTransport(new URL(url), {
        requestInit: { headers: { authorization: `Bearer ${token}` } },
      }),
    );
    try {
      const r = await call(c, "run", { command: "id -u" });
      expect(sc(r).stdout.text).toBe("65534\n");
      expect(sc(r).job.run_as.for_uid).toBe(65534);
      const ev = sc(await call(c, "events", { kind: ["job.created"], subject: `job/${sc(r).job.id}` }));
      expect(ev.events[0].data).toMatchObject({ via: "mcp", mcp_transport: "tcp", peer_uid: 65534 });
    } finally {
      await c.close();
    }
    const denied = await d.client.events({ kind: ["authz.denied"], limit: 10 });
    const seen = [];
    for await (const e of denied) seen.push(e);
    expect(seen.some((e) => e.data.via === "mcp-tcp")).toBe(true);
  });

  // Root only: the other uid is made with setpriv.
  test.skipIf(process.getuid?.() !== 0)(
    "on TCP: another uid holds at most its cap of connections, and the token's holder still gets in",
    async () => {
      const h = await hogTcp(port, 12, 8);
      try {
        expect(h.open).toBe(8);
        // The held slots are that uid's own: a client of another uid (here root) is served.
        const c = new McpClient({ name: "planter-test-tcp-after-hog", version: "1" });
        await c.connect(
          new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`), {
            requestInit: { headers: { authorization: `Bearer ${token}` } },
          }),
        );
        try {
          expect((await c.listTools()).tools.length).toBe(TOOL_NAMES.length);
        } finally {
          await c.close();
        }
        // Connections that send no request are closed after header_timeout_ms, not held for ever.
        expect(await h.allClosed(10_000)).toBe(true);
      } finally {
        await h.release();
      }
    },
  );

  test.skipIf(process.getuid?.() !== 0)(
    "on TCP: connections beyond the cap are closed; a flood of bad tokens is recorded once",
    async () => {
      const h = await hogTcp(port, 12, 8);
      expect(h.open).toBe(8);
      await h.release();
      const before = await deniedCount();
      const bad = { method: "POST", headers: { authorization: "Bearer nope-nope-nope-nope" }, body: "{}" };
      for (let i = 0; i < 20; i++) expect((await fetch(`http://127.0.0.1:${port}/mcp`, bad)).status).toBe(401);
      expect((await deniedCount()) - before).toBeLessThanOrEqual(1);
    },
  );

  async function deniedCount(): Promise<number> {
    let n = 0;
    for await (const e of d.client.events({ kind: ["authz.denied"], limit: 1000 })) if (e.data.via === "mcp-tcp") n++;
    return n;
  }

  test("a token file others can read keeps the TCP listener shut; the socket still serves", async () => {
    const home = tempHome("pm");
    writeFileSync(join(home, "token"), `${token}\n`);
    chmodSync(join(home, "token"), 0o644);
    const d2 = await startDaemon({
      home,
      config: `[sandbox]\nmode = "enforced"\n[mcp]\nlisten = "127.0.0.1:${port + 1}"\ntoken_file = "${join(home, "token")}"\nas_user = "nobody"\n`,
    });
    try {
      await waitFor(() => d2.stderr().includes("MCP TCP listener not started"), "the refusal in planterd's log");
      expect(d2.stderr()).toContain("mode 0600");
      const refused = await fetch(`http://127.0.0.1:${port + 1}/mcp`, { method: "POST" }).catch((e) => e);
      expect(refused).toBeInstanceOf(Error);
      const c = await socketClient(d2);
      expect((await c.listTools()).tools.length).toBe(TOOL_NAMES.length);
      await c.close();
    } finally {
      await d2.stop();
      cleanup(home);
    }
  });

  test("as_user root keeps the TCP listener shut (a token is never root, as on [api.tcp]); the socket still serves", async () => {
    const home = tempHome("pm");
    writeFileSync(join(home, "token"), `${token}\n`, { mode: 0o600 });
    const d2 = await startDaemon({
      home,
      config: `[sandbox]\nmode = "enforced"\n[mcp]\nlisten = "127.0.0.1:${port + 2}"\ntoken_file = "${join(home, "token")}"\nas_user = "root"\n`,
    });
    try {
      await waitFor(() => d2.stderr().includes("MCP TCP listener not started"), "the refusal in planterd's log");
      expect(d2.stderr()).toContain("as_user root (uid 0)");
      const refused = await fetch(`http://127.0.0.1:${port + 2}/mcp`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
      }).catch((e) => e);
      expect(refused).toBeInstanceOf(Error);
      const c = await socketClient(d2);
      expect((await c.listTools()).tools.length).toBe(TOOL_NAMES.length);
      await c.close();
    } finally {
      await d2.stop();
      cleanup(home);
    }
  });
});
