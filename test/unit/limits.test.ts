import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { passthroughCode } from "../../lib/api/contract.ts";
import {
  formatBytes,
  formatDuration,
  limitsFromArgs,
  limitsLine,
  limitText,
  parseBytes,
  parseLimitDuration,
} from "../../lib/cli/units.ts";
import { parseConfig } from "../../lib/config.ts";
import { cgroup2Mount, detectCgroup, groupEnd, JobCgroups, killGroup, ownCgroupPath } from "../../lib/jobs/cgroup.ts";
import { breach, decideAct, hardCap, quotaCut } from "../../lib/jobs/limits.ts";
import { descendants, nsPid, type ProcEntry, type ProcTable, sandboxProcs } from "../../lib/jobs/proc.ts";
import { readStatus, recorderArgv } from "../../lib/jobs/recorder.ts";
import { endOf } from "../../lib/jobs/supervisor.ts";
import type { JobRow } from "../../lib/state/jobs.ts";

const MiB = 1024 * 1024;

describe("breach", () => {
  const at = (ms: number) => ({ now: 10_000 + ms, startedAt: 10_000, rssBytes: null, logBytes: null });

  test("a timeout is reached at timeout_ms exactly, not a millisecond before", () => {
    expect(breach({ timeout_ms: 500 }, at(499))).toBeNull();
    expect(breach({ timeout_ms: 500 }, at(500))).toEqual({
      limit: "timeout_ms",
      reason: "timeout",
      value: 500,
      max: 500,
    });
  });

  test("memory and log limits are exceeded above their maximum, not at it", () => {
    const s = (rss: number | null, log: number | null) => ({ ...at(0), rssBytes: rss, logBytes: log });
    expect(breach({ max_rss_bytes: 100 }, s(100, null))).toBeNull();
    expect(breach({ max_rss_bytes: 100 }, s(101, null))).toEqual({
      limit: "max_rss_bytes",
      reason: "memory_limit",
      value: 101,
      max: 100,
    });
    expect(breach({ max_log_bytes: 100 }, s(null, 100))).toBeNull();
    expect(breach({ max_log_bytes: 100 }, s(null, 150))?.reason).toBe("log_quota");
  });

  test("what was not measured is not judged; no limits, no breach", () => {
    expect(breach({ max_rss_bytes: 1, max_log_bytes: 1 }, at(10))).toBeNull();
    expect(breach({}, { now: 1e12, startedAt: 0, rssBytes: 1e12, logBytes: 1e12 })).toBeNull();
  });

  test("several at one sample: timeout, then memory, then log", () => {
    const all = { timeout_ms: 10, max_rss_bytes: 10, max_log_bytes: 10 };
    expect(breach(all, { now: 100, startedAt: 0, rssBytes: 99, logBytes: 99 })?.limit).toBe("timeout_ms");
    expect(breach(all, { now: 5, startedAt: 0, rssBytes: 99, logBytes: 99 })?.limit).toBe("max_rss_bytes");
    expect(breach(all, { now: 5, startedAt: 0, rssBytes: 1, logBytes: 99 })?.limit).toBe("max_log_bytes");
  });
});

