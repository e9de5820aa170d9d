/** doctor against real daemons: a healthy host, and one fixture per failure, each failing the right check. */
import { afterAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Outcome } from "../../lib/doctor/check.ts";
import { CHECKS } from "../../lib/doctor/checks/index.ts";
import { nologinShell } from "../../lib/host/groups.ts";
import { sha256File } from "../../lib/host/install-state.ts";
import pkg from "../../package.json" with { type: "json" };
import {
  baseEnv,
  bundled,
  cleanup,
  type DaemonHandle,
  pidAlive,
  ROOT,
  startDaemon,
  tempHome,
  waitFor,
} from "../harness.ts";

const DOCTOR = join(ROOT, "scripts", "doctor.ts");
const FIXTURE = join(import.meta.dir, "doctor-fixture.ts");

const homes: string[] = [];
const daemons: DaemonHandle[] = [];
const pids: number[] = [];
afterAll(async () => {
  for (const d of daemons) if (d.proc.exitCode === null) await d.stop();
  // Daemons that pasted fixes started: stopped, and gone, before their homes are removed.
  for (const p of pids) if (pidAlive(p)) process.kill(p, "SIGTERM");
  for (const p of pids) await waitFor(() => !pidAlive(p), `daemon ${p} to exit`);
  for (const h of homes) cleanup(h);
});

function home(): string {
  const h = tempHome("pdr");
  homes.push(h);
  return h;
}

async function daemon(config?: string): Promise<DaemonHandle> {
  const d = await startDaemon({ home: home(), config });
  daemons.push(d);
  return d;
}

interface DoctorJson {
  ok: boolean;
  version: string;
  checks: Outcome[];
}

/** Environment of every doctor run: no legacy prototype state unless a test makes one. */
const env = (h: string, extra: Record<string, string> = {}) =>
  baseEnv(h, { PLANTER_STATE_DIR: join(h, "no-legacy-state"), ...extra });

