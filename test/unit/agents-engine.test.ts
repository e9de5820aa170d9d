/**
 * The state engine (lib/agents/engine.ts) as a pure reducer: its rules one by one, then replays —
 * the same events shuffled and repeated converge to the same state, sources and reports.
 */
import { describe, expect, test } from "bun:test";
import { type AgentRecord, reduce, settle } from "../../lib/agents/engine.ts";
import {
  AGENT_STATES,
  type AgentEventIn,
  type AgentState,
  COMPLETED_TO_IDLE_MS,
  HOOK_FRESH_MS,
  type RuntimeRef,
  SOURCES,
  type Source,
  UNKNOWN_REASONS,
} from "../../lib/agents/model.ts";
import { rng } from "../harness.ts";

const runtime: RuntimeRef = {
  tmux_socket: "/tmp/tmux-1000/default",
  server: "4242:100",
  pane_id: "%3",
  process: "4300:200",
  job_id: null,
};
const T = 1_800_000_000_000;

function ev(source: Source, state: AgentState, at: number, more: Partial<AgentEventIn> = {}): AgentEventIn {
  return { agent: "claude", source, runtime, kind: `${source}-${state}`, state, at, ...more };
}

/** Apply events in order, each at its own time (or `now`), then settle at `end`. */
function run(events: AgentEventIn[], end: number, now?: number): AgentRecord {
  let rec: AgentRecord | null = null;
  for (const e of events) {
    const at: number = now ?? Math.max(e.at, rec === null ? 0 : (rec as AgentRecord).updated_at);
    rec = reduce(rec, e, at).record;
  }
  return settle(rec as unknown as AgentRecord, end);
}
const view = (r: AgentRecord) => [r.state, r.reason, r.source];

describe("the rules", () => {
  test("a fresh hook beats notify, which beats the poller", () => {
    const events = [
      ev("poller", "running", T),
      ev("notify", "completed", T + 10),
      ev("hook", "waiting_approval", T + 5),
    ];
    expect(view(run(events, T + 100))).toEqual(["waiting_approval", null, "hook"]);
    expect(view(run(events.slice(0, 2), T + 100))).toEqual(["completed", null, "notify"]);
  });

  test("the poller takes over once hook data is older than HOOK_FRESH_MS, if it has looked since", () => {
    const hook = ev("hook", "running", T, { source_seq: 1 });
    const looked = ev("poller", "waiting_input", T + 500);
    expect(view(run([hook, looked], T + HOOK_FRESH_MS))).toEqual(["running", null, "hook"]);
    expect(view(run([hook, looked], T + HOOK_FRESH_MS + 1))).toEqual(["waiting_input", null, "poller"]);
    // Shown since the hook went stale, not since the poller's look (which came while it was fresh).
    expect(run([hook, looked], T + HOOK_FRESH_MS + 1).since).toBe(T + HOOK_FRESH_MS);
    // The poller's last look was before the hook: the hook is still the newest news.
    const before = ev("poller", "waiting_input", T - 500);
    expect(view(run([before, hook], T + 60_000))).toEqual(["running", null, "hook"]);
  });

  test("a stale hook and a poller that cannot tell: unknown, stale", () => {
    const events = [ev("hook", "running", T), ev("poller", "unknown", T + 4000, { reason: "unrecognised_screen" })];
    expect(view(run(events, T + 5000))).toEqual(["unknown", "stale", "poller"]);
    // Without any hook the poller's own reason stands.
    expect(view(run(events.slice(1), T + 5000))).toEqual(["unknown", "unrecognised_screen", "poller"]);
  });

  test("per source, an older source_seq is ignored; a dedupe key is taken once", () => {
    let r = reduce(null, ev("hook", "running", T, { source_seq: 5 }), T);
    expect(r.outcome).toBe("applied");
    r = reduce(r.record, ev("hook", "waiting_approval", T + 10, { source_seq: 4 }), T + 10);
    expect([r.outcome, r.record.state]).toEqual(["older", "running"]);
    r = reduce(r.record, ev("hook", "completed", T + 20, { source_seq: 6, dedupe_key: "stop-1" }), T + 20);
    expect([r.outcome, r.record.state]).toEqual(["applied", "completed"]);
    const again = reduce(r.record, ev("hook", "error", T + 30, { source_seq: 7, dedupe_key: "stop-1" }), T + 30);
    expect([again.outcome, again.record]).toEqual(["duplicate", r.record]);
  });

  test("completed turns idle COMPLETED_TO_IDLE_MS after it began, and a repeated completed does not restart it", () => {
    let rec = run([ev("poller", "running", T), ev("poller", "completed", T + 1000)], T + 1000);
    expect([rec.state, rec.completed_since]).toEqual(["completed", T + 1000]);
    rec = reduce(rec, ev("poller", "completed", T + 60_000), T + 60_000).record;
    expect(rec.state).toBe("completed");
    rec = settle(rec, T + 1000 + COMPLETED_TO_IDLE_MS);
    expect([rec.state, rec.since]).toEqual(["idle", T + 1000 + COMPLETED_TO_IDLE_MS]);
    rec = reduce(rec, ev("poller", "completed", T + 200_000), T + 200_000).record;
    expect(rec.state).toBe("idle");
    rec = reduce(rec, ev("poller", "running", T + 201_000), T + 201_000).record;
    expect([rec.state, rec.completed_since]).toEqual(["running", null]);
  });

  test("a pane gone is final: a late hook does not bring the agent back", () => {
    const gone = ev("poller", "unknown", T + 100, { reason: "pane_gone" });
    const rec = run([ev("hook", "running", T), gone, ev("hook", "waiting_input", T + 200, { source_seq: 9 })], T + 300);
    expect(view(rec)).toEqual(["unknown", "pane_gone", "poller"]);
  });

  test("a source's clock ahead of the observer's is taken as now: a hook from the future is not fresh forever", () => {
    const future = ev("hook", "running", T + 3_600_000);
    const r = reduce(null, future, T).record;
    expect(r.reports.hook?.at).toBe(T);
    const later = reduce(r, ev("poller", "waiting_input", T + HOOK_FRESH_MS + 10), T + HOOK_FRESH_MS + 10).record;
    expect(view(later)).toEqual(["waiting_input", null, "poller"]);
  });

  test("equal standing: a tie of times goes hook, notify, poller; within a source, to the more urgent state", () => {
    const stale = T - 10_000;
    expect(view(run([ev("poller", "running", stale), ev("notify", "completed", stale)], T, T))).toEqual([
      "completed",
      null,
      "notify",
    ]);
    const a = ev("hook", "running", T, { source_seq: 3 });
    const b = ev("hook", "error", T, { source_seq: 3 });
    expect(view(run([a, b], T + 10, T))).toEqual(["error", null, "hook"]);
    expect(view(run([b, a], T + 10, T))).toEqual(["error", null, "hook"]);
  });

  test("a change of state bumps state_version and since; a confirmation moves updated_at only", () => {
    const r1 = reduce(null, ev("poller", "running", T), T).record;
    const r2 = reduce(r1, ev("poller", "running", T + 1000), T + 1000).record;
    expect([r2.state_version, r2.since, r2.updated_at]).toEqual([r1.state_version, r1.since, T + 1000]);
    const r3 = reduce(r2, ev("poller", "waiting_approval", T + 2000), T + 2000).record;
    expect([r3.state_version, r3.since]).toEqual([r1.state_version + 1, T + 2000]);
  });
});