describe("the race of a job's own exit against a limit", () => {
  const running = { exitRecorded: false, recorderAlive: true, running: true, killRequested: false };

  test("a breach stops a job still running", () => {
    expect(decideAct(running)).toBe("stop");
  });

  test("a job whose exit status is written ended first: the monitor leaves it", () => {
    expect(decideAct({ ...running, exitRecorded: true })).toBe("ended");
    expect(decideAct({ ...running, recorderAlive: false })).toBe("ended");
    expect(decideAct({ ...running, running: false })).toBe("ended");
  });

  test("a kill already under way keeps its own reason", () => {
    expect(decideAct({ ...running, killRequested: true })).toBe("stopping");
  });

  const row = (over: Partial<JobRow>): JobRow =>
    ({ id: "j-1", kill_requested_at: null, kill_reason: null, kill_signal: null, limit_hit: null, ...over }) as JobRow;
  const hit = { limit: "timeout_ms" as const, value: 1000, max: 1000, at: 1 };
  const timeoutKill = { kill_requested_at: 2, kill_reason: "timeout" as const, kill_signal: "TERM", limit_hit: hit };

  test("a job that exited on its own (no kill recorded) keeps reason exited and its code", () => {
    expect(endOf(row({}), 0, null, 5)).toEqual({
      state: "exited",
      reason: "exited",
      exit_code: 0,
      signal: null,
      message: null,
      at: 5,
    });
    expect(endOf(row({}), 3, null, 5)).toMatchObject({ state: "failed", reason: "exited", exit_code: 3 });
  });

  test("a job the monitor stopped ends with the limit, whether it died by the signal or exited from a handler", () => {
    expect(endOf(row(timeoutKill), 143, null, 5)).toMatchObject({
      state: "killed",
      reason: "timeout",
      exit_code: 143,
      signal: "TERM",
    });
    expect(endOf(row(timeoutKill), 0, null, 5)).toMatchObject({ state: "killed", reason: "timeout", exit_code: 0 });
    expect(endOf(row(timeoutKill), null, "KILL", 5)).toMatchObject({
      state: "killed",
      reason: "timeout",
      signal: "KILL",
    });
  });

  test("a user's kill keeps its old meaning: a clean exit after TERM is an exit", () => {
    const user = { kill_requested_at: 2, kill_reason: "terminated_by_user" as const, kill_signal: "TERM" };
    expect(endOf(row(user), 0, null, 5)).toMatchObject({ state: "exited", reason: "exited" });
  });

  test("a job a limit stopped never passes 0 through the CLI", () => {
    expect(passthroughCode({ exit_code: 0, signal: null, reason: "timeout" })).toBe(1);
    expect(passthroughCode({ exit_code: 143, signal: "TERM", reason: "memory_limit" })).toBe(143);
    expect(passthroughCode({ exit_code: 0, signal: null, reason: "exited" })).toBe(0);
  });
});

describe("log quota cut", () => {
  test("a log within the quota is kept whole", () => {
    expect(quotaCut({ stdout: 0, stderr: 0 }, { stdout: 40, stderr: 60 }, 100)).toEqual({ stdout: 40, stderr: 60 });
  });

  test("what both logs held within the quota is kept; the rest is shared by growth", () => {
    // Within the quota at 30 + 10; then stdout grew by 300 and stderr by 100: 60 bytes of room.
    expect(quotaCut({ stdout: 30, stderr: 10 }, { stdout: 330, stderr: 110 }, 100)).toEqual({ stdout: 75, stderr: 25 });
  });

  test("the cut always totals the quota exactly and never grows a file", () => {
    for (const [u, o, max] of [
      [[0, 0], [1_000_003, 7], 1_048_576 / 2],
      [[5, 5], [6, 1_000_000], 11],
      [[0, 0], [3, 3], 5],
      [[1, 0], [1, 999], 2],
    ] as [number[], number[], number][]) {
      const under = { stdout: u[0] as number, stderr: u[1] as number };
      const over = { stdout: o[0] as number, stderr: o[1] as number };
      const cut = quotaCut(under, over, max);
      expect(cut.stdout + cut.stderr).toBe(max);
      expect(cut.stdout).toBeLessThanOrEqual(over.stdout);
      expect(cut.stderr).toBeLessThanOrEqual(over.stderr);
      expect(cut.stdout).toBeGreaterThanOrEqual(Math.min(under.stdout, max));
    }
  });

  test("hard caps during the grace: 1 MiB more log, or another limit of memory, than found; none for a timeout", () => {
    expect(hardCap({ limit: "max_log_bytes", max: 100, value: 5000 })).toBe(5000 + MiB);
    expect(hardCap({ limit: "max_rss_bytes", max: 100, value: 150 })).toBe(250);
    expect(hardCap({ limit: "timeout_ms", max: 100, value: 100 })).toBeNull();
  });
});

