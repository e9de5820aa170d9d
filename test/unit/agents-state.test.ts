/**
 * The agents tables (migration 8): records read back as stored (a damaged row skipped, not fatal),
 * and watch cursors: resumed, or reset as another database's, pruned or ahead; malformed refused.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { newRecord, toAgent } from "../../lib/agents/engine.ts";
import type { RuntimeRef } from "../../lib/agents/model.ts";
import {
  agentsStream,
  appendChange,
  changesAfter,
  lastChange,
  loadAgents,
  pruneChanges,
  resumeAt,
  saveAgent,
} from "../../lib/state/agents.ts";
import { migrate } from "../../lib/state/db.ts";

const runtime: RuntimeRef = { tmux_socket: "/tmp/s", server: "1:2", pane_id: "%1", process: "3:4", job_id: null };

function db(): Database {
  const d = new Database(":memory:", { strict: true });
  migrate(d);
  return d;
}

describe("agents tables", () => {
  test("a record reads back as stored; a row that does not parse is skipped and named", () => {
    const d = db();
    const rec = {
      ...newRecord(runtime, "codex", 1000, {
        owner_uid: 1000,
        pane: { session: "s", window: 1, index: 0, title: "t" },
      }),
    };
    saveAgent(d, rec, null);
    saveAgent(d, { ...rec, state: "running" }, 5000);
    d.query(
      "INSERT INTO agents (runtime_id, agent, state, record) VALUES ('rt-bad', 'claude', 'idle', '{\"nope\":1}')",
    ).run();
    const bad: string[] = [];
    expect(loadAgents(d, (id) => bad.push(id))).toEqual([{ record: { ...rec, state: "running" }, gone_at: 5000 }]);
    expect(bad).toEqual(["rt-bad"]);
  });

  test("watch cursors: resumed, reset (another database's, pruned, ahead), malformed refused", () => {
    const d = db();
    const stream = agentsStream(d);
    expect(stream).toMatch(/^[0-9a-f]{12}$/);
    const agent = toAgent(newRecord(runtime, "claude", 1, { owner_uid: 0 }));
    expect(resumeAt(d, stream, `${stream}:0`)).toEqual({ seq: 0 });
    for (let i = 0; i < 10; i++)
      appendChange(d, { at: i, runtime_id: agent.runtime_id, op: "upsert", owner_uid: 0, agent });
    expect(lastChange(d)).toBe(10);
    expect(resumeAt(d, stream, `${stream}:4`)).toEqual({ seq: 4 });
    expect(changesAfter(d, 8, 100).map((c) => c.seq)).toEqual([9, 10]);
    expect(resumeAt(d, stream, "0123456789ab:4")).toEqual({ reset: "foreign" });
    expect(resumeAt(d, stream, `${stream}:11`)).toEqual({ reset: "ahead" });
    pruneChanges(d, 3);
    expect(changesAfter(d, 0, 100).map((c) => c.seq)).toEqual([8, 9, 10]);
    expect(resumeAt(d, stream, `${stream}:4`)).toEqual({ reset: "expired" });
    expect(resumeAt(d, stream, `${stream}:7`)).toEqual({ seq: 7 });
    expect(resumeAt(d, stream, `${stream}:10`)).toEqual({ seq: 10 });
    for (const bad of ["", "x:1", `${stream}:`, `${stream}:-1`, `${stream}:1:2`]) {
      expect(() => resumeAt(d, stream, bad)).toThrow("is not an agents watch cursor");
    }
  });
});

describe("what `planter agents` loads", () => {
  test("the model, the actions' schemas and the client, none of the observer, the state or the daemon", async () => {
    const r = await Bun.build({
      entrypoints: [join(import.meta.dir, "..", "..", "lib", "cli", "lifecycle", "agents.ts")],
      target: "bun",
    });
    expect(r.success).toBe(true);
    const text = (await r.outputs[0]?.text()) ?? "";
    const modules = [...text.matchAll(/^\/\/ (lib\/\S+\.ts)$/gm)].map((m) => m[1] as string);
    expect(modules.filter((m) => m.startsWith("lib/agents/")).sort()).toEqual([
      "lib/agents/actions.ts",
      "lib/agents/model.ts",
    ]);
    expect(
      modules.filter(
        (m) => /^lib\/(state|jobs)\//.test(m) || (m.startsWith("lib/daemon/") && m !== "lib/daemon/peer.ts"),
      ),
    ).toEqual([]);
  });
});
