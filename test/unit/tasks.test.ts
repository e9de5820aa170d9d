/** The task share of jobs without a cgroup (lib/jobs/tasks.ts): the arithmetic and what is read. */
import { describe, expect, test } from "bun:test";
import { DAEMON_RESERVE, ownNproc, STARTS_RESERVE, shareOf, taskShare } from "../../lib/jobs/tasks.ts";

describe("shareOf", () => {
  test("planterd's own limit less its reserve for the recorders, less the starts' reserve for the jobs", () => {
    expect(shareOf(512, 192_735, 32_768)).toEqual({
      own: 512,
      ceiling: 512,
      recorders: 512 - DAEMON_RESERVE,
      jobs: 512 - DAEMON_RESERVE - STARTS_RESERVE,
    });
  });

  test("never more than half the host's task space (pid_max here), whatever planterd's own limit", () => {
    expect(shareOf(96_367, 192_735, 32_768).ceiling).toBe(16_384);
    expect(shareOf(96_367, 100_000, 4_194_304).ceiling).toBe(50_000);
  });

  test("an unlimited planterd keeps its limit; its jobs get half the host's task space", () => {
    const s = shareOf(null, 192_735, 4_194_304);
    expect(s).toEqual({
      own: null,
      ceiling: 96_367,
      recorders: 96_367 - DAEMON_RESERVE,
      jobs: 96_367 - DAEMON_RESERVE - STARTS_RESERVE,
    });
  });

  test("a limit smaller than the reserves still leaves every level a task", () => {
    const s = shareOf(100, null, null);
    expect(s.recorders).toBeGreaterThanOrEqual(2);
    expect(s.jobs).toBeGreaterThanOrEqual(1);
    expect(s.jobs).toBeLessThanOrEqual(s.recorders);
  });
});

describe("ownNproc", () => {
  const limits = (soft: string, hard: string) =>
    `Limit                     Soft Limit           Hard Limit           Units     \nMax processes             ${soft}                ${hard}                processes \n`;
  test("reads the soft limit; unlimited is null; unreadable is undefined", () => {
    expect(ownNproc(limits("512", "1024"))).toBe(512);
    expect(ownNproc(limits("unlimited", "unlimited"))).toBeNull();
    expect(ownNproc("nothing here")).toBeUndefined();
  });
});

test.skipIf(process.platform !== "linux")("this process's share is set through /bin/sh's own ulimit option", () => {
  const s = taskShare();
  expect(s).not.toBeNull();
  const r = Bun.spawnSync(["/bin/sh", "-c", `ulimit ${s?.flag} ${s?.jobs} && exec cat /proc/self/limits`]);
  expect(r.stdout.toString()).toMatch(new RegExp(`Max processes\\s+${s?.jobs}\\s+${s?.jobs}\\s`));
});
