/** doctor's pure parts: selection, the runner (timeouts, dependencies, broken checks), each check's verdict. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { API_VERSION } from "../../lib/api/contract.ts";
import {
  type Check,
  exitCode,
  fail,
  type Linked,
  type Outcome,
  ok,
  runChecks,
  type Status,
  selectChecks,
  skip,
  warn,
} from "../../lib/doctor/check.ts";
import { strictResult } from "../../lib/doctor/checks/config.ts";
import { reachableResult, versionResult } from "../../lib/doctor/checks/daemon.ts";
import { CHECKS } from "../../lib/doctor/checks/index.ts";
import { osName } from "../../lib/doctor/checks/install.ts";
import { jobUserResult } from "../../lib/doctor/checks/jobs.ts";
import { LIMA_UNUSED } from "../../lib/doctor/checks/lima.ts";
import { limitsResult } from "../../lib/doctor/checks/limits.ts";
import { backendResult, commandInHint, containmentResult, usernsResult } from "../../lib/doctor/checks/sandbox.ts";
import { activeResult, serviceChecks, unitsResult } from "../../lib/doctor/checks/service.ts";
import { asCommand, membershipResult } from "../../lib/doctor/checks/socket.ts";
import { diskResult, jobDirsResult, legacyResult, schemaResult } from "../../lib/doctor/checks/state.ts";
import { commandsFor, type DoctorContext, doctorPaths, planterCommand, readConfig } from "../../lib/doctor/context.ts";
import { listText, reportJson, reportText } from "../../lib/doctor/report.ts";
import { nologinShell } from "../../lib/host/groups.ts";

const RESTART = "systemctl --user restart planterd.service";

describe("selection and the runner", () => {
  const mk = (id: string, run: Check["run"]): Check => ({ id, description: `checks ${id}`, run });

  test("the checks have the documented ids, in report order", () => {
    expect(CHECKS.map((c) => c.id)).toEqual([
      "platform",
      "binary.version",
      "config",
      "install.state",
      "service.units",
      "service.active",
      "socket.present",
      "socket.perms",
      "socket.group-membership",
      "daemon.reachable",
      "daemon.version-match",
      "authz.strict",
      "mcp",
      "jobs.user",
      "sandbox.backend",
      "sandbox.containment",
      "sandbox.userns",
      "sandbox.vm",
      "limits.cgroup",
      "state.integrity",
      "state.schema",
      "state.job-dirs",
      "state.disk-space",
      "state.legacy-json",
      "macos.sandbox-exec",
      "macos.launchd",
      "lima.limactl",
      "lima.vm-exists",
      "lima.vm-running",
      "lima.layout",
      "lima.socket-forwarded",
      "lima.guest-service",
      "lima.guest-socket-perms",
      "lima.guest-group",
      "lima.version-match",
      "targets.reachable",
    ]);
  });

  test("ids and areas select checks in report order; an unknown one is a usage error", () => {
    const ids = (w: string[]) => selectChecks(CHECKS, w).map((c) => c.id);
    expect(ids(["state.schema", "socket"])).toEqual([
      "socket.present",
      "socket.perms",
      "socket.group-membership",
      "state.schema",
    ]);
    expect(ids([])).toHaveLength(CHECKS.length);
    expect(() => selectChecks(CHECKS, ["sock"])).toThrow('unknown check "sock"');
    const err = (() => {
      try {
        selectChecks(CHECKS, ["nope"]);
      } catch (e) {
        return e as { exitCode: number };
      }
    })();
    expect(err?.exitCode).toBe(2);
  });

  test("a check may await another's result: it runs once and is not reported unless selected", async () => {
    let runs = 0;
    const all = [
      mk("a", async () => {
        runs++;
        return fail("down", "start it", "start");
      }),
      mk("b", async (ctx) => ((await ctx.result("a")).status === "fail" ? skip("a failed") : ok("fine"))),
      mk("c", async (ctx) => ((await ctx.result("a")).status === "fail" ? skip("a failed") : ok("fine"))),
    ];
    const r = await runChecks(all, selectChecks(all, ["b", "c"]), {}, { timeoutMs: 1000 });
    expect(r.checks).toEqual([
      { id: "b", status: "skip", message: "a failed", hint: null, fix: null },
      { id: "c", status: "skip", message: "a failed", hint: null, fix: null },
    ]);
    expect(runs).toBe(1);
    expect(r.ok).toBe(true);
    expect(exitCode(r)).toBe(0);
  });

  test("shared probes run once per run", async () => {
    let probes = 0;
    const probe = async () => ++probes;
    const all = [
      mk("a", async (ctx) => ok(`p${await ctx.once("p", probe)}`)),
      mk("b", async (ctx) => ok(`p${await ctx.once("p", probe)}`)),
    ];
    const r = await runChecks(all, all, {}, { timeoutMs: 1000 });
    expect(r.checks.map((c) => c.message)).toEqual(["p1", "p1"]);
    expect(probes).toBe(1);
  });

  test("a hung check fails with 'timed out' while the others finish; a warning alone exits 0", async () => {
    const all = [mk("hang", () => new Promise(() => {})), mk("w", async () => warn("low", "free some", "du"))];
    const r = await runChecks(all, all, {}, { timeoutMs: 30 });
    expect(r.checks[0]).toEqual({
      id: "hang",
      status: "fail",
      message: "timed out after 30 ms",
      hint: expect.stringContaining("the probe hung"),
      fix: "doctor hang --timeout 30s",
    });
    expect(r.checks[1]?.status).toBe("warn");
    expect(exitCode(r)).toBe(1);
    expect(exitCode({ ok: true, broken: false })).toBe(0);
  });

  test("a check that throws is a doctor bug: reported as failed, and the exit code is 2", async () => {
    const all = [mk("boom", async () => JSON.parse("{")), mk("fine", async () => ok("yes"))];
    const r = await runChecks(all, all, {}, { timeoutMs: 1000 });
    expect(r.broken).toBe(true);
    expect(r.errors.map((e) => e.id)).toEqual(["boom"]);
    expect(r.checks[0]?.message).toStartWith("doctor broke running this check: ");
    expect(exitCode(r)).toBe(2);
  });
});

describe("report", () => {
  const report = {
    ok: false,
    broken: false,
    errors: [],
    elapsedMs: 123,
    checks: [
      { id: "platform", status: "ok" as const, message: "linux", hint: null, fix: null },
      {
        id: "socket.present",
        status: "fail" as const,
        message: "no socket",
        hint: "not running",
        fix: "planter daemon",
      },
      { id: "service.units", status: "skip" as const, message: "no systemd", hint: "start it", fix: null },
    ],
  };

  test("--json is exactly {ok, version, checks}", () => {
    expect(reportJson(report, "0.1.0")).toEqual({ ok: false, version: "0.1.0", checks: report.checks });
  });

  test("the table shows hint and fix under failures only, and the elapsed time", () => {
    expect(reportText(report, "planter doctor 0.1.0")).toBe(
      [
        "planter doctor 0.1.0",
        "",
        "platform        ok    linux",
        "socket.present  FAIL  no socket",
        "                      hint: not running",
        "                      fix:  planter daemon",
        "service.units   skip  no systemd",
        "",
        "3 checks: 1 ok, 0 warn, 1 fail, 1 skip · failures found · 0.12 s",
        "",
      ].join("\n"),
    );
    expect(
      listText([
        { id: "a.b", description: "one" },
        { id: "c", description: "two" },
      ]),
    ).toBe("a.b  one\nc    two\n");
  });

  test("where Lima is not used, the table shows its checks as one row; --json keeps each", () => {
    const limaRows = (first: string, others: Status) => [
      { id: "lima.limactl", status: "skip" as const, message: first, hint: null, fix: null },
      { id: "lima.vm-exists", status: others, message: "no VM planter", hint: null, fix: null },
      { id: "lima.layout", status: "skip" as const, message: "no VM planter", hint: null, fix: null },
    ];
    const unused = { ...report, checks: [report.checks[0] as Outcome, ...limaRows(LIMA_UNUSED, "skip")] };
    expect(reportText(unused, "h").split("\n").slice(2, 4)).toEqual([
      "platform  ok    linux",
      `lima.*    skip  ${LIMA_UNUSED}: 3 checks`,
    ]);
    expect(reportJson(unused, "0").checks.map((c) => c.id)).toEqual([
      "platform",
      "lima.limactl",
      "lima.vm-exists",
      "lima.layout",
    ]);
    // limactl present, or any lima check that did not skip: every row shows.
    for (const checks of [limaRows("limactl is not available", "skip"), limaRows(LIMA_UNUSED, "fail")]) {
      const text = reportText({ ...report, checks }, "h");
      expect(text).toContain("lima.vm-exists");
      expect(text).not.toContain("lima.*");
    }
  });

  test("what a check quotes of planterd is printed escaped in the table, exact in --json", () => {
    const hostile = {
      ...report,
      checks: [
        { id: "daemon.ready", status: "fail" as const, message: "not ready: \x1b]0;x\x07", hint: "a\nb", fix: null },
      ],
    };
    expect(reportText(hostile, "h")).toContain(
      "daemon.ready  FAIL  not ready: \\x1b]0;x\\x07\n                    hint: a\\nb\n",
    );
    expect(reportJson(hostile, "0.1.0").checks[0]?.message).toBe("not ready: \x1b]0;x\x07");
  });
});

describe("context", () => {
  test("fix commands: systemd units by scope, or a daemon started directly (root's redirect under sudo)", () => {
    const base = { stateDir: "/s", planter: "planter" };
    expect(commandsFor({ ...base, mode: "user", uid: 1000, viaSystemd: true })).toEqual({
      planter: "planter",
      sudo: "",
      systemctl: "systemctl --user",
      start: "systemctl --user start planterd.socket",
      stop: "systemctl --user stop planterd.socket planterd.service",
      restart: "systemctl --user restart planterd.service",
    });
    expect(commandsFor({ ...base, mode: "system", uid: 1000, viaSystemd: true }).restart).toBe(
      "sudo systemctl restart planterd.service",
    );
    expect(commandsFor({ ...base, mode: "system", uid: 0, viaSystemd: true }).start).toBe(
      "systemctl start planterd.socket",
    );
    const direct = commandsFor({ ...base, mode: "user", uid: 1000, viaSystemd: false });
    expect(direct.start).toBe("mkdir -p /s && nohup planter daemon >> /s/planterd.log 2>&1 &");
    expect(direct.stop).toBe(
      "p=$(cut -d' ' -f1 /s/planterd.pid 2>/dev/null) && kill $p && while kill -0 $p 2>/dev/null; do sleep 0.1; done",
    );
    expect(direct.restart).toBe(`${direct.stop}; ${direct.start}`);
    expect(commandsFor({ ...base, mode: "system", uid: 1000, viaSystemd: false }).start).toBe(
      "sudo sh -c 'mkdir -p /s && nohup planter daemon >> /s/planterd.log 2>&1 &'",
    );
  });

  test("the planter command carries the variables that moved the paths", () => {
    expect(planterCommand({ PATH: "", PLANTER_HOME: "/tmp/h", PLANTER_STATE_DIR: "/tmp/legacy" })).toMatch(
      /^env PLANTER_HOME=\/tmp\/h PLANTER_STATE_DIR=\/tmp\/legacy \S+ \S+\/scripts\/planter\.ts$/,
    );
    expect(planterCommand({ PATH: "" })).not.toStartWith("env ");
  });

  test("paths as planterd resolves them; a bad config is data, not a crash", () => {
    const dir = mkdtempSync("/tmp/pt-dcfg-");
    const good = join(dir, "good.toml");
    writeFileSync(good, '[daemon]\nsocket = "/x/p.sock"\nstate_dir = "/x/state"\n');
    const cfg = readConfig(good);
    const env = { HOME: "/home/u", XDG_RUNTIME_DIR: "/run/user/1000", PLANTER_MODE: "user" };
    expect(doctorPaths(env, cfg)).toEqual({
      mode: "user",
      configPath: "/home/u/.config/planter/config.toml",
      stateDir: "/x/state",
      socketPath: "/x/p.sock",
    });
    expect(doctorPaths({ ...env, PLANTER_HOME: "/h" }, cfg).socketPath).toBe("/h/run/planterd.sock");
    expect(doctorPaths(env, cfg, "/flag.sock").socketPath).toBe("/flag.sock");
    const bad = join(dir, "bad.toml");
    writeFileSync(bad, "[nope]\n");
    const r = readConfig(bad);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toContain(`invalid config ${bad}`);
    writeFileSync(bad, "[daemon\n");
    expect(readConfig(bad).ok).toBe(false);
    expect(readConfig(join(dir, "absent.toml"))).toMatchObject({ ok: true, exists: false });
    rmSync(dir, { recursive: true });
  });
});

/** A context with what the pure result functions read. */
function fakeCtx(over: Partial<DoctorContext> = {}): DoctorContext {
  return {
    env: {},
    paths: { mode: "user", stateDir: "/s", socketPath: "/r/planterd.sock", configPath: "/c/config.toml" },
    config: readConfig("/nonexistent/config.toml"),
    install: { found: false, path: "/s/install-state.json" },
    systemd: true,
    expected: { version: "0.1.0", commit: "abc" },
    uid: 1000,
    platform: "linux",
    groupFile: "/etc/group",
    passwdFile: "/etc/passwd",
    commands: commandsFor({ mode: "user", uid: 1000, stateDir: "/s", planter: "planter", viaSystemd: true }),
    timeoutMs: 3000,
    sandboxExec: "/usr/bin/sandbox-exec",
    ...over,
  };
}