describe("human units", () => {
  test.each([
    ["4096", 4096],
    ["10b", 10],
    ["512K", 512 * 1024],
    ["512M", 512 * MiB],
    ["512MiB", 512 * MiB],
    ["512mb", 512 * MiB],
    ["1.5G", 1.5 * 1024 * MiB],
    ["2T", 2 * 1024 ** 4],
  ])("size %p = %p bytes", (text, bytes) => {
    expect(parseBytes(text, "--max-rss")).toBe(bytes);
  });

  test.each([
    ["0", /more than 0/],
    ["0M", /more than 0/],
    ["-5M", /must be a size/],
    ["lots", /must be a size/],
    ["5 P", /must be a size/],
    ["1e9", /must be a size/],
    ["2000T", /at most 1024T/],
  ])("size %p is refused", (text, message) => {
    expect(() => parseBytes(text, "--max-rss")).toThrow(message);
  });

  test.each([
    ["500ms", 500],
    ["30s", 30_000],
    ["1.5m", 90_000],
    ["2h", 7_200_000],
    ["30d", 30 * 86_400_000],
  ])("duration %p = %p ms", (text, ms) => {
    expect(parseLimitDuration(text, "--timeout")).toBe(ms);
  });

  test.each([
    ["0s", /more than 0/],
    ["-1s", /must be a duration/],
    ["30", /add a unit, e.g. 30s/],
    ["soon", /must be a duration/],
    ["31d", /at most 30d/],
  ])("duration %p is refused", (text, message) => {
    expect(() => parseLimitDuration(text, "--timeout")).toThrow(message);
  });

  test("bad values are usage errors (exit 2) naming the option", () => {
    try {
      limitsFromArgs({ "max-log": "ten" });
      throw new Error("not refused");
    } catch (e) {
      expect((e as { code: string }).code).toBe("E_USAGE");
      expect((e as Error).message).toContain("--max-log");
    }
  });

  test("the three options make one limits object", () => {
    expect(limitsFromArgs({ timeout: "30s", "max-rss": "512M", "max-log": "10M" })).toEqual({
      timeout_ms: 30_000,
      max_rss_bytes: 512 * MiB,
      max_log_bytes: 10 * MiB,
    });
    expect(limitsFromArgs({})).toBeUndefined();
  });

  test("printed in words", () => {
    expect([
      formatBytes(900),
      formatBytes(10 * 1024),
      formatBytes(812 * MiB + 5),
      formatBytes(1.5 * 1024 * MiB),
    ]).toEqual(["900 B", "10 KiB", "812 MiB", "1.5 GiB"]);
    expect([formatDuration(250), formatDuration(30_000), formatDuration(125_000), formatDuration(5_400_000)]).toEqual([
      "250ms",
      "30s",
      "2m 5s",
      "1h 30m",
    ]);
    expect(limitsLine({ timeout_ms: 30_000, max_rss_bytes: 512 * MiB, max_log_bytes: 10 * MiB })).toBe(
      "timeout 30s, memory 512 MiB, log 10 MiB",
    );
    expect(limitsLine({})).toBe("none");
    const x = (limit: "timeout_ms" | "max_rss_bytes" | "max_log_bytes", value: number, max: number) => ({
      limit_exceeded: { limit, value, max, at: "" },
    });
    expect(limitText(x("max_rss_bytes", 812 * MiB, 512 * MiB))).toBe("memory_limit: 812 MiB > 512 MiB");
    expect(limitText(x("timeout_ms", 30_250, 30_000))).toBe("timeout: 30.25s > 30s");
    expect(limitText(x("max_log_bytes", 12.2 * MiB, 10 * MiB))).toBe("log_quota: 12.2 MiB > 10 MiB");
    expect(limitText({ limit_exceeded: null })).toBeNull();
  });
});

