/** Target precedence, the client section of the config, and the Lima mount check (pure functions). */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import { configTarget, describeMounts, guestPathOrRefuse, resolveTarget } from "../../lib/cli/target.ts";
import { parseConfig } from "../../lib/config.ts";
import { guestPathOf, instanceMounts, type LimaMount } from "../../lib/host/lima.ts";

const dir = mkdtempSync("/tmp/pt-target-unit-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const noConfig = () => {
  throw new Error("the config must not be read");
};

describe("resolveTarget: --target > PLANTER_TARGET > [client] target > local; --socket wins", () => {
  test("each source in turn", () => {
    expect(resolveTarget({ flag: "lima", env: "local", config: noConfig })).toEqual({ target: "lima", source: "flag" });
    expect(resolveTarget({ flag: "local", env: "lima", config: noConfig })).toEqual({
      target: "local",
      source: "flag",
    });
    expect(resolveTarget({ env: "lima", config: noConfig })).toEqual({ target: "lima", source: "env" });
    expect(resolveTarget({ env: "", config: () => "lima" })).toEqual({ target: "lima", source: "config" });
    expect(resolveTarget({ config: () => undefined })).toEqual({ target: "local", source: "default" });
    expect(resolveTarget({})).toEqual({ target: "local", source: "default" });
  });
  test("--socket: the environment and the config no longer count; an explicit --target still does", () => {
    expect(resolveTarget({ socket: "/s", env: "lima", config: noConfig })).toEqual({
      target: "local",
      source: "socket",
    });
    expect(resolveTarget({ socket: "/s", flag: "lima" })).toEqual({ target: "lima", source: "flag" });
  });
  test("a bad name is a usage error naming where it came from", () => {
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return [(e as PlanterError).code, (e as PlanterError).message];
      }
      return null;
    };
    expect(err(() => resolveTarget({ flag: "vm" }))).toEqual([
      "E_USAGE",
      '--target must be one of local, lima, not "vm"',
    ]);
    expect(err(() => resolveTarget({ env: "LIMA" }))).toEqual([
      "E_USAGE",
      'PLANTER_TARGET must be one of local, lima, not "LIMA"',
    ]);
  });
});

describe("[client] in the config file", () => {
  const write = async (name: string, text: string) => {
    const p = join(dir, name);
    await Bun.write(p, text);
    return p;
  };
  test("read by the client; the daemon's sections are not its business", async () => {
    expect(configTarget(join(dir, "missing.toml"))).toBeUndefined();
    expect(configTarget(await write("none.toml", "[sandbox]\nmode = 1\n"))).toBeUndefined();
    expect(configTarget(await write("lima.toml", '[client]\ntarget = "lima"\n[jobs]\nbogus = 1\n'))).toBe("lima");
  });
  test("a bad value or bad TOML fails closed (E_CONFIG), never silently local", async () => {
    const bad = await write("bad.toml", '[client]\ntarget = "vm"\n');
    expect(() => configTarget(bad)).toThrow(/invalid config .*bad\.toml: .*client\.target/);
    const unknown = await write("unknown.toml", '[client]\ntargets = "lima"\n');
    expect(() => configTarget(unknown)).toThrow(/client\.targets/);
    const broken = await write("broken.toml", "[client\n");
    expect(() => configTarget(broken)).toThrow(/cannot read the client target from config/);
  });
  test("planterd accepts the section and refuses unknown keys in it", () => {
    expect(parseConfig({ client: { target: "lima" } }, "c.toml").client).toEqual({ target: "lima" });
    expect(parseConfig({}, "c.toml").client).toEqual({});
    expect(() => parseConfig({ client: { socket: "/x" } }, "c.toml")).toThrow(/client\.socket/);
  });
});

describe("the Lima VM's mounts", () => {
  const mounts: LimaMount[] = [
    { location: "/Users/me", mountPoint: "/Users/me", writable: true },
    { location: "/Users/me/src/big", mountPoint: "/big", writable: true },
    { location: "/tmp/lima", mountPoint: "/tmp/lima", writable: false },
  ];
  test("instanceMounts: as limactl list --json reports them, ~ expanded, mountPoint defaulting to the location", () => {
    const inst = {
      name: "planter",
      status: "Running",
      arch: "aarch64",
      dir: "/d",
      config: {
        mounts: [
          { location: "~", writable: true },
          { location: "~/w", mountPoint: null },
          { location: "/x", mountPoint: "/y", writable: false },
          {},
        ],
      },
    };
    expect(instanceMounts(inst, "/Users/me")).toEqual([
      { location: "/Users/me", mountPoint: "/Users/me", writable: true },
      { location: "/Users/me/w", mountPoint: "/Users/me/w", writable: false },
      { location: "/x", mountPoint: "/y", writable: false },
    ]);
    expect(instanceMounts({ ...inst, config: undefined }, "/h")).toEqual([]);
  });
  test("guestPathOf: same path inside by default, the deepest mount wins, a name prefix is not a parent", () => {
    expect(guestPathOf("/Users/me", mounts)).toBe("/Users/me");
    expect(guestPathOf("/Users/me/p/q", mounts)).toBe("/Users/me/p/q");
    expect(guestPathOf("/Users/me/src/big/x", mounts)).toBe("/big/x");
    expect(guestPathOf("/Users/me/src/big", mounts)).toBe("/big");
    expect(guestPathOf("/Users/me2", mounts)).toBeNull();
    expect(guestPathOf("/Users", mounts)).toBeNull();
    expect(guestPathOf("/etc", mounts)).toBeNull();
    expect(guestPathOf("/a/b", [{ location: "/", mountPoint: "/", writable: true }])).toBe("/a/b");
    expect(guestPathOf("/a/b", [{ location: "/a/", mountPoint: "/m", writable: true }])).toBe("/m/b");
    expect(guestPathOf("/a/b", [])).toBeNull();
  });
  test("guestPathOrRefuse: both sides through their symlinks; the refusal names the mounts", () => {
    // macOS: /tmp is a link to /private/tmp; a link inside a mount may point outside it.
    const links: Record<string, string> = {
      "/tmp/lima/x": "/private/tmp/lima/x",
      "/tmp/lima": "/private/tmp/lima",
      "/Users/me/escape": "/etc",
    };
    const realpath = (p: string) => links[p] ?? p;
    expect(guestPathOrRefuse("/tmp/lima/x", "--cwd", mounts, realpath)).toBe("/tmp/lima/x");
    expect(guestPathOrRefuse("/Users/me/p", "--dir", mounts, realpath)).toBe("/Users/me/p");
    for (const p of ["/Users/me/escape", "/opt/work"]) {
      let e: PlanterError | undefined;
      try {
        guestPathOrRefuse(p, "--cwd", mounts, realpath);
      } catch (x) {
        e = x as PlanterError;
      }
      expect(e?.code).toBe("E_USAGE");
      expect(e?.exitCode).toBe(2);
      expect(e?.message).toBe(
        `--cwd ${p} is not on a directory the Lima VM planter mounts, so its agent cannot see it`,
      );
      expect(e?.hint).toStartWith("the VM mounts: /Users/me, /Users/me/src/big → /big, /tmp/lima (read-only). ");
    }
    expect(describeMounts([])).toBe("none");
  });
});