describe("daemon", () => {
  test("version-match: same → ok; another version or commit → warn with the restart; another API → fail", () => {
    const expected = { version: "0.1.0", commit: "abc" };
    expect(versionResult({ version: "0.1.0", commit: "abc", api: API_VERSION }, expected, RESTART)).toEqual(
      ok("planterd runs 0.1.0 (abc), the same as this binary"),
    );
    expect(versionResult({ version: "0.1.0", commit: "unknown", api: API_VERSION }, expected, RESTART).status).toBe(
      "ok",
    );
    expect(versionResult({ version: "0.0.9", commit: "def", api: API_VERSION }, expected, RESTART)).toEqual(
      warn(
        "planterd runs 0.0.9 (def), this binary is 0.1.0 (abc)",
        "planterd was not restarted after an upgrade (or another planter started it); restart it to run this version",
        RESTART,
      ),
    );
    expect(versionResult({ version: "0.1.0", commit: "def", api: API_VERSION }, expected, RESTART).status).toBe("warn");
    const api = versionResult({ version: "0.2.0", commit: "x", api: API_VERSION + 1 }, expected, RESTART);
    expect(api.status).toBe("fail");
    expect(api.fix).toBe(RESTART);
  });

  test("reachable: each way of not answering has its own hint", () => {
    const ctx = fakeCtx();
    expect(reachableResult(ctx, { ok: false, code: "ECONNREFUSED" })).toEqual(
      fail(
        "cannot reach planterd: nothing listens on /r/planterd.sock",
        "planterd stopped or crashed and left its socket behind; starting it replaces the stale socket",
        "systemctl --user start planterd.socket",
      ),
    );
    expect(reachableResult(ctx, { ok: false, code: "TIMEOUT" }).fix).toBe(RESTART);
    const denied = reachableResult(ctx, {
      ok: false,
      code: "E_UNAUTHORIZED_PEER",
      status: 403,
      error: { code: "E_UNAUTHORIZED_PEER", message: "uid 5 is not allowed", hint: "ask" },
    });
    expect(denied).toMatchObject({
      status: "fail",
      message: "planterd refuses this user: uid 5 is not allowed",
      hint: "ask",
    });
    const notReady = reachableResult(ctx, {
      ok: true,
      version: { version: "0.1.0", commit: "abc", api: 1, backend: "bwrap", sandbox_mode: "permissive" },
      readyStatus: 503,
      ready: { ready: false, state: "unavailable" },
    });
    expect(notReady.message).toBe("planterd 0.1.0 answers on /r/planterd.sock but is not ready (state: unavailable)");
  });
});

