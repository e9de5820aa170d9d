/**
 * The observer reading processes through `ps` (psReader: macOS has no /proc), run here against
 * this host's procps ps, which takes the same columns: fake agents in a private tmux server are
 * recognised, follow their states and are gone with their pane, exactly as through /proc.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentState } from "../../lib/agents/model.ts";
import { Observer } from "../../lib/agents/observer.ts";
import { psReader } from "../../lib/agents/recognise.ts";
import { migrate } from "../../lib/state/db.ts";
import { cleanup, tempHome, waitFor } from "../harness.ts";

const FAKES = join(import.meta.dir, "..", "fixtures", "agents");
const haveTmux = Bun.which("tmux") !== null;

describe.skipIf(!haveTmux)("the observer through ps", () => {
  let home: string;
  let sock: string;
  let observer: Observer;
  const tmux = (...args: string[]) => {
    const r = Bun.spawnSync(["tmux", "-f", `${sock}.conf`, "-S", sock, ...args], {
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", SHELL: "/bin/sh" },
    });
    return { code: r.exitCode, out: r.stdout.toString().trim(), err: r.stderr.toString() };
  };

  beforeAll(() => {
    home = tempHome("pa-ps");
    sock = join(home, "tmux.sock");
    writeFileSync(`${sock}.conf`, "set -s exit-empty off\n");
    const db = new Database(":memory:", { strict: true });
    migrate(db);
    observer = new Observer({
      db,
      config: { observe: true, tmux_dirs: [], tmux_sockets: [sock], poll_ms: 100 },
      proc: psReader(undefined, 50),
      log: () => undefined,
    });
    observer.start();
  });
  afterAll(() => {
    observer.close();
    tmux("kill-server");
    cleanup(home);
  });

  for (const kind of ["claude", "codex", "gemini"] as const) {
    test(`${kind}: recognised, through its states, gone with its pane`, async () => {
      const made = tmux(
        "new-session",
        "-d",
        "-s",
        kind,
        "-x",
        "100",
        "-y",
        "30",
        "-P",
        "-F",
        "#{pane_id}",
        join(FAKES, kind),
      );
      expect(made.code).toBe(0);
      const pane = made.out;
      const all = () => observer.list(() => true).agents;
      const agent = await waitFor(
        () => all().find((a) => a.agent === kind && a.runtime.pane_id === pane),
        `the ${kind} agent`,
      );
      // The start in "PID:START" is ps's: seconds since the epoch, not /proc's clock ticks.
      expect(agent.runtime.process).toMatch(/^\d+:1\d{9}$/);
      const reach = (state: AgentState) =>
        waitFor(() => all().find((a) => a.runtime_id === agent.runtime_id && a.state === state), `${kind} ${state}`);
      await reach("waiting_input");
      for (const [keys, state] of [
        ["run", "running"],
        ["ask", "waiting_approval"],
        ["yes", "running"],
        ["done", "completed"],
      ] as const) {
        expect(tmux("send-keys", "-t", pane, keys, "Enter").code).toBe(0);
        await reach(state);
      }
      expect(tmux("kill-session", "-t", kind).code).toBe(0);
      const gone = await waitFor(
        () => all().find((a) => a.runtime_id === agent.runtime_id && a.state === "unknown"),
        `${kind} gone`,
      );
      expect(gone.reason).toBe("pane_gone");
    });
  }
});
