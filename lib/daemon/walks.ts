/**
 * The workspace walks planterd runs: a snapshot of a job's writable trees before it starts and a
 * review after it ends (lib/sandbox/workspace.ts). Each walk lets planterd's event loop in every
 * thousand entries, so a huge cell delays its own job, never another client's request. Walks of
 * overlapping trees run one at a time, in the order asked: a job's snapshot must never see the
 * half-done review of an earlier job in the same tree (it would record that job's planted file
 * as the "before" state, and its own review would put it back). `GET /v1/ready` lists them.
 */

import type { WalkStatus } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import { overlaps } from "../sandbox/paths.ts";
import { type WalkBudget, type WorkspaceSnapshot, walkBudget } from "../sandbox/workspace.ts";

export type { WalkStatus };

/** One writable tree of a job and its snapshot (as `LaunchContext["workspace"]` holds them). */
export interface HeldTree {
  root: string;
  before: WorkspaceSnapshot;
}

interface Walk {
  status: WalkStatus;
  budget: WalkBudget;
  done: Promise<void>;
}

export class Walks {
  private readonly walks = new Set<Walk>();
  private readonly stopping = new AbortController();
  /**
   * The snapshots of jobs not reviewed yet, by job, with when each was taken: a review hands on
   * what it settled to the others of its tree (lib/sandbox/workspace.ts `passOn`). The very
   * objects the job's launch context holds, so a change reaches its workspace.json when written.
   */
  readonly held = new Map<string, { trees: HeldTree[]; at: number }>();

  /** Keep `tree` of `job` (its snapshot just taken, inside the walk: before any later review of the tree). */
  hold(job: string, tree: HeldTree): void {
    const h = this.held.get(job);
    if (h) h.trees.push(tree);
    else this.held.set(job, { trees: [tree], at: Date.now() });
  }

  /**
   * Run `fn` (a walk of `tree` for `job`) once every walk of an overlapping tree asked before it
   * has ended; `max` bounds the entries it may list (`fn` gets the budget and a signal that
   * planterd's shutdown aborts).
   */
  async run<T>(
    job: string,
    phase: WalkStatus["phase"],
    tree: string,
    max: number,
    fn: (budget: WalkBudget, signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const before = [...this.walks].filter((w) => overlaps(w.status.tree, tree)).map((w) => w.done);
    let end = () => {};
    const walk: Walk = {
      status: { job, phase, tree, state: "waiting", entries: 0, started_at: new Date().toISOString() },
      budget: walkBudget(max),
      done: new Promise<void>((resolve) => {
        end = resolve;
      }),
    };
    this.walks.add(walk);
    try {
      await Promise.all(before);
      this.stopping.signal.throwIfAborted();
      walk.status.state = "walking";
      return await fn(walk.budget, this.stopping.signal);
    } finally {
      this.walks.delete(walk);
      end();
    }
  }

  /** The walks now, oldest first, with the entries each has listed. */
  list(): WalkStatus[] {
    return [...this.walks].map((w) => ({ ...w.status, entries: w.budget.entries }));
  }

  /** planterd stops: every walk ends at its next slice (a review not done is done again at the next start). */
  stop(): void {
    this.stopping.abort(
      new PlanterError("E_UNAVAILABLE", "planterd is stopping", { hint: "try again once planterd is back" }),
    );
  }
}