describe("service (systemctl answers)", () => {
  const run = (stdout: string, code = 0, stderr = "") => ({ code, stdout, stderr });
  const installed = fakeCtx({
    install: {
      found: true,
      path: "/s/install-state.json",
      state: { units: [{ name: "planterd.socket", scope: "user", enabled: true }] } as never,
    },
  });

  test("is-enabled", () => {
    expect(unitsResult(fakeCtx(), run("enabled\n")).status).toBe("ok");
    expect(unitsResult(fakeCtx(), run("disabled\n", 1))).toEqual(
      fail(
        "planterd.socket is disabled: nothing listens after a reboot",
        "enable and start it",
        "systemctl --user enable --now planterd.socket",
      ),
    );
    // systemd 252 says so on stderr; newer ones print "not-found".
    const gone = run("", 1, "Failed to get unit file state for planterd.socket: No such file or directory\n");
    expect(unitsResult(fakeCtx(), gone).status).toBe("skip");
    expect(unitsResult(installed, gone)).toMatchObject({ status: "fail", fix: "planter install --user" });
    expect(unitsResult(installed, run("not-found\n", 1)).status).toBe("fail");
    expect(unitsResult(fakeCtx(), run("masked\n", 1)).fix).toBe(
      "systemctl --user unmask planterd.socket && systemctl --user enable --now planterd.socket",
    );
  });

  test("is-active", () => {
    expect(activeResult(fakeCtx(), run("active\n")).status).toBe("ok");
    expect(activeResult(fakeCtx(), run("inactive\n", 3)).status).toBe("skip");
    expect(activeResult(installed, run("inactive\n", 3))).toMatchObject({
      status: "fail",
      fix: "systemctl --user start planterd.socket",
    });
    expect(activeResult(installed, run("failed\n", 3))).toMatchObject({
      status: "fail",
      hint: "see why: journalctl --user -u planterd.socket -u planterd.service -n 50",
      fix: "systemctl --user reset-failed planterd.socket planterd.service && systemctl --user start planterd.socket",
    });
  });

  test("no systemd here: units enabled offline (an image) are said to start with systemd; else planterd runs directly", async () => {
    const direct = commandsFor({ mode: "user", uid: 1000, stateDir: "/s", planter: "planter", viaSystemd: false });
    const offline = { ...installed, systemd: false, commands: direct };
    // These checks consult no other check: nothing to link.
    const linked = (ctx: DoctorContext) => ctx as DoctorContext & Linked;
    const results = async (ctx: DoctorContext) =>
      Promise.all(serviceChecks.map(async (c) => (await c.run(linked(ctx))).message));
    expect(await results(offline)).toEqual([
      "systemd is not running here: install enabled planterd.socket offline, so it starts once systemd runs (an image booted)",
      "systemd is not running here: install enabled planterd.socket offline, so it starts once systemd runs (an image booted)",
    ]);
    expect((await serviceChecks[0]?.run(linked(offline)))?.hint).toBe(
      `until then, start planterd directly: ${direct.start}`,
    );
    const none = await results(fakeCtx({ systemd: false, commands: direct }));
    expect(none[0]).toStartWith("systemd is not running here (a container, or WSL without systemd)");
  });
});

