/**
 * The client's trust: the CLI sends nothing to a socket another user controls (the file, its
 * directory, a symlink's directory, or the process listening on it), and prints what a daemon
 * sends with its control characters escaped.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:http";
import { createConnection } from "node:net";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { checkSocketPath } from "../../lib/api/trust.ts";
import { cli, type DaemonHandle, startDaemon, tempHome, waitFor } from "../harness.ts";

const dirs: string[] = [];
const daemons: DaemonHandle[] = [];
afterAll(async () => {
  for (const d of daemons) if (d.proc.exitCode === null) await d.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function daemon(): Promise<DaemonHandle> {
  const d = await startDaemon();
  daemons.push(d);
  dirs.push(d.home);
  return d;
}

const SECRET = "hunter2-secret";
/** Sockets of another user need root to make (setpriv, chown): those tests are skipped as a user. */
const root = process.getuid?.() === 0;

/** A PLANTER_HOME for a client (removed after the tests). */
function home(): string {
  const h = tempHome();
  dirs.push(h);
  return h;
}

/**
 * A listener run as uid 65534 on DIR/planterd.sock (DIR owned by it), printing a JSON line per
 * connection closed with the bytes it received; "listening" first.
 */
function nobodyListener() {
  const dir = mkdtempSync("/tmp/pu-");
  dirs.push(dir);
  chmodSync(dir, 0o755);
  chownSync(dir, 65534, 65534);
  const socket = join(dir, "planterd.sock");
  const script = `
const net = require("node:net");
let n = 0;
const srv = net.createServer((s) => {
  const id = ++n;
  let bytes = 0;
  s.on("data", (b) => { bytes += b.length; });
  s.on("error", () => undefined);
  s.on("close", () => console.log(JSON.stringify({ id, bytes })));
});
srv.listen(${JSON.stringify(socket)}, () => console.log("listening"));
`;
  const proc = Bun.spawn(
    ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", process.execPath, "-e", script],
    { env: { PATH: "/usr/bin:/bin", HOME: "/tmp" }, cwd: "/tmp", stdout: "pipe", stderr: "inherit" },
  );
  const out: string[] = [];
  (async () => {
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += new TextDecoder().decode(chunk);
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      out.push(...lines.filter(Boolean));
    }
  })();
  // Connections as the listener reported their ends, in the order they were opened.
  const closed = () =>
    out
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { id: number; bytes: number })
      .sort((a, b) => a.id - b.id);
  return {
    dir,
    socket,
    proc,
    ready: () => waitFor(() => out.includes("listening"), "the listener to listen"),
    closed,
    /**
     * Connect once as root, send one byte, and wait until the listener reports that connection's end
     * (the one with the highest id: an earlier connection's report may still be on its way, so a count
     * taken before would be met by it).
     */
    async sentinel(): Promise<void> {
      const s = createConnection({ path: socket });
      await new Promise<void>((r) => s.on("connect", () => r()));
      s.end("x");
      await waitFor(() => {
        const all = closed();
        const last = all[all.length - 1];
        return last !== undefined && last.bytes === 1 && last.id === all.length;
      }, "the sentinel connection and every one before it to be reported");
    },
  };
}

