/**
 * planter's command tree: every command is imported only when it runs (the binary's chunks load
 * per command, .ci/compile), so `planter job ls` never loads the daemon, doctor or installer.
 */
import { defineCommand } from "citty";
import { PlanterError } from "../api/errors.ts";
import { BUILD } from "../version.ts";
import { allArg, clientArgs, targetsArg } from "./client-config.ts";
import { optionsBeforeCommand } from "./main.ts";

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

/** The commands that read several targets at once (`planter --all job ls`). */
export const AGGREGATING = ["job ls", "events", "agents ls"] as const;

export const planter = optionsBeforeCommand(
  defineCommand({
    meta: {
      name: "planter",
      version: BUILD.version,
      description: "Run untrusted commands in sandboxed cells, observable and under control",
    },
    // Client commands' --socket and --target may come before the command: `planter --target lima run -- make`;
    // so may --all, --targets and --all-targets of the commands that read several (`planter --all job ls`).
    args: { ...clientArgs, ...allArg, ...targetsArg },
    subCommands,
  }),
  {
    // Before the command --all means every target; after it, a command's own --all (job ls: every job).
    renames: { "--all": "--all-targets", "--all-targets": "--all-targets", "--targets": "--targets" },
    refuse: (flag, command) =>
      new PlanterError(
        "E_USAGE",
        `${flag} before the command reads several targets at once, and ${command} reads one target`,
        {
          hint: `the commands that read several: ${AGGREGATING.join(", ")} (planter --all job ls; --targets a,b for some); --target NAME sends ${command} to one target`,
        },
      ),
  },
);

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
