/** The compiled multi-call binary: version, entry links, a daemon and `planter run` end to end. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../../lib/api/client.ts";
import { cleanup, ROOT, tempHome, waitFor } from "../harness.ts";

const dir = mkdtempSync("/tmp/pt-bin-");
const bin = join(dir, "planter");
const home = tempHome();
let daemon: Subprocess | null = null;
// PLANTER_GROUP="": a root planterd has no system group, whether or not this host has group planter.
const env = {
  PATH: `${dir}:/usr/bin:/bin`,
  HOME: process.env.HOME ?? "/root",
  NO_COLOR: "1",
  PLANTER_HOME: home,
  PLANTER_GROUP: "",
};

const runBin = async (argv: string[]) => {
  const p = Bun.spawn(argv, { env, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
};

beforeAll(async () => {
  const b = Bun.spawnSync([".ci/compile", bin, "e2e0commit"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (b.exitCode !== 0) throw new Error(`build failed: ${b.stderr.toString()}`);
  for (const e of ["planterd", "logs", "doctor"]) symlinkSync("planter", join(dir, e));
});

afterAll(async () => {
  daemon?.kill("SIGTERM");
  await daemon?.exited;
  cleanup(dir);
  cleanup(home);
});

test("--version prints the version and the commit it was built from", async () => {
  const r = await runBin([bin, "--version"]);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^planter \d+\.\d+\.\d+ \(e2e0commit\)\n$/);
});

test("the planterd link runs the daemon, and planter run passes exit codes through", async () => {
  daemon = Bun.spawn(["planterd"], { env, stdout: "ignore", stderr: "pipe" });
  const c = new Client(join(home, "run", "planterd.sock"));
  await waitFor(
    () =>
      c.health().then(
        (h) => h.ok,
        () => false,
      ),
    "the compiled daemon to answer",
    20_000,
  );
  expect((await c.version()).commit).toBe("e2e0commit");

  const ok = await runBin([bin, "run", "--", "sh", "-c", "echo compiled; exit 7"]);
  expect(ok).toEqual({ code: 7, stdout: "compiled\n", stderr: "" });

  const id = (await runBin([bin, "run", "-d", "--", "sh", "-c", "echo one; echo two; echo three"])).stdout.trim();
  await c.waitJob(id, 10_000);
  expect(await runBin(["logs", "--tail", "2", id])).toEqual({ code: 0, stdout: "two\nthree\n", stderr: "" });
});

test("the doctor link runs doctor", async () => {
  const r = await runBin(["doctor", "--list-checks"]);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain("daemon.reachable");
  expect(r.stdout).toContain("sandbox.backend");
});

test("a release tarball installs with nothing else on PATH: tar xf … && ./install", async () => {
  const stage = mkdtempSync("/tmp/pt-rel-");
  // As root, a user-mode planterd runs jobs as nobody, who must pass through to its cell.
  chmodSync(stage, 0o711);
  const version = (await Bun.file(join(ROOT, "package.json")).json()).version as string;
  const b = Bun.spawnSync(["bash", ".ci/dist", version, "e2e0commit", "linux-x64"], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  expect(b.exitCode).toBe(0);
  const tarball = join(ROOT, "dist", "release", `planter-${version}-linux-x64.tar.gz`);
  const x = Bun.spawnSync(["tar", "-xzf", tarball, "-C", stage]);
  expect(x.exitCode).toBe(0);
  const top = join(stage, `planter-${version}-linux-x64`);
  expect(["README.md", "doctor", "install", "planter", "uninstall"].every((f) => existsSync(join(top, f)))).toBe(true);
  const home = join(stage, "home");
  const runtime = join(stage, "run");
  mkdirSync(join(home, ".local", "state"), { recursive: true });
  mkdirSync(runtime, { mode: 0o700 });
  // Only the system's own tools: no bun, no node, no checkout.
  const env = {
    PATH: "/usr/bin:/bin:/usr/sbin:/sbin",
    HOME: home,
    XDG_RUNTIME_DIR: runtime,
    PLANTER_MODE: "user",
    NO_COLOR: "1",
  };
  const run = async (argv: string[]) => {
    const p = Bun.spawn(argv, { env, cwd: top, stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    return { code, stdout, stderr };
  };
  const i = await run(["./install", "--user", "--systemd", "no"]);
  expect(i.code).toBe(0);
  expect(i.stdout).toContain("planterd answers on");
  const bin = join(home, ".local", "bin", "planter");
  expect(await run([bin, "run", "--", "echo", "from-tarball"])).toEqual({
    code: 0,
    stdout: "from-tarball\n",
    stderr: "",
  });
  expect((await run([bin, "--version"])).stdout).toBe(`planter ${version} (e2e0commit)\n`);
  expect((await run(["./uninstall", "--user", "--purge", "--yes"])).code).toBe(0);
  expect(existsSync(bin)).toBe(false);
  cleanup(stage);
});
