/** Other names of a host path through the host's bind mounts (lib/sandbox/aliases.ts), from mountinfo text. */
import { describe, expect, test } from "bun:test";
import { aliasesOf, parseMountinfo, strayKernelMounts } from "../../lib/sandbox/aliases.ts";

const TABLE = [
  "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
  "23 22 0:21 / /proc rw,nosuid - proc proc rw",
  "24 22 0:5 / /dev rw - devtmpfs udev rw",
  "30 22 254:0 /var /mnt/var rw - ext4 /dev/vda rw",
  "31 22 254:0 /var/lib/planter/cells/a /srv/a rw - ext4 /dev/vda rw",
  "32 22 254:0 /home/me\\040x /chroot/home rw - ext4 /dev/vda rw",
  "33 22 0:40 / /chroot/proc rw - proc proc rw",
  "34 22 0:41 / /chroot/dev/pts rw - devpts devpts rw",
  "35 22 254:1 / /data rw - ext4 /dev/vdb rw",
].join("\n");

describe("aliases", () => {
  const mounts = parseMountinfo(TABLE);

  test("mountinfo lines: device, root (octal escapes undone), point, type", () => {
    expect(mounts[5]).toEqual({ dev: "254:0", root: "/home/me x", point: "/chroot/home", fstype: "ext4" });
  });

  test("a path below a second mount of its filesystem, and a part of it mounted elsewhere", () => {
    expect(aliasesOf("/var/lib/planter", mounts).sort()).toEqual(["/mnt/var/lib/planter", "/srv/a"]);
    expect(aliasesOf("/home/me x/.ssh", mounts)).toEqual(["/chroot/home/.ssh"]);
    // Through the second name too: the first one is found again.
    expect(aliasesOf("/mnt/var/lib/planter", mounts).sort()).toEqual(["/srv/a", "/var/lib/planter"]);
  });

  test("other filesystems and unrelated paths have none", () => {
    expect(aliasesOf("/etc", mounts)).toEqual([]);
    expect(aliasesOf("/data/x", mounts)).toEqual([]);
    expect(aliasesOf("/var/lib/planter", [])).toEqual([]);
  });

  test("the host's proc and devpts mounted outside /proc and /dev", () => {
    expect(strayKernelMounts(mounts)).toEqual(["/chroot/proc", "/chroot/dev/pts"]);
  });
});
