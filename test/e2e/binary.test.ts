/** The compiled multi-call binary: version, entry links, a daemon and `planter run` end to end (the release tarball: test/slow/tarball.test.ts). */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../../lib/api/client.ts";
import { cleanup, tempHome, waitFor } from "../harness.ts";
import { planterBinary, TEST_COMMIT } from "../host-fixture.ts";

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
  // The shared build (test/host-fixture.ts), under the name a release gives it.
  symlinkSync(await planterBinary(), bin);
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
  expect(r.stdout).toMatch(new RegExp(`^planter \\d+\\.\\d+\\.\\d+ \\(${TEST_COMMIT}\\)\\n$`));
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
  expect((await c.version()).commit).toBe(TEST_COMMIT);

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
