import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import type { PlanRequest } from "../../lib/sandbox/backend.ts";
import { bwrapFailure, bwrapPlan, plannedMounts, renderArgs, socketCovers } from "../../lib/sandbox/bwrap.ts";
import { viewProblem } from "../../lib/sandbox/gate.ts";
import { complete, DEFAULT_POLICY, narrow, within } from "../../lib/sandbox/policy.ts";
import { guardedEntries, sandboxView, visibleIn } from "../../lib/sandbox/view.ts";

const req = (over: Partial<PlanRequest> = {}): PlanRequest => ({
  argv: ["/usr/bin/make", "test"],
  env: { PATH: "/usr/bin:/bin", HOME: "/home/u/.local/state/planter/homes/c" },
  cwd: "/work/cell",
  cellDir: "/work/cell",
  policy: DEFAULT_POLICY,
  protect: ["/home/u/.local/state/planter", "/run/user/1000/planter"],
  home: "/home/u/.local/state/planter/homes/c",
  hiddenHomes: ["/home/u"],
  credentialHomes: ["/home/u"],
  otherCells: [],
  workspaceReadOnly: [],
  tmpBytes: 1 << 30,
  jobDir: "/home/u/.local/state/planter/jobs/j-1",
  scratch: "/tmp/planter-j-1",
  identity: null,
  ...over,
});
const exists = (present: Record<string, "dir" | "file">) => (p: string) => present[p] ?? null;
/** The rendered bwrap arguments, fds named by the path they bind. */
const rendered = (r: PlanRequest, present: Record<string, "dir" | "file">, seccomp?: Uint8Array) =>
  renderArgs(bwrapPlan(r, "/usr/bin/bwrap", exists(present), { seccomp })).join(" ");

