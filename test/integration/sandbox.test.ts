/** The escape suite: real bubblewrap, enforced mode. Each attempt must be denied; the allowed paths must work. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import type { PlanterError } from "../../lib/api/errors.ts";
import { cleanup, cli, type DaemonHandle, pidAlive, startDaemon, tempHome, waitFor } from "../harness.ts";

let d: DaemonHandle;
let server: Server;
let port = 0;
const tag = `${process.pid}-${Date.now()}`;
const homeProbe = join(homedir(), `.planter-escape-${tag}`);
const hostTmpProbe = `/tmp/planter-escape-${tag}`;

beforeAll(async () => {
  d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\n', env: { PLANTER_TEST_SECRET: "s3cret" } });
  server = createServer((s) => s.end("hello\n"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as { port: number }).port;
  await d.client.createCell({ name: "net", sandbox: { policy: { network: "host" } } });
  await d.client.createCell({ name: "ro", sandbox: { policy: { fs_mode: "read_only" } } });
  await d.client.createCell({ name: "secrets", sandbox: { policy: { env: { pass: ["PLANTER_TEST_SECRET"] } } } });
});
afterAll(async () => {
  server.close();
  await d.stop();
  cleanup(d.home);
  rmSync(homeProbe, { force: true });
  rmSync(hostTmpProbe, { force: true });
});

/** Run `script` with sh in a cell and return the finished job and its output. */
async function sh(script: string, cell = "default"): Promise<{ job: Job; out: string; err: string }> {
  const j = await d.client.createJob({ cell, argv: ["sh", "-c", script] });
  expect([j.sandbox.mode, j.sandbox.backend]).toEqual(["enforced", "bwrap"]);
  const job = (await d.client.waitJob(j.id, 20_000)).job;
  const read = async (stream: "stdout" | "stderr") =>
    Buffer.from((await d.client.logs(j.id, { stream })).data, "base64").toString();
  return { job, out: await read("stdout"), err: await read("stderr") };
}
const cellDir = (name: string) => join(d.home, "state", "cells", name);

describe("denied", () => {
  test("writing host /etc", async () => {
    const r = await sh(`echo x > /etc/planter-escape-${tag}`);
    expect(r.job.exit_code).not.toBe(0);
    expect(r.err).toContain("Read-only file system");
    expect(existsSync(`/etc/planter-escape-${tag}`)).toBe(false);
  });

  test("writing the home dir", async () => {
    const r = await sh(`echo x > ${homeProbe}`);
    expect(r.job.exit_code).not.toBe(0);
    expect(existsSync(homeProbe)).toBe(false);
  });

  test("writing host /tmp: the job's /tmp is private", async () => {
    const r = await sh(`echo inside > ${hostTmpProbe} && cat ${hostTmpProbe}`);
    expect([r.job.exit_code, r.out]).toEqual([0, "inside\n"]);
    expect(existsSync(hostTmpProbe)).toBe(false);
  });

  test("writing the cell in read_only mode", async () => {
    const r = await sh("echo x > ./file", "ro");
    expect(r.job.exit_code).not.toBe(0);
    expect(existsSync(join(cellDir("ro"), "file"))).toBe(false);
  });

  test("writing through a symlink in the cell that points outside", async () => {
    const target = mkdtempSync(join(homedir(), ".planter-escape-dir-"));
    symlinkSync(target, join(cellDir("default"), "link-out"));
    const r = await sh("echo x > link-out/escaped");
    expect(r.job.exit_code).not.toBe(0);
    expect(existsSync(join(target, "escaped"))).toBe(false);
    rmSync(target, { recursive: true });
    rmSync(join(cellDir("default"), "link-out"));
  });

  test("writing .git/hooks and .git/config in the cell", async () => {
    mkdirSync(join(cellDir("default"), ".git", "hooks"), { recursive: true });
    writeFileSync(join(cellDir("default"), ".git", "config"), "[core]\n");
    const r = await sh("echo evil > .git/hooks/pre-commit; echo evil >> .git/config; echo ok > allowed");
    expect(existsSync(join(cellDir("default"), ".git", "hooks", "pre-commit"))).toBe(false);
    expect(readFileSync(join(cellDir("default"), ".git", "config"), "utf8")).toBe("[core]\n");
    expect(readFileSync(join(cellDir("default"), "allowed"), "utf8")).toBe("ok\n");
    expect(r.err).toContain("Read-only file system");
  });

  test("connecting to a listener on host loopback with network none", async () => {
    const r = await sh(`bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port} && echo connected'`);
    expect(r.out).toBe("");
    expect(r.job.exit_code).not.toBe(0);
  });

  test("reaching the planterd socket or reading the state database", async () => {
    const r = await sh(
      `test -e ${d.socket} && echo socket-visible; test -e ${join(d.home, "state", "planter.db")} && echo db-visible; ls ${join(d.home, "state")}; cat ${join(d.home, "state", "planter.db")} > /dev/null 2>&1 && echo db-read; echo done`,
    );
    // Only the mountpoints of the job's own cell and home show in the (empty, read-only) cover.
    expect(r.out).toBe("cells\nhomes\ndone\n");
  });

  test("reading a daemon variable the policy did not pass", async () => {
    const r = await sh('echo "secret=[$PLANTER_TEST_SECRET]"');
    expect(r.out).toBe("secret=[]\n");
    const passed = await sh('echo "secret=[$PLANTER_TEST_SECRET]"', "secrets");
    expect(passed.out).toBe("secret=[s3cret]\n");
  });

  test("seeing host processes (own pid namespace)", async () => {
    const r = await sh("ls /proc | grep -c '^[0-9]'; test -e /proc/1/cmdline && tr '\\0' ' ' < /proc/1/cmdline");
    const [count] = r.out.split("\n");
    expect(Number(count)).toBeLessThanOrEqual(6);
    expect(r.out).toContain("bwrap");
    expect(r.out).not.toContain("planter");
  });

  test("capabilities are dropped", async () => {
    const r = await sh("grep CapEff /proc/self/status");
    expect(r.out.trim()).toBe("CapEff:\t0000000000000000");
  });
});

