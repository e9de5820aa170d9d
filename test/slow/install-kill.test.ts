/**
 * The step engine attacked at every point (slow lane): an install killed at every point the engine
 * passes (before a step, after each record it writes, after it) is repaired by uninstall and by a
 * second install. The three setups run concurrently (each on fake hosts of its own); an uninstall
 * killed at every point is uninstall-kill.test.ts, so the two files run in parallel.
 */
import { describe, test } from "bun:test";
import { stepsFixture } from "../steps-fixture.ts";

const { root, staging, system, userUnits, killEverywhere } = stepsFixture();

describe.concurrent("an install killed at any point is repaired by uninstall, and by a second install", () => {
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
