/**
 * The caller's side of a terminal job over planterd's WebSocket (GET /v1/jobs/{id}/attach):
 * `planter attach` and `planter run -t`. The session itself (raw mode, detach keys, resizes,
 * filtered output) is lib/cli/session.ts; this adapts the WebSocket's frames to it.
 */
import { defineCommand } from "citty";
import type { Client } from "../api/client.ts";
import { type Job, passthroughCode } from "../api/contract.ts";
import { EXIT } from "../api/errors.ts";
import { FrameReader, frame, KIND, resizeFrame } from "../tty/protocol.ts";
import { client, usage } from "./args.ts";
import { examples } from "./help.ts";
import { common } from "./lifecycle/common.ts";
import { printable as p, write } from "./output.ts";
import {
  DEFAULT_DETACH_KEYS,
  type JobTerminal,
  type JobTerminalEvents,
  parseDetachKeys,
  runSession,
} from "./session.ts";
import { isTerminal } from "./tty.ts";

const decoder = new TextDecoder();

/** A JobTerminal on an open attach WebSocket. */
function wsTerminal(ws: WebSocket, events: JobTerminalEvents, early: MessageEvent[]): JobTerminal {
  const waiters: ((s: { ansi: string }) => void)[] = [];
  const reader = new FrameReader();
  const onMessage = (m: MessageEvent) => {
    if (typeof m.data === "string") return; // {job, writer} first, {job} at the end: read by attachJob
    for (const f of reader.push(new Uint8Array(m.data as ArrayBuffer))) {
      if (f.kind === KIND.output) events.output(f.payload);
      else if (f.kind === KIND.snapshot) {
        const s = JSON.parse(decoder.decode(f.payload)) as { ansi: string };
        const w = waiters.splice(0);
        if (w.length) for (const x of w) x(s);
        else events.snapshot(s);
      } else if (f.kind === KIND.end) {
        const e = JSON.parse(decoder.decode(f.payload)) as { code: number | null; signal: string | null };
        events.end(e);
      }
    }
  };
  ws.onmessage = onMessage;
  for (const m of early) onMessage(m);
  ws.onclose = () => events.close();
  const send = (b: Uint8Array) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(b);
  };
  return {
    input: (data) => send(frame(KIND.input, data)),
    resize: (cols, rows) => send(resizeFrame(cols, rows)),
    snapshot: () =>
      new Promise((resolve) => {
        waiters.push(resolve);
        send(frame(KIND.snapshotRequest));
      }),
    close: () => ws.close(),
  };
}

export interface AttachOptions {
  readOnly?: boolean;
  shareInput?: boolean;
  detachKeys?: string;
}

/**
 * Attach the caller's terminal to job `id` until it ends (its exit code, as `planter run` gives
 * it), the caller detaches (0, with how to come back) or the connection is lost (1).
 */
export async function attachJob(api: Client, id: string, o: AttachOptions = {}): Promise<number> {
  const keys = parseDetachKeys(o.detachKeys ?? DEFAULT_DETACH_KEYS);
  const ws = await api.attach(id, { read_only: o.readOnly, share_input: o.shareInput });
  if (!isTerminal(0) || !isTerminal(1)) {
    ws.close();
    throw usage("attaching needs a terminal on stdin and stdout", `follow the output with planter logs -f ${id}`);
  }
  let last: Job | null = null;
  // planterd's first message says whether this client may type; frames before it are kept.
  const early: MessageEvent[] = [];
  const first = await new Promise<{ job: Job; writer: boolean } | null>((resolve) => {
    ws.onmessage = (m) => {
      if (typeof m.data === "string") resolve(JSON.parse(m.data));
      else early.push(m);
    };
    ws.onclose = () => resolve(null);
  });
  const writer = first?.writer ?? false;
  ws.addEventListener("message", (m) => {
    if (typeof m.data === "string") last = (JSON.parse(m.data) as { job: Job }).job;
  });
  if (!o.readOnly && !writer && first)
    write(2, `planter: another client types into job ${p(id)}: watching only (--share-input to type too)\n`);
  const end = await runSession(async (events) => wsTerminal(ws, events, early), {
    detachKeys: keys,
    readOnly: o.readOnly || !writer,
  });
  if (end.how === "detached") {
    write(2, `planter: detached from job ${p(id)}; it runs on. Attach again: planter attach ${p(id)}\n`);
    return EXIT.ok;
  }
  // The job as it ended: from planterd's last message, or waited for (its end is recorded a moment
  // after the terminal's last byte).
  const known = last as Job | null;
  const job: Job = known?.finished_at ? known : (await api.waitJob(id, end.how === "ended" ? 10_000 : 0)).job;
  if (end.how === "lost" && !job.finished_at) {
    write(2, `planter: the connection to job ${p(id)} was lost; it may still run (planter job status ${p(id)})\n`);
    return EXIT.error;
  }
  return passthroughCode(job);
}

export const attachArgs = {
  "detach-keys": {
    type: "string",
    description: `keys that detach and leave the job running (default ${DEFAULT_DETACH_KEYS}; docker's format)`,
    valueHint: "KEYS",
  },
} as const;

export const attach = examples(
  defineCommand({
    meta: {
      name: "attach",
      description:
        "Attach your terminal to a running terminal job (started with planter run -t): its screen redrawn, your keys to it; Ctrl-P Ctrl-Q detaches",
    },
    args: {
      id: { type: "positional", description: "job id", required: true },
      "read-only": { type: "boolean", description: "only watch: your keys do not reach the job" },
      "share-input": { type: "boolean", description: "type too while another client writes (each writer must ask)" },
      ...attachArgs,
      ...common,
    },
    async run({ args }) {
      return attachJob(client(args), args.id, {
        readOnly: args["read-only"],
        shareInput: args["share-input"],
        detachKeys: args["detach-keys"],
      });
    },
  }),
  [
    "planter attach j-0abc                 # take over the terminal; Ctrl-P Ctrl-Q leaves it running",
    "planter attach --read-only j-0abc     # watch only",
  ],
);