async function run(argv: string[], e: Record<string, string>) {
  const p = Bun.spawn(argv, { env: e, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

/** Run scripts/doctor.ts. */
const doctor = (h: string, args: string[], extra: Record<string, string> = {}) =>
  run([process.execPath, DOCTOR, ...args], env(h, extra));

/** Run doctor --json and index the checks by id. */
async function doctorJson(h: string, args: string[], extra: Record<string, string> = {}) {
  const r = await doctor(h, ["--json", ...args], extra);
  const json = JSON.parse(r.stdout) as DoctorJson;
  return { code: r.code, json, by: Object.fromEntries(json.checks.map((c) => [c.id, c])) as Record<string, Outcome> };
}

/** Run a fix command the way a person pastes it, in a shell without doctor's environment. */
async function paste(fix: string, extra: Record<string, string> = {}) {
  return run(["sh", "-c", fix], {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/root",
    ...extra,
  });
}

describe("a healthy host", () => {
  test("every check ok or skip, exit 0, the exact --json shape, and its time in the footer", async () => {
    const d = await daemon();
    const { code, json, by } = await doctorJson(d.home, []);
    expect(code).toBe(0);
    expect(Object.keys(json)).toEqual(["ok", "version", "checks"]);
    expect(json.ok).toBe(true);
    expect(json.version).toBe(pkg.version);
    expect(json.checks.map((c) => c.id)).toEqual(CHECKS.map((c) => c.id));
    for (const c of json.checks) {
      expect(Object.keys(c)).toEqual(["id", "status", "message", "hint", "fix"]);
      expect([c.id, c.status]).toEqual([c.id, expect.stringMatching(/^(ok|skip)$/)]);
      if (c.status === "ok") expect([c.hint, c.fix]).toEqual([null, null]);
    }
    // No systemd in this container, and planter was not installed with `install`.
    expect(by["service.units"]?.status).toBe("skip");
    expect(by["service.active"]?.status).toBe("skip");
    expect(by["install.state"]?.status).toBe("skip");
    for (const id of ["socket.present", "socket.perms", "daemon.reachable", "daemon.version-match", "sandbox.backend"])
      expect([id, by[id]?.status]).toEqual([id, "ok"]);
    expect(by["daemon.version-match"]?.message).toMatch(/^planterd runs 0\.\d+\.\d+ \(\w+\), the same as this binary$/);
    expect(by["sandbox.backend"]?.message).toStartWith("bwrap (bubblewrap ");
    expect(by["state.integrity"]?.message).toBe(`${join(d.home, "state", "planter.db")}: quick_check ok`);

    const text = await doctor(d.home, []);
    expect(text.code).toBe(0);
    const footer = new RegExp(
      `^${CHECKS.length} checks: \\d+ ok, 0 warn, 0 fail, \\d+ skip · no failures · (\\d+\\.\\d\\d) s$`,
      "m",
    ).exec(text.stdout);
    expect(footer).not.toBeNull();
    // The footer's time is printed; a bound that only catches a hang (speed is for bench/, never a
    // timed test: under a loaded full suite this took 1.04 s once).
    expect(Number(footer?.[1])).toBeLessThan(20);
  });

  test("--list-checks, a selection by id or area, and an unknown id (exit 2)", async () => {
    const h = home();
    const list = await doctor(h, ["--list-checks"]);
    expect(list.code).toBe(0);
    expect(
      list.stdout
        .trim()
        .split("\n")
        .map((l) => l.split(/\s+/)[0]),
    ).toEqual(CHECKS.map((c) => c.id));
    const listJson = JSON.parse((await doctor(h, ["--list-checks", "--json"])).stdout);
    expect(listJson.checks[0]).toEqual({ id: "platform", description: expect.any(String) });
    const some = await doctorJson(h, ["socket", "platform"]);
    expect(some.json.checks.map((c) => c.id)).toEqual([
      "platform",
      "socket.present",
      "socket.perms",
      "socket.group-membership",
    ]);
    const bad = await doctor(h, ["socket.nope"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown check "socket.nope"');
    expect(bad.stderr).toContain("--list-checks");
  });
});

describe("failures, each with the right check and hint", () => {
  test("socket missing (no daemon): socket.present fails with the start command, which works", async () => {
    const h = home();
    const { code, by } = await doctorJson(h, []);
    expect(code).toBe(1);
    const sock = join(h, "run", "planterd.sock");
    expect(by["socket.present"]).toMatchObject({
      status: "fail",
      message: `no socket at ${sock}`,
      hint: "planterd is not running, or listens elsewhere (PLANTER_SOCKET, PLANTER_HOME or [daemon] socket)",
    });
    expect(by["socket.perms"]?.status).toBe("skip");
    expect(by["daemon.reachable"]).toMatchObject({
      status: "fail",
      message: `cannot reach planterd: no socket at ${sock}`,
    });
    expect(by["daemon.version-match"]?.status).toBe("skip");
    expect(by["state.integrity"]?.status).toBe("skip");
    // The fix names PLANTER_HOME itself: pasted into a shell without it, it starts this daemon.
    writeFileSync(join(h, "config.toml"), '[sandbox]\nmode = "disabled"\n');
    const fix = by["socket.present"]?.fix as string;
    expect(fix).toContain(`env PLANTER_HOME=${h} `);
    expect((await paste(fix)).code).toBe(0);
    const pid = await waitFor(() => {
      try {
        return Number(readFileSync(join(h, "state", "planterd.pid"), "utf8").split(" ")[0]);
      } catch {
        return 0;
      }
    }, "planterd's pid file");
    pids.push(pid);
    await waitFor(async () => (await doctorJson(h, ["daemon.reachable"])).code === 0, "the started daemon to answer");
  });

  test("wrong socket mode: socket.perms fails with the chmod that fixes it", async () => {
    const d = await daemon();
    chmodSync(d.socket, 0o666);
    const { code, by } = await doctorJson(d.home, ["socket"]);
    expect(code).toBe(1);
    expect(by["socket.present"]?.status).toBe("ok");
    expect(by["socket.perms"]).toEqual({
      id: "socket.perms",
      status: "fail",
      message: `socket ${d.socket} has mode 0666, not 0600`,
      hint: "planterd checks the layout at startup only: since then it changed, so others may reach the socket (and the next start will refuse)",
      fix: `chmod 0600 ${d.socket}`,
    });
    expect((await paste(by["socket.perms"]?.fix as string)).code).toBe(0);
    expect((await doctorJson(d.home, ["socket.perms"])).by["socket.perms"]?.status).toBe("ok");
  });

  test("daemon down (killed, its socket left behind): daemon.reachable fails, the fix starts it again", async () => {
    const d = await daemon();
    await d.kill9();
    const { code, by } = await doctorJson(d.home, []);
    expect(code).toBe(1);
    expect(by["socket.present"]?.status).toBe("ok");
    expect(by["daemon.reachable"]).toMatchObject({
      status: "fail",
      message: `cannot reach planterd: nothing listens on ${d.socket}`,
      hint: "planterd stopped or crashed and left its socket behind; starting it replaces the stale socket",
    });
    expect(by["daemon.version-match"]).toMatchObject({
      status: "skip",
      message: "planterd is not reachable (see daemon.reachable)",
    });
    expect(by["limits.cgroup"]?.message).toEndWith("local detection, planterd did not report");
    expect((await paste(by["daemon.reachable"]?.fix as string)).code).toBe(0);
    await waitFor(async () => (await doctorJson(d.home, ["daemon.reachable"])).code === 0, "the restarted daemon");
    pids.push(Number(readFileSync(join(d.home, "state", "planterd.pid"), "utf8").split(" ")[0]));
  });

  test("version mismatch: daemon.version-match warns with the restart (expected version injected)", async () => {
    const d = await daemon();
    const r = await run(
      [
        process.execPath,
        FIXTURE,
        JSON.stringify({ ids: ["daemon"], expected: { version: "9.9.9", commit: "feedfacecafe" } }),
      ],
      env(d.home),
    );
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { ok: boolean; checks: Outcome[]; commands: { restart: string } };
    expect(out.checks[0]?.status).toBe("ok");
    expect(out.checks[1]).toEqual({
      id: "daemon.version-match",
      status: "warn",
      message: expect.stringMatching(/^planterd runs 0\.\d+\.\d+ \(\w+\), this binary is 9\.9\.9 \(feedfacecafe\)$/),
      hint: "planterd was not restarted after an upgrade (or another planter started it); restart it to run this version",
      fix: out.commands.restart,
    });
    expect(out.ok).toBe(true);
  });

  test("bwrap absent from PATH: sandbox.backend fails with the install command", async () => {
    const h = home();
    // Debian merges /bin into /usr/bin: a PATH of a few linked tools, without bwrap.
    const bin = join(h, "bin");
    mkdirSync(bin);
    for (const tool of ["sh", "git"]) {
      const at = Bun.which(tool);
      if (at) symlinkSync(at, join(bin, tool));
    }
    const { code, by } = await doctorJson(h, ["sandbox"], { PATH: bin });
    expect(code).toBe(1);
    expect(by["sandbox.backend"]).toEqual({
      id: "sandbox.backend",
      status: "fail",
      message: "bwrap: bubblewrap (bwrap) is not installed or not on PATH",
      hint: "install it: sudo apt-get install bubblewrap",
      fix: "sudo apt-get install bubblewrap",
    });
    expect(by["sandbox.userns"]?.status).not.toBe("fail");
  });

  test("truncated database: state.integrity fails, state.schema skips, and the fix moves it aside", async () => {
    const d = await daemon();
    for (let i = 0; i < 5; i++) await d.client.createCell({ name: `c${i}` });
    await d.stop();
    const h = home();
    mkdirSync(join(h, "state"));
    const db = join(h, "state", "planter.db");
    copyFileSync(join(d.home, "state", "planter.db"), db);
    truncateSync(db, Math.floor(statSync(db).size / 2));
    const { code, by } = await doctorJson(h, ["state"]);
    expect(code).toBe(1);
    expect(by["state.integrity"]).toMatchObject({
      status: "fail",
      message: `state database ${db} failed its integrity check: database disk image is malformed`,
      hint: expect.stringContaining("move it aside and start again"),
    });
    expect(by["state.schema"]?.status).toBe("skip");
    writeFileSync(join(h, "config.toml"), '[sandbox]\nmode = "disabled"\n');
    expect((await paste(by["state.integrity"]?.fix as string)).code).toBe(0);
    await waitFor(async () => (await doctorJson(h, ["state", "daemon.reachable"])).code === 0, "a fresh database");
    pids.push(Number(readFileSync(join(h, "state", "planterd.pid"), "utf8").split(" ")[0]));
  });

  test("legacy JSON present: state.legacy-json warns; the fix stops planterd, imports, starts it", async () => {
    const d = await daemon();
    const legacy = join(d.home, "legacy");
    mkdirSync(join(legacy, "jobs"), { recursive: true });
    mkdirSync(join(legacy, "cells", "cell-1"), { recursive: true });
    const cell = { id: "cell-1", spec: { name: "web", env: {} }, created_at_ms: 1700000000000, dir: legacy };
    writeFileSync(join(legacy, "cells", "cell-1", "cell.json"), JSON.stringify(cell));
    for (const n of [1, 2]) {
      const job = {
        id: `job-${n}`,
        cell_id: "cell-1",
        command: { argv: ["echo", `${n}`], cwd: "/tmp", env: {} },
        started_at_ms: 1700000100000 + n,
        finished_at_ms: 1700000200000 + n,
        pid: 4242,
        status: { type: "exited", code: 0 },
      };
      writeFileSync(join(legacy, "jobs", `job-${n}.json`), JSON.stringify(job));
    }
    writeFileSync(join(legacy, "jobs", "job-3.json"), "{ not json");
    const extra = { PLANTER_STATE_DIR: legacy };
    const { code, by } = await doctorJson(d.home, ["state.legacy-json"], extra);
    expect(code).toBe(0);
    expect(by["state.legacy-json"]).toEqual({
      id: "state.legacy-json",
      status: "warn",
      message: `legacy prototype state at ${legacy} is not imported: 2 jobs and 1 cell to import; 1 malformed file`,
      hint: "planter's first prototype kept JSON files there; `migrate state` imports them into planter.db once, with planterd stopped (--dry-run shows what it would do)",
      fix: expect.stringContaining(`env PLANTER_HOME=${d.home} PLANTER_STATE_DIR=${legacy} `),
    });
    const fixed = await paste(by["state.legacy-json"]?.fix as string);
    expect(fixed.stderr).toContain("job-3.json");
    await waitFor(() => d.proc.exitCode !== null, "the old daemon to stop");
    await waitFor(async () => (await doctorJson(d.home, ["daemon.reachable"])).code === 0, "the restarted daemon");
    pids.push(Number(readFileSync(join(d.home, "state", "planterd.pid"), "utf8").split(" ")[0]));
    const after = (await doctorJson(d.home, ["state.legacy-json"], extra)).by["state.legacy-json"];
    expect(after).toMatchObject({
      status: "warn",
      message: `legacy prototype state at ${legacy}: imported, but 1 malformed file could not be`,
    });
    rmSync(join(legacy, "jobs", "job-3.json"));
    expect((await doctorJson(d.home, ["state.legacy-json"], extra)).by["state.legacy-json"]).toMatchObject({
      status: "ok",
      message: `${legacy}: imported (2 jobs, 1 cell)`,
    });
  });

  test("strict off: authz.strict warns; the fix turns it on and restarts planterd", async () => {
    const d = await daemon('[authz]\nstrict = false\n[sandbox]\nmode = "disabled"\n');
    const { code, by } = await doctorJson(d.home, ["authz.strict"]);
    expect(code).toBe(0);
    expect(by["authz.strict"]).toMatchObject({
      status: "warn",
      message:
        "[authz] strict = false: planterd serves peers its policy would refuse (each with an authz.unstrict event)",
      hint: "anyone who can open the socket can run commands as planterd's user; use this for local development only",
    });
    expect((await paste(by["authz.strict"]?.fix as string)).code).toBe(0);
    expect(readFileSync(join(d.home, "config.toml"), "utf8")).toContain("strict = true");
    await waitFor(() => d.proc.exitCode !== null, "the old daemon to stop");
    await waitFor(
      async () => (await doctorJson(d.home, ["authz.strict", "daemon.reachable"])).code === 0,
      "the restarted daemon",
    );
    pids.push(Number(readFileSync(join(d.home, "state", "planterd.pid"), "utf8").split(" ")[0]));
  });

  test.skipIf(process.getuid?.() !== 0)(
    "system mode, seen by a user outside group planter: refused with the group fix; state left to sudo",
    async () => {
      const d = await daemon();
      const r = await run(
        [
          "setpriv",
          "--reuid",
          "65534",
          "--regid",
          "65534",
          "--clear-groups",
          process.execPath,
          bundled(DOCTOR),
          "--json",
          "socket",
          "daemon.reachable",
          "install.state",
          "state.integrity",
        ],
        env(d.home, { PLANTER_MODE: "system", HOME: "/nonexistent" }),
      );
      expect(r.code).toBe(1);
      const by = Object.fromEntries((JSON.parse(r.stdout) as DoctorJson).checks.map((c) => [c.id, c]));
      const user = readFileSync("/etc/passwd", "utf8").match(/^([^:]+):[^:]*:65534:/m)?.[1];
      expect(by["socket.present"]).toMatchObject({
        status: "fail",
        message: `cannot look into ${join(d.home, "run")}: permission denied`,
        fix: `sudo usermod -aG planter ${user}`,
      });
      expect(by["socket.group-membership"]?.status).toBe("fail");
      expect(by["socket.group-membership"]?.fix).toContain(`sudo usermod -aG planter ${user}`);
      expect(by["daemon.reachable"]?.status).toBe("fail");
      // A root planterd's state dir is searchable (0711: its jobs' users reach their cells), so the
      // missing install-state.json is seen as missing; its contents would still be root's alone.
      expect(by["install.state"]).toMatchObject({
        status: "skip",
        message: expect.stringContaining("was not installed with `install` here"),
      });
      expect(by["state.integrity"]).toMatchObject({ status: "skip", message: expect.stringContaining("(EACCES)") });
    },
  );

  test("a bad config is a failing check, not a crash", async () => {
    const h = home();
    writeFileSync(join(h, "config.toml"), "[authz]\nstrict = 3\n");
    const { code, by } = await doctorJson(h, ["config", "authz.strict"]);
    expect(code).toBe(1);
    expect(by.config).toMatchObject({
      status: "fail",
      message: expect.stringContaining(`invalid config ${join(h, "config.toml")}`),
    });
    expect(by.config?.fix).toContain(join(h, "config.toml"));
    expect(by["authz.strict"]?.status).toBe("skip");
  });
});

describe("who jobs run as (system mode; the account programs behave on fake files)", () => {
  test.skipIf(process.getuid?.() !== 0)(
    "jobs.user: a missing root_peer_user fails; the pasted fix creates it and starts planterd; then ok",
    async () => {
      const h = home();
      const shims = join(h, "shims");
      const etc = join(h, "etc");
      mkdirSync(shims);
      mkdirSync(etc);
      symlinkSync(join(ROOT, "test", "shims", "accounts"), join(shims, "useradd"));
      writeFileSync(join(etc, "passwd"), "root:x:0:0:root:/root:/bin/bash\n");
      writeFileSync(join(h, "config.toml"), '[sandbox]\nmode = "disabled"\n[jobs]\nroot_peer_user = "pt-job"\n');
      const check = async () => {
        const r = await run(
          [process.execPath, FIXTURE, JSON.stringify({ ids: ["jobs.user"], passwdFile: join(etc, "passwd") })],
          env(h, { PLANTER_MODE: "system" }),
        );
        return (JSON.parse(r.stdout) as { checks: Outcome[] }).checks[0];
      };
      const failed = await check();
      expect(failed).toMatchObject({
        status: "fail",
        message: "user pt-job ([jobs] root_peer_user) does not exist: root's jobs run as nobody instead",
      });
      const fix = failed?.fix as string;
      const useradd = `useradd --system --user-group --no-create-home --home-dir /nonexistent --shell ${nologinShell()} pt-job`;
      expect(fix).toStartWith(`${useradd} && `);
      const log = join(h, "calls.log");
      expect((await paste(fix, { PATH: `${shims}:${process.env.PATH}`, SHIM_ETC: etc, SHIM_LOG: log })).code).toBe(0);
      expect(readFileSync(log, "utf8")).toBe(`${useradd}\n`);
      // The fix's restart part started planterd (none ran), which looks the user up at startup.
      pids.push(
        await waitFor(() => {
          try {
            return Number(readFileSync(join(h, "state", "planterd.pid"), "utf8").split(" ")[0]);
          } catch {
            return 0;
          }
        }, "planterd's pid file"),
      );
      expect(await check()).toMatchObject({ status: "ok", message: "root's jobs run as pt-job (uid 999, gid 999)" });
    },
  );
});

describe("systemd units (recording shims; systemd's presence injected)", () => {
  const h = home();
  const shims = join(h, "shims");
  mkdirSync(shims);
  symlinkSync(join(ROOT, "test", "shims", "record"), join(shims, "systemctl"));
  const log = join(h, "systemctl.log");

  /** Write an install-state.json recording the units, one file as installed and one that is gone. */
  function installState() {
    const bin = join(h, "bin");
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, "planter"), "binary");
    const now = new Date().toISOString();
    const state = {
      schema_version: 1,
      version: pkg.version,
      commit: "abc",
      mode: "user",
      root: "/",
      prefix: h,
      installed_at: now,
      updated_at: now,
      platform: { os: "linux", arch: "x64", os_release: null, package_manager: "apt-get", systemd: true },
      paths: {
        state_dir: join(h, "state"),
        socket: join(h, "run", "planterd.sock"),
        config: join(h, "config.toml"),
        bin_dir: bin,
      },
      files: [
        { path: join(bin, "planter"), kind: "binary", sha256: sha256File(join(bin, "planter")), existed_before: false },
        { path: join(bin, "gone"), kind: "binary", sha256: "0", existed_before: false },
      ],
      dirs_created: [],
      units: [
        { name: "planterd.socket", scope: "user", enabled: true },
        { name: "planterd.service", scope: "user", enabled: false },
      ],
      group: null,
      daemon: { managed_by: "systemd", pid: null },
    };
    mkdirSync(join(h, "state"), { recursive: true });
    writeFileSync(join(h, "state", "install-state.json"), JSON.stringify(state));
  }

  async function withShims(ids: string[], out: string, exit: number, mode: "user" | "system" = "user") {
    writeFileSync(log, "");
    const r = await run(
      [process.execPath, FIXTURE, JSON.stringify({ ids, systemd: true })],
      env(h, {
        PATH: `${shims}:${process.env.PATH}`,
        PLANTER_MODE: mode,
        SHIM_LOG: log,
        SHIM_OUT_systemctl: out,
        SHIM_EXIT_systemctl: String(exit),
      }),
    );
    expect(r.stderr).toBe("");
    const json = JSON.parse(r.stdout) as { checks: Outcome[] };
    return {
      by: Object.fromEntries(json.checks.map((c) => [c.id, c])) as Record<string, Outcome>,
      calls: readFileSync(log, "utf8"),
    };
  }

  test("service.units: enabled → ok; disabled → the enable command; units not installed → skip", async () => {
    let r = await withShims(["service.units"], "enabled", 0);
    expect(r.calls).toBe("systemctl --user is-enabled planterd.socket\n");
    expect(r.by["service.units"]).toMatchObject({
      status: "ok",
      message: "planterd.socket is enabled: planterd starts on the first connection",
    });
    r = await withShims(["service.units"], "disabled", 1);
    expect(r.by["service.units"]).toMatchObject({
      status: "fail",
      fix: "systemctl --user enable --now planterd.socket",
    });
    r = await withShims(["service.units"], "not-found", 1);
    expect(r.by["service.units"]?.status).toBe("skip");
    r = await withShims(["service.units"], "enabled", 0, "system");
    expect(r.calls).toBe("systemctl is-enabled planterd.socket\n");
  });

  test("service.active: active → ok; failed → reset-failed and start; the system scope has no --user", async () => {
    let r = await withShims(["service.active"], "active", 0);
    expect(r.calls).toBe("systemctl --user is-active planterd.socket\n");
    expect(r.by["service.active"]?.status).toBe("ok");
    r = await withShims(["service.active"], "failed", 3);
    expect(r.by["service.active"]).toMatchObject({
      status: "fail",
      message: "planterd.socket failed",
      fix: "systemctl --user reset-failed planterd.socket planterd.service && systemctl --user start planterd.socket",
    });
    r = await withShims(["service.active"], "active", 0, "system");
    expect(r.calls).toBe("systemctl is-active planterd.socket\n");
  });

  test("installed with units: missing units fail, fixes use systemctl, install.state lists missing files", async () => {
    installState();
    const r = await withShims(["install.state", "service.units", "daemon.reachable"], "not-found", 1);
    expect(r.calls).toBe("systemctl --user is-enabled planterd.socket\n");
    expect(r.by["service.units"]).toMatchObject({
      status: "fail",
      message: "planterd.socket is gone although install recorded it",
    });
    expect(r.by["service.units"]?.fix).toEndWith(" install --user");
    expect(r.by["daemon.reachable"]).toMatchObject({ status: "fail", fix: "systemctl --user start planterd.socket" });
    const a = await withShims(["service.active"], "inactive", 3);
    expect(a.by["service.active"]).toMatchObject({ status: "fail", fix: "systemctl --user start planterd.socket" });
    expect(r.by["install.state"]).toMatchObject({
      status: "fail",
      message: expect.stringMatching(
        new RegExp(
          `^user install of ${pkg.version} \\(abc\\) on \\d{4}-\\d\\d-\\d\\d, 2 files: 1 missing: ${join(h, "bin", "gone")}$`,
        ),
      ),
    });
  });
});
