/**
 * The step engine attacked at every point (slow lane): an install killed at every point the engine
 * passes (before a step, after each record it writes, after it) is repaired by uninstall and by a
 * second install; an uninstall killed at every point is finished by the next.
 */
import { describe, expect, test } from "bun:test";
import { planterWith as planter } from "../host-fixture.ts";
import { stepsFixture } from "../steps-fixture.ts";

const { root, staging, system, userUnits, killedAt, killEverywhere } = stepsFixture();

describe("an install killed at any point is repaired by uninstall, and by a second install", () => {
  test("system mode into a staging root (files, a backup of the root's own planterd, links, units)", async () => {
    await killEverywhere(staging, "kill-staging");
  }, 300_000);

  test.skipIf(!root)(
    "system mode on this host, from the group on (accounts, planterd started directly)",
    async () => {
      await killEverywhere(system, "kill-system", "group");
    },
    300_000,
  );

  test("user mode, from the units on (live units)", async () => {
    await killEverywhere(userUnits, "kill-units", "units");
  }, 300_000);
});

describe("an uninstall killed at any point is finished by the next", () => {
  test("system mode into a staging root, with the root's own planterd to put back", async () => {
    const probe = staging("unkill-count");
    expect((await planter(probe.env, "install", ...probe.args)).code).toBe(0);
    const whole = await killedAt(probe, 0, "uninstall");
    expect(whole.code).toBe(0);
    const points = whole.points.map((p, i) => ({ p, k: i + 1 })).filter(({ p }) => !p.endsWith(" end"));
    expect(points.length).toBeGreaterThan(5);
    for (const { p, k } of points) {
      const s = staging(`unkill-${k}`);
      const before = s.snapshot();
      expect((await planter(s.env, "install", ...s.args)).code).toBe(0);
      const r = await killedAt(s, k, "uninstall");
      const at = `uninstall killed at ${p} (point ${k})`;
      expect([at, r.code, r.points.at(-1)]).toEqual([at, 137, p]);
      const u = await planter(s.env, "uninstall", ...s.uninstallArgs);
      expect([at, u.code, u.stderr.includes("warning:")]).toEqual([at, 0, false]);
      expect([at, s.snapshot()]).toEqual([at, before]);
    }
  }, 300_000);
});
