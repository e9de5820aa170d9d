import { describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig } from "../../lib/config.ts";
import { DenialLog, decide, groupGid, resolvePolicy, systemGroup } from "../../lib/daemon/authz.ts";
import { checkDir, checkParents, expectedLayout } from "../../lib/daemon/layout.ts";
import { boundPath, FFI_SPECS, procGroups } from "../../lib/daemon/peer.ts";

const peer = (uid: number, groups: number[] = [], gid = uid) => ({ pid: 42, uid, gid, groups });

describe("authz policy", () => {
  test("user mode allows the daemon's uid and root only", () => {
    const p = resolvePolicy({ allowed_uids: [], allowed_groups: [], strict: true }, "user", 1000, () => null);
    expect(p).toEqual({ uids: [0, 1000], gids: [], groupNames: [], strict: true });
    expect(decide(p, peer(1000))).toEqual({ allow: true });
    expect(decide(p, peer(0))).toEqual({ allow: true });
    const no = decide(p, peer(1001));
    expect(no.allow).toBe(false);
    if (!no.allow) {
      expect(no.message).toBe("uid 1001 is not allowed to use planterd (allowed: uid 0, 1000)");
      expect(no.hint).toContain("allowed_uids");
    }
  });

  test("system mode allows root and group planter, with the usermod hint", () => {
    const p = resolvePolicy({ allowed_uids: [], allowed_groups: [], strict: true }, "system", 0, (n) =>
      n === "planter" ? 990 : null,
    );
    expect(decide(p, peer(1000, [27, 990]))).toEqual({ allow: true });
    expect(decide(p, peer(1000, [], 990))).toEqual({ allow: true });
    const no = decide(p, peer(1000, [27]));
    expect(no.allow).toBe(false);
    if (!no.allow)
      expect(no.hint).toBe(
        "ask an admin to add you to group planter: sudo usermod -aG planter $USER, then log in again",
      );
  });

  test("the system group: PLANTER_GROUP (even empty) over [authz] group over planter; empty means none", () => {
    const lookup = (n: string) => (n === "planter" ? 990 : n === "staff" ? 50 : null);
    const cfg = { allowed_uids: [], allowed_groups: [], strict: true };
    expect([
      systemGroup({}, {}),
      systemGroup({ group: "staff" }, {}),
      systemGroup({ group: "staff" }, { PLANTER_GROUP: "" }),
    ]).toEqual(["planter", "staff", ""]);
    // A host that has group planter, and a daemon told to use none: root only, in authz and in the layout.
    expect(resolvePolicy(cfg, "system", 0, lookup, { PLANTER_GROUP: "" }).gids).toEqual([]);
    expect(resolvePolicy(cfg, "system", 0, lookup, {}).gids).toEqual([990]);
    expect(resolvePolicy({ ...cfg, group: "staff" }, "system", 0, lookup, {}).gids).toEqual([50]);
    expect(expectedLayout("system", 0, null, "")).toEqual({
      uid: 0,
      gid: null,
      groupName: null,
      dirMode: 0o700,
      socketMode: 0o600,
    });
    expect(expectedLayout("system", 0, 50, "staff")).toEqual({
      uid: 0,
      gid: 50,
      groupName: "staff",
      dirMode: 0o750,
      socketMode: 0o660,
    });
  });

  test("allowed_groups takes names, digit strings and TOML numbers (gids)", () => {
    expect(
      parseConfig(Bun.TOML.parse('[authz]\nallowed_groups = [4242, "users", "77"]\n'), "x").authz.allowed_groups,
    ).toEqual(["4242", "users", "77"]);
    for (const bad of ["[-1]", "[1.5]", '[""]', "[4294967296]"])
      expect(() => parseConfig(Bun.TOML.parse(`[authz]\nallowed_groups = ${bad}\n`), "x")).toThrow("allowed_groups");
    expect(() => parseConfig({ authz: { group: "bad name" } }, "x")).toThrow("authz.group");
  });

  test("unknown credentials are refused unless strict is off", () => {
    const strict = resolvePolicy({ allowed_uids: [], allowed_groups: [], strict: true }, "user", 1000, () => null);
    expect(decide(strict, null).allow).toBe(false);
    const loose = { ...strict, strict: false };
    expect(decide(loose, peer(5))).toEqual({ allow: true, warn: expect.stringContaining("strict = false") });
  });

  test("groups by name or gid; unknown names are dropped", () => {
    const p = resolvePolicy(
      { allowed_uids: [7], allowed_groups: ["users", "123", "nosuch"], strict: true },
      "user",
      1000,
      (n) => (n === "users" ? 100 : null),
    );
    expect(p).toEqual({ uids: [0, 7, 1000], gids: [100, 123], groupNames: ["users", "123"], strict: true });
  });

  test("groupGid reads /etc/group", () => {
    const dir = mkdtempSync("/tmp/pt-grp-");
    writeFileSync(join(dir, "group"), "root:x:0:\nplanter:x:990:alice,bob\n");
    expect(groupGid("planter", join(dir, "group"))).toBe(990);
    expect(groupGid("nope", join(dir, "group"))).toBeNull();
    rmSync(dir, { recursive: true });
  });

  test("denial records are rate limited per uid, counting what was suppressed", () => {
    const log = new DenialLog(1000);
    expect(log.shouldRecord(5, 0)).toBe(0);
    expect(log.shouldRecord(5, 10)).toBeNull();
    expect(log.shouldRecord(5, 20)).toBeNull();
    expect(log.shouldRecord(6, 30)).toBe(0);
    expect(log.shouldRecord(5, 1500)).toBe(2);
  });
});

