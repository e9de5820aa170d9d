#!/usr/bin/env bun
/**
 * The multi-call entry: dispatches on the name it was invoked as (planterd, logs, sandbox,
 * doctor, install, uninstall, migrate) and otherwise on `planter <command>`.
 */
import { basename } from "node:path";
import { asksVersion, BUILD } from "../lib/version.ts";

const versionLine = () => `planter ${BUILD.version} (${BUILD.commit})`;

/**
 * `--version` alone is answered before anything else loads (as `runCli` would answer it).
 * Everything else is imported when used: the binary's chunks load per command (.ci/compile).
 */
async function quickVersion(argv: string[]): Promise<void> {
  if (!asksVersion(argv)) return;
  try {
    await Bun.write(Bun.stdout, `${versionLine()}\n`);
  } catch {
    // a reader that has gone: nothing to tell it
  }
  process.exit(0);
}

if (import.meta.main) {
  // The terminal holder of an interactive job (lib/tty/holder.ts): hidden, and loads nothing else.
  if (process.argv[2] === "tty-holder" && process.argv.length === 3) {
    const { holderMain } = await import("../lib/tty/holder.ts");
    await holderMain();
  }
  // The egress helper (lib/net/listen.ts), run by planterd in a job's network namespace.
  if (process.argv[2] === "net-listen" && process.argv.length === 3) {
    const { netListenMain } = await import("../lib/net/listen.ts");
    await netListenMain();
  }
  // A terminal job's session where there is no setsid(1) (lib/tty/session.ts): becomes the job's program.
  if (process.argv[2] === "tty-session") {
    const { ttySessionMain } = await import("../lib/tty/session.ts");
    ttySessionMain(process.argv.slice(process.argv[3] === "--" ? 4 : 3));
  }
  await quickVersion(process.argv.slice(2));
  const [{ runCli }, { ENTRIES, planter, subCommands }] = await Promise.all([
    import("../lib/cli/main.ts"),
    import("../lib/cli/commands.ts"),
  ]);
  const invoked = basename(process.argv0 || "planter");
  const entry = ENTRIES[invoked];
  if (entry) {
    const cmd = await subCommands[entry]();
    await runCli(cmd, process.argv.slice(2), invoked, versionLine);
  }
  await runCli(planter, process.argv.slice(2), "planter", versionLine);
}
