/** macOS code paths that run on Linux: the launchd plist as literal text, launchctl answers, doctor's macos.* verdicts, darwin branches. */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sockaddrPath } from "../../lib/daemon/peer.ts";
import { runChecks, selectChecks } from "../../lib/doctor/check.ts";
import { CHECKS } from "../../lib/doctor/checks/index.ts";
import { launchdResult, sandboxExecResult } from "../../lib/doctor/checks/macos.ts";
import { createContext } from "../../lib/doctor/context.ts";
import {
  agentPlistPath,
  bootout,
  bootstrap,
  launchdCommands,
  parsePrint,
  print,
  renderPlist,
  xmlEscape,
} from "../../lib/host/launchd.ts";
import { archName, machineArch, plannedAgent, productVersion, refuseOnMac } from "../../lib/host/macos.ts";
import { installMode, resolvePaths } from "../../lib/paths.ts";
import { platformBackend } from "../../lib/sandbox/index.ts";

const dir = mkdtempSync("/tmp/pt-macu-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A recording shim under `name`: logs "name args…" to `log`, prints `out`, exits `code`. */
function shim(bin: string, name: string, log: string, out = "", code = 0): void {
  mkdirSync(bin, { recursive: true });
  const p = join(bin, name);
  writeFileSync(
    p,
    `#!/bin/sh\nprintf '%s' "${name}" >> ${log}; for a in "$@"; do printf ' %s' "$a" >> ${log}; done; printf '\\n' >> ${log}\n${out ? `printf '%s' '${out}'\n` : ""}${code === 113 ? `echo 'Could not find service "dev.planter.planterd" in domain for port' >&2\n` : ""}exit ${code}\n`,
  );
  chmodSync(p, 0o755);
}
const lines = (log: string) => readFileSync(log, "utf8").trim().split("\n");

describe("launchd plist", () => {
  test("rendered as literal text, with every value escaped", () => {
    const text = renderPlist({
      label: "dev.planter.planterd",
      binary: "/Users/dev/.local/bin/planter",
      configPath: "/Users/dev/Library/Application Support/planter/config.toml",
      socketPath: "/Users/dev/Library/Application Support/planter/planterd.sock",
      stateDir: "/Users/dev/Library/Application Support/planter",
      logPath: "/Users/dev/Library/Application Support/planter/planterd.log",
    });
    expect(text).toBe(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>dev.planter.planterd</string>
	<key>ProgramArguments</key>
	<array>
		<string>/Users/dev/.local/bin/planter</string>
		<string>daemon</string>
		<string>--config</string>
		<string>/Users/dev/Library/Application Support/planter/config.toml</string>
	</array>
	<key>EnvironmentVariables</key>
	<dict>
		<key>PATH</key>
		<string>/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin</string>
		<key>PLANTER_MODE</key>
		<string>user</string>
		<key>PLANTER_SOCKET</key>
		<string>/Users/dev/Library/Application Support/planter/planterd.sock</string>
		<key>PLANTER_STATE</key>
		<string>/Users/dev/Library/Application Support/planter</string>
	</dict>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<true/>
	<key>AbandonProcessGroup</key>
	<true/>
	<key>ProcessType</key>
	<string>Background</string>
	<key>StandardOutPath</key>
	<string>/Users/dev/Library/Application Support/planter/planterd.log</string>
	<key>StandardErrorPath</key>
	<string>/Users/dev/Library/Application Support/planter/planterd.log</string>
</dict>
</plist>
`);
    const odd = renderPlist({
      label: "dev.planter.planterd",
      binary: "/Users/a&b/<bin>/planter",
      configPath: `/Users/"q"/'c'.toml`,
      socketPath: "/s",
      stateDir: "/d",
      logPath: "/l",
    });
    expect(odd).toContain("<string>/Users/a&amp;b/&lt;bin&gt;/planter</string>");
    expect(odd).toContain("<string>/Users/&quot;q&quot;/&apos;c&apos;.toml</string>");
    expect(xmlEscape("a<b>&\"'")).toBe("a&lt;b&gt;&amp;&quot;&apos;");
    expect(agentPlistPath("/Users/dev")).toBe("/Users/dev/Library/LaunchAgents/dev.planter.planterd.plist");
  });
});

describe("launchctl", () => {
  test("bootstrap, bootout and print are the exact calls, through the one wrapper", async () => {
    const bin = join(dir, "lc-bin");
    const log = join(dir, "lc.log");
    shim(bin, "launchctl", log);
    const env = { PATH: `${bin}:/usr/bin:/bin` };
    expect((await bootstrap(501, "/Users/dev/Library/LaunchAgents/dev.planter.planterd.plist", env)).code).toBe(0);
    expect((await bootout(501, "dev.planter.planterd", env)).code).toBe(0);
    expect((await print(501, "dev.planter.planterd", env)).code).toBe(0);
    expect(lines(log)).toEqual([
      "launchctl bootstrap gui/501 /Users/dev/Library/LaunchAgents/dev.planter.planterd.plist",
      "launchctl bootout gui/501/dev.planter.planterd",
      "launchctl print gui/501/dev.planter.planterd",
    ]);
    expect((await print(501, "dev.planter.planterd", { PATH: "/nonexistent" })).code).toBe(127);
  });

  test("print output: the service's own keys, not nested blocks'", () => {
    const out = [
      "gui/501/dev.planter.planterd = {",
      "\tactive count = 1",
      "\tpath = /Users/dev/Library/LaunchAgents/dev.planter.planterd.plist",
      "\tstate = running",
      "\targuments = {",
      "\t\tstate = nested",
      "\t}",
      "\tpid = 4242",
      "\tlast exit code = (never exited)",
      "}",
    ].join("\n");
    expect(parsePrint(out)).toEqual({
      state: "running",
      pid: 4242,
      lastExit: "(never exited)",
      path: "/Users/dev/Library/LaunchAgents/dev.planter.planterd.plist",
    });
    expect(parsePrint("gui/501/x = {\n\tstate = not running\n\tlast exit code = 78: EX_CONFIG\n}\n")).toEqual({
      state: "not running",
      pid: null,
      lastExit: "78: EX_CONFIG",
      path: null,
    });
  });

  test("fix commands when launchd manages planterd", () => {
    expect(
      launchdCommands(501, "/Users/dev/Library/LaunchAgents/dev.planter.planterd.plist", (a) => a.join(" ")),
    ).toEqual({
      start: "launchctl bootstrap gui/501 /Users/dev/Library/LaunchAgents/dev.planter.planterd.plist",
      stop: "launchctl bootout gui/501/dev.planter.planterd",
      restart: "launchctl kickstart -k gui/501/dev.planter.planterd",
    });
  });
});

describe("macOS host facts and refusals", () => {
  test("sw_vers and uname -m through their wrappers", async () => {
    const bin = join(dir, "facts-bin");
    const log = join(dir, "facts.log");
    shim(bin, "sw_vers", log, "14.5\n");
    shim(bin, "uname", log, "arm64\n");
    const env = { PATH: `${bin}:/usr/bin:/bin` };
    expect([await productVersion(env), await machineArch(env)]).toEqual(["14.5", "arm64"]);
    expect(lines(log)).toEqual(["sw_vers -productVersion", "uname -m"]);
    expect([archName("x86_64"), archName("arm64"), archName("")]).toEqual(["x64", "arm64", null]);
    shim(bin, "sw_vers", log, "", 1);
    expect(await productVersion(env)).toBeNull();
  });

  test("system mode, root and --systemd yes are refused with a hint", () => {
    const err = (o: Parameters<typeof refuseOnMac>[0]) => {
      try {
        refuseOnMac(o);
        return null;
      } catch (e) {
        return [(e as Error).message, (e as { hint?: string }).hint];
      }
    };
    expect(err({ mode: "user", uid: 501 })).toBeNull();
    expect(err({ mode: "system", uid: 0 })).toEqual([
      "system mode is not available on macOS: planterd runs as a launchd user agent",
      "install per user, without sudo: install --user",
    ]);
    expect(err({ mode: "user", uid: 0 })?.[0]).toBe("on macOS, install as the user who will run jobs, not as root");
    expect(err({ mode: "user", uid: 501, systemd: "yes" })?.[0]).toBe("--systemd yes: macOS has no systemd");
    expect(plannedAgent({ uid: 501, plist: "/p.plist", upgrade: true, staged: false })).toEqual([
      ["plist", "write the launchd agent /p.plist"],
      ["launchctl", "launchctl bootout gui/501/dev.planter.planterd, then launchctl bootstrap gui/501 /p.plist"],
    ]);
    expect(plannedAgent({ uid: 501, plist: "/p.plist", upgrade: false, staged: true })).toEqual([
      ["plist", "write the launchd agent /p.plist"],
    ]);
  });

  test("darwin branches: paths, mode, backend, sockaddr layout", () => {
    // Root on macOS is still user mode (there is no system mode there).
    expect(installMode({}, 0, "darwin")).toBe("user");
    const p = resolvePaths({ HOME: "/Users/a-rather-long-user-name" }, "darwin", 501);
    expect(p.socketPath).toBe("/Users/a-rather-long-user-name/Library/Application Support/planter/planterd.sock");
    expect(p.socketPath.length).toBeLessThan(104); // macOS sun_path holds 104 bytes with the NUL
    expect(platformBackend("darwin")?.name).toBe("seatbelt");
    const path = "/Users/dev/Library/Application Support/planter/planterd.sock";
    const bytes = Buffer.from(path);
    const mac = new Uint8Array(112);
    mac.set([2 + bytes.length + 1, 1], 0); // sun_len, sun_family = AF_UNIX
    mac.set(bytes, 2);
    expect(sockaddrPath(mac, 2 + bytes.length + 1, "darwin")).toBe(path);
    // The same bytes read with Linux's layout: family 1 + (len << 8) is not AF_UNIX.
    expect(sockaddrPath(mac, 2 + bytes.length + 1, "linux")).toBeNull();
    const linux = new Uint8Array(112);
    linux.set([1, 0], 0);
    linux.set(bytes, 2);
    expect(sockaddrPath(linux, 110, "linux")).toBe(path);
    expect(sockaddrPath(linux, 110, "darwin")).toBeNull();
  });
});

describe("doctor on macOS", () => {
  const o = {
    uid: 501,
    plist: "/Users/dev/Library/LaunchAgents/dev.planter.planterd.plist",
    recorded: true,
    plistExists: true,
    log: "/Users/dev/Library/Application Support/planter/planterd.log",
    planter: "planter",
  };
  const printed = (state: string, pid: number | null, path = o.plist) => ({
    code: 0,
    stdout: `gui/501/dev.planter.planterd = {\n\tpath = ${path}\n\tstate = ${state}\n${pid ? `\tpid = ${pid}\n` : ""}\tlast exit code = 1\n}\n`,
    stderr: "",
  });
  const missing = { code: 113, stdout: "", stderr: 'Could not find service "dev.planter.planterd" in domain for port' };

  test("macos.launchd: running, crashing, not loaded, plist gone, not installed, another plist", () => {
    expect(launchdResult(o, printed("running", 77))).toEqual({
      status: "ok",
      message:
        "gui/501/dev.planter.planterd is loaded and running (pid 77); launchd starts it at login and keeps it alive",
    });
    expect(launchdResult(o, printed("not running", null))).toEqual({
      status: "fail",
      message: "gui/501/dev.planter.planterd is loaded but not running (state not running, last exit code 1)",
      hint: `planterd keeps exiting: see the log ${o.log}`,
      fix: "launchctl kickstart -k gui/501/dev.planter.planterd",
    });
    expect(launchdResult(o, missing)).toMatchObject({
      status: "fail",
      fix: "launchctl bootstrap gui/501 /Users/dev/Library/LaunchAgents/dev.planter.planterd.plist",
    });
    expect(launchdResult({ ...o, plistExists: false }, missing)).toMatchObject({
      status: "fail",
      fix: "planter install --user",
    });
    expect(launchdResult({ ...o, recorded: false }, missing)).toMatchObject({ status: "skip" });
    expect(launchdResult(o, printed("running", 77, "/elsewhere.plist"))).toMatchObject({
      status: "warn",
      fix: "launchctl bootout gui/501/dev.planter.planterd && launchctl bootstrap gui/501 /Users/dev/Library/LaunchAgents/dev.planter.planterd.plist",
    });
    expect(launchdResult(o, { code: 127, stdout: "", stderr: "" }).status).toBe("fail");
  });

  test("macos.sandbox-exec: missing, refused, works", () => {
    expect(sandboxExecResult("/usr/bin/sandbox-exec", { ok: true })).toMatchObject({ status: "ok" });
    expect(
      sandboxExecResult("/usr/bin/sandbox-exec", { ok: false, message: "/usr/bin/sandbox-exec not found" }),
    ).toMatchObject({ status: "fail", fix: "ls -l /usr/bin/sandbox-exec" });
    expect(
      sandboxExecResult("/usr/bin/sandbox-exec", {
        ok: false,
        message: "sandbox-exec failed: sandbox_apply: Operation not permitted",
      }),
    ).toEqual({
      status: "fail",
      message: "sandbox-exec failed: sandbox_apply: Operation not permitted",
      hint: "sandbox-exec refuses even an allow-all profile: planter itself runs inside a sandbox (an app sandbox, another sandbox-exec), which macOS does not nest; run planterd outside it",
      fix: "/usr/bin/sandbox-exec -p '(version 1)(allow default)' -- /usr/bin/true",
    });
  });

  test("the checks run their probes through shims on darwin, and skip on Linux", async () => {
    const bin = join(dir, "doc-bin");
    const log = join(dir, "doc.log");
    shim(bin, "launchctl", log, "", 113);
    shim(bin, "sandbox-exec", log);
    const home = join(dir, "doc-home");
    mkdirSync(home, { recursive: true });
    const env = { PATH: `${bin}:/usr/bin:/bin`, HOME: home };
    const macos = selectChecks(CHECKS, ["macos"]);
    const run = async (platform: NodeJS.Platform) => {
      const ctx = createContext({ env, platform, uid: 501, systemd: false, sandboxExec: join(bin, "sandbox-exec") });
      expect(ctx.paths.stateDir).toBe(
        platform === "darwin"
          ? join(home, "Library", "Application Support", "planter")
          : join(home, ".local", "state", "planter"),
      );
      return (await runChecks(CHECKS, macos, ctx, { timeoutMs: 5000 })).checks.map((c) => [c.id, c.status]);
    };
    expect(await run("darwin")).toEqual([
      ["macos.sandbox-exec", "ok"],
      ["macos.launchd", "skip"],
    ]);
    expect(lines(log)).toEqual([
      "sandbox-exec -p (version 1)(allow default) -- /usr/bin/true",
      "launchctl print gui/501/dev.planter.planterd",
    ]);
    rmSync(log);
    expect(await run("linux")).toEqual([
      ["macos.sandbox-exec", "skip"],
      ["macos.launchd", "skip"],
    ]);
    expect(() => readFileSync(log)).toThrow();
  });
});

describe("process table without /proc (macOS ps)", () => {
  test("ps output becomes the same table /proc gives", async () => {
    const { psTable } = await import("../../lib/jobs/proc.ts");
    const t = psTable(
      [
        "    1     0     1  12000 Sun Nov 22 01:00:00 2026",
        "  501     1   501   2048 Sun Nov 22 02:00:00 2026",
        "  502   501   501   4096 Sun Nov 22 02:00:01 2026",
        "garbage",
      ].join("\n"),
      16384,
    );
    expect([...t.procs.keys()]).toEqual([1, 501, 502]);
    expect(t.procs.get(502)).toEqual({
      pid: 502,
      ppid: 501,
      pgid: 501,
      startTime: "Sun Nov 22 02:00:01 2026",
      rssPages: 256,
      threads: 1,
    });
    expect(t.children.get(501)).toEqual([502]);
    expect(t.groups.get(501)).toEqual([501, 502]);
  });
});
