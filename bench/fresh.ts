/**
 * dist/planter as of the current sources: `make build` when the binary is missing or older than
 * lib/, scripts/ or package.json (common.ts `ensureBinary` only builds a missing one and warns).
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../test/harness.ts";
import { BINARY, note } from "./common.ts";

/** Newest modification time (ms) of the files under `dir`. */
function newest(dir: string): number {
  let t = 0;
  try {
    for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
      if (e.isFile()) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
    }
  } catch {
    // a missing dir has nothing newer
  }
  return t;
}

/** Run `make build` when dist/planter is missing or stale; at most 3 minutes. */
export async function ensureFreshBinary(): Promise<void> {
  const sources = Math.max(
    newest(join(ROOT, "lib")),
    newest(join(ROOT, "scripts")),
    statSync(join(ROOT, "package.json")).mtimeMs,
  );
  const built = existsSync(BINARY) ? statSync(BINARY).mtimeMs : 0;
  if (built >= sources) return;
  const t0 = performance.now();
  const p = Bun.spawn(["make", "build"], { cwd: ROOT, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const timer = setTimeout(() => p.kill("SIGKILL"), 180_000);
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`make build failed (${code}): ${err.slice(-2000)}`);
  note(
    `dist/planter was ${built ? "older than the sources" : "missing"}: make build took ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}
