#!/usr/bin/env bun
/** `uninstall` / `planter uninstall`: take back exactly what install changed. */
import { createInterface } from "node:readline/promises";
import { defineCommand } from "citty";
import { jsonArg, usage } from "../lib/cli/args.ts";
import { runCli } from "../lib/cli/main.ts";
import { nodeStream, print, printJson, write } from "../lib/cli/output.ts";
import { isTerminal } from "../lib/cli/tty.ts";
import { targetPaths } from "../lib/host/install.ts";
import { uninstall } from "../lib/host/uninstall.ts";
import { modeArgs, modeOf } from "./install.ts";

const cmd = defineCommand({
  meta: {
    name: "uninstall",
    description:
      "Reverse what install recorded: stop and disable the units (or the directly started daemon), remove the files it wrote " +
      "(a file changed since is kept unless --force), put back what they replaced, and undo the group changes it made. " +
      "State and logs stay unless --purge. Running it twice is harmless.",
  },
  args: {
    ...modeArgs,
    force: { type: "boolean", description: "also remove files changed since install" },
    purge: {
      type: "boolean",
      description: "also remove planter's state: the database, every job's logs, managed cells",
    },
    yes: { type: "boolean", alias: "y", description: "do not ask before --purge" },
    ...jsonArg,
  },
  async run({ args }) {
    const mode = modeOf(args);
    if (args.purge && !args.yes && !args["dry-run"]) {
      const dir = targetPaths({ mode, prefix: args.prefix }).stateDir;
      if (!isTerminal(0)) throw usage(`--purge deletes ${dir} with every job's logs`, "confirm with --yes");
      const rl = createInterface({ input: process.stdin, output: nodeStream(2) });
      const answer = await rl.question(`Delete ${dir} with planter's database and every job's logs? [y/N] `);
      rl.close();
      if (!/^y(es)?$/i.test(answer.trim()))
        throw usage("not purged", "run again with --purge --yes, or without --purge");
    }
    const r = await uninstall({
      mode,
      root: args.root ?? "/",
      prefix: args.prefix,
      force: Boolean(args.force),
      purge: Boolean(args.purge),
      dryRun: Boolean(args["dry-run"]),
      progress: (line) => {
        if (!args.json) write(2, `uninstall: ${line}\n`);
      },
    });
    if (args.json) printJson(r);
    else if (r.dry_run && r.steps.length) {
      print(`planter uninstall plan (${mode} mode${args.root ? `, root ${args.root}` : ""}); nothing was changed:`);
      for (const s of r.steps) print(`  ${s.id.padEnd(12)} ${s.description}`);
    } else if (r.installed)
      print(
        `planter ${r.dry_run ? "would be " : ""}uninstalled${r.kept.length ? ` (kept ${r.kept.length} changed file(s))` : ""}`,
      );
    else if (r.purged) print(`planter was not installed; purged its state dir ${r.purged}`);
    return 0;
  },
});

export default cmd;

if (import.meta.main) await runCli(cmd, process.argv.slice(2), "uninstall");