describe("config [monitor]", () => {
  test("defaults, and a grace that falls back to jobs.kill_grace_ms", () => {
    const c = parseConfig({}, "x.toml");
    expect(c.monitor).toEqual({ interval_ms: 250, log_watch: true, cgroup: "auto", cgroup_pids_max: 8192 });
    expect(c.monitor.grace_ms).toBeUndefined();
    expect(parseConfig({ monitor: { grace_ms: 100 } }, "x.toml").monitor.grace_ms).toBe(100);
  });

  test("bad values name their path", () => {
    expect(() => parseConfig({ monitor: { interval_ms: 0 } }, "c.toml")).toThrow(/monitor\.interval_ms/);
    expect(() => parseConfig({ monitor: { cgroup: "v2" } }, "c.toml")).toThrow(/monitor\.cgroup/);
    expect(() => parseConfig({ monitor: { nope: 1 } }, "c.toml")).toThrow(/monitor\.nope/);
  });
});

/** A process table from (pid, ppid, pgid) rows, as a /proc scan would index it. */
function table(rows: [pid: number, ppid: number, pgid: number][]): ProcTable {
  const t: ProcTable = { procs: new Map(), children: new Map(), groups: new Map() };
  for (const [pid, ppid, pgid] of rows) {
    const p: ProcEntry = { pid, ppid, pgid, startTime: String(pid), rssPages: 1, threads: 1 };
    t.procs.set(pid, p);
    t.children.set(ppid, [...(t.children.get(ppid) ?? []), pid]);
    t.groups.set(pgid, [...(t.groups.get(pgid) ?? []), pid]);
  }
  return t;
}

describe("process trees", () => {
  test("descendants by parent links reach a bwrap tree in its own session; group members count too", () => {
    const t = table([
      [100, 1, 100], // recorder
      [101, 100, 100], // bwrap
      [102, 101, 102], // --new-session: another group
      [103, 102, 102],
      [104, 1, 100], // orphan still in the recorder's group
      [105, 104, 105], // its child in a session of its own
      [200, 1, 200], // a stranger
    ]);
    expect(descendants(t, [100], 100).sort()).toEqual([101, 102, 103, 104, 105]);
  });

  test("extra roots (processes seen earlier in the tree) bring their descendants", () => {
    const t = table([
      [100, 1, 100],
      [300, 1, 300], // escaped: reparented to init, own session
      [301, 300, 300],
    ]);
    expect(descendants(t, [100], 100)).toEqual([]);
    expect(descendants(t, [100, 300], 100)).toEqual([301]);
  });
});

describe("a sandboxed job's own processes (what signals but SIGKILL reach)", () => {
  const tree = table([
    [100, 1, 100], // recorder
    [101, 100, 100], // a log pump
    [102, 100, 100], // bwrap, outside
    [103, 102, 103], // bwrap's init: pid 1 inside, --new-session
    [104, 103, 103], // the job
    [105, 104, 105], // a child that made a group of its own
    [106, 103, 103], // an orphan inside, reparented to the init
    [200, 1, 200], // a stranger
  ]);

  test("the init's descendants, never the recorder, the pumps, bwrap or the init", () => {
    expect(sandboxProcs(tree, 100, (p) => p === 103)?.sort()).toEqual([104, 105, 106]);
  });

  test("no init yet (bwrap still setting up): null, and the caller signals the whole tree", () => {
    expect(sandboxProcs(tree, 100, () => false)).toBeNull();
  });

  test("the shallowest init is the sandbox's, whatever wraps bwrap; one deeper down is the job's own", () => {
    const wrapped = table([
      [100, 1, 100], // recorder
      [101, 100, 100], // a wrapper that does not exec
      [102, 101, 100], // bwrap
      [103, 102, 103], // init
      [104, 103, 103], // the job
      [105, 104, 105], // pid 1 of a namespace of the job's own
      [106, 105, 105],
    ]);
    expect(sandboxProcs(wrapped, 100, (p) => p === 103 || p === 105)?.sort()).toEqual([104, 105, 106]);
  });

  test("NSpid: this process is at depth 0 with its own pid", () => {
    expect(nsPid(process.pid)).toEqual({ depth: 0, inner: process.pid });
    expect(nsPid(2 ** 22 + 1)).toBeNull();
  });
});

