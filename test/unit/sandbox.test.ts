import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import type { PlanRequest } from "../../lib/sandbox/backend.ts";
import { bwrapArgv, bwrapFailure } from "../../lib/sandbox/bwrap.ts";
import { complete, DEFAULT_POLICY, narrow, visibleInside, within } from "../../lib/sandbox/policy.ts";

const req = (over: Partial<PlanRequest> = {}): PlanRequest => ({
  argv: ["/usr/bin/make", "test"],
  env: { PATH: "/usr/bin:/bin", HOME: "/home/u" },
  cwd: "/work/cell",
  cellDir: "/work/cell",
  policy: DEFAULT_POLICY,
  protect: ["/home/u/.local/state/planter", "/run/user/1000/planter"],
  home: "/home/u",
  jobDir: "/home/u/.local/state/planter/jobs/j-1",
  scratch: "/tmp/planter-j-1",
  ...over,
});
const exists = (present: Record<string, "dir" | "file">) => (p: string) => present[p] ?? null;

describe("bwrap argv", () => {
  test("the default policy, as literal text", () => {
    const argv = bwrapArgv(
      req(),
      "/usr/bin/bwrap",
      exists({
        "/home/u/.local/state/planter": "dir",
        "/run/user/1000/planter": "dir",
        "/home/u/.bashrc": "file",
        "/work/cell/.git/hooks": "dir",
      }),
    );
    expect(argv.join(" ")).toBe(
      [
        "/usr/bin/bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp",
        "--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try --unshare-net --new-session --die-with-parent --cap-drop ALL",
        "--tmpfs /home/u/.local/state/planter --tmpfs /run/user/1000/planter",
        "--bind /work/cell /work/cell",
        "--ro-bind /work/cell/.git/hooks /work/cell/.git/hooks --ro-bind /home/u/.bashrc /home/u/.bashrc",
        "--clearenv --setenv PATH /usr/bin:/bin --setenv HOME /home/u",
        "--chdir /work/cell -- /usr/bin/make test",
      ].join(" "),
    );
  });

  test("read_only cell, host network, extra paths and denies", () => {
    const policy = complete({
      fs_mode: "read_only",
      network: "host",
      read_write: ["/data/out"],
      read_only: ["/data/in"],
      deny: ["/work/cell/secret", "/work/cell/key.pem"],
    });
    const argv = bwrapArgv(
      req({ policy }),
      "bwrap",
      exists({ "/work/cell/secret": "dir", "/work/cell/key.pem": "file" }),
    ).join(" ");
    expect(argv).not.toContain("--unshare-net");
    expect(argv).toContain("--ro-bind /work/cell /work/cell --bind /data/out /data/out --ro-bind /data/in /data/in");
    expect(argv).toContain("--tmpfs /work/cell/secret --ro-bind /dev/null /work/cell/key.pem --clearenv");
  });

  test("a cell dir that contains the state dir cannot expose it", () => {
    const argv = bwrapArgv(
      req({ cellDir: "/home/u", cwd: "/home/u" }),
      "bwrap",
      exists({ "/home/u/.local/state/planter": "dir" }),
    ).join(" ");
    expect(argv).toContain(
      "--tmpfs /home/u/.local/state/planter --bind /home/u /home/u --tmpfs /home/u/.local/state/planter",
    );
  });

  test("failures are explained with a fix", () => {
    const dir = mkdtempSync("/tmp/pt-aa-");
    const restricted = join(dir, "restrict");
    Bun.write(restricted, "1\n");
    expect(
      bwrapFailure("bwrap: setting up uid map: Permission denied", { restrictFile: join(dir, "none") }).userns,
    ).toBe("disabled");
    return Bun.sleep(0).then(() => {
      const f = bwrapFailure("bwrap: setting up uid map: Permission denied", { restrictFile: restricted });
      expect(f.userns).toBe("restricted (AppArmor)");
      expect(f.hint).toContain("apparmor_restrict_unprivileged_userns");
      rmSync(dir, { recursive: true });
    });
  });
});

describe("policy narrowing", () => {
  const cell = complete({ fs_mode: "writable", network: "host", read_write: ["/data"], env: { pass: ["TOKEN"] } });
  const err = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as PlanterError).code;
    }
    return "no error";
  };
  test("narrowing is allowed", () => {
    const p = narrow(
      cell,
      { fs_mode: "read_only", network: "none", read_write: ["/data/sub", "/cell/x"], deny: ["/data/sub/secret"] },
      "/cell",
    );
    expect(p).toEqual({
      fs_mode: "read_only",
      network: "none",
      read_write: ["/data/sub", "/cell/x"],
      read_only: [],
      deny: ["/data/sub/secret"],
      env: { pass: ["TOKEN"], set: {} },
    });
  });
  test("widening is refused", () => {
    const closed = complete({ fs_mode: "read_only", network: "none" });
    expect(err(() => narrow(closed, { fs_mode: "writable" }, "/cell"))).toBe("E_BAD_REQUEST");
    expect(err(() => narrow(closed, { network: "host" }, "/cell"))).toBe("E_BAD_REQUEST");
    expect(err(() => narrow(cell, { read_write: ["/etc"] }, "/cell"))).toBe("E_BAD_REQUEST");
    expect(err(() => narrow(closed, { read_write: ["/cell/x"] }, "/cell"))).toBe("E_BAD_REQUEST");
    expect(err(() => narrow(cell, { env: { pass: ["HOME_SECRET"] } }, "/cell"))).toBe("E_BAD_REQUEST");
  });
  test("within is path-aware", () => {
    expect(within("/data/x", "/data")).toBe(true);
    expect(within("/data", "/data")).toBe(true);
    expect(within("/database", "/data")).toBe(false);
    expect(within("/", "/data")).toBe(false);
  });
});

describe("what a sandboxed job can see", () => {
  const p = complete({ read_only: ["/data"], deny: ["/work/cell/secret"] });
  const protect = ["/home/u/.local/state/planter"];
  test.each([
    ["/work/cell", "/work/cell", true],
    ["/work/cell/sub", "/work/cell", true],
    ["/work/cell/secret/x", "/work/cell", false],
    ["/tmp/x", "/work/cell", false],
    ["/tmp/cell", "/tmp/cell", true],
    ["/data/in", "/work/cell", true],
    ["/usr/share", "/work/cell", true],
    ["/home/u/.local/state/planter", "/work/cell", false],
    ["/home/u/.local/state/planter/cells/c1", "/home/u/.local/state/planter/cells/c1", true],
    ["/home/u/.local/state/planter/jobs", "/home/u/.local/state/planter/cells/c1", false],
    ["/home/u/.local/state/planter", "/home/u", false],
  ])("%p with cell %p → %p", (path, cell, visible) => {
    expect(visibleInside(path, p, cell, protect, true)).toBe(visible);
  });
  test("without a private /tmp (Seatbelt), /tmp is visible", () => {
    expect(visibleInside("/tmp/x", p, "/work/cell", protect, false)).toBe(true);
  });
});
