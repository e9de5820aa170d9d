import { describe, expect, test } from "bun:test";
import { parseCount, parseDuration } from "../../lib/cli/args.ts";
import { parseConfig } from "../../lib/config.ts";
import { installMode, resolvePaths } from "../../lib/paths.ts";

describe("paths", () => {
  test("user mode on Linux follows XDG", () => {
    const p = resolvePaths({ HOME: "/home/u", XDG_RUNTIME_DIR: "/run/user/1000" }, "linux", 1000);
    expect(p).toEqual({
      mode: "user",
      stateDir: "/home/u/.local/state/planter",
      socketPath: "/run/user/1000/planter/planterd.sock",
      configPath: "/home/u/.config/planter/config.toml",
    });
  });

  test("system mode for root on Linux", () => {
    expect(resolvePaths({ HOME: "/root" }, "linux", 0)).toEqual({
      mode: "system",
      stateDir: "/var/lib/planter",
      socketPath: "/run/planter/planterd.sock",
      configPath: "/etc/planter/config.toml",
    });
  });

  test("macOS keeps everything under Application Support", () => {
    const p = resolvePaths({ HOME: "/Users/u" }, "darwin", 501);
    expect(p.stateDir).toBe("/Users/u/Library/Application Support/planter");
    expect(p.socketPath).toBe("/Users/u/Library/Application Support/planter/planterd.sock");
  });

  test("PLANTER_HOME moves all; single overrides win", () => {
    expect(resolvePaths({ PLANTER_HOME: "/t", PLANTER_SOCKET: "/s.sock" }, "linux", 1000)).toEqual({
      mode: "user",
      stateDir: "/t/state",
      socketPath: "/s.sock",
      configPath: "/t/config.toml",
    });
  });

  test("PLANTER_MODE overrides and is validated", () => {
    expect(installMode({ PLANTER_MODE: "user" }, 0, "linux")).toBe("user");
    expect(() => installMode({ PLANTER_MODE: "root" }, 0, "linux")).toThrow(/PLANTER_MODE/);
  });
});

describe("config", () => {
  test("an empty config gives every default", () => {
    const c = parseConfig({}, "x.toml");
    expect(c.jobs.kill_grace_ms).toBe(5000);
    expect(c.sandbox.mode).toBe("enforced");
    expect(c.sandbox.allowed_modes).toEqual(["disabled", "permissive", "enforced"]);
    expect(c.api.max_body_bytes).toBe(1024 * 1024);
  });

  test("unknown keys and bad values name their path", () => {
    expect(() => parseConfig({ jobs: { nope: 1 } }, "c.toml")).toThrow(/c\.toml.*jobs\.nope/);
    expect(() => parseConfig({ logs: { max_chunk_bytes: -1 } }, "c.toml")).toThrow(/logs\.max_chunk_bytes/);
    expect(() => parseConfig({ sandbox: { mode: "strict" } }, "c.toml")).toThrow(/sandbox\.mode/);
  });
});

describe("CLI values", () => {
  test.each([
    ["500ms", 500],
    ["30s", 30000],
    ["5m", 300000],
    ["1h", 3600000],
    ["250", 250],
    ["1.5s", 1500],
  ])("duration %p = %p ms", (t, ms) => {
    expect(parseDuration(t, "--timeout")).toBe(ms);
  });
  test.each(["", "soon", "-1s", "5 m", "1d"])("duration %p is refused", (t) => {
    expect(() => parseDuration(t, "--timeout")).toThrow(/--timeout must be a duration/);
  });
  test("counts", () => {
    expect(parseCount("12", "--tail")).toBe(12);
    expect(() => parseCount("-1", "--tail")).toThrow(/non-negative/);
  });
});
