/**
 * Keystroke echo through planterd (#14): a client attached to a terminal job over planterd's
 * WebSocket (GET /v1/jobs/{id}/attach) types one key at a time into `cat` (the terminal echoes
 * it) and times each key until its echo comes back — the whole path a person's key takes:
 * client → planterd → holder → PTY → holder → planterd → client. Goal p95 ≤ 10 ms.
 */
import { chmodSync } from "node:fs";
import { FrameReader, frame, KIND } from "../lib/tty/protocol.ts";
import { header, note, percentile, report, withDaemon } from "./common.ts";

const BENCH = "18 attach";
const KEYS = 300;

export async function attachBench(): Promise<void> {
  header(`${BENCH}: keystroke echo through planterd's attach WebSocket (${KEYS} keys into cat)`);
  await withDaemon(
    "source",
    async (d) => {
      chmodSync(d.home, 0o711);
      const job = await d.client.createJob({ argv: ["cat"], tty: { cols: 80, rows: 24 } });
      const ws = await d.client.attach(job.id, {});
      const reader = new FrameReader();
      let waiting: ((b: Uint8Array) => void) | null = null;
      ws.onmessage = (m) => {
        if (typeof m.data === "string") return;
        for (const f of reader.push(new Uint8Array(m.data as ArrayBuffer)))
          if (f.kind === KIND.output && waiting) waiting(f.payload);
      };
      const times: number[] = [];
      for (let i = 0; i < KEYS; i++) {
        const key = String.fromCharCode(97 + (i % 26));
        const t0 = performance.now();
        await new Promise<void>((resolve) => {
          waiting = (b) => {
            if (new TextDecoder().decode(b).includes(key)) {
              waiting = null;
              resolve();
            }
          };
          ws.send(frame(KIND.input, key));
        });
        times.push(performance.now() - t0);
      }
      ws.close();
      note(
        `p50 ${percentile(times, 50).toFixed(2)} ms, p99 ${percentile(times, 99).toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms`,
      );
      report(BENCH, "keystroke echo p95", percentile(times, 95), "ms", "le", 10);
    },
    '[sandbox]\nmode = "enforced"\n',
  );
}
