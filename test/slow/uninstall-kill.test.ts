/**
 * The step engine attacked at every point (slow lane): an uninstall killed at every point is
 * finished by the next.
 */
import { describe, expect, test } from "bun:test";
import { planterWith as planter } from "../host-fixture.ts";
import { stepsFixture } from "../steps-fixture.ts";

const { staging, killedAt } = stepsFixture();

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
