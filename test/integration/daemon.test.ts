import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import { baseEnv, cleanup, exitWithin, PLANTER, pidAlive, startDaemon, tempHome, waitFor } from "../harness.ts";

const homes: string[] = [];
afterAll(() => {
  for (const h of homes) cleanup(h);
});
const home = () => {
  const h = tempHome();
  homes.push(h);
  return h;
};

/** Run `planter daemon` expecting it to refuse to start. */
async function refused(h: string, extraArgs: string[] = []) {
  const p = Bun.spawn([process.execPath, PLANTER, "daemon", ...extraArgs], {
    env: baseEnv(h),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [code, stderr] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  return { code, stderr };
}

describe("planterd", () => {
  test("health, ready and version answer; socket 0600 in a 0700 dir", async () => {
    await using d = await startDaemon({ home: home() });
    expect(await d.client.health()).toEqual({ ok: true });
    const v = await d.client.version();
    expect(v).toEqual({ version: v.version, commit: v.commit, api: 1, backend: "bwrap", sandbox_mode: "disabled" });
    expect(v.version).toMatch(/^\d+\.\d+\.\d+/);
    const ready = await d.client.ready();
    expect(ready.ready).toBe(true);
    expect(statSync(d.socket).mode & 0o777).toBe(0o600);
    expect(statSync(join(d.home, "run")).mode & 0o777).toBe(0o700);
    // As root, job users must pass through to their cells: search permission, no listing.
    expect(statSync(join(d.home, "state")).mode & 0o777).toBe(process.getuid?.() === 0 ? 0o711 : 0o700);
    expect(statSync(join(d.home, "state", "jobs")).mode & 0o777).toBe(0o700);
    expect(statSync(join(d.home, "state", "planter.db")).mode & 0o777).toBe(0o600);
    expect(await d.stop()).toBe(0);
    expect(existsSync(d.socket)).toBe(false);
  });

  test("the tests' daemon handle stops planterd at the end of its await using scope", async () => {
    let pid = 0;
    {
      await using d = await startDaemon({ home: home() });
      pid = d.proc.pid;
      expect(pidAlive(pid)).toBe(true);
    }
    expect(pidAlive(pid)).toBe(false);
  });

  test("a second daemon on the same socket refuses with a clear message", async () => {
    await using d = await startDaemon({ home: home() });
    const r = await refused(d.home, ["--state-dir", join(d.home, "other-state")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`another planterd is already serving on ${d.socket}`);
    expect(await d.client.health()).toEqual({ ok: true });
  });

  test("a second daemon on another socket but the same state dir refuses", async () => {
    await using d = await startDaemon({ home: home() });
    const r = await refused(d.home, ["--socket", join(d.home, "other", "other.sock")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("is using the state dir");
  });

  test("a stale socket file (nothing answers) is replaced", async () => {
    const h = home();
    mkdirSync(join(h, "run"), { mode: 0o700 });
    const sock = join(h, "run", "planterd.sock");
    // Leave a socket file behind with nobody listening: a server that dies without unlinking.
    const child = Bun.spawn([
      "bun",
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    await child.exited;
    expect(existsSync(sock)).toBe(true);
    await using d = await startDaemon({ home: h });
    expect(await d.client.health()).toEqual({ ok: true });
  });

  test("a path that is not a socket is not removed", async () => {
    const h = home();
    mkdirSync(join(h, "run"), { mode: 0o700 });
    writeFileSync(join(h, "run", "planterd.sock"), "keep me");
    const r = await refused(h);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("exists and is not a socket");
    expect(await Bun.file(join(h, "run", "planterd.sock")).text()).toBe("keep me");
  });

  test("SIGTERM stops the daemon, leaves jobs running, and finishes in-flight requests", async () => {
    const d = await startDaemon({ home: home() });
    const j = await d.client.createJob({ argv: ["sleep", "300"] });
    const pending = d.client.waitJob(j.id, 60_000);
    // Once the wait is in flight (this ready request is the other one), SIGTERM must end it with an answer.
    await waitFor(async () => (await d.client.ready()).requests_in_flight >= 2, "the wait request to be in flight");
    const code = await d.stop();
    expect(code).toBe(0);
    const r = await pending;
    expect(r).toEqual({ job: r.job, timed_out: true });
    expect(pidAlive(j.pid as number)).toBe(true);
    process.kill(-(j.pid as number), "SIGKILL");
    await waitFor(() => !pidAlive(j.pid as number), "the job to die");
  });

  test("an unknown config key stops startup with its path", async () => {
    const h = home();
    writeFileSync(join(h, "config.toml"), "[jobs]\nkill_grace = 5\n");
    const r = await refused(h);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("jobs.kill_grace");
    expect(r.stderr).toContain("config.toml");
  });

  test("a bad config value stops startup with what was expected", async () => {
    const h = home();
    writeFileSync(join(h, "config.toml"), '[jobs]\nkill_grace_ms = "soon"\n');
    const r = await refused(h);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("jobs.kill_grace_ms");
    expect(r.stderr).toContain("Expected number");
  });

  test("a TOML syntax error stops startup", async () => {
    const h = home();
    writeFileSync(join(h, "config.toml"), "[jobs\n");
    const r = await refused(h);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("cannot parse config");
  });

  test("a corrupt database stops startup with a hint", async () => {
    const h = home();
    mkdirSync(join(h, "state"), { recursive: true });
    writeFileSync(join(h, "state", "planter.db"), "this is not a database at all, just text ".repeat(200));
    const r = await refused(h);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("failed its integrity check");
    expect(r.stderr).toContain("hint: stop planterd, move");
  });

  test("a socket path too long for a Unix socket is refused", async () => {
    const r = await refused(home(), ["--socket", `/tmp/${"x".repeat(120)}.sock`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("longer than a Unix socket allows");
  });
});

/**
 * Start planterd under systemd-socket-activate listening on `sock`, and give the socket `mode`
 * (as planterd.socket's SocketMode would) before the first connection starts the daemon.
 * Disposable: the activator (or the planterd it became) is killed at the end of its scope.
 */
async function activate(h: string, sock: string, mode: number) {
  // systemd-socket-activate passes only the variables named with -E.
  const pass = ["PATH", "HOME", "PLANTER_HOME", "PLANTER_GROUP="].flatMap((k) => ["-E", k]);
  const p = Bun.spawn(["systemd-socket-activate", "-l", sock, ...pass, process.execPath, PLANTER, "daemon"], {
    env: baseEnv(h),
    stdout: "ignore",
    stderr: "pipe",
  });
  let err = "";
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of p.stderr) err += decoder.decode(chunk, { stream: true });
  })();
  // Not the socket file: the activator binds (the file appears) before it listens, and a connection
  // in between is refused, so it never starts planterd. It says when it listens.
  await waitFor(() => {
    if (p.exitCode !== null) throw new Error(`systemd-socket-activate exited ${p.exitCode}: ${err}`);
    return err.includes(`Listening on ${sock} as 3.`);
  }, "the activator to listen");
  chmodSync(sock, mode);
  return {
    proc: p,
    /** Everything the activator and planterd wrote to stderr, once the process has exited. */
    stderr: async () => {
      await p.exited;
      await reading;
      return err;
    },
    async [Symbol.asyncDispose]() {
      if (p.exitCode === null) p.kill("SIGKILL");
      await p.exited;
    },
  };
}

/** Open a connection to `sock`, which starts the activated planterd; fails at once if nothing listens. */
function connect(sock: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ path: sock });
    s.once("connect", () => resolve(s));
    s.once("error", (e) => reject(new Error(`cannot connect to the activator's socket ${sock}: ${e.message}`)));
  });
}

test("socket activation: planterd serves on the inherited fd 3", async () => {
  const h = home();
  mkdirSync(join(h, "run"), { mode: 0o700 });
  const sock = join(h, "run", "planterd.sock");
  await using a = await activate(h, sock, 0o600);
  const { Client } = await import("../../lib/api/client.ts");
  const c = new Client(sock);
  // systemd-socket-activate starts planterd on the first connection.
  await waitFor(
    () =>
      c.health().then(
        (x) => x.ok,
        () => false,
      ),
    "the activated daemon to answer",
    20_000,
  );
  const j = await c.createJob({ argv: ["echo", "activated"] });
  expect((await c.waitJob(j.id, 10_000)).job.exit_code).toBe(0);
  expect(existsSync(join(h, "state", "jobs", j.id, "stdout"))).toBe(true);
  a.proc.kill("SIGTERM");
  expect(await exitWithin(a.proc, 20_000, "planterd after SIGTERM")).toBe(0);
  expect(await a.stderr()).toContain("socket-activated");
  // The socket belongs to the activator: planterd leaves it in place.
  expect(existsSync(sock)).toBe(true);
});

test("socket activation: an inherited socket with the wrong mode or path is refused", async () => {
  const h = home();
  mkdirSync(join(h, "run"), { mode: 0o700 });
  const sock = join(h, "run", "planterd.sock");
  // A connection only starts planterd: it is held until planterd has exited, and nothing is asked on it.
  {
    await using loose = await activate(h, sock, 0o644);
    const conn = await connect(sock);
    expect(await exitWithin(loose.proc, 20_000, "planterd on a socket of mode 0644")).toBe(1);
    conn.destroy();
    const err = await loose.stderr();
    expect(err).toContain(`insecure socket layout: socket ${sock} has mode 0644, not 0600`);
    expect(err).toContain(`hint: fix it, then start planterd again: chmod 0600 ${sock}`);
  }
  const other = join(h, "run", "other.sock");
  await using moved = await activate(h, other, 0o600);
  const conn = await connect(other);
  expect(await exitWithin(moved.proc, 20_000, "planterd on another socket path")).toBe(1);
  conn.destroy();
  expect(await moved.stderr()).toContain(`the inherited socket is ${other}, not ${sock}`);
});