describe("socket", () => {
  const dir = mkdtempSync("/tmp/pt-dgrp-");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const groups = join(dir, "group");
  writeFileSync(groups, "root:x:0:\nplanter:x:990:alice,bob\nusers:x:100:\n");
  const base = { allowedUids: [], groupFile: groups, sessionGids: null, restart: "R" };

  test("group membership: root, allowed uids, members by list or primary group, a stale session", () => {
    expect(membershipResult({ ...base, user: "root", uid: 0, primaryGid: 0 }).status).toBe("ok");
    expect(membershipResult({ ...base, user: "eve", uid: 1005, primaryGid: 100, allowedUids: [1005] }).status).toBe(
      "ok",
    );
    expect(membershipResult({ ...base, user: "alice", uid: 1001, primaryGid: 100 })).toEqual(
      ok("alice is in group planter (gid 990)"),
    );
    expect(membershipResult({ ...base, user: "carol", uid: 1003, primaryGid: 990 }).status).toBe("ok");
    expect(membershipResult({ ...base, user: "dave", uid: 1004, primaryGid: 100 })).toEqual(
      fail(
        "dave is not in group planter: planterd refuses their connections",
        "add the user to group planter, then log in again (or run `newgrp planter`) for it to take effect",
        "sudo usermod -aG planter dave",
      ),
    );
    expect(membershipResult({ ...base, user: "bob", uid: 1002, primaryGid: 100, sessionGids: [100] })).toMatchObject({
      status: "warn",
      fix: "newgrp planter",
    });
    const none = membershipResult({ ...base, user: "dave", uid: 1004, primaryGid: 100, groupFile: join(dir, "nope") });
    expect(none.fix).toBe("sudo groupadd --system planter && sudo usermod -aG planter dave && R");
  });

  test("layout fixes become commands that chain", () => {
    expect(asCommand("chmod 0600 /r/s.sock", "sudo ")).toBe("sudo chmod 0600 /r/s.sock");
    expect(asCommand("sudo chown 0 /r", "sudo ")).toBe("sudo chown 0 /r");
    expect(asCommand("rm /r  # planterd creates it again", "")).toBe("rm /r");
    expect(asCommand("move the socket elsewhere (--socket), or: sudo chown 1000 /x", "")).toBe("sudo chown 1000 /x");
  });
});

