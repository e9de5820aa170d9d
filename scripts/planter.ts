#!/usr/bin/env bun
/**
 * The multi-call entry: dispatches on the name it was invoked as (planterd, logs, sandbox,
 * doctor, install, uninstall, migrate) and otherwise on `planter <command>`.
 */
import { basename } from "node:path";
import { defineCommand } from "citty";
import { clientArgs } from "../lib/cli/args.ts";
import { runCli } from "../lib/cli/main.ts";
import { BUILD } from "../lib/version.ts";

const lifecycle = () => import("./lifecycle.ts");

const subCommands = {
  daemon: () => import("./daemon.ts").then((m) => m.default),
  run: () => lifecycle().then((m) => m.run),
  cell: () => lifecycle().then((m) => m.cell),
  job: () => lifecycle().then((m) => m.job),
  logs: () => import("./logs.ts").then((m) => m.default),
  events: () => lifecycle().then((m) => m.events),
  sandbox: () => import("./sandbox.ts").then((m) => m.default),
  doctor: () => import("./doctor.ts").then((m) => m.default),
  install: () => import("./install.ts").then((m) => m.default),
  uninstall: () => import("./uninstall.ts").then((m) => m.default),
  migrate: () => import("./migrate.ts").then((m) => m.default),
};

export const planter = defineCommand({
  meta: {
    name: "planter",
    version: BUILD.version,
    description: "Run untrusted commands in sandboxed cells, observable and under control",
  },
  // Client commands' --socket and --target may come before the command: `planter --target lima run -- make`.
  args: clientArgs,
  subCommands,
});

/** Entry names of the multi-call binary and the `planter` command each stands for. */
export const ENTRIES: Record<string, keyof typeof subCommands> = {
  planterd: "daemon",
  logs: "logs",
  sandbox: "sandbox",
  doctor: "doctor",
  install: "install",
  uninstall: "uninstall",
  migrate: "migrate",
};

const versionLine = () => `planter ${BUILD.version} (${BUILD.commit})`;

if (import.meta.main) {
  const invoked = basename(process.argv0 || "planter");
  const entry = ENTRIES[invoked];
  if (entry) {
    const cmd = await subCommands[entry]();
    await runCli(cmd, process.argv.slice(2), invoked, versionLine);
  }
  await runCli(planter, process.argv.slice(2), "planter", versionLine);
}
