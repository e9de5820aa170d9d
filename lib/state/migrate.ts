/**
 * `migrate state`: bring planter's database to this build's schema (backup first, restored on
 * failure) and import the legacy prototype's JSON state, under the state dir's pid lock so
 * planterd cannot run meanwhile. Idempotent: a second run changes nothing and says so.
 */
import { existsSync, mkdirSync, statSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";
import { stateFiles } from "../paths.ts";
import { openUnmigrated, pendingVersions, type Upgrade, upgradeDatabase } from "./backup.ts";
import type { Migration } from "./db.ts";
import { MIGRATIONS, schemaVersion } from "./db.ts";
import { appendEvent } from "./events.ts";
import {
  applyImport,
  countItems,
  existingState,
  type ImportCounts,
  type ImportItem,
  isLegacyTree,
  type LegacyTree,
  type Malformed,
  type ProcessFacts,
  planImport,
  readLegacyTree,
} from "./legacy.ts";
import { lockHolder, lockStateDir } from "./lock.ts";

/** Where to migrate, from where, and whether for real. */
export interface MigrateStateOptions {
  stateDir: string;
  /** The legacy prototype's state root. */
  legacyRoot: string;
  /** The root was named by the user (`--from`): a missing one is an error, not "nothing to import". */
  legacyExplicit?: boolean;
  dryRun?: boolean;
  /** The migrations to apply (tests inject a failing one). */
  migrations?: Migration[];
  toleranceMs?: number;
  facts?: (pid: number) => ProcessFacts | null;
  now?: number;
}

/** What `migrate state` did, or in a dry run would do. */
export interface MigrateReport {
  dry_run: boolean;
  /** Nothing was (or would be) upgraded, created or imported. */
  nothing_to_do: boolean;
  state_dir: string;
  /** The database upgrade (`from` 0: there was no database). */
  database: Upgrade;
  legacy: {
    root: string;
    present: boolean;
    counts: ImportCounts;
    items: ImportItem[];
    malformed: Malformed[];
  };
  warnings: string[];
}

function refusal(pid: number, stateDir: string): PlanterError {
  return new PlanterError(
    "E_UNAVAILABLE",
    `planterd (pid ${pid}) is running on the state dir ${stateDir}; migrate needs it stopped`,
    {
      hint:
        `stop it first (\`systemctl --user stop planterd.socket planterd.service\` when installed as a service, ` +
        `else \`kill ${pid}\`), run \`migrate state\` again, then start planterd`,
      details: { pid },
    },
  );
}

function legacyTree(root: string, explicit: boolean): LegacyTree | null {
  const st = statSync(root, { throwIfNoEntry: false });
  if (explicit && !st?.isDirectory()) {
    throw new PlanterError("E_USAGE", `--from ${root}: no such directory`, {
      hint: "name the prototype's state root (it holds cells/ and jobs/)",
    });
  }
  if (!st?.isDirectory()) return null;
  if (!isLegacyTree(root)) {
    if (explicit) {
      throw new PlanterError("E_USAGE", `--from ${root} is not a legacy planter state dir: it has no cells/ or jobs/`, {
        hint: "name the prototype's state root, by default ~/.planter/state",
      });
    }
    return null;
  }
  return readLegacyTree(root);
}

/** Upgrade and import (see the module comment). Throws PlanterError on failure, after rolling back. */
export function migrateState(o: MigrateStateOptions): MigrateReport {
  const files = stateFiles(o.stateDir);
  const migrations = o.migrations ?? MIGRATIONS;
  const latest = migrations[migrations.length - 1]?.version ?? 0;
  const tree = legacyTree(o.legacyRoot, o.legacyExplicit ?? false);
  const existed = existsSync(files.db);
  const report: MigrateReport = {
    dry_run: o.dryRun ?? false,
    nothing_to_do: true,
    state_dir: o.stateDir,
    database: { path: files.db, existed, from: 0, to: 0, applied: [], backup: null },
    legacy: {
      root: o.legacyRoot,
      present: tree !== null,
      counts: countItems([]),
      items: [],
      malformed: tree?.malformed ?? [],
    },
    warnings: [],
  };
  const planOpts = { toleranceMs: o.toleranceMs, facts: o.facts };
  const finish = () => {
    const c = report.legacy.counts;
    report.nothing_to_do =
      report.database.applied.length === 0 && c.cells.imported + c.cells.merged + c.jobs.imported === 0;
    return report;
  };

  if (o.dryRun) {
    const holder = lockHolder(files.pidFile);
    if (holder !== null)
      report.warnings.push(`planterd (pid ${holder}) is running on this state dir: stop it before migrating`);
    const db = existed ? openUnmigrated(files.db, { readonly: true }) : null;
    try {
      const from = db ? schemaVersion(db) : 0;
      const applied = pendingVersions(from, files.db, migrations);
      report.database = { ...report.database, from, to: applied.length ? latest : from, applied };
      if (tree) {
        const plan = planImport(tree, existingState(db), planOpts);
        report.legacy.items = plan.items;
        report.legacy.counts = countItems(plan.items);
      }
    } finally {
      db?.close();
    }
    return finish();
  }

  // No database and nothing to import: leave the state dir untouched (planterd creates it).
  if (!existed && !tree) return finish();

  mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
  const unlock = lockStateDir(files.pidFile, (pid) => refusal(pid, o.stateDir));
  try {
    const db = openUnmigrated(files.db);
    try {
      const up = upgradeDatabase(db, files.db, existed, { migrations, now: o.now });
      report.database = { path: files.db, existed, from: up.from, to: up.to, applied: up.applied, backup: up.backup };
      if (up.applied.length) {
        appendEvent(db, "state.migrated", "state", {
          from: up.from,
          to: up.to,
          applied: up.applied,
          backup: up.backup,
          created: !existed,
        });
      }
      if (tree) {
        const plan = planImport(tree, existingState(db), planOpts);
        report.legacy.items = plan.items;
        report.legacy.counts = countItems(plan.items);
        try {
          applyImport(db, o.stateDir, tree, plan, o.now);
        } catch (e) {
          throw new PlanterError("E_STATE", `importing ${tree.root} failed: ${(e as Error).message}`, {
            hint: "each item is imported whole or not at all: fix the cause and run `migrate state` again for the rest",
            cause: e,
          });
        }
      }
    } finally {
      db.close();
    }
  } finally {
    unlock();
  }
  return finish();
}