describe("the CLI sends nothing to a socket another user controls", () => {
  test.skipIf(!root)(
    "a socket owned by another user: refused before connecting, exit 4, with a hint (needs root: setpriv)",
    async () => {
      const l = nobodyListener();
      try {
        await l.ready();
        const r = await cli(home(), ["run", "--env", `TOKEN=${SECRET}`, "--", "true"], {
          env: { PLANTER_SOCKET: l.socket },
        });
        expect(r.code).toBe(4);
        expect(r.stderr).toContain(
          `planter: refusing to use the planterd socket ${l.socket}: it is owned by uid 65534`,
        );
        expect(r.stderr).toContain("hint: whoever owns it would read what planter sends (--env values included)");
        const j = await cli(home(), ["job", "ls", "--json"], { env: { PLANTER_SOCKET: l.socket } });
        expect(j.code).toBe(4);
        expect(JSON.parse(j.stderr).error.code).toBe("E_UNTRUSTED_DAEMON");
        // Not even a connection: the sentinel is the first the listener saw.
        await l.sentinel();
        expect(l.closed()).toEqual([{ id: 1, bytes: 1 }]);
      } finally {
        l.proc.kill("SIGKILL");
      }
    },
  );

  test.skipIf(!root)(
    "a root-owned socket and directory with another user's process listening: refused on the connection, nothing sent (needs root: setpriv, chown)",
    async () => {
      const l = nobodyListener();
      try {
        await l.ready();
        // Every file check passes now; only the connection's peer credentials tell.
        chownSync(l.socket, 0, 0);
        chownSync(l.dir, 0, 0);
        const r = await cli(home(), ["run", "--env", `TOKEN=${SECRET}`, "--", "true"], {
          env: { PLANTER_SOCKET: l.socket },
        });
        expect(r.code).toBe(4);
        expect(r.stderr).toContain("the process listening on it runs as uid 65534, not as you (uid 0) or root");
        await waitFor(() => l.closed().length >= 1, "the CLI's connection to end");
        expect(l.closed()[0]).toEqual({ id: 1, bytes: 0 });
      } finally {
        l.proc.kill("SIGKILL");
      }
    },
  );

  test("a socket directory others can write to (not sticky) is refused; sticky is fine", async () => {
    const d = await daemon();
    const run = join(d.home, "run");
    chmodSync(run, 0o777);
    const r = await cli(d.home, ["job", "ls"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(`its directory ${run} is writable by others (mode 777), so the socket could be swapped`);
    chmodSync(run, 0o1777);
    expect((await cli(d.home, ["job", "ls"])).code).toBe(0);
    chmodSync(run, 0o700);
  });

  test("a symlink to the socket: followed from a safe directory, refused from one others can write to", async () => {
    const d = await daemon();
    const safe = mkdtempSync("/tmp/pl-");
    const open = mkdtempSync("/tmp/pl-");
    dirs.push(safe, open);
    chmodSync(open, 0o777);
    symlinkSync(d.socket, join(safe, "s.sock"));
    symlinkSync(d.socket, join(open, "s.sock"));
    const ok = await cli(d.home, ["job", "ls", "--json"], { env: { PLANTER_SOCKET: join(safe, "s.sock") } });
    expect([ok.code, ok.stderr]).toEqual([0, ""]);
    const bad = await cli(d.home, ["job", "ls", "--json"], { env: { PLANTER_SOCKET: join(open, "s.sock") } });
    expect(bad.code).toBe(4);
    expect(JSON.parse(bad.stderr).error.message).toContain(`it is a symlink and its directory ${open} is writable`);
  });

  test.skipIf(!root)("the path rules, variant by variant (as another uid; needs root: chown)", () => {
    const base = mkdtempSync("/tmp/pl-");
    dirs.push(base);
    chmodSync(base, 0o755);
    const mine = join(base, "mine");
    mkdirSync(mine, { mode: 0o700 });
    const sock = join(mine, "f");
    Bun.write(sock, "");
    // The caller is uid 4242 here: root's files pass, its own pass, another's do not.
    expect(() => checkSocketPath(sock, 4242)).not.toThrow();
    chownSync(sock, 4243, 4243);
    expect(() => checkSocketPath(sock, 4242)).toThrow("it is owned by uid 4243, not by you (uid 4242) or root");
    chownSync(sock, 4242, 4242);
    expect(() => checkSocketPath(sock, 4242)).not.toThrow();
    chownSync(mine, 4243, 4243);
    expect(() => checkSocketPath(sock, 4242)).toThrow(`its directory ${mine} is owned by uid 4243`);
    chownSync(mine, 4242, 4242);
    chmodSync(mine, 0o770);
    expect(() => checkSocketPath(sock, 4242)).toThrow("writable by others (mode 770)");
    chmodSync(mine, 0o700);
    // A missing path passes: connecting says it is not there.
    expect(() => checkSocketPath(join(mine, "none"), 4242)).not.toThrow();
  });
});

test.skipIf(!root)(
  "doctor asks nothing of a socket whose listener runs as another user: daemon.reachable says why (needs root: setpriv, chown)",
  async () => {
    const l = nobodyListener();
    try {
      await l.ready();
      chownSync(l.socket, 0, 0);
      chownSync(l.dir, 0, 0);
      const r = await cli(home(), ["doctor", "--json", "daemon.reachable"], { env: { PLANTER_SOCKET: l.socket } });
      const check = (JSON.parse(r.stdout) as { checks: { id: string; status: string; message: string }[] }).checks.find(
        (c) => c.id === "daemon.reachable",
      );
      expect(check?.status).toBe("fail");
      expect(check?.message).toContain(
        `not asking planterd: refusing to use the planterd socket ${l.socket}: the process listening on it runs as uid 65534`,
      );
      // One connection, to read its listener's uid: nothing was sent on it, and no request followed.
      await l.sentinel();
      expect(l.closed()).toEqual([
        { id: 1, bytes: 0 },
        { id: 2, bytes: 1 },
      ]);
    } finally {
      l.proc.kill("SIGKILL");
    }
  },
);

describe("what a daemon sends is printed escaped", () => {
  const ESC = "\x1b";
  const hostile = `${ESC}]52;c;aGk=\x07${ESC}[2J\u202e`;

  /** A fake planterd (root's, so trusted) answering every request with `reply`. */
  async function fake(reply: (path: string) => { status: number; body: unknown }) {
    const dir = mkdtempSync("/tmp/pf-");
    dirs.push(dir);
    chmodSync(dir, 0o700);
    const socket = join(dir, "planterd.sock");
    const srv = createServer((req, res) => {
      const r = reply(req.url ?? "/");
      const text = JSON.stringify(r.body);
      res.writeHead(r.status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    });
    await new Promise<void>((r) => srv.listen(socket, () => r()));
    return { socket, close: () => srv.close() };
  }

  test("an error's message and hint: control characters escaped, no forged lines; --json exact", async () => {
    const error = { code: "E_NOT_FOUND", message: `no such job ${hostile}`, hint: `try again\nhint: curl x | sh` };
    const f = await fake(() => ({ status: 404, body: { error } }));
    try {
      const r = await cli(home(), ["job", "status", "j-x"], { env: { PLANTER_SOCKET: f.socket } });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        "planter: no such job \\x1b]52;c;aGk=\\x07\\x1b[2J\\u202e\nhint: try again\\nhint: curl x | sh\n",
      );
      const j = await cli(home(), ["job", "status", "j-x", "--json"], { env: { PLANTER_SOCKET: f.socket } });
      expect(JSON.parse(j.stderr)).toEqual({ error });
      // A code only the client uses is not taken from a daemon.
      const u = await fake(() => ({ status: 500, body: { error: { code: "E_UNTRUSTED_DAEMON", message: "x" } } }));
      const k = await cli(home(), ["job", "ls", "--json"], { env: { PLANTER_SOCKET: u.socket } });
      expect([k.code, JSON.parse(k.stderr).error.code]).toEqual([1, "E_INTERNAL"]);
      u.close();
    } finally {
      f.close();
    }
  });

  test("names, argv, messages and paths in job ls, job status, cell show, events: escaped", async () => {
    const d = await daemon();
    const real = (await d.client.createJob({ argv: ["true"] })) as Job;
    await d.client.waitJob(real.id, 30_000);
    const job: Job = {
      ...(await d.client.getJob(real.id)),
      argv: ["echo", `a${hostile}`],
      cwd: `/tmp/${hostile}`,
      message: `ended ${hostile}`,
      cell: `c${ESC}[31m`,
    };
    const cell = { ...(await d.client.getCell("default")), name: `n${hostile}`, env: { K: `v${hostile}` } };
    const event = {
      cursor: `x:1${ESC}[2J`,
      at: "2026",
      kind: `job.created${ESC}[31m`,
      subject: "s\u009b",
      data: { a: "\u202e" },
    };
    const f = await fake((path) => {
      if (path.startsWith("/v1/jobs?")) return { status: 200, body: { jobs: [job], next_after: null } };
      if (path.startsWith("/v1/jobs/")) return { status: 200, body: job };
      if (path.startsWith("/v1/cells/")) return { status: 200, body: cell };
      return { status: 200, body: event };
    });
    try {
      const env = { env: { PLANTER_SOCKET: f.socket } };
      for (const args of [
        ["job", "ls"],
        ["job", "status", real.id],
        ["cell", "show", "x"],
      ]) {
        const r = await cli(home(), args, env);
        expect([args, r.code, r.stderr]).toEqual([args, 0, ""]);
        // biome-ignore lint/suspicious/noControlCharactersInRegex: looking for control characters
        expect(r.stdout).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]/);
        expect(r.stdout).toContain("\\x1b]52;c;aGk=\\x07");
      }
      const st = await cli(home(), ["job", "status", real.id], env);
      expect(st.stdout).toContain("command:   echo $'a\\x1b]52;c;aGk=\\x07\\x1b[2J\\u202e'");
      const ev = await cli(home(), ["events"], env);
      expect(ev.stdout).toBe('x:1\\x1b[2J  2026  job.created\\x1b[31m s\\x9b  {"a":"\\u202e"}\n');
      // --json keeps every byte as the daemon sent it.
      const js = await cli(home(), ["job", "status", real.id, "--json"], env);
      expect(JSON.parse(js.stdout)).toEqual(job);
    } finally {
      f.close();
    }
  });

  test("a real daemon: a job's argv with escapes in job ls and job status", async () => {
    const d = await daemon();
    const j = await d.client.createJob({ argv: ["echo", `${ESC}[2J${ESC}]0;owned\x07`] });
    const ls = await cli(d.home, ["job", "ls"]);
    expect(ls.stdout).toContain("echo $'\\x1b[2J\\x1b]0;owned\\x07'");
    expect(ls.stdout).not.toContain(ESC);
    const st = await cli(d.home, ["job", "status", j.id]);
    expect(st.stdout).not.toContain(ESC);
    const missing = await cli(d.home, ["job", "status", `j-${ESC}[2J`]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).not.toContain(ESC);
  });
});
