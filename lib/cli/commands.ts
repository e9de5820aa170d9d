/**
 * planter's command tree: every command is imported only when it runs (the binary's chunks load
 * per command, .ci/compile), so `planter job ls` never loads the daemon, doctor or installer.
 */
import { defineCommand } from "citty";
import { BUILD } from "../version.ts";
import { clientArgs, targetsArg } from "./client-config.ts";

export const subCommands = {
  daemon: () => import("../../scripts/daemon.ts").then((m) => m.default),
  run: () => import("./lifecycle/run.ts").then((m) => m.run),
  cell: () => import("./lifecycle/cell.ts").then((m) => m.cell),
  job: () => import("./lifecycle/job.ts").then((m) => m.job),
  logs: () => import("../../scripts/logs.ts").then((m) => m.default),
  events: () => import("./lifecycle/events.ts").then((m) => m.events),
  agents: () => import("./lifecycle/agents.ts").then((m) => m.agents),
  sandbox: () => import("../../scripts/sandbox.ts").then((m) => m.default),
  doctor: () => import("../../scripts/doctor.ts").then((m) => m.default),
  install: () => import("../../scripts/install.ts").then((m) => m.default),
  uninstall: () => import("../../scripts/uninstall.ts").then((m) => m.default),
  migrate: () => import("../../scripts/migrate.ts").then((m) => m.default),
  attach: () => import("./attach.ts").then((m) => m.attach),
  agent: () => import("./lifecycle/agent.ts").then((m) => m.agent),
  mcp: () => import("./mcp.ts").then((m) => m.mcp),
  target: () => import("./lifecycle/target.ts").then((m) => m.target),
  completion: () => import("./completion.ts").then((m) => m.completion),
  manpage: () => import("./completion.ts").then((m) => m.manpage),
};

export const planter = defineCommand({
  meta: {
    name: "planter",
    version: BUILD.version,
    description: "Run untrusted commands in sandboxed cells, observable and under control",
  },
  // Client commands' --socket and --target may come before the command: `planter --target lima run -- make`;
  // so may --targets and --all-targets of the commands that read several (`planter --all-targets job ls`).
  args: { ...clientArgs, ...targetsArg },
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