describe("jobs", () => {
  const base = { configPath: "/etc/planter/config.toml", shell: "/usr/sbin/nologin", sudo: "sudo ", restart: "R" };
  const entry = (name: string, uid: number) => ({ name, uid, gid: uid, home: "/nonexistent" });

  test("jobs.user: an unprivileged user is ok; a missing one fails with the useradd; uid 0 fails with the config", () => {
    expect(jobUserResult({ ...base, name: "planter-job", entry: entry("planter-job", 998) })).toEqual(
      ok("root's jobs run as planter-job (uid 998, gid 998)"),
    );
    expect(jobUserResult({ ...base, name: "planter-job", entry: null })).toEqual(
      fail(
        "user planter-job ([jobs] root_peer_user) does not exist: root's jobs run as nobody instead",
        "`planter install` creates it; or create it by hand, then restart planterd (it looks the user up when it starts)",
        "sudo useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin planter-job && R",
      ),
    );
    // Another configured name: install does not create it; the fix names it, quoted for the shell.
    const other = jobUserResult({ ...base, sudo: "", shell: "/sbin/nologin", name: "ci jobs", entry: null });
    expect([other.hint, other.fix]).toEqual([
      "install creates only the default user; create this one by hand, then restart planterd (it looks the user up when it starts)",
      "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /sbin/nologin 'ci jobs' && R",
    ]);
    expect(jobUserResult({ ...base, name: "toor", entry: entry("toor", 0) })).toEqual(
      fail(
        "user toor ([jobs] root_peer_user) is uid 0: planterd never runs a job as root, so root's jobs run as nobody",
        "name an unprivileged user in [jobs] root_peer_user (default planter-job, which install creates), then restart planterd",
        "sudoedit /etc/planter/config.toml && R",
      ),
    );
  });

  test("jobs.user reads the configured user from the passwd file in system mode, and skips in user mode", async () => {
    const dir = mkdtempSync("/tmp/pt-djob-");
    const passwd = join(dir, "passwd");
    writeFileSync(passwd, "root:x:0:0:root:/root:/bin/bash\nplanter-job:x:998:997::/nonexistent:/usr/sbin/nologin\n");
    const run = async (over: Partial<DoctorContext>) =>
      (await runChecks(CHECKS, selectChecks(CHECKS, ["jobs.user"]), fakeCtx(over), { timeoutMs: 1000 })).checks[0];
    const system = { ...fakeCtx().paths, mode: "system" as const };
    expect(await run({ passwdFile: passwd, paths: system })).toMatchObject({
      status: "ok",
      message: "root's jobs run as planter-job (uid 998, gid 997)",
    });
    writeFileSync(join(dir, "config.toml"), '[jobs]\nroot_peer_user = "root"\n');
    const rootUser = await run({ passwdFile: passwd, paths: system, config: readConfig(join(dir, "config.toml")) });
    expect(rootUser?.status).toBe("fail");
    expect(rootUser?.message).toStartWith("user root ([jobs] root_peer_user) is uid 0");
    expect(await run({ passwdFile: join(dir, "empty"), paths: system })).toMatchObject({ status: "fail" });
    expect(await run({ passwdFile: passwd })).toMatchObject({ status: "skip" });
    rmSync(dir, { recursive: true });
  });

  test("the nologin shell is the one this host has", () => {
    expect(nologinShell((p) => p === "/sbin/nologin")).toBe("/sbin/nologin");
    expect(nologinShell(() => true)).toBe("/usr/sbin/nologin");
    expect(nologinShell(() => false)).toBe("/usr/sbin/nologin");
  });
});

