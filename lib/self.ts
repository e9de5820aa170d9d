/** How planterd runs a hidden entry of its own binary (the terminal holder, the egress helper). */
import { join } from "node:path";

/** argv that runs `planter COMMAND`: `binary`'s, this compiled binary's, or the source entry under bun. */
export function selfArgv(command: string, binary?: string): string[] {
  if (binary) return [binary, command];
  if (Bun.main.startsWith("/$bunfs")) return [process.execPath, command];
  // Run from source or from a bundle of the entry (tests as another user): that entry again.
  if (/(^|\/)[^/]*planter[^/]*\.(ts|js)$/.test(Bun.main)) return [process.execPath, Bun.main, command];
  return [process.execPath, join(import.meta.dir, "..", "scripts", "planter.ts"), command];
}