describe("cgroup v2 detection and files (a fake tree: this host has cgroup v1)", () => {
  let root = "";
  afterEach(() => {
    if (root) rmSync(root, { recursive: true, force: true });
    root = "";
  });

  const V1_MOUNTS = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids`;

  /** A fake cgroup2 mount with planterd's group at `own` (relative), holding `procs`. */
  function fake(own: string, controllers: string, procs: number[]) {
    root = mkdtempSync("/tmp/pt-cg-");
    const dir = join(root, own);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(root, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n");
    writeFileSync(join(root, "cgroup.subtree_control"), "");
    writeFileSync(join(root, "cgroup.procs"), "");
    writeFileSync(join(dir, "cgroup.controllers"), `${controllers}\n`);
    writeFileSync(join(dir, "cgroup.subtree_control"), "");
    writeFileSync(join(dir, "cgroup.procs"), procs.map((p) => `${p}\n`).join(""));
    return {
      mountinfo: `${V1_MOUNTS}\n41 31 0:38 / ${root} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n`,
      selfCgroup: `0::/${own}\n`,
      pid: 4242,
      dir,
    };
  }

  test("parsing mountinfo and /proc/self/cgroup", () => {
    expect(cgroup2Mount(V1_MOUNTS)).toBeNull();
    expect(cgroup2Mount("41 31 0:38 / /sys/fs/cgroup/my\\040dir rw - cgroup2 cgroup2 rw")).toEqual({
      root: "/",
      point: "/sys/fs/cgroup/my dir",
    });
    expect(ownCgroupPath("9:name=systemd:/\n4:memory:/x\n0::/system.slice/planterd.service\n")).toBe(
      "/system.slice/planterd.service",
    );
    expect(ownCgroupPath("4:memory:/x\n")).toBeNull();
  });

  test("a cgroup v1 host (like this one) falls back to the monitor, saying why", () => {
    expect(detectCgroup({ mountinfo: V1_MOUNTS, selfCgroup: "4:memory:/x\n", pid: 1 })).toEqual({
      ok: false,
      why: "no cgroup v2 hierarchy is mounted (the host uses cgroup v1)",
    });
  });

  test("a hybrid host whose v2 hierarchy has no memory or pids controller falls back", () => {
    const f = fake("", "hugetlb", []);
    const r = detectCgroup({ ...f, selfCgroup: "0::/\n" });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.why).toContain("lacks the memory and pids controllers (has: hugetlb)");
  });

  test("a group that is not delegated (not writable) falls back, with the fix", () => {
    const f = fake("system.slice/planterd.service", "memory pids", [4242]);
    const r = detectCgroup({ ...f, writable: (p) => !p.endsWith("cgroup.subtree_control") });
    expect(!r.ok && r.why).toContain("is not delegated to planterd");
    expect(!r.ok && r.why).toContain("Delegate=yes");
  });

  test("a group shared with other processes (a login shell's scope) falls back", () => {
    const f = fake("user.slice/session-1.scope", "memory pids", [4242, 777]);
    const r = detectCgroup({ ...f, writable: () => true });
    expect(!r.ok && r.why).toContain("also holds other processes (777)");
  });

  test("a delegated group of planterd's own is used, and the layout is made in it", () => {
    const f = fake("system.slice/planterd.service", "memory pids", [4242]);
    const r = detectCgroup({ ...f, writable: () => true });
    expect(r).toEqual({ ok: true, mount: root, own: f.dir, base: f.dir });
    if (!r.ok) return;
    const cg = new JobCgroups(r, 512);
    cg.prepare(4242);
    expect(readFileSync(join(f.dir, "planterd", "cgroup.procs"), "utf8")).toBe("4242\n");
    expect(readFileSync(join(f.dir, "cgroup.subtree_control"), "utf8")).toBe("+memory +pids\n");
    expect(readFileSync(join(f.dir, "jobs", "cgroup.subtree_control"), "utf8")).toBe("+memory +pids\n");

    const dir = cg.create("j-1", { max_rss_bytes: 64 * MiB });
    expect(dir).toBe(join(f.dir, "jobs", "j-1"));
    const read = (name: string) => readFileSync(join(dir, name), "utf8");
    expect([read("memory.max"), read("memory.oom.group"), read("pids.max")]).toEqual([`${64 * MiB}\n`, "1\n", "512\n"]);
    expect(read("memory.max")).toBe(`${64 * MiB}\n`);
    expect(readFileSync(join(cg.create("j-2", {}), "memory.max"), "utf8")).toBe("max\n");
    expect(readFileSync(join(cg.create("j-3", { max_pids: 64 }), "pids.max"), "utf8")).toBe("64\n");

    // cgroup.kill only where the kernel has it (5.14+).
    expect(killGroup(dir)).toBe(false);
    writeFileSync(join(dir, "cgroup.kill"), "0\n");
    expect(killGroup(dir)).toBe(true);
    expect(read("cgroup.kill")).toBe("1\n");

    expect(groupEnd(dir)).toEqual({ oomKills: 0, peakBytes: null, pidsHits: 0 });
    writeFileSync(join(dir, "memory.events"), "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n");
    writeFileSync(join(dir, "memory.peak"), `${80 * MiB}\n`);
    expect(groupEnd(dir)).toMatchObject({ oomKills: 1, peakBytes: 80 * MiB, pidsHits: 0 });
    writeFileSync(join(dir, "pids.events"), "max 3\n");
    expect(groupEnd(dir).pidsHits).toBe(3);
  });

  test("planterd in the root group (a container of its own) puts its tree under <mount>/planter", () => {
    const f = fake("", "memory pids", []);
    const r = detectCgroup({ ...f, selfCgroup: "0::/\n", writable: () => true });
    expect(r).toEqual({ ok: true, mount: root, own: root, base: join(root, "planter") });
    if (!r.ok) return;
    new JobCgroups(r, 100).prepare(4242);
    expect(readFileSync(join(root, "cgroup.subtree_control"), "utf8")).toBe("+memory +pids\n");
    expect(existsSync(join(root, "planter", "jobs"))).toBe(true);
    expect(existsSync(join(root, "planterd"))).toBe(false); // the root group may hold processes
  });

  test("a planterd started inside the leaf an earlier one made finds the delegated group above it", () => {
    const f = fake("system.slice/planterd.service/planterd", "memory pids", [4242]);
    mkdirSync(join(root, "system.slice/planterd.service/jobs"));
    const parent = join(root, "system.slice/planterd.service");
    writeFileSync(join(parent, "cgroup.controllers"), "memory pids\n");
    writeFileSync(join(parent, "cgroup.procs"), "");
    const r = detectCgroup({ ...f, writable: () => true });
    expect(r.ok && r.base).toBe(parent);
  });

  test("the job's first process enters its groups before it runs anything; the recorder stays out", async () => {
    root = mkdtempSync("/tmp/pt-cg-");
    const procs = [join(root, "a.procs"), join(root, "b procs")];
    for (const f of procs) writeFileSync(f, "");
    const status = join(root, "exit");
    const p = Bun.spawn(recorderArgv(status, ["/bin/sh", "-c", "echo $$"], false, procs), { stdout: "pipe" });
    const out = (await new Response(p.stdout).text()).trim();
    expect(await p.exited).toBe(0);
    // exec keeps the pid: the program runs as the process that entered the groups.
    for (const f of procs) expect(readFileSync(f, "utf8").trim()).toBe(out);
    expect(Number(out)).not.toBe(p.pid);
    expect(readStatus(status)).toBe(0);

    const bad = Bun.spawn(
      recorderArgv(join(mkdtempSync(join(root, "j2-")), "exit"), ["/bin/true"], false, [
        join(root, "missing", "cgroup.procs"),
      ]),
      {
        stderr: "pipe",
      },
    );
    expect(await bad.exited).toBe(125);
    expect(await new Response(bad.stderr).text()).toContain("planter: cannot enter cgroup");
  });
});
