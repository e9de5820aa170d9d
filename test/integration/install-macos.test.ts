/**
 * install / uninstall on macOS, driven on Linux: platform "darwin", recording shims for sw_vers
 * and uname, and a launchctl stand-in (test/shims/launchctl-agent) that really starts the plist's
 * program, so readiness through the socket and the doctor checks run against a real planterd.
 */
import { afterAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { Client } from "../../lib/api/client.ts";
import { runDoctor } from "../../lib/doctor/index.ts";
import { install } from "../../lib/host/install.ts";
import { renderPlist } from "../../lib/host/launchd.ts";
import { uninstall } from "../../lib/host/uninstall.ts";
import { cleanup, PLANTER, waitFor } from "../harness.ts";
import { callLog, killUnder, SHIMS, tree } from "../host-fixture.ts";

const work = mkdtempSync("/tmp/pt-mac-");
// The "binary": planter from source (the launchctl stand-in runs it as the agent's program).
const binary = join(work, "planter-src");
writeFileSync(binary, `#!/bin/sh\nBUN_RUNTIME_TRANSPILER_CACHE_PATH=0 exec ${process.execPath} ${PLANTER} "$@"\n`);
chmodSync(binary, 0o755);
const UID = 501;

afterAll(() => {
  killUnder(work);
  cleanup(work);
});

/** A fake Mac user: a home, shims first on PATH (sw_vers, uname answer; launchctl as given), a call log. */
function mac(name: string, launchctl: "record" | "launchctl-agent") {
  const base = join(work, name);
  const home = join(base, "home");
  const bin = join(base, "shims");
  // A Mac home has ~/Library/Application Support (where planter's state stays after uninstall).
  mkdirSync(join(home, "Library", "Application Support"), { recursive: true });
  mkdirSync(bin);
  for (const [prog, shim] of [
    ["launchctl", launchctl],
    ["sw_vers", "record"],
    ["uname", "record"],
  ])
    symlinkSync(join(SHIMS, shim as string), join(bin, prog as string));
  const log = join(base, "calls.log");
  const env: Record<string, string> = {
    PATH: `${bin}:${dirname(process.execPath)}:/usr/bin:/bin`,
    HOME: home,
    SHIM_LOG: log,
    SHIM_OUT_sw_vers: "14.5",
    SHIM_OUT_uname: "arm64",
    NO_COLOR: "1",
    BUN_RUNTIME_TRANSPILER_CACHE_PATH: "0",
  };
  const calls = callLog(log);
  const lines: string[] = [];
  const opts = { platform: "darwin" as const, uid: UID, env, progress: (l: string) => lines.push(l) };
  return { base, home, env, calls, opts, lines };
}

const STATE = "Library/Application Support/planter";

describe("macOS install into a staging root (nothing started)", () => {
  test("binary, link, config and plist recorded; sw_vers and uname asked; uninstall restores the tree", async () => {
    const h = mac("staging", "record");
    const root = join(h.base, "root");
    mkdirSync(root);
    const target = "/Users/dev";
    const env = { ...h.env, HOME: target };
    const before = tree(root);
    const r = await install({ ...h.opts, env, mode: "user", root, binary, dryRun: false, waitMs: 5000 });
    expect([r.upgrade, r.ready, r.daemon.managed_by]).toEqual([false, null, "none"]);
    expect(r.steps.map((s) => s.id)).toEqual(["binary", "link.planterd", "docs", "config", "plist"]);
    expect(h.calls()).toEqual(["sw_vers -productVersion", "uname -m"]);
    const plist = join(target, "Library", "LaunchAgents", "dev.planter.planterd.plist");
    const stateDir = join(target, STATE);
    expect(readFileSync(join(root, plist), "utf8")).toBe(
      renderPlist({
        label: "dev.planter.planterd",
        binary: "/Users/dev/.local/bin/planter",
        configPath: "/Users/dev/Library/Application Support/planter/config.toml",
        socketPath: "/Users/dev/Library/Application Support/planter/planterd.sock",
        stateDir: "/Users/dev/Library/Application Support/planter",
        logPath: "/Users/dev/Library/Application Support/planter/planterd.log",
      }),
    );
    const state = JSON.parse(readFileSync(join(root, stateDir, "install-state.json"), "utf8"));
    expect(state.files.map((f: { path: string; kind: string }) => [f.path, f.kind])).toEqual([
      ["/Users/dev/.local/bin/planter", "binary"],
      ["/Users/dev/.local/bin/planterd", "link"],
      ["/Users/dev/.local/share/bash-completion/completions/planter", "completion"],
      ["/Users/dev/.local/share/zsh/site-functions/_planter", "completion"],
      ["/Users/dev/.local/share/fish/vendor_completions.d/planter.fish", "completion"],
      ["/Users/dev/.local/share/man/man1/planter.1", "manpage"],
      ["/Users/dev/Library/Application Support/planter/config.toml", "config"],
      [plist, "plist"],
    ]);
    expect(state.platform).toEqual({
      os: "darwin",
      arch: "arm64",
      os_release: { id: "macos", version_id: "14.5", pretty_name: "macOS 14.5" },
      package_manager: null,
      systemd: false,
    });
    expect(state.paths).toEqual({
      state_dir: stateDir,
      socket: join(stateDir, "planterd.sock"),
      config: join(stateDir, "config.toml"),
      bin_dir: "/Users/dev/.local/bin",
    });
    expect(state.daemon).toEqual({ managed_by: "none", pid: null });

    const u = await uninstall({ ...h.opts, env, mode: "user", root, force: false, purge: false, dryRun: false });
    expect(u.removed).toEqual([
      plist,
      "/Users/dev/Library/Application Support/planter/config.toml",
      "/Users/dev/.local/share/man/man1/planter.1",
      "/Users/dev/.local/share/fish/vendor_completions.d/planter.fish",
      "/Users/dev/.local/share/zsh/site-functions/_planter",
      "/Users/dev/.local/share/bash-completion/completions/planter",
      "/Users/dev/.local/bin/planterd",
      "/Users/dev/.local/bin/planter",
    ]);
    // Nothing was loaded, so nothing is booted out.
    expect(h.calls()).toEqual(["sw_vers -productVersion", "uname -m"]);
    expect(tree(root)).toEqual(before);
  });

  test("system mode is refused with a hint, and changes nothing", async () => {
    const h = mac("system", "record");
    const root = join(h.base, "root");
    mkdirSync(root);
    const r = install({ ...h.opts, mode: "system", root, binary, dryRun: false, waitMs: 1000 });
    await expect(r).rejects.toThrow("system mode is not available on macOS");
    expect(readdirSync(root)).toEqual([]);
    expect(h.calls()).toEqual([]);
  });
});

describe("macOS install with launchd (the agent really runs planterd)", () => {
  test("install → ready → upgrade → doctor → uninstall: exact launchctl calls, tree as before", async () => {
    const h = mac("agent", "launchctl-agent");
    const notState = (rel: string) => rel.startsWith(`home/${STATE}`) || rel.startsWith("calls.log");
    const before = tree(h.base, notState);
    const plist = join(h.home, "Library", "LaunchAgents", "dev.planter.planterd.plist");
    const socket = join(h.home, STATE, "planterd.sock");

    const r = await install({ ...h.opts, mode: "user", root: "/", binary, dryRun: false, waitMs: 20_000 });
    expect([r.upgrade, r.ready, r.daemon.managed_by, r.socket]).toEqual([false, true, "launchd", socket]);
    expect(h.calls()).toEqual([
      "sw_vers -productVersion",
      "uname -m",
      "launchctl print gui/501/dev.planter.planterd",
      `launchctl bootstrap gui/501 ${plist}`,
    ]);
    expect(h.lines).toContain("launchd agent dev.planter.planterd loaded into gui/501");
    const v = await new Client(socket).version();
    expect(v.api).toBe(1);
    const firstPid = JSON.parse(
      readFileSync(`${join(h.base, "calls.log")}.launchd/dev.planter.planterd.json`, "utf8"),
    ).pid;

    // Upgrade: the loaded agent is booted out (and gone) before the new plist is bootstrapped.
    const n = h.calls().length;
    const u = await install({ ...h.opts, mode: "user", root: "/", binary, dryRun: false, waitMs: 20_000 });
    expect([u.upgrade, u.ready]).toEqual([true, true]);
    expect(h.calls().slice(n)).toEqual([
      "launchctl print gui/501/dev.planter.planterd",
      "launchctl bootout gui/501/dev.planter.planterd",
      "launchctl print gui/501/dev.planter.planterd",
      `launchctl bootstrap gui/501 ${plist}`,
    ]);
    const secondPid = JSON.parse(
      readFileSync(`${join(h.base, "calls.log")}.launchd/dev.planter.planterd.json`, "utf8"),
    ).pid;
    expect(secondPid).not.toBe(firstPid);

    // doctor's macOS checks against the loaded agent; the fixes name launchctl.
    const doc = await runDoctor(["macos.launchd"], { env: h.env, platform: "darwin", uid: UID, systemd: false });
    expect(doc.checks.map((c) => [c.id, c.status])).toEqual([["macos.launchd", "ok"]]);
    expect(doc.checks[0]?.message).toContain(`(pid ${secondPid})`);
    expect(doc.ctx.commands.restart).toBe("launchctl kickstart -k gui/501/dev.planter.planterd");

    const m = h.calls().length;
    const un = await uninstall({ ...h.opts, mode: "user", root: "/", force: false, purge: false, dryRun: false });
    expect(un.warnings).toEqual([]);
    expect(h.calls().slice(m)).toEqual([
      "launchctl bootout gui/501/dev.planter.planterd",
      "launchctl print gui/501/dev.planter.planterd",
    ]);
    await waitFor(() => !existsSync(socket), "planterd to remove its socket");
    expect(tree(h.base, notState)).toEqual(before);

    // doctor after uninstall: the agent is not recorded any more, so the check skips.
    const after = await runDoctor(["macos.launchd"], { env: h.env, platform: "darwin", uid: UID, systemd: false });
    expect(after.checks[0]?.status).toBe("skip");
    // Twice is harmless.
    expect(
      (await uninstall({ ...h.opts, mode: "user", root: "/", force: false, purge: false, dryRun: false })).installed,
    ).toBe(false);
  }, 60_000);
});
