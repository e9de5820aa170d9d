#!/usr/bin/env bun
/** `install` / `planter install`: put planter on this host (user or system mode), recording what it changes. */
import { homedir } from "node:os";
import { resolve } from "node:path";
import { type ArgDef, defineCommand } from "citty";
import { jsonArg, parseDuration, repeated, usage } from "../lib/cli/args.ts";
import { runCli } from "../lib/cli/main.ts";
import { print, printJson, write } from "../lib/cli/output.ts";
import { isTerminal } from "../lib/cli/tty.ts";
import { install } from "../lib/host/install.ts";
import type { LimaArch } from "../lib/host/lima.ts";
import { installLima } from "../lib/host/lima-install.ts";
import { type InstallMode, installMode } from "../lib/paths.ts";

/** --user / --system, else PLANTER_MODE (as every planter command reads it), else system for root on Linux and user otherwise. */
export function modeOf(args: { user?: boolean; system?: boolean }, env = process.env): InstallMode {
  if (args.user && args.system) throw usage("--user and --system cannot be combined");
  if (args.user) return "user";
  if (args.system) return "system";
  return installMode(env);
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
    description:
      "staging root (a package's DESTDIR): write every path below DIR and change nothing on this host (no accounts, no systemctl, nothing started)",
    valueHint: "DIR",
  },
  "dry-run": { type: "boolean", description: "print the plan and change nothing" },
  verbose: { type: "boolean", description: "print stacks with errors" },
} as const;

/** `install --lima`: the Linux agent in the Lima VM `planter` (lib/host/lima-install.ts). */
const limaArgs = {
  lima: {
    type: "boolean",
    description:
      "set up the Linux agent in the Lima VM `planter` (create, start, copy the binary, units), reached through ~/.lima/planter/sock/planterd.sock",
  },
  upgrade: {
    type: "boolean",
    description: "with --lima: replace a different binary in the VM and restart its socket unit",
  },
  "lima-binary": {
    type: "string",
    description:
      "with --lima: the Linux binary for the VM (default: built from a source checkout, or planter-linux-ARCH beside this one)",
    valueHint: "FILE",
  },
  cpus: { type: "string", description: "with --lima: the new VM's CPUs (default 4)", valueHint: "N" },
  memory: { type: "string", description: "with --lima: the new VM's memory (default 4GiB)", valueHint: "SIZE" },
  disk: { type: "string", description: "with --lima: the new VM's disk (default 50GiB)", valueHint: "SIZE" },
  mount: {
    type: "string",
    description: "with --lima: a directory you work in, mounted writable at the same path (repeat; default your home)",
    valueHint: "DIR",
  },
  arch: {
    type: "enum",
    options: ["x86_64", "aarch64"],
    description: "with --lima: the new VM's architecture (default: the host's)",
  },
} as const satisfies Record<string, ArgDef>;

async function runLima(args: Record<string, unknown>, rawArgs: string[], tty: boolean): Promise<number> {
  const str = (k: string) => args[k] as string | undefined;
  for (const k of ["root", "binary", "systemd"])
    if (args[k] !== undefined)
      throw usage(`--${k} cannot be combined with --lima`, "run install without --lima for the host");
  const cpus = Number(str("cpus") ?? 4);
  if (!Number.isInteger(cpus) || cpus < 1) throw usage(`--cpus ${str("cpus")}: expected a whole number of CPUs`);
  for (const k of ["memory", "disk"])
    if (str(k) !== undefined && !/^[0-9]+(\.[0-9]+)?[KMGT]iB$/.test(str(k) as string))
      throw usage(`--${k} ${str(k)}: expected a size such as 4GiB`);
  const mounts = repeated(rawArgs, "mount").map((m) => resolve(m));
  const r = await installLima({
    mode: modeOf(args),
    prefix: str("prefix"),
    binary: str("lima-binary"),
    upgrade: Boolean(args.upgrade),
    dryRun: Boolean(args["dry-run"]),
    cpus,
    memory: str("memory") ?? "4GiB",
    disk: str("disk") ?? "50GiB",
    mounts: mounts.length ? mounts : [homedir()],
    arch: str("arch") as LimaArch | undefined,
    waitMs: str("wait") ? parseDuration(str("wait") as string, "--wait") : 30_000,
    progress: (line) => {
      if (!args.json) write(2, `${tty ? "• " : "install: "}${line}\n`);
    },
  });
  if (args.json) printJson(r);
  else if (r.dry_run) {
    print(`planter Lima plan (VM ${r.vm}); nothing was changed:`);
    for (const s of r.steps) print(`  ${s.id.padEnd(12)} ${s.description}`);
  } else {
    print(
      r.changed.length
        ? `planter agent in VM ${r.vm}: ${r.changed.join(", ")} done. Metadata: ${r.state_file}`
        : `planter agent in VM ${r.vm} is up to date; nothing changed`,
    );
    print(
      `planterd ${r.version} answers on ${r.host_socket}. Try: PLANTER_SOCKET=${r.host_socket} planter run -- uname -a`,
    );
  }
  return 0;
}

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
        "systemd units: auto (when a service manager answers; always with --root), yes (also where none answers: enabled offline, e.g. building an image), no (start planterd directly; with --root, no units)",
    },
    ...limaArgs,
    ...jsonArg,
  },
  async run({ args, rawArgs }) {
    const tty = isTerminal(2) && !args.json;
    if (args.lima) return await runLima(args, rawArgs, tty);
    const r = await install({
      mode: modeOf(args),
      prefix: args.prefix,
      root: args.root ?? "/",
      binary: args.binary,
      dryRun: Boolean(args["dry-run"]),
      waitMs: args.wait ? parseDuration(args.wait, "--wait") : 10_000,
      systemd: (args.systemd as "auto" | "yes" | "no" | undefined) ?? "auto",
      progress: (line) => {
        if (!args.json) write(2, `${tty ? "• " : "install: "}${line}\n`);
      },
    });
    if (args.json) printJson(r);
    else if (r.dry_run) {
      print(
        `planter ${r.upgrade ? "upgrade" : "install"} plan (${r.mode} mode${r.root === "/" ? "" : `, root ${r.root}`}); nothing was changed:`,
      );
      for (const s of r.steps) print(`  ${s.id.padEnd(12)} ${s.description}`);
    } else {
      print(`planter ${r.upgrade ? "upgraded" : "installed"} (${r.mode} mode). Metadata: ${r.state_file}`);
      if (r.ready) print(`planterd answers on ${r.socket}. Try: planter run -- echo hello`);
    }
    return 0;
  },
});

export default cmd;

if (import.meta.main) await runCli(cmd, process.argv.slice(2), "install");
