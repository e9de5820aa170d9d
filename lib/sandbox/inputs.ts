/** Opening a plan's inputs as the fds (3, 4, …) its program receives. */
import { chownSync, closeSync, openSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlanInput } from "./backend.ts";
import type { Identity } from "./identity.ts";
import { openChecked } from "./paths.ts";

let serial = 0;

/**
 * Open every input: bytes through a file written in `privateDir` (mode 0600) and unlinked at
 * once, so only the fd holds them; paths through `openChecked`. On failure nothing stays open.
 * `owner` owns the files: a shell that reads its input as `/dev/fd/N` reopens it as that user.
 */
export function openInputs(inputs: PlanInput[], privateDir: string, owner: Identity | null = null): number[] {
  const fds: number[] = [];
  try {
    for (const input of inputs) {
      if ("path" in input) {
        fds.push(openChecked(input.path));
        continue;
      }
      const file = join(privateDir, `.input-${process.pid}-${++serial}`);
      writeFileSync(file, input.data, { mode: 0o600 });
      if (owner) chownSync(file, owner.uid, owner.gid);
      try {
        fds.push(openSync(file, "r"));
      } finally {
        unlinkSync(file);
      }
    }
    return fds;
  } catch (e) {
    for (const fd of fds) closeSync(fd);
    throw e;
  }
}
