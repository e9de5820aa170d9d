/**
 * A slow reader: copies stdin to the file named by argv[2] in 16 KiB reads with a pause after
 * each, so a writer that exits before its output left would lose the rest.
 */
import { closeSync, openSync, readSync, writeSync } from "node:fs";

const out = openSync(process.argv[2] as string, "w");
const buf = Buffer.alloc(16 * 1024);
for (;;) {
  let n: number;
  try {
    n = readSync(0, buf, 0, buf.length, null);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EAGAIN") {
      Bun.sleepSync(1);
      continue;
    }
    throw e;
  }
  if (n === 0) break;
  writeSync(out, buf, 0, n);
  Bun.sleepSync(1);
}
closeSync(out);
