#!/usr/bin/env bun
/** Lifecycle client: `planter cell …`, `planter run`, `planter job …`, `planter events`, `planter agents …` (one file per command in lib/cli/lifecycle/). */
import { defineCommand } from "citty";
import { clientArgs } from "../lib/cli/args.ts";
import { agents } from "../lib/cli/lifecycle/agents.ts";
import { cell } from "../lib/cli/lifecycle/cell.ts";
import { events } from "../lib/cli/lifecycle/events.ts";
import { job } from "../lib/cli/lifecycle/job.ts";
import { run } from "../lib/cli/lifecycle/run.ts";
import { runCli } from "../lib/cli/main.ts";

if (import.meta.main) {
  const root = defineCommand({
    meta: { name: "planter" },
    args: clientArgs,
    subCommands: { cell, run, job, events, agents },
  });
  await runCli(root, process.argv.slice(2), "planter");
}