describe("max_pids", () => {
  test("below the 3 processes a bwrap job needs to start is refused at once, naming why; 3 starts it", async () => {
    const e = await d.client
      .createJob({ cell: "default", argv: ["true"], limits: { max_pids: 2 } })
      .catch((x: PlanterError) => x);
    expect(e).toMatchObject({ code: "E_BAD_REQUEST" });
    expect((e as PlanterError).message).toBe(
      "limits.max_pids 2 is below the 3 processes a bwrap job needs to start (bwrap, its init and the job's first process)",
    );
    const j = await d.client.createJob({ cell: "default", argv: ["sh", "-c", "echo ok"], limits: { max_pids: 3 } });
    const end = (await d.client.waitJob(j.id, 20_000)).job;
    expect([end.state, end.exit_code]).toEqual(["exited", 0]);
  });
});

describe("allowed", () => {
  test("writing the cell in writable mode reaches the host", async () => {
    const r = await sh("echo made > made-inside");
    expect(r.job.exit_code).toBe(0);
    expect(readFileSync(join(cellDir("default"), "made-inside"), "utf8")).toBe("made\n");
  });

  test("network with network: host", async () => {
    const r = await sh(`bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port}; head -1 <&3'`, "net");
    expect([r.job.exit_code, r.out]).toEqual([0, "hello\n"]);
  });

  test("job status shows the effective mode, backend and policy", async () => {
    const r = await sh("true", "ro");
    expect(r.job.sandbox).toEqual({
      mode: "enforced",
      backend: "bwrap",
      fallback: false,
      policy: {
        fs_mode: "read_only",
        network: "none",
        read_write: [],
        read_only: [],
        deny: [],
        unix_sockets: [],
        workspace_config: "protect",
        env: { pass: [], set: {} },
      },
    });
    const text = (await cli(d.home, ["job", "status", r.job.id])).stdout;
    expect(text).toContain("sandbox:   enforced (backend bwrap)");
    expect(text).toContain("policy:    fs read_only, network none");
  });

  test("a job may narrow its cell's policy, never widen it", async () => {
    const narrowed = await d.client.createJob({
      cell: "net",
      argv: ["true"],
      sandbox: { policy: { network: "none", fs_mode: "read_only" } },
    });
    expect(narrowed.sandbox.policy?.network).toBe("none");
    const e = (await d.client
      .createJob({ cell: "ro", argv: ["true"], sandbox: { policy: { fs_mode: "writable" } } })
      .catch((x) => x)) as PlanterError;
    expect(e.code).toBe("E_BAD_REQUEST");
    expect(e.message).toContain("widens");
    expect(e.hint).toContain("only narrow");
    const n = (await d.client
      .createJob({ argv: ["true"], sandbox: { policy: { network: "host" } } })
      .catch((x) => x)) as PlanterError;
    expect(n.code).toBe("E_BAD_REQUEST");
  });

  test("a cwd the sandbox hides is refused before anything runs", async () => {
    const e = (await d.client.createJob({ argv: ["true"], cwd: "/tmp" }).catch((x) => x)) as PlanterError;
    expect(e.code).toBe("E_BAD_REQUEST");
    expect(e.message).toBe("cwd /tmp does not exist inside the job's sandbox");
    const inCell = await d.client.createJob({ argv: ["pwd"], cwd: cellDir("default") });
    expect((await d.client.waitJob(inCell.id, 10_000)).job.exit_code).toBe(0);
  });

  test("a policy may not expose planter's state", async () => {
    const e = (await d.client
      .createJob({ argv: ["true"], sandbox: { policy: { read_only: [join(d.home, "state")] } } })
      .catch((x) => x)) as PlanterError;
    expect(e.code).toBe("E_BAD_REQUEST");
    expect(e.message).toContain("overlaps planter's own state");
  });

  test("a sandboxed job's whole tree dies on kill, and it survives a daemon restart", async () => {
    const pidFile = join(cellDir("default"), "inner-pid");
    const j = await d.client.createJob({ argv: ["sh", "-c", `sleep 300 & echo $! > inner-pid; wait`] });
    await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").trim(), "the inner process");
    await d.kill9();
    d = await startDaemon({ home: d.home, config: '[sandbox]\nmode = "enforced"\n' });
    expect((await d.client.getJob(j.id)).state).toBe("running");
    await d.client.killJob(j.id, {});
    const f = (await d.client.waitJob(j.id, 20_000)).job;
    expect(f.state).toBe("killed");
    await waitFor(() => !pidAlive(j.pid as number), "the recorder to end");
    const out = Bun.spawnSync(["pgrep", "-f", `sh -c sleep 300 & echo`]).stdout.toString().trim();
    expect(out).toBe("");
  });
});

