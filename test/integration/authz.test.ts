/** Socket authorization and hardening: peer credentials, secure layout, bad input at scale, slow clients. */

import { afterAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
} from "node:fs";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import type { EventRecord } from "../../lib/api/contract.ts";
import {
  baseEnv,
  bundled,
  cleanup,
  type DaemonHandle,
  PLANTER,
  rawExchange,
  startDaemon,
  tempHome,
  waitFor,
} from "../harness.ts";

/** Tests whose clients run as other uids (setpriv) or chown to them: root only, skipped as a user. */
const root = process.getuid?.() === 0;
const uid = process.getuid?.() ?? 0;
const homes: string[] = [];
const daemons: DaemonHandle[] = [];
afterAll(async () => {
  for (const d of daemons) if (d.proc.exitCode === null) await d.stop();
  for (const h of homes) cleanup(h);
});

async function daemon(config = ""): Promise<DaemonHandle> {
  const d = await startDaemon({ config });
  homes.push(d.home);
  daemons.push(d);
  return d;
}

/** Let other users reach the socket (the daemon checked its layout at startup; tests loosen it after). */
function exposeSocket(d: DaemonHandle) {
  chmodSync(d.home, 0o755);
  chmodSync(join(d.home, "run"), 0o755);
  chmodSync(d.socket, 0o666);
}