describe("bwrap plan", () => {
  test("the default policy, as literal text; the environment and paths travel in fd 3", () => {
    const plan = bwrapPlan(
      req({ workspaceReadOnly: ["/work/cell/.git/hooks"] }),
      "/usr/bin/bwrap",
      exists({
        "/home": "dir",
        "/root": "dir",
        "/home/u/.local/state/planter": "dir",
        "/run/user/1000/planter": "dir",
        "/work/cell/.git/hooks": "dir",
      }),
      { seccomp: new Uint8Array(8) },
    );
    expect(plan.argv).toEqual(["/usr/bin/bwrap", "--args", "3", "--", "/usr/bin/make", "test"]);
    expect(plan.inputs.slice(1)).toEqual([
      { path: "/work/cell" },
      { path: "/work/cell/.git/hooks" },
      { path: "/home/u/.local/state/planter/homes/c" },
      { data: new Uint8Array(8) },
      { pipe: "info" },
      { pipe: "block" },
      { pipe: "hold" },
    ]);
    expect(renderArgs(plan).join(" ")).toBe(
      [
        "/usr/bin/bwrap --unshare-user --disable-userns",
        "--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try --unshare-net --new-session --die-with-parent",
        "--ro-bind / / --dev /dev --proc /proc --size 67108864 --tmpfs /dev/shm",
        "--remount-ro /dev --size 1073741824 --tmpfs /tmp",
        "--size 1048576 --tmpfs /home --size 1048576 --tmpfs /root",
        "--bind-fd 4=/work/cell /work/cell",
        "--ro-bind-fd 5=/work/cell/.git/hooks /work/cell/.git/hooks",
        "--size 1048576 --tmpfs /run/user/1000/planter",
        "--size 1048576 --tmpfs /home/u/.local/state/planter",
        "--bind-fd 6=/home/u/.local/state/planter/homes/c /home/u/.local/state/planter/homes/c",
        "--remount-ro /home --remount-ro /root --remount-ro /run/user/1000/planter --remount-ro /home/u/.local/state/planter",
        "--seccomp 7=<8 bytes>",
        "--info-fd 8=<pipe to planterd> --block-fd 9=<pipe to planterd> --sync-fd 10=<pipe to planterd>",
        "--clearenv --setenv PATH /usr/bin:/bin --setenv HOME /home/u/.local/state/planter/homes/c",
        "--chdir /work/cell -- /usr/bin/make test",
      ].join(" "),
    );
    // What the gate looks for in the sandbox's mountinfo: every mount, read-only where planned.
    expect(plan.planned).toEqual([
      "/ ro",
      "/dev ro",
      "/proc rw",
      "/dev/shm rw",
      "/tmp rw",
      "/home ro",
      "/root ro",
      "/work/cell rw",
      "/work/cell/.git/hooks ro",
      "/run/user/1000/planter ro",
      "/home/u/.local/state/planter ro",
      "/home/u/.local/state/planter/homes/c rw",
    ]);
  });

  test("a variable whose name is no shell name is refused by the plan, never dropped", () => {
    expect(() => bwrapPlan(req({ env: { "A=B": "x" } }), "/usr/bin/bwrap", exists({}))).toThrow(
      'environment variable name "A=B" is no shell name',
    );
  });

  test("the gate counts only the sandbox's own mounts: a host mount copied at a planned path stands in for nothing", () => {
    {
      const planned = ["/ ro", "/dev ro", "/run/user/1000 ro", "/w rw"];
      const check = (lines: string[]) => viewProblem(`${lines.join("\n")}\n`, planned);
      // `--ro-bind / /` copies the host's mounts first (read-only), then come the sandbox's own, from its /dev.
      const host = [
        "20 1 0:20 / / ro,relatime - ext4 /dev/vda1 rw",
        "21 20 0:21 / /run/user/1000 ro,nosuid - tmpfs tmpfs rw",
        "22 20 0:22 / /dev ro,nosuid - devtmpfs udev rw",
        "23 20 0:23 / /w ro - ext4 /dev/vdb rw",
      ];
      const own = ["30 20 0:30 / /dev ro,nosuid - tmpfs tmpfs rw", "31 20 0:31 /w /w ro - ext4 /dev/vdb rw"];
      const cover = "32 20 0:32 / /run/user/1000 ro,nosuid - tmpfs tmpfs rw,size=1024k";
      expect(check([...host, ...own, cover])).toBeNull();
      // The cover missed: the host's copy at its path does not count.
      expect(check([...host, ...own])).toBe("no /run/user/1000 ro mount there");
      // Nor does the host's copy of a writable bind's path.
      expect(check([...host, own[0] as string, cover])).toBe("no /w mount there");
      // A planned writable bind shown read-only (its source's flag) is where it should be.
      expect(check([...host, ...own.map((l) => l.replace(" rw", " ro")), cover])).toBeNull();
    }
  });

  test("the gate's plan: paths as mountinfo writes them; a remount makes the last mount there read-only; an unknown option throws", () => {
    expect(
      plannedMounts([
        "--unshare-user",
        "--size",
        "9",
        "--tmpfs",
        "/a b",
        "--bind-fd",
        "4",
        "/a b",
        "--ro-bind",
        "/dev/null",
        "/x\\y\tz\nw",
        "--remount-ro",
        "/a b",
        "--file",
        "5",
        "/f",
        "--dir",
        "/d",
      ]),
    ).toEqual(["/a\\040b rw", "/a\\040b ro", "/x\\134y\\011z\\012w ro"]);
    expect(() => plannedMounts(["--overlay-src", "/a"])).toThrow("the gate does not know --overlay-src");
    expect(() => plannedMounts(["--remount-ro", "/a"])).toThrow("--remount-ro /a with nothing mounted there");
  });

  test("read_only cell, host network, extra paths and denies", () => {
    const policy = complete({
      fs_mode: "read_only",
      network: "host",
      read_write: ["/data/out"],
      read_only: ["/data/in"],
      deny: ["/work/cell/secret", "/work/cell/key.pem"],
    });
    const argv = rendered(req({ policy }), { "/work/cell/secret": "dir", "/work/cell/key.pem": "file" });
    expect(argv).not.toContain("--unshare-net");
    expect(argv).toContain(
      "--ro-bind-fd 4=/work/cell /work/cell --bind-fd 5=/data/out /data/out --ro-bind-fd 6=/data/in /data/in",
    );
    expect(argv).toContain("--size 1048576 --tmpfs /work/cell/secret --ro-bind /dev/null /work/cell/key.pem");
  });

  test("a deny deep in a writable cell pins its ancestors (they cannot be renamed away)", () => {
    const policy = complete({ deny: ["/work/cell/a/b/secret"] });
    const argv = rendered(req({ policy }), { "/work/cell/a/b/secret": "file" });
    expect(argv).toContain(
      "--bind-fd 5=/work/cell/a /work/cell/a --bind-fd 6=/work/cell/a/b /work/cell/a/b --ro-bind /dev/null /work/cell/a/b/secret",
    );
  });

  test("a read_write path inside a deny path is a working carve-out", () => {
    const policy = complete({ read_write: ["/data/secret/public"], deny: ["/data/secret"] });
    const argv = rendered(req({ policy }), { "/data/secret": "dir" });
    expect(argv).toContain("--tmpfs /data/secret --bind-fd 5=/data/secret/public /data/secret/public");
  });

  test("credentials are hidden where a bind shows the home, unless a policy names them", () => {
    const policy = complete({ read_only: ["/home/u", "/home/u/.npmrc"] });
    const argv = rendered(req({ policy }), {
      "/home/u": "dir",
      "/home/u/.ssh": "dir",
      "/home/u/.npmrc": "file",
      "/home/u/.bashrc": "file",
    });
    expect(argv).toContain(
      "--size 1048576 --tmpfs /home/u --bind-fd 4=/work/cell /work/cell --ro-bind-fd 5=/home/u /home/u",
    );
    expect(argv).not.toContain("--remount-ro /home/u ");
    expect(argv).toContain("--size 1048576 --tmpfs /home/u/.ssh");
    expect(argv).not.toContain("--ro-bind /dev/null /home/u/.npmrc");
    expect(argv).toContain("--ro-bind-fd 6=/home/u/.npmrc /home/u/.npmrc");
    // rc files of a visible home stay read-only even where it is writable; here it is read-only already.
    expect(argv).not.toContain("/home/u/.bashrc");
  });

  test("a cell dir that contains the state dir cannot expose it", () => {
    const argv = rendered(req({ cellDir: "/home/u", cwd: "/home/u", hiddenHomes: [] }), {
      "/home/u/.local/state/planter": "dir",
    });
    expect(argv).toContain("--bind-fd 4=/home/u /home/u");
    expect(argv).toMatch(/--bind-fd 4=\/home\/u \/home\/u .*--tmpfs \/home\/u\/\.local\/state\/planter/);
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
      unix_sockets: [],
      workspace_config: "protect",
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
    expect(err(() => narrow(cell, { workspace_config: "allow" }, "/cell"))).toBe("E_BAD_REQUEST");
    expect(err(() => narrow(cell, { unix_sockets: ["/run/agent.sock"] }, "/cell"))).toBe("E_BAD_REQUEST");
    // A read_only path the cell's sandbox hides (a home, say) is a widening too.
    expect(err(() => narrow(cell, { read_only: ["/home/u/.ssh"] }, "/cell", (p) => !p.startsWith("/home")))).toBe(
      "E_BAD_REQUEST",
    );
  });
  test("within is path-aware", () => {
    expect(within("/data/x", "/data")).toBe(true);
    expect(within("/data", "/data")).toBe(true);
    expect(within("/database", "/data")).toBe(false);
    expect(within("/", "/data")).toBe(false);
  });
});

