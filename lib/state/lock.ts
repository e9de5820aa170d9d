/**
 * The state dir's pid lock, `planterd.pid` (`<pid> <start time>`): one writer at a time,
 * planterd or `migrate state`. The format is planterd's, so each refuses while the other runs.
 */
import { linkSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { isAlive, startTime } from "../jobs/proc.ts";

/** The live process holding the lock, or null when there is none or it is stale. */
export function lockHolder(pidFile: string): number | null {
  let text: string;
  try {
    text = readFileSync(pidFile, "utf8");
  } catch {
    return null;
  }
  const [pidText, ...start] = text.trim().split(" ");
  const pid = Number(pidText);
  return Number.isInteger(pid) && pid > 0 && isAlive(pid, start.join(" ") || null) ? pid : null;
}

/**
 * Take the lock, or call `refuse` with the holder's pid when a live process holds it (a stale
 * lock is replaced). The file is written in full before it appears (link of a temp file, which
 * fails like O_EXCL when the lock exists), so a reader never sees it empty. Returns the release.
 */
export function lockStateDir(pidFile: string, refuse: (pid: number) => Error): () => void {
  const me = `${process.pid} ${startTime(process.pid) ?? ""}\n`;
  const tmp = `${pidFile}.${process.pid}.tmp`;
  writeFileSync(tmp, me, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        linkSync(tmp, pidFile);
        return () => {
          try {
            if (readFileSync(pidFile, "utf8") === me) unlinkSync(pidFile);
          } catch {
            // gone already
          }
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        const holder = lockHolder(pidFile);
        if (holder !== null) throw refuse(holder);
        try {
          unlinkSync(pidFile); // stale: its process is gone
        } catch {
          // another process removed it first
        }
      }
    }
    throw new Error(`cannot lock ${pidFile}: another process keeps taking it`);
  } finally {
    unlinkSync(tmp);
  }
}
