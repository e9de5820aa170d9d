#!/usr/bin/env bun
/** `install` / `planter install`: put planter on this host (user or system mode), recording what it changes. */
import { defineCommand } from "citty";
import { jsonArg, parseDuration, usage } from "../lib/cli/args.ts";
import { runCli } from "../lib/cli/main.ts";
import { printJson } from "../lib/cli/output.ts";
import { install } from "../lib/host/install.ts";
import type { InstallMode } from "../lib/paths.ts";

/** --user / --system, defaulting to system for root and user otherwise. */
export function modeOf(args: { user?: boolean; system?: boolean }): InstallMode {
  if (args.user && args.system) throw usage("--user and --system cannot be combined");
  if (args.user) return "user";
  if (args.system) return "system";
  return process.getuid?.() === 0 ? "system" : "user";
}

export const modeArgs = {
  user: {
    type: "boolean",
    description: "per-user install: ~/.local/bin, user units, your own socket (default when not root)",
  },
  system: {
    type: "boolean",
    description: "system install (root): /usr/local/bin, system units, group planter (default for root)",
  },
  prefix: {
    type: "string",
    description: "install under PREFIX/bin (default ~/.local or /usr/local)",
    valueHint: "PREFIX",
  },
  root: {
    type: "string",
    description: "staging root: write every path below DIR and start nothing (tests, packagers)",
    valueHint: "DIR",
  },
  "dry-run": { type: "boolean", description: "print the plan and change nothing" },
  verbose: { type: "boolean", description: "print stacks with errors" },
} as const;

const cmd = defineCommand({
  meta: {
    name: "install",
    description:
      "Install planter on this host so planterd starts on demand (systemd socket activation; started directly where systemd is not running). " +
      "Re-running upgrades in place. Everything changed is recorded in install-state.json for uninstall.",
  },
  args: {
    ...modeArgs,
    binary: {
      type: "string",
      description: "binary to install (default: this one; from a source checkout, dist/planter, built when missing)",
      valueHint: "FILE",
    },
    wait: {
      type: "string",
      description: "how long to wait for planterd to answer (default 10s)",
      valueHint: "DURATION",
    },
    systemd: {
      type: "enum",
      options: ["auto", "yes", "no"],
      description:
        "systemd units: auto (when systemd runs), yes (write and enable them anyway, e.g. building an image), no (start planterd directly)",
    },
    ...jsonArg,
  },
  async run({ args }) {
    const tty = process.stderr.isTTY && !args.json;
    const r = await install({
      mode: modeOf(args),
      prefix: args.prefix,
      root: args.root ?? "/",
      binary: args.binary,
      dryRun: Boolean(args["dry-run"]),
      waitMs: args.wait ? parseDuration(args.wait, "--wait") : 10_000,
      systemd: (args.systemd as "auto" | "yes" | "no" | undefined) ?? "auto",
      progress: (line) => {
        if (!args.json) process.stderr.write(`${tty ? "• " : "install: "}${line}\n`);
      },
    });
    if (args.json) printJson(r);
    else if (r.dry_run) {
      console.log(
        `planter ${r.upgrade ? "upgrade" : "install"} plan (${r.mode} mode${r.root === "/" ? "" : `, root ${r.root}`}); nothing was changed:`,
      );
      for (const s of r.steps) console.log(`  ${s.id.padEnd(12)} ${s.description}`);
    } else {
      console.log(`planter ${r.upgrade ? "upgraded" : "installed"} (${r.mode} mode). Metadata: ${r.state_file}`);
      if (r.ready) console.log(`planterd answers on ${r.socket}. Try: planter run -- echo hello`);
    }
    return 0;
  },
});

export default cmd;

if (import.meta.main) await runCli(cmd, process.argv.slice(2), "install");
