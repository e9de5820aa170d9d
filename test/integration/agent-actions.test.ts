/**
 * Actions on observed agents (#16): send, output, kill with their fail-closed guards, action ids
 * in events, request_ref replays — against a fake agent in a private tmux server (never the
 * default one) and a real planterd.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Agent, AgentState } from "../../lib/agents/model.ts";
import type { PlanterError } from "../../lib/api/errors.ts";
import { cleanup, cli, type DaemonHandle, startDaemon, tempHome, waitFor } from "../harness.ts";

const FAKES = join(import.meta.dir, "..", "fixtures", "agents");
const haveTmux = Bun.which("tmux") !== null;

describe.skipIf(!haveTmux)("agent actions (a fake Claude Code in a private tmux server)", () => {
  let home: string;
  let d: DaemonHandle;
  let sock: string;
  const tmux = (...args: string[]) =>
    Bun.spawnSync(["tmux", "-S", sock, ...args], {
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", SHELL: "/bin/sh" },
    });

  beforeAll(async () => {
    home = tempHome("pact");
    sock = join(home, "tmux.sock");
    d = await startDaemon({
      home,
      config: `[agents]\ntmux_dirs = []\ntmux_sockets = ["${sock}"]\npoll_ms = 200\n`,
    });
  });
  afterAll(async () => {
    tmux("kill-server");
    await d.stop();
    cleanup(home);
  });

  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => "ok",
      (e: PlanterError) => `${e.code}: ${e.message}`,
    );

  test("send with guards answers the agent, a stale guard changes nothing, output reads the pane, kill ends its process", async () => {
    const r = tmux(
      "new-session",
      "-d",
      "-s",
      "a",
      "-x",
      "100",
      "-y",
      "30",
      "-P",
      "-F",
      "#{pane_id}",
      join(FAKES, "claude"),
    );
    const pane = r.stdout.toString().trim();
    const agent = await waitFor(
      async () =>
        (await d.client.listAgents()).agents.find((a) => a.runtime.pane_id === pane && a.state === "waiting_input"),
      "the fake agent waiting for input",
    );
    const id = agent.runtime_id;
    const state = async () => (await d.client.listAgents()).agents.find((a) => a.runtime_id === id) as Agent;
    const reach = (s: AgentState) => waitFor(async () => ((await state()).state === s ? state() : null), `state ${s}`);
    // A guard that does not hold: nothing is typed.
    expect(await refusal(d.client.agentSend(id, { text: "ask", keys: ["Enter"], if_state: "running" }))).toBe(
      `E_STATE_CHANGED: agent ${id} is waiting_input, not running`,
    );
    expect(await refusal(d.client.agentSend(id, { text: "ask", if_runtime: "rt-0000000000000000" }))).toContain(
      "E_RUNTIME_STALE: ",
    );
    expect(await refusal(d.client.agentSend("rt-ffffffffffffffff", { text: "x" }))).toBe(
      "E_NOT_FOUND: no agent rt-ffffffffffffffff",
    );
    const sent = await d.client.agentSend(id, {
      text: "ask",
      keys: ["Enter"],
      if_runtime: id,
      if_state: "waiting_input",
      request_ref: "ask-1",
    });
    expect(sent).toMatchObject({ runtime_id: id, type: "send", replayed: false, written: 4 });
    await reach("waiting_approval");
    // The same request again: the first action's id, nothing typed twice.
    const again = await d.client.agentSend(id, {
      text: "ask",
      keys: ["Enter"],
      if_runtime: id,
      if_state: "waiting_input",
      request_ref: "ask-1",
    });
    expect(again).toMatchObject({ action_id: sent.action_id, replayed: true });
    const out = await d.client.agentOutput(id, { lines: 200 });
    expect(out.lines?.join("\n")).toContain("ask");
    // The CLI: approve what it asks, guarded by the state seen.
    const yes = await cli(home, [
      "agents",
      "send",
      id,
      "--text",
      "yes",
      "--key",
      "Enter",
      "--if-state",
      "waiting_approval",
    ]);
    expect([yes.code, yes.stderr]).toEqual([0, ""]);
    await reach("running");
    const events: { kind: string; data: { action_id: string; type: string } }[] = [];
    for await (const e of d.client.events({ limit: 10_000 })) {
      const ev = e as unknown as { kind: string; data: { action_id: string; type: string } };
      if (ev.kind === "agent.action") events.push(ev);
    }
    expect(events.map((e) => e.data.type)).toEqual(["send", "view-output", "send"]);
    expect(events[0]?.data.action_id).toBe(sent.action_id);
    // kill: its process, exactly the one observed; the pane's shell stays.
    const k = await cli(home, ["agents", "kill", id, "--if-runtime", id, "--json"]);
    expect(k.code).toBe(0);
    await waitFor(async () => (await state()).reason === "pane_gone", "the agent gone");
    expect(await refusal(d.client.agentKill(id, { if_runtime: id, if_state: "running" }))).toContain("E_STATE_CHANGED");
  });
});

describe("planter agent report (host hooks)", () => {
  test("a hook of an agent outside planter reports its state as the user; a process that is no agent is said on stderr, exit 0", async () => {
    const home = tempHome("prep");
    const d = await startDaemon({ home, config: "[agents]\ntmux_dirs = []\n" });
    try {
      // An "agent" named claude whose hook runs planter's report, as Claude Code would.
      const bin = join(home, "bin");
      Bun.spawnSync(["mkdir", "-p", bin]);
      const planter = `${process.execPath} ${join(import.meta.dir, "..", "..", "scripts", "planter.ts")}`;
      await Bun.write(
        join(bin, "claude"),
        `#!/bin/sh\nprintf '%s' '{"hook_event_name":"PermissionRequest","tool_name":"Bash"}' | sh -c '${planter} agent report claude PermissionRequest'\nwhile [ ! -e "$0.stop" ]; do sleep 0.05; done\n`,
      );
      Bun.spawnSync(["chmod", "+x", join(bin, "claude")]);
      const fake = Bun.spawn([join(bin, "claude")], {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", PLANTER_SOCKET: d.socket, PLANTER_HOME: home },
        stderr: "pipe",
      });
      const a = await waitFor(
        async () => (await d.client.listAgents()).agents.find((x) => x.runtime.process.startsWith(`${fake.pid}:`)),
        "the reported agent",
      );
      expect(a).toMatchObject({ agent: "claude", state: "waiting_approval", source: "hook", detail: "Bash" });
      await Bun.write(join(bin, "claude.stop"), "");
      await fake.exited;
      // Not under an agent: nothing reported, said on stderr, exit 0.
      const r = await cli(home, ["agent", "report", "claude", "Stop", "{}"], { env: { PLANTER_SOCKET: d.socket } });
      expect([r.code, r.stderr]).toEqual([0, "planter agent report: no claude process among this hook's parents\n"]);
    } finally {
      await d.stop();
      cleanup(home);
    }
  });
});
