/**
 * Events written together: a chatty source (a job's proxy records, an agent's hook lines) costs one
 * write transaction per `ms` (or per `max` events), not one per event. A disk that refuses a batch
 * drops it, said on stderr as `what`.
 */
import type { PendingEvent } from "./context.ts";

export class EventBatch {
  private queue: PendingEvent[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly write: (fn: (events: PendingEvent[]) => void) => void,
    private readonly what: string,
    private readonly ms = 50,
    private readonly max = 64,
  ) {}

  push(e: PendingEvent): void {
    this.queue.push(e);
    if (this.queue.length >= this.max) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.ms);
  }

  /** Write what is queued now, in one transaction. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.queue;
    this.queue = [];
    if (!batch.length) return;
    try {
      this.write((ev) => {
        ev.push(...batch);
      });
    } catch (e) {
      console.error(`planterd: ${batch.length} ${this.what} not written: ${(e as Error).message}`);
    }
  }
}
