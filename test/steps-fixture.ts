/**
 * The install step tests' fake hosts (test/integration/install-steps.test.ts, and the kill at every
 * point in test/slow/install-kill.test.ts): real installs into throwaway homes and staging roots,
 * with shims for the host programs. `stepsFixture` makes a work dir of its own, removed after the file.
 */
import { afterAll, expect } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanup, PLANTER, ROOT } from "./harness.ts";
import { callLog, killUnder, planterWith as planter, runWith, SHIMS, tree } from "./host-fixture.ts";

export type Env = Record<string, string>;

/** One way to install: the CLI arguments, the same as install() options, and what to compare before and after. */
export interface Setup {
  base: string;
  env: Env;
  args: string[];
  uninstallArgs: string[];
  opts: Record<string, unknown>;
  /** The tree that uninstall must give back (state dirs, which stay, and call logs left out). */
  snapshot: () => string[];
}

export interface Listed {
  id: string;
  description: string;
}

export function stepsFixture() {
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

  const listed = (steps: (Listed & { outcome?: string })[]) =>
    steps.map(({ id, description }) => ({ id, description }));

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

  return {
    root,
    host,
    staging,
    system,
    userUnits,
    userOffline,
    listed,
    json,
    unlessDaemon,
    samePlan,
    killedAt,
    killEverywhere,
  };
}