describe("config, sandbox, limits", () => {
  test("authz.strict = false warns with a fix that turns it back on", async () => {
    expect(strictResult(true, "/c.toml", { restart: "R", sudo: "" }).status).toBe("ok");
    const r = strictResult(false, "/tmp/x.toml", { restart: "R", sudo: "" });
    expect(r.status).toBe("warn");
    expect(r.fix).toBe("sed -i 's/^\\(\\s*strict\\s*=\\s*\\)false/\\1true/' /tmp/x.toml && R");
    // The sed really flips the key (and only it).
    const dir = mkdtempSync("/tmp/pt-dsed-");
    const file = join(dir, "c.toml");
    writeFileSync(file, '[authz]\nstrict = false\n[sandbox]\nmode = "disabled"\n');
    const sed = (r.fix as string).replace(" && R", "").replace("/tmp/x.toml", file);
    expect(Bun.spawnSync(["sh", "-c", sed]).exitCode).toBe(0);
    expect(await Bun.file(file).text()).toBe('[authz]\nstrict = true\n[sandbox]\nmode = "disabled"\n');
    rmSync(dir, { recursive: true });
  });

  test("the command inside a sandbox hint", () => {
    expect(commandInHint("install it: sudo apt-get install bubblewrap")).toBe("sudo apt-get install bubblewrap");
    expect(
      commandInHint(
        "enable them: sudo sysctl kernel.unprivileged_userns_clone=1 (Debian) or raise user.max_user_namespaces",
      ),
    ).toBe("sudo sysctl kernel.unprivileged_userns_clone=1");
    expect(commandInHint("install bubblewrap with your package manager")).toBeNull();
  });

  test("sandbox.backend: a missing backend fails with the install command; planterd's failed probe fails", () => {
    const missing = backendResult(
      {
        ok: false,
        backend: "bwrap",
        version: null,
        userns: "n/a",
        checks: [],
        message: "bubblewrap (bwrap) is not installed or not on PATH",
        hint: "install it: sudo apt-get install bubblewrap",
      },
      { mode: "permissive", daemon: null, planter: "planter", restart: "R" },
    );
    expect(missing).toEqual(
      fail(
        "bwrap: bubblewrap (bwrap) is not installed or not on PATH",
        "install it: sudo apt-get install bubblewrap",
        "sudo apt-get install bubblewrap",
      ),
    );
    const works = {
      ok: true,
      backend: "bwrap",
      version: "bubblewrap 0.8.0",
      userns: "enabled",
      checks: [{ id: "x", ok: true, detail: "" }],
    };
    const daemonBad = { ok: false, message: "bwrap not on PATH", hint: "install it" };
    // planterd's own probe failing means its jobs fail (enforced) or run unsandboxed (permissive): a failure.
    expect(backendResult(works, { mode: "enforced", daemon: daemonBad, planter: "planter", restart: "R" }).status).toBe(
      "fail",
    );
    const permissive = backendResult(works, {
      mode: "permissive",
      daemon: daemonBad,
      planter: "planter",
      restart: "R",
    });
    expect([permissive.status, permissive.message]).toEqual([
      "fail",
      "bwrap (bubblewrap 0.8.0) works here, but planterd's own probe failed, so its jobs run WITHOUT a sandbox: bwrap not on PATH",
    ]);
    expect(backendResult(works, { mode: "disabled", daemon: daemonBad, planter: "planter", restart: "R" }).status).toBe(
      "ok",
    );
    const escaped = backendResult(
      {
        ...works,
        ok: false,
        message: "the sandbox let the probe do what it must not",
        checks: [{ id: "network", ok: false, detail: "connecting: connected" }],
      },
      { mode: null, daemon: null, planter: "planter", restart: "R" },
    );
    expect(escaped).toMatchObject({ status: "fail", fix: "planter sandbox check --json" });
  });

  test("sandbox.containment: each broken class named; all held is ok; no probe is a skip", () => {
    const base = { ok: true, backend: "bwrap", version: "bubblewrap 0.8.0", userns: "enabled" };
    const held = [
      { id: "write-inside", ok: true, detail: "writing the cell dir: written" },
      { id: "not-root", ok: true, detail: "the job runs as uid 65534" },
      { id: "proc-sys", ok: true, detail: "writing /proc/sys/kernel/core_pattern: denied" },
      { id: "host-socket", ok: true, detail: "connecting to a host Unix socket: denied" },
      { id: "credentials", ok: true, detail: "a file in the real home /root: hidden" },
    ];
    expect(containmentResult({ ...base, checks: held }, "planter")).toEqual(
      ok(
        "the job runs as uid 65534; writing /proc/sys/kernel/core_pattern: denied; connecting to a host Unix socket: denied; a file in the real home /root: hidden",
      ),
    );
    const broken = held.map((c) => (c.id === "not-root" ? { ...c, ok: false, detail: "the job runs as uid 0" } : c));
    expect(containmentResult({ ...base, ok: false, checks: broken }, "planter")).toMatchObject({
      status: "fail",
      message: "containment broken: the job runs as uid 0",
      fix: "planter sandbox check --json",
    });
    expect(containmentResult({ ...base, ok: false, checks: [] }, "planter").status).toBe("skip");
  });

  test("sandbox.userns from the probe, else from the kernel settings", () => {
    const none = { clone: null, max: "15000", apparmor: null };
    expect(usernsResult("enabled", none).status).toBe("ok");
    expect(usernsResult("not needed (root)", none).status).toBe("ok");
    expect(usernsResult("n/a", none).message).toContain("not probed: bubblewrap is missing");
    expect(usernsResult("restricted (AppArmor)", none).fix).toBe(
      "echo 'kernel.apparmor_restrict_unprivileged_userns=0' | sudo tee /etc/sysctl.d/60-planter-userns.conf && sudo sysctl -p /etc/sysctl.d/60-planter-userns.conf",
    );
    expect(usernsResult("n/a", { ...none, apparmor: "1" }).status).toBe("fail");
    const debian = usernsResult("disabled", { ...none, clone: "0" });
    expect(debian.message).toContain("kernel.unprivileged_userns_clone = 0");
    expect(debian.fix).toContain("'kernel.unprivileged_userns_clone=1'");
    expect(usernsResult("n/a", { ...none, max: "0" }).fix).toContain("'user.max_user_namespaces=15000'");
  });

  test("limits.cgroup: what planterd reports; monitor-only is ok unless systemd could delegate", () => {
    const ctx = fakeCtx();
    const noLocal = () => {
      throw new Error("not consulted");
    };
    expect(limitsResult(ctx, { enforcement: "cgroup v2", cgroup_unavailable: null }, noLocal).status).toBe("ok");
    const container = limitsResult(
      fakeCtx({ systemd: false }),
      { enforcement: "monitor", cgroup_unavailable: "no cgroup v2 hierarchy is mounted", interval_ms: 250 },
      noLocal,
    );
    expect(container).toEqual(ok("monitor only (sampling every 250 ms): no cgroup v2 hierarchy is mounted"));
    const undelegated = limitsResult(
      ctx,
      {
        enforcement: "monitor",
        cgroup_unavailable:
          "cgroup v2 group /x is not delegated to planterd; run planterd as a systemd unit with Delegate=yes",
      },
      noLocal,
    );
    expect(undelegated.status).toBe("warn");
    expect(undelegated.fix).toBe(
      "mkdir -p ~/.config/systemd/user/planterd.service.d && printf '[Service]\\nDelegate=yes\\n' | tee ~/.config/systemd/user/planterd.service.d/delegate.conf && systemctl --user daemon-reload && systemctl --user restart planterd.service",
    );
    expect(limitsResult(ctx, null, () => ({ ok: true, why: "w" })).message).toBe(
      "cgroup v2 available: w; local detection, planterd did not report",
    );
  });
});