describe("without bubblewrap", () => {
  const shimDir = mkdtempSync("/tmp/pt-nobwrap-");
  // A root planterd's jobs run as nobody, who must reach the programs on the daemon's PATH.
  chmodSync(shimDir, 0o755);
  for (const tool of ["sh", "true", "echo", "bun"]) {
    const real = Bun.which(tool);
    if (real) symlinkSync(real, join(shimDir, tool));
  }
  afterAll(() => rmSync(shimDir, { recursive: true, force: true }));

  test("permissive runs the job unsandboxed and says so", async () => {
    const h = tempHome();
    const p = await startDaemon({ home: h, env: { PATH: shimDir }, config: '[sandbox]\nmode = "permissive"\n' });
    const j = await p.client.createJob({ argv: ["echo", "unsandboxed"] });
    const f = (await p.client.waitJob(j.id, 10_000)).job;
    expect([f.state, f.sandbox.mode, f.sandbox.backend, f.sandbox.fallback]).toEqual([
      "exited",
      "permissive",
      "none",
      true,
    ]);
    const kinds: string[] = [];
    for await (const e of p.client.events({})) if (e.subject === `job/${j.id}`) kinds.push(e.kind);
    expect(kinds).toContain("sandbox.fallback");
    await p.stop();
    cleanup(h);
  });

  test("enforced fails the job with sandbox_error, why and how to fix", async () => {
    const h = tempHome();
    const p = await startDaemon({ home: h, env: { PATH: shimDir }, config: '[sandbox]\nmode = "enforced"\n' });
    const j = await p.client.createJob({ argv: ["echo", "never"] });
    expect([j.state, j.reason]).toEqual(["failed", "sandbox_error"]);
    expect(j.message).toContain("bubblewrap (bwrap) is not installed");
    expect(j.message).toContain("apt-get install bubblewrap");
    const r = await cli(h, ["run", "--", "echo", "never"], { env: { PATH: `${shimDir}:/usr/bin:/bin` } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("sandbox_error");
    await p.stop();
    cleanup(h);
  });

  test("a mode the config does not allow is refused", async () => {
    const h = tempHome();
    const p = await startDaemon({ home: h, config: '[sandbox]\nmode = "enforced"\nallowed_modes = ["enforced"]\n' });
    const e = (await p.client
      .createJob({ argv: ["true"], sandbox: { mode: "disabled" } })
      .catch((x) => x)) as PlanterError;
    expect(e.code).toBe("E_BAD_REQUEST");
    expect(e.message).toContain("not allowed");
    await p.stop();
    cleanup(h);
  });
});
