/**
 * The release tarball (the slow lane: .ci/dist compiles it again): it installs with nothing else on
 * PATH — no bun, no node, no checkout — runs a job, and uninstalls.
 */
import { expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { join } from "node:path";
import { cleanup, ROOT } from "../harness.ts";
import { TEST_COMMIT } from "../host-fixture.ts";

test("a release tarball installs with nothing else on PATH: tar xf … && ./install", async () => {
  const stage = mkdtempSync("/tmp/pt-rel-");
  // As root, a user-mode planterd runs jobs as nobody, who must pass through to its cell.
  chmodSync(stage, 0o711);
  const version = (await Bun.file(join(ROOT, "package.json")).json()).version as string;
  // Built where the test says, not into the checkout's dist/.
  const out = join(stage, "release");
  const b = Bun.spawnSync(["bash", ".ci/dist", version, TEST_COMMIT, "linux-x64"], {
    cwd: ROOT,
    env: { ...process.env, DIST_DIR: out },
    stdout: "pipe",
    stderr: "pipe",
  });
  expect([b.exitCode, b.stderr.toString()]).toEqual([0, ""]);
  expect(b.stdout.toString()).toBe(`${out}/planter-${version}-linux-x64.tar.gz\n${out}/SHA256SUMS\n`);
  const tarball = join(out, `planter-${version}-linux-x64.tar.gz`);
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
  expect((await run([bin, "--version"])).stdout).toBe(`planter ${version} (${TEST_COMMIT})\n`);
  expect((await run(["./uninstall", "--user", "--purge", "--yes"])).code).toBe(0);
  expect(existsSync(bin)).toBe(false);
  cleanup(stage);
}, 180_000);
