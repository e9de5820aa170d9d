#!/usr/bin/env bun
/**
 * Build the compiled planter the tests share (test/host-fixture.ts planterBinary), both commits at
 * once, before test files start in parallel and would each wait on the build. Prints where it is.
 */
import { OTHER_COMMIT, planterBinary, TEST_COMMIT } from "./host-fixture.ts";

const started = performance.now();
const built = await Promise.all([planterBinary(TEST_COMMIT), planterBinary(OTHER_COMMIT)]);
console.log(`test binaries (${((performance.now() - started) / 1000).toFixed(1)} s): ${built.join(" ")}`);