/** Run the planter CLI as uid/gid 65534 (nobody) with the given supplementary groups. */
async function asNobody(d: DaemonHandle, args: string[], groups: string | null = null) {
  const priv = [
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    ...(groups ? ["--groups", groups] : ["--clear-groups"]),
  ];
  // A bundle in a world-readable dir: uid 65534 may not reach this checkout.
  const p = Bun.spawn([...priv, process.execPath, bundled(PLANTER), ...args], {
    env: { ...baseEnv(d.home), HOME: "/tmp", PLANTER_SOCKET: d.socket },
    stdout: "pipe",
    stderr: "pipe",
    cwd: "/tmp",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

async function events(d: DaemonHandle, kind: string): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const e of d.client.events({})) if (e.kind === kind) out.push(e);
  return out;
}

describe.skipIf(!root)("peer credentials (needs root: its clients run as uid 65534)", () => {
  test("another uid with no allowed group is refused with 403 and an audit event", async () => {
    const d = await daemon();
    exposeSocket(d);
    const r = await asNobody(d, ["job", "ls", "--json"]);
    expect(r.code).toBe(1);
    const err = JSON.parse(r.stderr).error;
    expect(err.code).toBe("E_UNAUTHORIZED_PEER");
    expect(err.message).toContain("uid 65534 is not allowed to use planterd (allowed: uid 0");
    expect(err.hint).toBeDefined();
    expect(err.details.uid).toBe(65534);
    const text = await asNobody(d, ["run", "--", "true"]);
    expect(text.code).toBe(1);
    expect(text.stderr).toContain("planter: uid 65534 is not allowed to use planterd");
    expect(text.stderr).toContain("hint: ");
    // Nothing ran, and the denial is on record with who it was.
    expect((await d.client.listJobs({})).jobs).toHaveLength(0);
    const denied = await events(d, "authz.denied");
    expect(denied.length).toBeGreaterThanOrEqual(1);
    expect(denied[0]?.data).toEqual({
      uid: 65534,
      gid: 65534,
      pid: expect.any(Number),
      method: "GET",
      path: expect.stringMatching(/^\/v1\/jobs/),
      suppressed: 0,
    });
  });

  test("a flood of denials does not flood the event log", async () => {
    const d = await daemon();
    exposeSocket(d);
    const script = `let n=0; for (let i=0;i<200;i++){ const r = await fetch("http://x/v1/health",{unix:${JSON.stringify(d.socket)}}); if (r.status===403) n++; } console.log(n)`;
    const p = Bun.spawn(
      ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", process.execPath, "-e", script],
      {
        env: { PATH: "/usr/bin:/bin", HOME: "/tmp" },
        cwd: "/tmp",
        stdout: "pipe",
      },
    );
    expect((await new Response(p.stdout).text()).trim()).toBe("200");
    expect(await events(d, "authz.denied")).toHaveLength(1);
  });

  test("a member of an allowed group is served, and its uid and pid are audited", async () => {
    const d = await daemon('[authz]\nallowed_groups = ["users"]\n');
    exposeSocket(d);
    const r = await asNobody(d, ["run", "--", "echo", "served"], "100");
    expect(r).toEqual({ code: 0, stdout: "served\n", stderr: "" });
    const created = await events(d, "job.created");
    expect(created[0]?.data.peer_uid).toBe(65534);
    expect(created[0]?.data.peer_pid).toEqual(expect.any(Number));
    expect(await events(d, "authz.denied")).toHaveLength(0);
  });

  test("a gid in allowed_groups (a TOML number, as the README says) admits its members", async () => {
    const d = await daemon("[authz]\nallowed_groups = [4242]\n");
    exposeSocket(d);
    expect((await asNobody(d, ["job", "ls"], "4242")).code).toBe(0);
    expect((await asNobody(d, ["job", "ls"], "4243")).code).toBe(1);
  });

  test("allowed_uids admits a uid", async () => {
    const d = await daemon("[authz]\nallowed_uids = [65534]\n");
    exposeSocket(d);
    expect((await asNobody(d, ["job", "ls"])).code).toBe(0);
  });

  test("strict = false serves a refused peer with a warning event", async () => {
    const d = await daemon("[authz]\nstrict = false\n");
    exposeSocket(d);
    const r = await asNobody(d, ["job", "ls", "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
    const warned = await events(d, "authz.unstrict");
    expect(warned).toHaveLength(1);
    expect(warned[0]?.data.message).toContain("served because [authz] strict = false");
  });
});

describe("secure layout", () => {
  async function refused(prepare: (home: string) => void) {
    const h = tempHome();
    homes.push(h);
    prepare(h);
    const p = Bun.spawn([process.execPath, PLANTER, "daemon"], { env: baseEnv(h), stdout: "ignore", stderr: "pipe" });
    const [code, stderr] = await Promise.all([p.exited, new Response(p.stderr).text()]);
    return { code, stderr, h };
  }

  test("a world-writable socket dir stops startup with the fix", async () => {
    const r = await refused((h) => {
      mkdirSync(join(h, "run"));
      chmodSync(join(h, "run"), 0o777);
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`insecure socket layout: socket directory ${r.h}/run has mode 0777, not 0700`);
    expect(r.stderr).toContain(`chmod 0700 ${r.h}/run`);
  });

  test.skipIf(!root)("a socket dir owned by another user stops startup (needs root: chown)", async () => {
    const r = await refused((h) => {
      mkdirSync(join(h, "run"), { mode: 0o700 });
      chownSync(join(h, "run"), 65534, 65534);
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`socket directory ${r.h}/run is owned by uid 65534, not ${uid}`);
  });

  test("a symlinked socket dir stops startup", async () => {
    const r = await refused((h) => {
      const elsewhere = mkdtempSync("/tmp/pt-elsewhere-");
      homes.push(elsewhere);
      symlinkSync(elsewhere, join(h, "run"));
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`socket directory ${r.h}/run is a symlink`);
  });

  test("a parent writable by others stops startup", async () => {
    const r = await refused((h) => chmodSync(h, 0o777));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${r.h}, a parent of the socket, is writable by others`);
    expect(r.stderr).toContain(`chmod o-w ${r.h}`);
  });
});

describe("slow and greedy clients", () => {
  test("a slow-loris client is cut off after the header timeout while others are served", async () => {
    const d = await daemon("[api]\nheader_timeout_ms = 300\n");
    const loris: Socket = createConnection({ path: d.socket });
    let closed = false;
    loris.on("close", () => {
      closed = true;
    });
    loris.on("error", () => undefined);
    await new Promise<void>((r) => loris.on("connect", () => r()));
    const request = "GET /v1/health HTTP/1.1\r\nHost: planterd\r\nX-Slow: ";
    let i = 0;
    const drip = setInterval(() => {
      if (!closed) loris.write(request[i++ % request.length] as string);
    }, 20);
    // While the loris holds its connection, another client is served.
    expect(closed).toBe(false);
    expect(await d.client.health()).toEqual({ ok: true });
    await waitFor(() => closed, "the slow client to be cut off", 10_000);
    clearInterval(drip);
    expect(await d.client.health()).toEqual({ ok: true });
  });

  test("a body that never finishes arriving answers 408", async () => {
    const d = await daemon("[api]\nbody_timeout_ms = 300\n");
    const reply = await rawExchange(
      d.socket,
      Buffer.from(
        'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"argv"',
      ),
      false,
    );
    expect(reply).toStartWith("HTTP/1.1 408");
    expect(reply).toContain("did not arrive within 300 ms");
    expect((await d.client.listJobs({})).jobs).toHaveLength(0);
  });

  test("the owner beyond its own slots gets 503 naming the limit, and its connection is closed", async () => {
    const d = await daemon("[api]\nmax_connections = 3\nmax_connections_per_uid = 1\n");
    const held: Socket[] = [];
    // The owner (root, or the user whose planterd it is) is not held to max_connections_per_uid:
    // it has max_connections of its own.
    for (let i = 0; i < 3; i++) {
      const s = createConnection({ path: d.socket });
      await new Promise<void>((r) => s.on("connect", () => r()));
      held.push(s);
    }
    const reply = await rawExchange(d.socket, Buffer.from("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"), false);
    expect(reply).toStartWith("HTTP/1.1 503");
    expect(reply).toContain(`planterd already has 3 open connections from uid ${uid}`);
    expect(reply).toContain("config [api] max_connections");
    for (const s of held) s.destroy();
    await waitFor(
      () =>
        d.client.health().then(
          (h) => h.ok,
          () => false,
        ),
      "connections to be accepted again",
    );
  });
});

/** The name of a group this host has for gid 65534 (nogroup on Debian, nobody elsewhere), or null. */
const nobodyGroup = readFileSync("/etc/group", "utf8").match(/^([^:]+):[^:]*:65534:/m)?.[1] ?? null;

describe.skipIf(process.getuid?.() !== 0 || nobodyGroup === null)(
  "the system group (planterd as root, system mode)",
  () => {
    test("the tests' daemons have none: a root-only socket, whatever groups this host has", async () => {
      const d = await daemon();
      expect([statSync(join(d.home, "run")).mode & 0o7777, statSync(d.socket).mode & 0o7777]).toEqual([0o700, 0o600]);
      expect([statSync(join(d.home, "run")).gid, statSync(d.socket).gid]).toEqual([0, 0]);
      expect(d.stderr()).toContain("no system group ([authz] group or PLANTER_GROUP is empty)");
    });

    test("a named group gets the socket root:GROUP 0660 in a 0750 dir, and its members are served", async () => {
      const d = await startDaemon({ env: { PLANTER_GROUP: nobodyGroup as string } });
      homes.push(d.home);
      daemons.push(d);
      const dir = statSync(join(d.home, "run"));
      const sock = statSync(d.socket);
      expect([dir.uid, dir.gid, dir.mode & 0o7777]).toEqual([0, 65534, 0o750]);
      expect([sock.uid, sock.gid, sock.mode & 0o7777]).toEqual([0, 65534, 0o660]);
      // Only the home is opened up: the group's own permissions let a member through the socket dir.
      chmodSync(d.home, 0o755);
      expect(await asNobody(d, ["run", "--", "echo", "member"], "65534")).toEqual({
        code: 0,
        stdout: "member\n",
        stderr: "",
      });
    });
  },
);

/**
 * A script run as uid 65534 that opens `count` connections to `socket` and never closes one
 * (half-open: it keeps its side open after planterd's); with `request`, it sends a request on
 * each. It prints its tally as a JSON line at every change: connections planterd hung up on
 * (end or close, once each) and the statuses it read.
 */
function hogScript(socket: string, count: number, request: boolean): string {
  return `
const net = require("node:net");
const t = { hungUp: 0, s403: 0, s503: 0, other: 0 };
const say = () => console.log(JSON.stringify(t));
const held = [];
for (let i = 0; i < ${count}; i++) {
  const s = net.createConnection({ path: ${JSON.stringify(socket)}, allowHalfOpen: true });
  held.push(s);
  let seen = "";
  let gone = false;
  const hungUp = () => { if (!gone) { gone = true; t.hungUp++; say(); } };
  ${request ? 's.on("connect", () => s.write("GET /v1/health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"));' : ""}
  s.on("data", (b) => {
    if (seen) return;
    seen = b.toString("latin1").slice(0, 12);
    if (seen.startsWith("HTTP/1.1 403")) t.s403++;
    else if (seen.startsWith("HTTP/1.1 503")) t.s503++;
    else t.other++;
    say();
  });
  s.on("error", () => undefined);
  s.on("end", hungUp);
  s.on("close", hungUp);
}
setInterval(() => undefined, 1 << 30);
`;
}

interface Tally {
  hungUp: number;
  s403: number;
  s503: number;
  other: number;
}

/** Start the hog as uid 65534; `last()` is its latest tally. */
function hog(d: DaemonHandle, count: number, request: boolean) {
  const p = Bun.spawn(
    [
      "setpriv",
      "--reuid",
      "65534",
      "--regid",
      "65534",
      "--clear-groups",
      process.execPath,
      "-e",
      hogScript(d.socket, count, request),
    ],
    { env: { PATH: "/usr/bin:/bin", HOME: "/tmp" }, cwd: "/tmp", stdout: "pipe", stderr: "inherit" },
  );
  let tally: Tally = { hungUp: 0, s403: 0, s503: 0, other: 0 };
  (async () => {
    let buf = "";
    for await (const chunk of p.stdout) {
      buf += new TextDecoder().decode(chunk);
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      const last = lines.filter(Boolean).at(-1);
      if (last) tally = JSON.parse(last) as Tally;
    }
  })();
  /** Wait until `cond` holds for the tally; the error says the last tally. */
  const until = (cond: (t: Tally) => boolean, what: string) =>
    waitFor(() => cond(tally), what, 90_000).catch((e) => {
      throw new Error(`${(e as Error).message}; last tally ${JSON.stringify(tally)}`);
    });
  return { proc: p, last: () => tally, until };
}

/** Socket fds planterd holds (its listener and accepted connections). */
function socketFds(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

describe.skipIf(!root)("connection slots (needs root: the hog runs as uid 65534)", () => {
  test("a refused uid holding 600 connections gets each closed after its 403 (or 503); root is served meanwhile", async () => {
    const d = await daemon(
      "[api]\nmax_connections = 20\nmax_connections_per_uid = 10\nheader_timeout_ms = 600000\nidle_timeout_ms = 600000\n",
    );
    exposeSocket(d);
    const h = hog(d, 600, true);
    try {
      // planterd hangs up on every one, though the hog closes none.
      await h.until((t) => t.hungUp === 600, "planterd to hang up on all 600 connections");
      expect(h.last().s403).toBeGreaterThanOrEqual(10);
      expect(h.last().other).toBe(0);
      expect(h.proc.exitCode).toBeNull();
      expect(await d.client.health()).toEqual({ ok: true });
      // And holds none of them: its socket fds are its listener and a few of the test's own.
      await waitFor(() => socketFds(d.proc.pid) < 10, "planterd to let go of the hog's sockets");
    } finally {
      h.proc.kill("SIGKILL");
      await h.proc.exited;
    }
  }, 180_000);

  test("an allowed uid holding idle connections gets its share only; root and other uids are still served", async () => {
    const d = await daemon(
      "[authz]\nallowed_uids = [65534, 65533]\n[api]\nmax_connections = 20\nmax_connections_per_uid = 10\nheader_timeout_ms = 600000\n",
    );
    exposeSocket(d);
    const h = hog(d, 600, false);
    try {
      // Ten are held open (its share); planterd refuses and hangs up on the other 590.
      await h.until((t) => t.hungUp >= 590, "planterd to hang up on all but 10 connections");
      expect(socketFds(d.proc.pid)).toBeLessThan(30);
      // The owner and root (the same uid here) are served; so is another uid in the shared slots.
      expect(await d.client.health()).toEqual({ ok: true });
      const other = Bun.spawn(
        [
          "setpriv",
          "--reuid",
          "65533",
          "--regid",
          "65533",
          "--clear-groups",
          process.execPath,
          "-e",
          `const r = await fetch("http://x/v1/health", { unix: ${JSON.stringify(d.socket)} }); console.log(r.status)`,
        ],
        { env: { PATH: "/usr/bin:/bin", HOME: "/tmp" }, cwd: "/tmp", stdout: "pipe" },
      );
      expect((await new Response(other.stdout).text()).trim()).toBe("200");
      // The ten it holds were its share, not cut off.
      expect(h.last().hungUp).toBe(590);
    } finally {
      h.proc.kill("SIGKILL");
      await h.proc.exited;
    }
  }, 180_000);
});
