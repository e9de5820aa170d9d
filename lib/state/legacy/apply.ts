/** Applying an import plan: one transaction per item, logs copied before the row is committed. */

import type { Database, SQLQueryBindings } from "bun:sqlite";
import { chmodSync, copyFileSync, linkSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { jobFiles } from "../../jobs/recorder.ts";
import { jobDir } from "../../paths.ts";
import { insertCell } from "../cells.ts";
import { appendEvent } from "../events.ts";
import { importLimits } from "./map.ts";
import type { Plan } from "./plan.ts";
import type { LegacyJobFile, LegacyTree } from "./schema.ts";
export function legacyLog(root: string, job: LegacyJobFile, stream: "stdout" | "stderr"): string | null {
  const candidates = [
    join(root, "logs", `${job.id}.${stream}.log`),
    stream === "stdout" ? job.stdout_path : job.stderr_path,
  ];
  for (const c of candidates) if (c && statSync(c, { throwIfNoEntry: false })?.isFile()) return c;
  return null;
}

/**
 * Put a legacy log into the job dir. A finished job's log is copied. A re-adopted job still
 * writes to its legacy file, so that file is hard-linked (same inode: `planter logs -f` sees
 * what it writes next); across file systems it is copied, and later output stays in the
 * legacy file (said in the note).
 */
function placeLog(src: string | null, dst: string, live: boolean, notes: string[], stream: string): void {
  if (src === null) {
    writeFileSync(dst, "", { mode: 0o600 });
    notes.push(`no ${stream} log found`);
    return;
  }
  if (live) {
    try {
      linkSync(src, dst);
      return;
    } catch {
      notes.push(`${stream} copied, not linked: what the job writes next stays in ${src}`);
    }
  }
  copyFileSync(src, dst);
  chmodSync(dst, 0o600);
}

/** The values of an imported job's row, in the order of applyImport's INSERT. */
function jobValues({ job, outcome, token, cell }: Plan["jobs"][number], now: number): SQLQueryBindings[] {
  return [
    job.id,
    cell,
    JSON.stringify(job.command.argv),
    job.command.cwd,
    JSON.stringify(job.command.env ?? {}),
    JSON.stringify(importLimits(job.command.limits)),
    outcome ? outcome.state : "running",
    outcome ? outcome.reason : null,
    outcome ? outcome.exit_code : null,
    outcome ? outcome.signal : null,
    outcome ? outcome.message : null,
    job.pid ?? null,
    token,
    job.started_at_ms,
    job.started_at_ms,
    outcome ? (outcome.state === "lost" && job.status.type === "running" ? now : (job.finished_at_ms ?? null)) : null,
    // A re-adopted job (no outcome) has its limits enforced by the monitor.
    outcome === null ? "monitor" : null,
  ];
}

export function applyImport(db: Database, stateDir: string, tree: LegacyTree, plan: Plan, now = Date.now()): void {
  const record = db.query(
    "INSERT INTO legacy_imports (kind, legacy_id, target, root, imported_at) VALUES (?, ?, ?, ?, ?)",
  );
  for (const { item, cell } of plan.cells) {
    const name = item.target as string;
    db.transaction(() => {
      if (item.action === "import") {
        insertCell(db, {
          name,
          dir: cell.dir,
          managed: false,
          env: cell.spec.env ?? {},
          limits: {},
          sandbox: {},
          created_at: cell.created_at_ms,
          owner_uid: null,
        });
      }
      record.run("cell", cell.id, name, tree.root, now);
      appendEvent(
        db,
        "cell.imported",
        `cell/${name}`,
        { legacy_id: cell.id, from: item.path, dir: cell.dir, merged: item.action === "merge", note: item.note },
        now,
      );
    }).immediate();
  }

  const insert = db.query(
    `INSERT INTO jobs (id, cell, argv, cwd, env, limits, sandbox_mode, backend, state, reason, exit_code, signal,
       message, pid, start_time, created_at, started_at, finished_at, enforcement)
     VALUES (?, ?, ?, ?, ?, ?, 'disabled', 'none', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  for (const p of plan.jobs) {
    const { job, outcome } = p;
    const dir = jobDir(stateDir, job.id);
    const files = jobFiles(dir);
    const live = outcome === null;
    const notes: string[] = p.item.note ? [p.item.note] : [];
    rmSync(dir, { recursive: true, force: true }); // left by an import that died before its commit
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      placeLog(legacyLog(tree.root, job, "stdout"), files.stdout, live, notes, "stdout");
      placeLog(legacyLog(tree.root, job, "stderr"), files.stderr, live, notes, "stderr");
      p.item.note = notes.length ? notes.join("; ") : null;
      db.transaction(() => {
        insert.run(...jobValues(p, now));
        record.run("job", job.id, job.id, tree.root, now);
        appendEvent(
          db,
          "job.imported",
          `job/${job.id}`,
          {
            legacy_id: job.id,
            from: p.item.path,
            cell: p.cell,
            state: outcome ? outcome.state : "running",
            adopted: live,
            pid: job.pid ?? null,
            note: p.item.note,
          },
          now,
        );
      }).immediate();
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }
}
