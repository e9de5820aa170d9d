/**
 * An ssh:// target against a real sshd on 127.0.0.1 and a second planterd running as a user made
 * for the test: the CLI reaches it through a ControlMaster's Unix-socket forward, runs a job, reads
 * its logs and lists it; host keys are always checked; a dead master is replaced. Root only.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { baseEnv, PLANTER } from "../harness.ts";
import {
  createUser,
  haveSshd,
  type Sshd,
  startSshd,
  startUserDaemon,
  type TestUser,
  type UserDaemon,
} from "../ssh-fixture.ts";

let user: TestUser;
let sshd: Sshd;
let remote: UserDaemon;
/** The client's own PLANTER_HOME (its config holds the targets; no daemon runs there). */
let home: string;

async function planter(args: string[], extra: Record<string, string> = {}) {
  const proc = Bun.spawn([process.execPath, PLANTER, ...args], {
    env: baseEnv(home, extra),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

const url = (socket = remote.socket) => `ssh://${user.name}@127.0.0.1:${sshd.port}?socket=${socket}`;
const ctl = (name: string) => join(home, "targets", `${name}.ctl`);
const masterAlive = (name: string) =>
  Bun.spawnSync(["ssh", "-O", "check", "-o", `ControlPath=${ctl(name)}`, "x"], { stderr: "pipe" }).exitCode === 0;

beforeAll(async () => {
  if (!haveSshd) return;
  user = createUser();
  sshd = await startSshd(user);
  remote = await startUserDaemon(user);
  home = mkdtempSync("/tmp/pt-sshc-");
}, 60_000);

afterAll(async () => {
  if (!haveSshd) return;
  for (const name of ["box", "box2", "stranger", "changed", "nosock"])
    Bun.spawnSync(["ssh", "-O", "exit", "-o", `ControlPath=${ctl(name)}`, "x"], { stderr: "ignore" });
  await remote?.stop();
  await sshd?.stop();
  user?.remove();
  rmSync(home, { recursive: true, force: true });
});

describe.skipIf(!haveSshd)("ssh:// targets (a real sshd on 127.0.0.1, planterd as a test user; needs root)", () => {
  test("add, then run a job there, read its logs, list it: the remote planterd has it, run as its user", async () => {
    const add = await planter([
      "target",
      "add",
      "box",
      url(),
      "--identity",
      sshd.userKey,
      "--known-hosts",
      sshd.knownHosts,
    ]);
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    const run = await planter(["--target", "box", "run", "--", "sh", "-c", "echo hello from $(id -un); echo err >&2"]);
    if (run.code !== 0) console.log(sshd.log(), remote.stderr());
    expect(run.stderr).toBe("err\n");
    expect(run.stdout).toBe(`hello from ${user.name}\n`);
    expect(run.code).toBe(0);
    // The job is the remote daemon's, as its own client sees it.
    const jobs = (await remote.client.listJobs({})).jobs;
    expect(jobs.map((j) => j.argv.at(-1))).toEqual(["echo hello from $(id -un); echo err >&2"]);
    const id = jobs[0]?.id as string;
    const logs = await planter(["logs", "--target", "box", id]);
    expect(logs.stdout).toBe(`hello from ${user.name}\n`);
    const ls = await planter(["job", "ls", "--target", "box", "--json"]);
    expect((JSON.parse(ls.stdout) as { id: string }[]).map((j) => j.id)).toEqual([id]);
    // The master stayed, with its forward in the user's 0700 directory.
    expect(masterAlive("box")).toBe(true);
    expect(statSync(join(home, "targets")).mode & 0o777).toBe(0o700);
    expect(statSync(join(home, "targets", "box.sock")).mode & 0o777).toBe(0o600);
  }, 60_000);

  test("target check says ok with the remote version; a killed master is replaced on the next command", async () => {
    const check = await planter(["target", "check", "box", "--json"]);
    expect(check.code).toBe(0);
    const c = JSON.parse(check.stdout) as { target: string; health: string; api: number };
    expect([c.target, c.health, c.api]).toEqual(["box", "ok", 1]);
    const pid = Number(
      /pid=(\d+)/.exec(
        Bun.spawnSync(["ssh", "-O", "check", "-o", `ControlPath=${ctl("box")}`, "x"], {
          stderr: "pipe",
        }).stderr.toString(),
      )?.[1],
    );
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, "SIGKILL");
    expect(masterAlive("box")).toBe(false);
    // The forward's socket is stale now; the next command starts a master anew.
    const ls = await planter(["job", "ls", "--target", "box", "--json"]);
    expect(ls.stderr).toBe("");
    expect(ls.code).toBe(0);
    expect(masterAlive("box")).toBe(true);
    // So is a request that is never sent twice (a run): the refused connect sent nothing.
    const pid2 = Number(
      /pid=(\d+)/.exec(
        Bun.spawnSync(["ssh", "-O", "check", "-o", `ControlPath=${ctl("box")}`, "x"], {
          stderr: "pipe",
        }).stderr.toString(),
      )?.[1],
    );
    process.kill(pid2, "SIGKILL");
    expect(masterAlive("box")).toBe(false);
    const run = await planter(["--target", "box", "run", "--", "echo", "after"]);
    expect([run.code, run.stdout, run.stderr]).toEqual([0, "after\n", ""]);
    expect(masterAlive("box")).toBe(true);
  }, 60_000);

  test("an unknown host key is refused (exit 4, nothing sent), never accepted; the hint names known_hosts", async () => {
    const empty = join(home, "empty_known_hosts");
    writeFileSync(empty, "");
    await planter(["target", "add", "stranger", url(), "--identity", sshd.userKey, "--known-hosts", empty]);
    const before = (await remote.client.listJobs({})).jobs.length;
    const r = await planter(["--target", "stranger", "run", "--", "true"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("its host key is not in");
    expect(r.stderr).toContain("ssh-keyscan -p");
    expect(r.stderr).toContain(empty);
    // Still unknown: nothing was added to the file, nothing reached the daemon.
    expect(await Bun.file(empty).text()).toBe("");
    expect((await remote.client.listJobs({})).jobs.length).toBe(before);
    expect(existsSync(join(home, "targets", "stranger.sock"))).toBe(false);
  }, 30_000);

  test("a changed host key is refused (exit 4) with how to look into it", async () => {
    const other = join(home, "changed_known_hosts");
    const otherKey = join(home, "other_key");
    Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", otherKey]);
    writeFileSync(other, `[127.0.0.1]:${sshd.port} ${(await Bun.file(`${otherKey}.pub`).text()).trim()}\n`);
    await planter(["target", "add", "changed", url(), "--identity", sshd.userKey, "--known-hosts", other]);
    const r = await planter(["--target", "changed", "job", "ls"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("its host key is not the one in");
    expect(r.stderr).toContain("ssh-keygen -f");
  }, 30_000);

  test("no planterd socket at the remote path: exit 3 naming the path; the master is not left behind", async () => {
    const missing = `${remote.home}/nothing.sock`;
    await planter([
      "target",
      "add",
      "nosock",
      url(missing),
      "--identity",
      sshd.userKey,
      "--known-hosts",
      sshd.knownHosts,
    ]);
    const r = await planter(["--target", "nosock", "job", "ls"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`no planterd socket at ${missing} on target nosock`);
    expect(masterAlive("nosock")).toBe(false);
  }, 30_000);

  test("a remote socket in a directory others may write is refused (exit 4) before anything is sent", async () => {
    // The user's own daemon socket, reached through a world-writable, non-sticky directory's symlink.
    const open = mkdtempSync("/tmp/pt-sshw-");
    chmodSync(open, 0o777);
    symlinkSync(remote.socket, join(open, "p.sock"));
    try {
      await planter([
        "target",
        "add",
        "box2",
        url(join(open, "p.sock")),
        "--identity",
        sshd.userKey,
        "--known-hosts",
        sshd.knownHosts,
      ]);
      const r = await planter(["--target", "box2", "job", "ls"]);
      expect(r.code).toBe(4);
      expect(r.stderr).toContain("is writable by others (mode 777), so the socket could be swapped");
    } finally {
      rmSync(open, { recursive: true, force: true });
    }
  }, 30_000);

  test("a remote socket that never answers: each try ends after 5 s, two more follow, then exit 3", async () => {
    const dir = mkdtempSync("/tmp/pt-sshh-");
    chmodSync(dir, 0o755);
    const sock = join(dir, "hang.sock");
    let connections = 0;
    const listener = Bun.listen({
      unix: sock,
      socket: {
        open() {
          connections++;
        },
        data() {},
      },
    });
    chmodSync(sock, 0o666);
    try {
      await planter(["target", "add", "hang", url(sock), "--identity", sshd.userKey, "--known-hosts", sshd.knownHosts]);
      const t0 = performance.now();
      const r = await planter(["--target", "hang", "job", "ls"]);
      const s = (performance.now() - t0) / 1000;
      expect(r.code).toBe(3);
      expect(r.stderr).toContain("within 5000 ms");
      // Three tries of 5 s and two backoffs (0.1–0.2 s, then 0.2–0.4 s), the master's start besides.
      expect(s).toBeGreaterThanOrEqual(15);
      expect(s).toBeLessThan(25);
      // The listener check's connection, then one per try.
      expect(connections).toBeGreaterThanOrEqual(3);
    } finally {
      listener.stop(true);
      Bun.spawnSync(["ssh", "-O", "exit", "-o", `ControlPath=${ctl("hang")}`, "x"], { stderr: "ignore" });
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("commands started at once share one master (a lock while it starts)", async () => {
    Bun.spawnSync(["ssh", "-O", "exit", "-o", `ControlPath=${ctl("box")}`, "x"], { stderr: "ignore" });
    expect(masterAlive("box")).toBe(false);
    const runs = await Promise.all([0, 1, 2].map(() => planter(["--target", "box", "job", "ls", "--json"])));
    expect(runs.map((r) => [r.code, r.stderr])).toEqual([
      [0, ""],
      [0, ""],
      [0, ""],
    ]);
    const masters = Bun.spawnSync(["pgrep", "-f", `ControlPath=${ctl("box")}`], { stdout: "pipe" })
      .stdout.toString()
      .trim()
      .split("\n")
      .filter(Boolean);
    expect(masters).toHaveLength(1);
  }, 60_000);

  test("target rm stops the master", async () => {
    expect(masterAlive("box")).toBe(true);
    const r = await planter(["target", "rm", "box", "--json"]);
    expect(JSON.parse(r.stdout)).toEqual({ name: "box", removed: true, ssh_stopped: true });
    expect(masterAlive("box")).toBe(false);
  }, 30_000);
});