describe("state", () => {
  const GiB = 1024 ** 3;
  test("disk space: fail under 100 MiB, warn under 1 GiB or 5 %", () => {
    expect(diskResult(50 * 1024 ** 2, 100 * GiB, "/s", "/s/jobs")).toMatchObject({
      status: "fail",
      message: "50 MiB free of 100.0 GiB (0.0 %) on /s: planterd cannot write state or logs much longer",
      fix: "du -sh /s/jobs/* 2>/dev/null | sort -h | tail -20",
    });
    expect(diskResult(0.5 * GiB, 100 * GiB, "/s", "/s/jobs").status).toBe("warn");
    expect(diskResult(3 * GiB, 100 * GiB, "/s", "/s/jobs").status).toBe("warn");
    expect(diskResult(3 * GiB, 10 * GiB, "/s", "/s/jobs")).toEqual(ok("3.0 GiB free of 10.0 GiB (30 %) on /s"));
  });

  test("disk space: below the log reserve fails and says that jobs that print are stopped", () => {
    const MiB = 1024 ** 2;
    expect(diskResult(3 * MiB, 24 * MiB, "/s", "/s/jobs", 8 * MiB)).toMatchObject({
      status: "fail",
      message:
        "3 MiB free of 24 MiB (13 %) on /s: below planter's log reserve of 8 MiB ([logs] min_free_bytes): jobs whose output grows are stopped (disk_full)",
      fix: "du -sh /s/jobs/* 2>/dev/null | sort -h | tail -20",
    });
    // Above the reserve, the usual thresholds.
    expect(diskResult(3 * GiB, 10 * GiB, "/s", "/s/jobs", 64 * MiB).status).toBe("ok");
  });

  test("job dirs: all known is ok; an emptied database fails with the restore or move-aside fix; a few unknown warn", () => {
    const files = { db: "/s/planter.db", jobs: "/s/jobs" };
    const c = { stop: "STOP", start: "START", sudo: "" };
    expect(jobDirsResult({ dirs: 2, unknown: [], known: 5, backups: [] }, files, c)).toEqual(
      ok("2 job dirs, each recorded in /s/planter.db"),
    );
    const emptied = jobDirsResult({ dirs: 2, unknown: ["j-a", "j-b"], known: 0, backups: [] }, files, c);
    expect(emptied).toMatchObject({
      status: "fail",
      message:
        "/s/planter.db records no job, but /s/jobs holds 2 job dirs (j-a, j-b): the database was emptied or replaced and planterd started with empty state",
      fix: "mkdir -p /s/jobs.unknown && mv /s/jobs/j-a /s/jobs/j-b /s/jobs.unknown/",
    });
    const withBackup = jobDirsResult(
      { dirs: 1, unknown: ["j-a"], known: 0, backups: ["/s/planter.db.v4.x.bak", "/s/planter.db.v5.y.bak"] },
      files,
      c,
    );
    expect(withBackup.fix).toBe(
      "STOP; cp /s/planter.db.v5.y.bak /s/planter.db && rm -f /s/planter.db-wal /s/planter.db-shm && START",
    );
    const some = jobDirsResult({ dirs: 9, unknown: ["j-1", "j-2", "j-3", "j-4"], known: 5, backups: [] }, files, c);
    expect(some.status).toBe("warn");
    expect(some.message).toBe("4 job dirs in /s/jobs that /s/planter.db does not know (j-1, j-2, j-3, …)");
  });

  test("schema version: current ok, older warns with the stop-migrate-start fix, newer fails", () => {
    expect(schemaResult(3, 3, "M").status).toBe("ok");
    expect(schemaResult(2, 3, "M")).toMatchObject({
      status: "warn",
      message: "schema v2, this build writes v3",
      fix: "M",
    });
    expect(schemaResult(4, 3, "M").status).toBe("fail");
  });

  test("legacy JSON layout: warn while migrate would import something or skip malformed files", () => {
    const fix = { migrate: "M", dryRun: "D" };
    const tree = (toImport: { cells: number; jobs: number }, malformed = 0) => ({
      cells: 2,
      jobs: 9,
      malformed,
      toImport,
    });
    expect(legacyResult("/l", null, fix)).toEqual(ok("no legacy prototype state at /l"));
    expect(legacyResult("/l", { cells: 0, jobs: 0, malformed: 0, toImport: { cells: 0, jobs: 0 } }, fix).status).toBe(
      "ok",
    );
    expect(legacyResult("/l", tree({ cells: 1, jobs: 9 }, 2), fix)).toEqual(
      warn(
        "legacy prototype state at /l is not imported: 9 jobs and 1 cell to import; 2 malformed files",
        "planter's first prototype kept JSON files there; `migrate state` imports them into planter.db once, with planterd stopped (--dry-run shows what it would do)",
        "M",
      ),
    );
    expect(legacyResult("/l", tree({ cells: 0, jobs: 0 }, 1), fix)).toMatchObject({
      status: "warn",
      message: "legacy prototype state at /l: imported, but 1 malformed file could not be",
      fix: "D",
    });
    expect(legacyResult("/l", tree({ cells: 0, jobs: 0 }), fix)).toEqual(ok("/l: imported (9 jobs, 2 cells)"));
  });

  test("os-release names", () => {
    expect(osName('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')).toBe(
      "Debian GNU/Linux 12 (bookworm)",
    );
    expect(osName("PRETTY_NAME=Alpine\n")).toBe("Alpine");
    expect(osName("")).toBeNull();
  });
});
