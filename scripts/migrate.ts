#!/usr/bin/env bun
/** `migrate` / `planter migrate`: upgrade planter's state and import the legacy prototype's (`state`). */
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { defineCommand } from "citty";
import { jsonArg } from "../lib/cli/args.ts";
import { runCli } from "../lib/cli/main.ts";
import { print, printJson, write } from "../lib/cli/output.ts";
import { isTerminal } from "../lib/cli/tty.ts";
import { daemonPaths } from "../lib/daemon/main.ts";
import { type LimaMigrateResult, migrateLima } from "../lib/host/lima-migrate.ts";
import type { ImportItem } from "../lib/state/legacy.ts";
import { type MigrateReport, migrateState } from "../lib/state/migrate.ts";

/** The prototype's state root: --from, else PLANTER_STATE_DIR, else ~/.planter/state. */
export function legacyRoot(from: string | undefined, env = process.env): { root: string; explicit: boolean } {
  if (from) return { root: resolve(from), explicit: true };
  if (env.PLANTER_STATE_DIR) return { root: resolve(env.PLANTER_STATE_DIR), explicit: false };
  return { root: join(env.HOME || homedir(), ".planter", "state"), explicit: false };
}

function itemLine(i: ImportItem): string | null {
  const what = `${i.kind} ${i.legacy_id}`;
  if (i.action === "skip") return i.skip === "already_imported" ? null : `  skipped ${what}: ${i.note}`;
  if (i.action === "merge") return `  merged ${what} into cell ${i.target}: ${i.note}`;
  if (i.kind === "job" && i.state === "running")
    return `  adopted ${what} (pid still running)${i.note ? `: ${i.note}` : ""}`;
  if (i.kind === "job" && i.state === "lost") return `  lost ${what}: ${i.note}`;
  return i.note ? `  ${what} → ${i.kind === "cell" ? `cell ${i.target}` : i.state}: ${i.note}` : null;
}

/** The summary for people: what happened to the database and to the legacy tree. */
export function summary(r: MigrateReport): string {
  const lines: string[] = [];
  if (r.dry_run) lines.push("dry run: nothing was changed");
  lines.push(`state: ${r.state_dir}`, databaseLine(r), ...legacyLines(r));
  if (r.nothing_to_do) lines.push("nothing to do");
  return lines.join("\n");
}

function databaseLine(r: MigrateReport): string {
  const db = r.database;
  if (!db.existed && !db.applied.length) return "database: none yet (planterd creates it on first start)";
  if (!db.existed) return `database: ${r.dry_run ? "would be " : ""}created at v${db.to}`;
  if (!db.applied.length) return `database: at v${db.to}, nothing to upgrade`;
  return (
    `database: ${r.dry_run ? "would be migrated" : "migrated"} from v${db.from} to v${db.to}` +
    (db.backup ? ` (backup: ${db.backup})` : r.dry_run ? " (after a backup next to it)" : "")
  );
}

function legacyLines(r: MigrateReport): string[] {
  const would = r.dry_run ? "would be " : "";
  const l = r.legacy;
  if (!l.present) return [`legacy state: none at ${l.root}`];
  const c = l.counts;
  const merged = c.cells.merged ? `, ${c.cells.merged} ${would}merged into existing cells` : "";
  const lines = [
    `legacy state: ${l.root}`,
    `  cells: ${c.cells.imported} ${would}imported${merged}, ${c.cells.skipped} skipped`,
    `  jobs: ${c.jobs.imported} ${would}imported (${c.jobs.adopted} adopted, ${c.jobs.lost} lost), ${c.jobs.skipped} skipped`,
  ];
  if (l.malformed.length) lines.push(`  malformed files: ${l.malformed.length} skipped (listed on stderr)`);
  for (const i of l.items) {
    const line = itemLine(i);
    if (line) lines.push(line);
  }
  return lines;
}

const state = defineCommand({
  meta: {
    name: "state",
    description:
      "Upgrade planter's database (backup first, restored on failure) and import the legacy prototype's JSON state " +
      "(--from DIR, else PLANTER_STATE_DIR, else ~/.planter/state). Idempotent; planterd must be stopped",
  },
  args: {
    "dry-run": { type: "boolean", description: "print what would change, and change nothing" },
    from: { type: "string", description: "the prototype's state root (holds cells/ and jobs/)", valueHint: "DIR" },
    ...jsonArg,
    verbose: { type: "boolean", description: "print stacks with errors" },
  },
  run({ args }) {
    const { root, explicit } = legacyRoot(args.from);
    const report = migrateState({
      stateDir: daemonPaths({}).paths.stateDir,
      legacyRoot: root,
      legacyExplicit: explicit,
      dryRun: Boolean(args["dry-run"]),
    });
    if (args.json) printJson(report);
    else {
      for (const m of report.legacy.malformed) write(2, `migrate: skipped malformed ${m.path}: ${m.message}\n`);
      for (const w of report.warnings) write(2, `migrate: warning: ${w}\n`);
      print(summary(report));
    }
    return 0;
  },
});

/** migrate lima's report for people. */
export function limaSummary(r: LimaMigrateResult): string {
  if (r.outcome === "nothing_to_do")
    return `VM ${r.vm} is in the socket-activated layout with this planter; nothing to do`;
  const lines: string[] = [];
  if (r.dry_run) lines.push(`planter Lima migration plan (VM ${r.vm}); nothing was changed:`);
  else lines.push(`migrated VM ${r.vm} to the socket-activated layout:`);
  for (const s of r.steps) lines.push(`  ${s.id.padEnd(9)} ${s.description}`);
  if (!r.dry_run && r.version)
    lines.push(
      `planterd ${r.version} answers on ${r.host_socket}. Try: PLANTER_SOCKET=${r.host_socket} planter run -- uname -a`,
    );
  return lines.join("\n");
}

const lima = defineCommand({
  meta: {
    name: "lima",
    description:
      "Move the Lima VM planter from the older layout (an agent service binding its own socket) to the socket-activated one " +
      "that install --lima provisions: stop the old service, units, socket owner/mode, group, binary, sentinel, a real API call. " +
      "Idempotent; the VM must run (--start starts it)",
  },
  args: {
    "dry-run": { type: "boolean", description: "print the plan, and change nothing" },
    start: { type: "boolean", description: "start the VM first when it is stopped" },
    "lima-binary": {
      type: "string",
      description: "the Linux binary to copy into the VM (default: as install --lima finds it)",
      valueHint: "FILE",
    },
    ...jsonArg,
    verbose: { type: "boolean", description: "print stacks with errors" },
  },
  async run({ args }) {
    const tty = isTerminal(2) && !process.env.NO_COLOR;
    const r = await migrateLima({
      dryRun: Boolean(args["dry-run"]),
      start: Boolean(args.start),
      binary: args["lima-binary"],
      progress: (line) => {
        if (!args.json) write(2, `${tty ? "• " : "migrate: "}${line}\n`);
      },
    });
    if (args.json) printJson(r);
    else print(limaSummary(r));
    return 0;
  },
});

const migrate = defineCommand({
  meta: {
    name: "migrate",
    description: "Bring older planter state forward: the database and legacy state (state), a Lima VM's layout (lima)",
  },
  subCommands: {
    state: () => state,
    lima: () => lima,
  },
});

export default migrate;

if (import.meta.main) await runCli(migrate, process.argv.slice(2), "migrate");
