/**
 * The step engine of install and uninstall (lib/host/transaction.ts), attacked: the plan a dry run
 * prints is the list of steps that then runs; a dry run changes nothing; a backup that changed since
 * install is never put back. (An install or uninstall killed at every point: test/slow/install-kill.test.ts.)
 * Real installs into throwaway homes and staging roots, with shims for the host programs.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { callLog, planterWith as planter, tree } from "../host-fixture.ts";
import { type Setup, stepsFixture } from "../steps-fixture.ts";

const { root, staging, system, userUnits, userOffline, samePlan, unlessDaemon } = stepsFixture();

describe("the dry run's plan is the list of steps that runs", () => {
  const cases: [string, (n: string) => Setup, boolean][] = [
    ["system mode into a staging root", staging, true],
    ["system mode on this host (accounts, planterd started directly)", system, root],
    ["user mode with live units", userUnits, true],
    ["user mode, units enabled offline", userOffline, true],
  ];
  for (const [what, make, can] of cases)
    test.skipIf(!can)(
      `${what}: install, upgrade, uninstall`,
      async () => {
        const s = make(`plan-${make.name}`);
        const before = s.snapshot();
        const first = await samePlan(s, "install");
        expect(first.length).toBeGreaterThan(2);
        await samePlan(s, "install");
        const un = await samePlan(s, "uninstall");
        expect(un.map((x) => x.id)).toContain("record");
        expect(s.snapshot()).toEqual(before);
      },
      90_000,
    );

  test.skipIf(!root)(
    "the system install's own run: accounts found existing are skipped, not left out",
    async () => {
      const s = system("plan-existing");
      writeFileSync(join(s.env.SHIM_ETC as string, "group"), "planter:x:990:alice\n");
      const steps = await samePlan(s, "install");
      expect(steps.filter((x) => ["group", "membership", "job-user"].includes(x.id)).map((x) => x.outcome)).toEqual([
        "skipped",
        "skipped",
        "applied",
      ]);
      await samePlan(s, "uninstall");
    },
    60_000,
  );
});

describe("a dry run changes nothing", () => {
  test("uninstall --dry-run lists its plan and leaves every file, the record and the daemon alone", async () => {
    const s = userUnits("dry-uninstall");
    expect((await planter(s.env, "install", ...s.args)).code).toBe(0);
    const record = join(s.env.HOME as string, ".local", "state", "planter", "install-state.json");
    const before = tree(s.base, unlessDaemon);
    const recordBefore = readFileSync(record, "utf8");
    const r = await planter(s.env, "uninstall", ...s.uninstallArgs, "--dry-run");
    expect(r.code).toBe(0);
    expect(r.stdout).toStartWith("planter uninstall plan (user mode); nothing was changed:\n");
    expect(r.stdout).toContain("  units        stop and disable planterd.socket and planterd.service");
    expect(tree(s.base, unlessDaemon)).toEqual(before);
    expect(readFileSync(record, "utf8")).toBe(recordBefore);
    // Only the question whether a service manager runs reached systemctl.
    expect(
      callLog(s.env.SHIM_LOG as string)().filter((c) => !c.endsWith("is-system-running") && !c.includes("enable")),
    ).toEqual(["systemctl --user daemon-reload"]);
    expect((await planter(s.env, "uninstall", ...s.uninstallArgs)).code).toBe(0);
  }, 60_000);
});

describe("backups: a saved original is put back only while it is what install saved", () => {
  /** A staging install over the root's own planterd; the backup's path. */
  async function installed(name: string) {
    const s = staging(name);
    const dest = s.opts.root as string;
    expect((await planter(s.env, "install", ...s.args)).code).toBe(0);
    const state = JSON.parse(readFileSync(join(dest, "var", "lib", "planter", "install-state.json"), "utf8"));
    const rec = state.files.find((f: { path: string }) => f.path === "/usr/local/bin/planterd");
    expect(rec).toMatchObject({ existed_before: true, kind: "link" });
    expect(rec.backup_sha256).toBe(new Bun.CryptoHasher("sha256").update("#!/bin/sh\necho older\n").digest("hex"));
    return { s, dest, planterd: join(dest, "usr", "local", "bin", "planterd"), backup: join(dest, rec.backup) };
  }

  test("a backup changed since install is not put back: it stays where it is, on record, and uninstall says how to put it back", async () => {
    const { s, dest, planterd, backup } = await installed("backup-altered");
    writeFileSync(backup, "#!/bin/sh\necho tampered\n");
    const u = await planter(s.env, "uninstall", ...s.uninstallArgs, "--json");
    expect(u.code).toBe(0);
    const r = JSON.parse(u.stdout);
    expect(r.restored).not.toContain("/usr/local/bin/planterd");
    expect(r.removed).toContain("/usr/local/bin/planterd");
    expect(r.kept).toEqual([
      {
        path: backup,
        why: "the saved original of /usr/local/bin/planterd: it changed since install saved it, so it is not put back",
      },
    ]);
    expect(r.warnings).toEqual([
      `kept ${backup}, the saved original of /usr/local/bin/planterd: it changed since install saved it, so it is not put back; if it is what you want there: mv ${backup} ${planterd}`,
    ]);
    expect(existsSync(planterd)).toBe(false);
    expect(readFileSync(backup, "utf8")).toBe("#!/bin/sh\necho tampered\n");
    // --force removes changed files; it does not put back a changed backup either.
    const forced = JSON.parse((await planter(s.env, "uninstall", ...s.uninstallArgs, "--force", "--json")).stdout);
    expect(forced.restored).toEqual([]);
    expect(existsSync(planterd)).toBe(false);
    // Put back by hand (what it holds is the user's call): the next uninstall leaves it and finishes.
    const { renameSync } = await import("node:fs");
    renameSync(backup, planterd);
    const last = JSON.parse((await planter(s.env, "uninstall", ...s.uninstallArgs, "--json")).stdout);
    expect([last.warnings, last.removed, last.restored]).toEqual([[], [], []]);
    expect(readFileSync(planterd, "utf8")).toBe("#!/bin/sh\necho tampered\n");
    expect(existsSync(join(dest, "var", "lib", "planter", "install-state.json"))).toBe(false);
  }, 60_000);

  test("a file the user changed is kept; with --force it goes and the intact backup comes back", async () => {
    const { s, planterd, backup } = await installed("backup-user-changed");
    const { unlinkSync } = await import("node:fs");
    unlinkSync(planterd);
    writeFileSync(planterd, "mine\n");
    const kept = JSON.parse((await planter(s.env, "uninstall", ...s.uninstallArgs, "--json")).stdout);
    expect(kept.kept.map((k: { path: string }) => k.path)).toEqual(["/usr/local/bin/planterd"]);
    expect(readFileSync(planterd, "utf8")).toBe("mine\n");
    expect(existsSync(backup)).toBe(true);
    const forced = JSON.parse((await planter(s.env, "uninstall", ...s.uninstallArgs, "--force", "--json")).stdout);
    expect(forced.restored).toEqual(["/usr/local/bin/planterd"]);
    expect(readFileSync(planterd, "utf8")).toBe("#!/bin/sh\necho older\n");
  }, 60_000);
});

