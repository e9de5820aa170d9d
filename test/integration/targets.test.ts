/**
 * `planter target add|ls|rm|check` and `--target NAME` through the CLI: the registry in the
 * config file, refusals that change nothing, a unix:// target reaching a second planterd, and
 * `target check` over several targets with one down (partial, exit 5).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cli, type DaemonHandle, startDaemon } from "../harness.ts";

let local: DaemonHandle;
let other: DaemonHandle;
let home: string;
const config = () => join(home, "config.toml");
const planter = (...args: string[]) => cli(home, args);

beforeAll(async () => {
  local = await startDaemon();
  other = await startDaemon();
  home = local.home;
});
afterAll(async () => {
  await local.stop();
  await other.stop();
  rmSync(other.home, { recursive: true, force: true });
  rmSync(local.home, { recursive: true, force: true });
});

describe("the registry", () => {
  test("add writes [targets.NAME] beside what the file had; ls lists it; --json is exact", async () => {
    const before = readFileSync(config(), "utf8");
    const r = await planter("target", "add", "two", `unix://${other.socket}`, "--json");
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual({ name: "two", urls: [`unix://${other.socket}`] });
    expect(readFileSync(config(), "utf8")).toBe(
      `${before.replace(/\n*$/, "")}\n\n[targets.two]\nurls = ["unix://${other.socket}"]\n`,
    );
    const ls = JSON.parse((await planter("target", "ls", "--json")).stdout) as { name: string; default: boolean }[];
    expect(ls.map((t) => [t.name, t.default])).toEqual([
      ["local", true],
      ["lima", false],
      ["two", false],
    ]);
  });

  test("--target NAME reaches that planterd; the local one sees nothing of it", async () => {
    const run = await planter("--target", "two", "run", "--", "echo", "there");
    expect([run.code, run.stdout]).toEqual([0, "there\n"]);
    expect((await other.client.listJobs({})).jobs.length).toBe(1);
    expect((await local.client.listJobs({})).jobs.length).toBe(0);
    const env = await cli(home, ["job", "ls", "--json"], { env: { PLANTER_TARGET: "two" } });
    expect((JSON.parse(env.stdout) as unknown[]).length).toBe(1);
  });

  test("refusals change nothing: bad name, bad URL, an option of another kind, a loose token file, a taken name", async () => {
    const before = readFileSync(config(), "utf8");
    const token = join(home, "token");
    writeFileSync(token, "secret\n");
    chmodSync(token, 0o644);
    const cases: [string[], number, string][] = [
      [["target", "add", "Two", "lima"], 2, 'bad target name "Two"'],
      [["target", "add", "local", "lima"], 2, "reserved"],
      [["target", "add", "x", "ssh://host?socket=/a:b"], 2, "bad target URL"],
      [["target", "add", "x", "ftp://host"], 2, "unknown scheme ftp://"],
      [["target", "add", "x", "ssh://host", "--ca", token], 2, "--ca is for https:// targets only"],
      [["target", "add", "x", "https://h:1", "--token-file", token], 2, "must be 0600"],
      [["target", "add", "x", "https://h:1", "--token-file", join(home, "none")], 2, "no such file"],
      [["target", "add", "x", "https://h:1", "--cert", token], 2, "--cert and --key go together"],
      [["target", "add", "two", "lima"], 1, "there is a target two already"],
      [["target", "rm", "nope"], 1, 'there is no target "nope"'],
      [["--target", "nope", "job", "ls"], 2, '--target must be one of local, lima, two, not "nope"'],
    ];
    for (const [args, code, text] of cases) {
      const r = await planter(...args);
      expect([args.join(" "), r.code]).toEqual([args.join(" "), code]);
      expect(r.stderr).toContain(text);
    }
    expect(readFileSync(config(), "utf8")).toBe(before);
  });

  test("check: ok for both; with one down, exit 5 and the down one's error; the one named alone gives its own code", async () => {
    const ok = await planter("target", "check", "--json");
    expect(ok.code).toBe(0);
    const checks = JSON.parse(ok.stdout) as { target: string; health: string }[];
    expect(checks.map((c) => [c.target, c.health])).toEqual([
      ["local", "ok"],
      ["two", "ok"],
    ]);
    await planter("target", "add", "gone", `unix://${join(home, "nothing.sock")}`);
    const partial = await planter("target", "check", "--json");
    expect(partial.code).toBe(5);
    const p = JSON.parse(partial.stdout) as { target: string; health: string; error?: { code: string } }[];
    expect(p.map((c) => [c.target, c.health, c.error?.code ?? null])).toEqual([
      ["local", "ok", null],
      ["gone", "down", "E_DAEMON_UNREACHABLE"],
      ["two", "ok", null],
    ]);
    const alone = await planter("target", "check", "gone");
    expect(alone.code).toBe(3);
    expect(alone.stderr).toContain("gone: cannot reach planterd");
  });

  test("rm removes only that table; the file keeps its mode", async () => {
    chmodSync(config(), 0o640);
    const r = await planter("target", "rm", "gone", "--json");
    expect(JSON.parse(r.stdout)).toEqual({ name: "gone", removed: true, ssh_stopped: false });
    expect(readFileSync(config(), "utf8")).not.toContain("gone");
    expect(readFileSync(config(), "utf8")).toContain("[targets.two]");
    expect(statSync(config()).mode & 0o777).toBe(0o640);
  });

  test("a default target cannot be removed; a config naming an unknown default fails closed", async () => {
    const text = readFileSync(config(), "utf8");
    writeFileSync(config(), `[client]\ntarget = "two"\n${text}`);
    try {
      const rm = await planter("target", "rm", "two");
      expect([rm.code, rm.stderr.split("\n")[0]]).toEqual([
        1,
        `planter: target two is the default ([client] target in ${config()})`,
      ]);
      const ls = await planter("job", "ls", "--json");
      expect(JSON.parse(ls.stdout)).toHaveLength(1); // the default: two's one job
      writeFileSync(config(), `[client]\ntarget = "three"\n${text}`);
      const bad = await planter("job", "ls");
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('client.target: "three" is not a target');
    } finally {
      writeFileSync(config(), text);
    }
  });
});