describe("peer credentials", () => {
  test("supplementary groups come from /proc/<pid>/status", () => {
    expect(procGroups(1, () => "Name:\tx\nGroups:\t4 24 27 100 \nUid: 0\n")).toEqual([4, 24, 27, 100]);
    expect(procGroups(1, () => "Groups:\t\n")).toEqual([]);
    expect(
      procGroups(1, () => {
        throw new Error("gone");
      }),
    ).toBeNull();
    expect(procGroups(process.pid)).toEqual(expect.any(Array));
  });

  test("the macOS variant calls getpeereid and LOCAL_PEERPID on libSystem (not run on macOS here)", () => {
    expect(FFI_SPECS.darwin).toEqual({
      library: "/usr/lib/libSystem.B.dylib",
      symbols: {
        getpeereid: { args: ["i32", "ptr", "ptr"], returns: "i32" },
        getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
      },
      constants: { SOL_LOCAL: 0, LOCAL_PEERPID: 2 },
    });
    expect(FFI_SPECS.linux.constants).toEqual({ SOL_SOCKET: 1, SO_PEERCRED: 17, UCRED_SIZE: 12, SO_PEERGROUPS: 59 });
  });

  test("SO_PEERGROUPS gives the connecting process's groups, as they were at connect", async () => {
    const root = process.getuid?.() === 0;
    const { peerReader } = await import("../../lib/daemon/peer.ts");
    const read = await peerReader();
    const dir = mkdtempSync("/tmp/pt-pg-");
    const path = join(dir, "s.sock");
    const net = require("node:net");
    const got = new Promise<unknown>((resolve) => {
      const server = net.createServer((s: { _handle: { fd: number }; destroy: () => void }) => {
        resolve(read?.(s._handle.fd));
        s.destroy();
        server.close();
      });
      server.listen(path, () => {
        // The peer: a child process with chosen supplementary groups (root may choose them; a
        // user's child has the user's own, which only root could change).
        Bun.spawn(
          [
            ...(root ? ["setpriv", "--groups", "100,4"] : []),
            process.execPath,
            "-e",
            `require("node:net").createConnection(${JSON.stringify(path)})`,
          ],
          { stderr: "ignore" },
        );
      });
    });
    const peer = (await got) as { uid: number; groups: number[] };
    expect(peer.uid).toBe(process.getuid?.() ?? 0);
    const own = [...new Set(process.getgroups?.() ?? [])].sort((a, b) => a - b);
    expect(peer.groups.sort((a, b) => a - b)).toEqual(root ? [4, 100] : own);
    rmSync(dir, { recursive: true });
  });

  test("boundPath reads a listening socket's path", async () => {
    const dir = mkdtempSync("/tmp/pt-bp-");
    const path = join(dir, "s.sock");
    const server = require("node:net").createServer();
    await new Promise<void>((r) => server.listen(path, r));
    const fd = server._handle?.fd as number;
    expect(await boundPath(fd)).toBe(path);
    server.close();
    rmSync(dir, { recursive: true });
  });
});

describe("socket layout", () => {
  test("expected layouts per mode", () => {
    expect(expectedLayout("user", 1000, null)).toEqual({
      uid: 1000,
      gid: null,
      groupName: null,
      dirMode: 0o700,
      socketMode: 0o600,
    });
    expect(expectedLayout("system", 0, 990)).toEqual({
      uid: 0,
      gid: 990,
      groupName: "planter",
      dirMode: 0o750,
      socketMode: 0o660,
    });
    expect(expectedLayout("system", 0, null)).toEqual({
      uid: 0,
      gid: null,
      groupName: null,
      dirMode: 0o700,
      socketMode: 0o600,
    });
  });

  test("dir and parent problems carry their fix", () => {
    const base = mkdtempSync("/tmp/pt-lay-");
    const uid = process.getuid?.() ?? 0;
    const want = expectedLayout("user", uid, null);
    const dir = join(base, "run");
    mkdirSync(dir, { mode: 0o700 });
    expect(checkDir(dir, want)).toEqual([]);
    expect(checkParents(dir, uid)).toEqual([]);
    chmodSync(dir, 0o750);
    expect(checkDir(dir, want)).toEqual([
      { message: `socket directory ${dir} has mode 0750, not 0700`, fix: `chmod 0700 ${dir}` },
    ]);
    chmodSync(base, 0o777);
    expect(checkParents(dir, uid)).toEqual([
      { message: `${base}, a parent of the socket, is writable by others`, fix: `chmod o-w ${base}` },
    ]);
    chmodSync(base, 0o1777); // sticky and root-owned, like /tmp: fine
    expect(checkParents(dir, uid)).toEqual(uid === 0 ? [] : expect.any(Array));
    const link = join(base, "link");
    symlinkSync(dir, link);
    expect(checkDir(link, want)[0]?.message).toBe(`socket directory ${link} is a symlink`);
    rmSync(base, { recursive: true });
  });
});