describe("what is in install's way", () => {
  test("a directory where install writes a file: a clear refusal, and uninstall takes back what came before it", async () => {
    const s = staging("not-a-file");
    const before = s.snapshot();
    const dest = s.opts.root as string;
    const planterd = join(dest, "usr", "local", "bin", "planterd");
    const { rmSync } = await import("node:fs");
    rmSync(planterd);
    mkdirSync(planterd);
    const dirBefore = s.snapshot();
    const r = await planter(s.env, "install", ...s.args);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${planterd} is not a file, and install writes a file there`);
    expect(r.stderr).toContain("move it away, then run install again");
    expect((await planter(s.env, "uninstall", ...s.uninstallArgs)).code).toBe(0);
    expect(s.snapshot()).toEqual(dirBefore);
    expect(before).not.toEqual(dirBefore);
  }, 60_000);

  test("a link planted where install writes its temp file is not followed", async () => {
    const s = staging("planted");
    const dest = s.opts.root as string;
    const victim = join(s.base, "victim");
    writeFileSync(victim, "keep me\n");
    for (const name of ["planter", "planterd"])
      symlinkSync(victim, join(dest, "usr", "local", "bin", `${name}.planter-new`));
    mkdirSync(join(dest, "etc", "planter"), { recursive: true });
    symlinkSync(victim, join(dest, "etc", "planter", "config.toml.planter-new"));
    expect((await planter(s.env, "install", ...s.args)).code).toBe(0);
    expect(readFileSync(victim, "utf8")).toBe("keep me\n");
    expect(readFileSync(join(dest, "etc", "planter", "config.toml"), "utf8")).toContain("[sandbox]");
  }, 60_000);
});
