import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { permsOf, resolveAs } from "../../lib/sandbox/paths.ts";

const root = mkdtempSync("/tmp/pt-resolve-");
chmodSync(root, 0o755);
afterAll(() => rmSync(root, { recursive: true, force: true }));
const owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, groups: [] };
// Someone who is neither the owner nor in its group (the files here are this process's).
const other = { uid: owner.uid + 12345, gid: owner.gid + 12345, groups: [] };

test("permsOf: owner, group, others; root has all", () => {
  const st = { uid: 10, gid: 20, mode: 0o40751 };
  expect(permsOf(st, { uid: 10, gid: 1, groups: [] })).toBe(7);
  expect(permsOf(st, { uid: 11, gid: 1, groups: [20] })).toBe(5);
  expect(permsOf(st, { uid: 11, gid: 1, groups: [] })).toBe(1);
  expect(permsOf({ ...st, mode: 0o40700 }, { uid: 0, gid: 0, groups: [] })).toBe(7);
});

test("resolveAs: a dir the resolver cannot search hides what lies below, existing or not", () => {
  const priv = join(root, "priv");
  mkdirSync(join(priv, "sub"), { recursive: true });
  writeFileSync(join(priv, "key"), "x\n");
  chmodSync(priv, 0o700);
  symlinkSync(join(priv, "key"), join(root, "to-key"));
  symlinkSync("sub/../../open", join(priv, "up"));
  mkdirSync(join(root, "open"));
  for (const p of [join(priv, "key"), join(priv, "none"), join(priv, "sub/x"), join(root, "to-key"), join(priv, "up")])
    expect([p, resolveAs(p, other)]).toEqual([p, { hidden: true }]);
  expect(resolveAs(join(priv, "key"), owner)).toEqual({ path: join(priv, "key") });
  expect(resolveAs(join(root, "to-key"), owner)).toEqual({ path: join(priv, "key") });
  expect(resolveAs(join(priv, "up"), owner)).toEqual({ path: join(root, "open") });
  // Reachable: missing is missing, and `..` and symlinks resolve as the kernel does.
  expect(resolveAs(join(root, "nothing/here"), other)).toEqual({ missing: true });
  expect(resolveAs(`${root}/open/../open/`, other)).toEqual({ path: join(root, "open") });
  symlinkSync("loop", join(root, "loop"));
  expect(resolveAs(join(root, "loop"), owner)).toEqual({ missing: true });
});

test("resolveAs: no link in /proc is followed (the kernel checks those, not mode bits)", () => {
  // planterd's own cwd and root, another process's cwd, a symlink to one: hidden for anyone.
  symlinkSync(`/proc/${process.pid}/cwd`, join(root, "to-proc"));
  for (const who of [other, owner]) {
    for (const p of [
      "/proc/self/cwd",
      `/proc/${process.pid}/root/etc`,
      "/proc/1/cwd",
      "/proc/self",
      join(root, "to-proc"),
    ])
      expect([p, resolveAs(p, who)]).toEqual([p, { hidden: true }]);
    // /proc itself is a path like another (a bind of it is refused for what it is).
    expect(resolveAs("/proc", who)).toEqual({ path: "/proc" });
    expect(resolveAs("/proc/1", who)).toEqual({ path: "/proc/1" });
  }
});