describe("replays converge", () => {
  /** What must be equal whatever the order: the state and its source, and each source's latest report. */
  const converged = (r: AgentRecord) => ({
    state: r.state,
    reason: r.reason,
    source: r.source,
    detail: r.detail,
    agent: r.agent,
    reports: r.reports,
  });

  function shuffle<T>(xs: T[], next: () => number): T[] {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [out[i], out[j]] = [out[j] as T, out[i] as T];
    }
    return out;
  }

  test("a Claude turn from its hooks and the poller: shuffled and duplicated, the same state", () => {
    const turn = [
      ev("hook", "running", T, { kind: "UserPromptSubmit", source_seq: 1, dedupe_key: "h1" }),
      ev("poller", "running", T + 300),
      ev("hook", "running", T + 1000, { kind: "PreToolUse", source_seq: 2, dedupe_key: "h2", detail: "Bash" }),
      ev("hook", "waiting_approval", T + 1100, { kind: "Notification", source_seq: 3, dedupe_key: "h3" }),
      ev("poller", "waiting_approval", T + 1400, { detail: "Bash command · ls" }),
      ev("hook", "running", T + 5000, { kind: "PostToolUse", source_seq: 4, dedupe_key: "h4" }),
      ev("poller", "running", T + 5200),
      ev("hook", "completed", T + 6000, { kind: "Stop", source_seq: 5, dedupe_key: "h5" }),
      ev("poller", "completed", T + 6300, { detail: "done" }),
    ];
    const next = rng(16);
    for (const end of [T + 6500, T + 6000 + HOOK_FRESH_MS + 1]) {
      const expected = converged(run(turn, end, end));
      expect(expected.state).toBe("completed");
      for (let i = 0; i < 50; i++) {
        const replay = shuffle([...turn, ...turn.filter(() => next() < 0.5)], next);
        expect(converged(run(replay, end, end))).toEqual(expected);
      }
    }
  });

  /** A random history of up to 12 events about one runtime (few distinct times, so ties happen). */
  function history(next: () => number): AgentEventIn[] {
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)] as T;
    const maybe = <T extends object>(p: number, value: () => T): T | object => (next() < p ? value() : {});
    const seqd = { hook: next() < 0.5, notify: next() < 0.5, poller: false };
    const n = 1 + Math.floor(next() * 12);
    return Array.from({ length: n }, (_, i) => {
      const source = pick(SOURCES);
      const state = pick(AGENT_STATES);
      return ev(source, state, T - 1000 * Math.floor(next() * 5), {
        ...maybe(state === "unknown" ? 1 : 0, () => ({ reason: pick(UNKNOWN_REASONS) })),
        ...maybe(seqd[source] ? 1 : 0, () => ({ source_seq: Math.floor(next() * 6) })),
        ...maybe(0.3, () => ({ dedupe_key: `k${i}` })),
        ...maybe(0.3, () => ({ detail: `d${Math.floor(next() * 3)}` })),
        ...maybe(0.5, () => ({ kind: pick(["Stop", "Notification", "PreToolUse"]) })),
        ...maybe(0.2, () => ({ agent: pick(["codex", "gemini"] as const) })),
      });
    });
  }

  test("random histories: any order of the same events (with repeats) gives the same state", () => {
    const next = rng(1604);
    for (let round = 0; round < 300; round++) {
      const events = history(next);
      const expected = converged(run(events, T, T));
      for (let k = 0; k < 6; k++) {
        const replay = shuffle([...events, ...events.filter(() => next() < 0.3)], next);
        expect(converged(run(replay, T, T))).toEqual(expected);
      }
    }
  });
});
