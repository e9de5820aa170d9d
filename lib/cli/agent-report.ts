/**
 * `planter agent report KIND EVENT`: what `agent hooks install` puts in an agent's own settings.
 * The agent runs it for each event (Claude Code: the hook's JSON on stdin; Codex's notify: the
 * JSON as the last argument); it tells planterd, as the user, which agent (its process, its tmux
 * pane) is in which state. It never fails the agent: whatever goes wrong is said on stderr and
 * it exits 0 (a hook that fails could block the agent's turn).
 */
import { defineCommand } from "citty";
import { AGENT_KINDS, type AgentKind } from "../agents/model.ts";
import { agentOf, hostReader, topAgentProcess } from "../agents/recognise.ts";
import { lineEvent, parseLine } from "../agents/report.ts";
import { client } from "./args.ts";
import { clientArgs } from "./client-config.ts";

/** The agent's process among this one's ancestors (the hook's shell's parent, usually), "PID:START". */
export function agentProcess(kind: AgentKind, from = process.ppid): string | null {
  const procReader = hostReader();
  let pid: number | null = from;
  for (let i = 0; pid && pid > 1 && i < 8; i++) {
    const facts = procReader.facts(pid);
    if (agentOf(procReader.argv(pid) ?? [], procReader.comm(pid)) === kind) {
      // The topmost of the agent's processes (Codex's node launcher above its native child), as
      // the observer names the pane's agent: hook and poller reports meet in one runtime.
      return topAgentProcess(pid, procReader) ?? (facts ? `${pid}:${facts.start}` : null);
    }
    pid = facts?.ppid ?? null;
  }
  return null;
}

/** The tmux server and pane this runs in (`$TMUX` is "SOCKET,SERVER_PID,SESSION"), or nulls. */
export function tmuxPlace(env: Record<string, string | undefined> = process.env): {
  tmux_socket: string | null;
  server: string | null;
  pane_id: string | null;
} {
  const [socket, pid] = (env.TMUX ?? "").split(",");
  const pane = env.TMUX_PANE;
  if (!socket || !pid || !pane || !/^%\d+$/.test(pane)) return { tmux_socket: null, server: null, pane_id: null };
  const start = hostReader().facts(Number(pid))?.start;
  return { tmux_socket: socket, server: start ? `${pid}:${start}` : null, pane_id: start ? pane : null };
}

export const report = defineCommand({
  meta: {
    name: "report",
    description:
      "Report one event of an agent to planterd (what `planter agent hooks install` runs from the agent's own hooks): the hook's JSON on stdin, or as the last argument (Codex's notify). Never fails the agent: it exits 0",
  },
  args: {
    agent: { type: "positional", description: `the agent: ${AGENT_KINDS.join(", ")}`, required: true },
    event: { type: "positional", description: "the event (the hook's name, or notify)", required: true },
    payload: { type: "positional", description: "the event's JSON (Codex's notify passes it here)", required: false },
    ...clientArgs,
  },
  async run({ args }) {
    try {
      const kind = args.agent as AgentKind;
      if (!AGENT_KINDS.includes(kind)) throw new Error(`unknown agent ${JSON.stringify(args.agent)}`);
      const text = args.payload ?? (await Bun.stdin.text());
      const line = parseLine(`${args.event}\t${text.replace(/[\r\n]/g, "").slice(0, 64 * 1024)}`);
      if (!line) throw new Error(`not an event name: ${JSON.stringify(args.event)}`);
      const process_ = agentProcess(kind);
      if (!process_) throw new Error(`no ${kind} process among this hook's parents`);
      const runtime = { ...tmuxPlace(), process: process_, job_id: null };
      const event = lineEvent(kind, line, runtime, Date.now(), Date.now());
      if (!event) return 0; // an event that means no state
      await client(args).reportAgent(event);
    } catch (e) {
      process.stderr.write(`planter agent report: ${(e as Error).message}\n`);
    }
    return 0;
  },
});