describe("the process limit inside the namespace", () => {
  test("the limit is the plan's, for the gate to set from outside: nothing runs in the sandbox before the job's program", () => {
    const present = { "/home": "dir", "/root": "dir" } as const;
    // A program run first inside (prlimit, as before) would run with the job's environment (LD_PRELOAD).
    expect(rendered(req({ nproc: 65 }), present)).toEndWith(" --chdir /work/cell -- /usr/bin/make test");
    expect(rendered(req({ nproc: 65 }), present)).not.toContain("prlimit");
    expect(bwrapPlan(req({ nproc: 65 }), "/usr/bin/bwrap", exists(present), {}).nproc).toBe(65);
    expect(bwrapPlan(req(), "/usr/bin/bwrap", exists(present), {}).nproc).toBeUndefined();
  });

  test("an argument holding a NUL is refused: it would end early and hand bwrap the rest as its own options", () => {
    const present = { "/home": "dir", "/root": "dir" } as const;
    const smuggled = req({ env: { X: "a\0--bind\0/\0/mnt" } });
    expect(() => bwrapPlan(smuggled, "/usr/bin/bwrap", exists(present), {})).toThrow("NUL");
  });
});

describe("the host entries a job's covers hang on (the view guard)", () => {
  test("each cover and its ancestors while they are the host's; a tmpfs ends the walk", () => {
    const p = complete({ read_write: ["/srv/data"], deny: ["/work/cell/secret", "/srv/data/a/key", "/tmp/x/k"] });
    const present = exists({
      "/home": "dir",
      "/root": "dir",
      "/work/cell/secret": "dir",
      "/srv/data/a/key": "file",
      "/tmp/x/k": "file",
      "/home/u/.local/state/planter": "dir",
      "/home/u/.ssh": "dir",
    });
    const view = sandboxView(req({ policy: p }), present);
    expect(guardedEntries(view).sort()).toEqual(
      [
        // The homes' covers hang on / itself.
        ["/", "home"],
        ["/", "root"],
        // A deny in the cell: the cell's own dentry and its parents are the host's (a bind of
        // /work/cell under the read-only root).
        ["/work/cell", "secret"],
        ["/work", "cell"],
        ["/", "work"],
        // A deny in a writable bind, below a pinned ancestor.
        ["/srv/data/a", "key"],
        ["/srv/data", "a"],
        ["/srv", "data"],
        ["/", "srv"],
      ].sort() as [string, string][],
    );
    // planter's state and the credentials lie under the hidden home's tmpfs: nothing of the host's
    // there can move them; /tmp is private (its deny path needs no watch).
  });
});

