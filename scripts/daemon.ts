#!/usr/bin/env bun
/** `planterd` / `planter daemon`: run the agent in the foreground. */
import { defineCommand } from "citty";
import { runCli } from "../lib/cli/main.ts";
import { runDaemon } from "../lib/daemon/main.ts";

const daemon = defineCommand({
  meta: {
    name: "daemon",
    description:
      "Run planterd in the foreground: the API on a Unix socket, job supervision and state. " +
      "Takes the listening socket from systemd socket activation when started that way. SIGTERM stops it; jobs keep running.",
  },
  args: {
    socket: {
      type: "string",
      description: "socket path to bind (default: PLANTER_SOCKET, PLANTER_HOME or the mode's path)",
      valueHint: "PATH",
    },
    "state-dir": { type: "string", description: "state directory (SQLite, logs, cells)", valueHint: "DIR" },
    config: { type: "string", description: "config file (TOML; default: the mode's config path)", valueHint: "FILE" },
    verbose: { type: "boolean", description: "print stacks with errors" },
  },
  async run({ args }) {
    await runDaemon({ socket: args.socket, stateDir: args["state-dir"], config: args.config });
    return 0;
  },
});

export default daemon;

if (import.meta.main) await runCli(daemon, process.argv.slice(2), "planterd");
