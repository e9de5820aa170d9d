/**
 * The step engine of install and uninstall (lib/host/transaction.ts), attacked: the plan a dry run
 * prints is the list of steps that then runs; a dry run changes nothing; an install killed at every
 * point the engine passes (before a step, after each record it writes, after it) is repaired by
 * uninstall and by a second install; a backup that changed since install is never put back.
 * Real installs into throwaway homes and staging roots, with shims for the host programs.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanup, PLANTER, ROOT } from "../harness.ts";
import { callLog, killUnder, planterWith as planter, runWith, SHIMS, tree } from "../host-fixture.ts";

const work = mkdtempSync("/tmp/pt-steps-");
chmodSync(work, 0o711);
// The "binary": planter from source behind a script — cheap to hash and copy, and it runs a real planterd.
const binary = join(work, "planter-src");
writeFileSync(binary, `#!/bin/sh\nBUN_RUNTIME_TRANSPILER_CACHE_PATH=0 exec ${process.execPath} ${PLANTER} "$@"\n`);
chmodSync(binary, 0o755);
const root = process.getuid?.() === 0;

afterAll(() => {
  killUnder(work);
  cleanup(work);
});

type Env = Record<string, string>;

/** A fresh fake host: a home, a runtime dir, shims first on PATH, a call log, fake account files. */
function host(name: string, shims: Record<string, string>) {
  const base = join(work, name);
  const home = join(base, "home");
  const runtime = join(base, "run");
  const bin = join(base, "shims");
  const etc = join(base, "etc");
  mkdirSync(join(home, ".local", "state"), { recursive: true });
  mkdirSync(runtime, { mode: 0o700 });
  mkdirSync(bin);
  mkdirSync(etc);
  writeFileSync(join(etc, "passwd"), "");
  writeFileSync(join(etc, "group"), "");
  for (const [prog, shim] of Object.entries(shims)) symlinkSync(join(SHIMS, shim), join(bin, prog));
  const log = join(base, "calls.log");
  const env: Env = {
    PATH: `${bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
    HOME: home,
    XDG_RUNTIME_DIR: runtime,
    PLANTER_MODE: "user",
    SHIM_LOG: log,
    SHIM_ETC: etc,
    SHIM_UNIT_DIR: join(home, ".config", "systemd", "user"),
    NO_COLOR: "1",
    // Shared by every run here, outside the fake hosts' trees: hundreds of short bun runs start faster.
    BUN_RUNTIME_TRANSPILER_CACHE_PATH: join(work, "bun-cache"),
  };
  return { base, home, runtime, env, calls: callLog(log), etc };
}

const every = (programs: string[], shim: string) => Object.fromEntries(programs.map((p) => [p, shim]));
const ACCOUNTS = ["getent", "useradd", "userdel", "groupadd", "groupdel", "usermod", "gpasswd"];

/** One way to install: the CLI arguments, the same as install() options, and what to compare before and after. */
interface Setup {
  base: string;
  env: Env;
  args: string[];
  uninstallArgs: string[];
  opts: Record<string, unknown>;
  /** The tree that uninstall must give back (state dirs, which stay, and call logs left out). */
  snapshot: () => string[];
}

/** System mode into a staging root holding a planterd of its own (saved, and put back); no host program may be called. */
function staging(name: string): Setup {
  const h = host(name, { systemctl: "record", ...every(ACCOUNTS, "record") });
  const dest = join(h.base, "root");
  mkdirSync(join(dest, "usr", "local", "bin"), { recursive: true });
  writeFileSync(join(dest, "usr", "local", "bin", "planterd"), "#!/bin/sh\necho older\n", { mode: 0o755 });
  return {
    base: h.base,
    env: { ...h.env, PLANTER_MODE: "system", SUDO_USER: "alice" },
    args: ["--system", "--root", dest, "--binary", binary],
    uninstallArgs: ["--system", "--root", dest],
    opts: { mode: "system", root: dest, binary, dryRun: false, waitMs: 10_000, systemd: "auto" },
    snapshot: () => {
      expect(h.calls()).toEqual([]);
      return tree(dest);
    },
  };
}

/** System mode on this host, paths below a temp dir, accounts on fake files, planterd started directly. */
function system(name: string): Setup {
  const h = host(name, every(ACCOUNTS, "accounts"));
  const prefix = join(h.base, "usr");
  const skip = (rel: string) =>
    rel === "planter" || rel.startsWith("planter/state") || rel.startsWith("calls.log") || rel.startsWith("home/");
  return {
    base: h.base,
    env: { ...h.env, PLANTER_MODE: "system", PLANTER_HOME: join(h.base, "planter"), SUDO_USER: "alice" },
    args: ["--system", "--prefix", prefix, "--systemd", "no", "--binary", binary],
    uninstallArgs: ["--system", "--prefix", prefix],
    opts: { mode: "system", root: "/", prefix, binary, dryRun: false, waitMs: 20_000, systemd: "no" },
    // The fake /etc is part of the tree: accounts install made are gone again.
    snapshot: () => tree(h.base, skip),
  };
}

/** User mode with units that the systemctl stand-in really socket-activates. */
function userUnits(name: string): Setup {
  const h = host(name, { systemctl: "systemctl-activate" });
  const skip = (rel: string) => rel.startsWith("home/.local/state/planter") || rel.startsWith("calls.log");
  return {
    base: h.base,
    env: h.env,
    args: ["--user", "--systemd", "yes", "--binary", binary],
    uninstallArgs: ["--user"],
    opts: { mode: "user", root: "/", binary, dryRun: false, waitMs: 20_000, systemd: "yes" },
    snapshot: () => tree(h.base, skip),
  };
}

/** User mode where no service manager answers: units enabled offline. */
function userOffline(name: string): Setup {
  const h = host(name, { systemctl: "record" });
  const skip = (rel: string) => rel.startsWith("home/.local/state/planter") || rel.startsWith("calls.log");
  return {
    base: h.base,
    env: h.env,
    args: ["--user", "--systemd", "yes", "--binary", binary],
    uninstallArgs: ["--user"],
    opts: { mode: "user", root: "/", binary, dryRun: false, waitMs: 20_000, systemd: "yes" },
    snapshot: () => tree(h.base, skip),
  };
}

interface Listed {
  id: string;
  description: string;
}
const listed = (steps: (Listed & { outcome?: string })[]) => steps.map(({ id, description }) => ({ id, description }));

async function json(env: Env, ...args: string[]) {
  const r = await planter(env, ...args, "--json");
  if (r.code !== 0) throw new Error(`planter ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { steps: (Listed & { outcome?: string })[] };
}

/** Everything but the call log, sockets and what a running planterd writes in its state dir (install-state.json and backups stay in). */
const unlessDaemon = (rel: string) =>
  rel.startsWith("calls.log") ||
  rel.endsWith(".sock") ||
  (/(^|\/)(state\/planter|planter\/state|var\/lib\/planter)\//.test(rel) && !/\/install-/.test(rel));

/** A dry run, then the real run: the same list of steps, and the dry run changed nothing. */
async function samePlan(s: Setup, command: "install" | "uninstall") {
  const args = command === "install" ? s.args : s.uninstallArgs;
  const before = tree(s.base, unlessDaemon);
  const dry = await json(s.env, command, ...args, "--dry-run");
  expect(tree(s.base, unlessDaemon)).toEqual(before);
  expect(dry.steps.every((x) => x.outcome === undefined)).toBe(true);
  const run = await json(s.env, command, ...args);
  expect(run.steps.every((x) => x.outcome === "applied" || x.outcome === "skipped")).toBe(true);
  expect(listed(run.steps)).toEqual(listed(dry.steps));
  return run.steps;
}

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

/** Run install (or uninstall) in the kill fixture, SIGKILLed at point `k` (0: never); the points it passed. */
async function killedAt(
  s: Setup,
  k: number,
  command: "install" | "uninstall" = "install",
): Promise<{ code: number; points: string[]; stderr: string }> {
  const opts = command === "install" ? s.opts : { ...s.opts, force: false, purge: false };
  const r = await runWith(s.env, [
    process.execPath,
    join(ROOT, "test", "install-kill-fixture.ts"),
    command,
    JSON.stringify(opts),
    String(k),
  ]);
  return { code: r.code, points: r.stdout.trim().split("\n").filter(Boolean), stderr: r.stderr };
}

/**
 * For every point of a whole run from step `from` on — before each step, and after each record
 * it writes (its write-ahead: what it is about to change) — kill install there, then (a) uninstall
 * gives back the tree, and (b) a second install completes and uninstall then gives back the tree.
 * (After a step is before the next; after the last is a whole install.)
 */
async function killEverywhere(make: (n: string) => Setup, name: string, from?: string) {
  const probe = make(`${name}-count`);
  const whole = await killedAt(probe, 0);
  expect(whole.code).toBe(0);
  expect((await planter(probe.env, "uninstall", ...probe.uninstallArgs)).code).toBe(0);
  const first = from ? whole.points.indexOf(`${from} begin`) : 0;
  expect(first).toBeGreaterThanOrEqual(0);
  const points = whole.points.map((p, i) => ({ p, k: i + 1 })).filter(({ p, k }) => k > first && !p.endsWith(" end"));
  expect(points.length).toBeGreaterThan(5);
  for (const { p, k } of points) {
    for (const repair of ["uninstall", "install"] as const) {
      const s = make(`${name}-${k}-${repair}`);
      const before = s.snapshot();
      const r = await killedAt(s, k);
      const at = `killed at ${p} (point ${k}), then ${repair}`;
      expect([at, r.code, r.points.at(-1)]).toEqual([at, 137, p]);
      if (repair === "install") {
        const again = await planter(s.env, "install", ...s.args);
        expect([at, again.code, again.stderr.includes("planter: ")]).toEqual([at, 0, false]);
      }
      const u = await planter(s.env, "uninstall", ...s.uninstallArgs);
      expect([at, u.code, u.stderr.includes("warning:")]).toEqual([at, 0, false]);
      expect([at, s.snapshot()]).toEqual([at, before]);
    }
  }
}

describe("an install killed at any point is repaired by uninstall, and by a second install", () => {
  test("system mode into a staging root (files, a backup of the root's own planterd, links, units)", async () => {
    await killEverywhere(staging, "kill-staging");
  }, 300_000);

  test.skipIf(!root)(
    "system mode on this host, from the group on (accounts, planterd started directly)",
    async () => {
      await killEverywhere(system, "kill-system", "group");
    },
    300_000,
  );

  test("user mode, from the units on (live units)", async () => {
    await killEverywhere(userUnits, "kill-units", "units");
  }, 300_000);
});

describe("an uninstall killed at any point is finished by the next", () => {
  test("system mode into a staging root, with the root's own planterd to put back", async () => {
    const probe = staging("unkill-count");
    expect((await planter(probe.env, "install", ...probe.args)).code).toBe(0);
    const whole = await killedAt(probe, 0, "uninstall");
    expect(whole.code).toBe(0);
    const points = whole.points.map((p, i) => ({ p, k: i + 1 })).filter(({ p }) => !p.endsWith(" end"));
    expect(points.length).toBeGreaterThan(5);
    for (const { p, k } of points) {
      const s = staging(`unkill-${k}`);
      const before = s.snapshot();
      expect((await planter(s.env, "install", ...s.args)).code).toBe(0);
      const r = await killedAt(s, k, "uninstall");
      const at = `uninstall killed at ${p} (point ${k})`;
      expect([at, r.code, r.points.at(-1)]).toEqual([at, 137, p]);
      const u = await planter(s.env, "uninstall", ...s.uninstallArgs);
      expect([at, u.code, u.stderr.includes("warning:")]).toEqual([at, 0, false]);
      expect([at, s.snapshot()]).toEqual([at, before]);
    }
  }, 300_000);
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