describe("what a sandboxed job can see", () => {
  const p = complete({ read_only: ["/data"], deny: ["/work/cell/secret"] });
  const protect = ["/home/u/.local/state/planter"];
  const present = exists({ "/work/cell/secret": "dir", "/home/u/.local/state/planter": "dir" });
  const view = (cellDir: string) => sandboxView(req({ policy: p, cellDir, cwd: cellDir, protect }), present);
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
    expect(visibleIn(view(cell), path, true)).toBe(visible);
  });
  test("without a private /tmp (Seatbelt), /tmp is visible", () => {
    expect(visibleIn(view("/work/cell"), "/tmp/x", false)).toBe(true);
  });
});

describe("socket covers (a policy with unix_sockets)", () => {
  test("a socket's directory is covered, one directly in a root is covered itself; nested covers fold into the outer", () => {
    const sockets = [
      "/run/a.sock",
      "/run/x/b.sock",
      "/run/x/y/c.sock",
      "/run/user/1000/bus",
      "/run/user/1000/gnupg/S.agent",
    ];
    expect(socketCovers(sockets, ["/run"])).toEqual([
      { path: "/run/a.sock", kind: "file" },
      { path: "/run/user/1000", kind: "dir" },
      { path: "/run/x", kind: "dir" },
    ]);
  });
});
