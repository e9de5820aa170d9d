/**
 * Loaded before every test file (bunfig.toml): what the developer's shell has set for their own
 * planter (PLANTER_SOCKET, PLANTER_MODE, PLANTER_HOME…, LIMA_HOME) must not reach the tests, nor the
 * processes they start without an explicit environment.
 */
// PLANTER_TEST_* are the test run's own knobs (PLANTER_TEST_CRASH_SEED, PLANTER_TEST_BIN_CACHE), not planter's.
for (const k of Object.keys(process.env)) {
  if ((k.startsWith("PLANTER_") && !k.startsWith("PLANTER_TEST_")) || k === "LIMA_HOME") delete process.env[k];
}
