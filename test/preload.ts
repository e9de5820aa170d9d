/**
 * Loaded before every test file (bunfig.toml): what the developer's shell has set for their own
 * planter (PLANTER_SOCKET, PLANTER_MODE, PLANTER_HOME…, LIMA_HOME) must not reach the tests, nor the
 * processes they start without an explicit environment.
 */
for (const k of Object.keys(process.env)) if (k.startsWith("PLANTER_") || k === "LIMA_HOME") delete process.env[k];
