/** `planter agents ls|watch|wait`: the agents planterd observes (plans/agents.md). */
import { type ArgDef, defineCommand } from "citty";
import {
  AGENT_KINDS,
  AGENT_STATES,
  type Agent,
  type AgentKind,
  type AgentState,
  type AgentWatchLine,
} from "../../agents/model.ts";
import { EXIT, PlanterError } from "../../api/errors.ts";
import { client, clientArgs, parseDuration, usage } from "../args.ts";
import { examples } from "../help.ts";
import { dim, printable as p, print, printJson, table, write } from "../output.ts";
import { common } from "./common.ts";

/** Where an agent is: its pane as `session:window.index`, else its job, else its process. */
export function where(a: Agent): string {
  if (a.pane) return `${a.pane.session}:${a.pane.window}.${a.pane.index}`;
  if (a.runtime.job_id) return `job ${a.runtime.job_id}`;
  return `pid ${a.runtime.process.split(":")[0]}`;
}

/** A state as people read it: `unknown (pane_gone)`. */
export function stateText(a: Pick<Agent, "state" | "reason">): string {
  return a.reason ? `${a.state} (${a.reason})` : a.state;
}

/** "3s", "5m", "2h", "4d" since `ms`. */
function since(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function agentTable(agents: Agent[]): string {
  return table(
    ["RUNTIME", "AGENT", "STATE", "SINCE", "WHERE", "DETAIL"],
    agents.map((a) => [a.runtime_id, a.agent, stateText(a), since(a.since), where(a), a.detail ?? ""]),
  );
}

const filterArgs = {
  state: { type: "enum", options: [...AGENT_STATES] as string[], description: "only agents in this state" },
  agent: { type: "enum", options: [...AGENT_KINDS] as string[], description: "only this agent CLI" },
  job: { type: "string", description: "only the agent of this job", valueHint: "JOB" },
} satisfies Record<string, ArgDef>;

const agentsLs = examples(
  defineCommand({
    meta: {
      name: "ls",
      description:
        "List the agents planterd observes (Claude Code, Codex, Gemini in tmux panes; reported by hooks; in jobs) " +
        "with their state, since when, where and what they show. --json: the agents as an array",
    },
    args: { ...filterArgs, ...common },
    async run({ args }) {
      const list = await client(args).listAgents({
        state: args.state as AgentState | undefined,
        agent: args.agent as AgentKind | undefined,
        job: args.job,
      });
      if (args.json) printJson(list.agents);
      else if (!list.agents.length)
        write(2, "planter: no agents observed (agent CLIs in tmux panes and jobs show here)\n");
      else print(agentTable(list.agents));
      return 0;
    },
  }),
  [
    "planter agents ls",
    "planter agents ls --state waiting_approval   # who waits for a yes",
    "planter agents ls --json | jq '.[] | select(.agent == \"claude\")'",
  ],
);

/** One delta as a line for people: time, agent, where, state and detail. */
function deltaLine(line: Extract<AgentWatchLine, { type: "delta" }>): string {
  const a = line.agent;
  const t = new Date(a.updated_at).toISOString().slice(11, 19);
  const what = line.op === "remove" ? "forgotten" : stateText(a);
  return `${t}  ${p(a.runtime_id)}  ${p(a.agent).padEnd(6)}  ${p(where(a)).padEnd(12)}  ${p(what)}${a.detail ? `  ${dim(p(a.detail))}` : ""}`;
}

const agentsWatch = examples(
  defineCommand({
    meta: {
      name: "watch",
      description:
        "Follow the agents: every agent now, then a line per change as it happens (Ctrl-C stops). " +
        "--json: the stream's JSON lines (snapshot, delta, reset); --cursor resumes after a line's cursor, across planterd restarts",
    },
    args: {
      cursor: {
        type: "string",
        description:
          "print only the changes after this cursor (from an earlier line); one that cannot be resumed starts again with a snapshot",
        valueHint: "CURSOR",
      },
      ...common,
    },
    async run({ args }) {
      const stop = new AbortController();
      process.once("SIGINT", () => stop.abort());
      try {
        for await (const line of client(args).watchAgents({ cursor: args.cursor }, stop.signal)) {
          if (args.json) write(1, `${JSON.stringify(line)}\n`);
          else if (line.type === "snapshot")
            print(line.agents.length ? agentTable(line.agents) : dim("(no agents yet)"));
          else if (line.type === "delta") print(deltaLine(line));
          else write(2, `planter: ${p(line.message)}\n`);
        }
      } catch (e) {
        if (stop.signal.aborted) return 0;
        throw e;
      }
      return 0;
    },
  }),
  ["planter agents watch", "planter agents watch --json --cursor 3f2a9c0d11e4:120   # resume after a line"],
);

/** Exit code of `agents wait` when the agent it waits for went away (or was never there). */
export const WAIT_GONE = 1;

/** What a wait learnt from one line of the watch: the agent reached a state, is gone, is not there, or nothing yet. */
export type WaitStep = { reached: Agent } | { gone: Agent } | { missing: string } | null;

/**
 * The decision of `agents wait`, line by line of the watch: an agent (any, `--agent`'s or
 * `--job`'s) in one of `states`; the one waited for gone (`unknown`/`pane_gone`) or not there.
 */
export function waiter(states: readonly string[], want: { agent?: string; job?: string }) {
  const known = new Map<string, Agent>();
  const matches = (a: Agent) =>
    (!want.agent || a.runtime_id === want.agent) && (!want.job || a.runtime.job_id === want.job);
  return (line: AgentWatchLine): WaitStep => {
    if (line.type === "reset") return null;
    if (line.type === "snapshot") known.clear();
    const batch = line.type === "snapshot" ? line.agents : [line.agent];
    if (line.type === "delta" && line.op === "remove") known.delete(line.agent.runtime_id);
    else for (const a of batch) if (matches(a)) known.set(a.runtime_id, a);
    const hit = [...known.values()].find((a) => states.includes(a.state));
    if (hit) return { reached: hit };
    if (!want.agent && !want.job) return null;
    const mine = [...known.values()];
    if (mine.length && mine.every((a) => a.state === "unknown" && a.reason === "pane_gone"))
      return { gone: mine[0] as Agent };
    if (line.type === "snapshot" && want.agent && !mine.length) return { missing: want.agent };
    return null;
  };
}

/** Print the agent a wait was for (exit 0). */
function reached(a: Agent, json: boolean): number {
  if (json) printJson(a);
  else
    print(`${p(a.runtime_id)} ${p(a.agent)} ${p(stateText(a))} at ${p(where(a))}${a.detail ? `: ${p(a.detail)}` : ""}`);
  return 0;
}

/** The states of `--state` (comma-separated), each one of AGENT_STATES. */
function parseStates(text: string): AgentState[] {
  const states = text
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);
  const bad = states.find((x) => !(AGENT_STATES as readonly string[]).includes(x));
  if (bad !== undefined || !states.length)
    throw usage(`--state takes ${AGENT_STATES.join(", ")} (comma-separated), not ${JSON.stringify(bad ?? text)}`);
  return states as AgentState[];
}

const agentsWait = examples(
  defineCommand({
    meta: {
      name: "wait",
      description:
        "Wait until an agent is in one of the given states, print it and exit 0. Exit codes: 0 reached; " +
        "1 the agent waited for is gone (or unknown); 124 --timeout passed first; 2 usage; 3 planterd unreachable",
    },
    args: {
      state: {
        type: "string",
        description: `the states to wait for, comma-separated: ${AGENT_STATES.join(", ")}`,
        valueHint: "STATE[,STATE]",
        required: true,
      },
      agent: { type: "string", description: "this agent (its runtime id, from agents ls)", valueHint: "RUNTIME" },
      job: { type: "string", description: "the agent of this job", valueHint: "JOB" },
      timeout: {
        type: "string",
        alias: "t",
        description: "give up after this long: 500ms, 30s, 5m (default: wait forever)",
        valueHint: "DURATION",
      },
      ...common,
    },
    async run({ args }) {
      const states = parseStates(String(args.state));
      if (args.agent && args.job) throw usage("--agent and --job exclude each other");
      const timeout = args.timeout === undefined ? null : parseDuration(args.timeout, "--timeout");
      const stop = new AbortController();
      let timedOut = false;
      const timer =
        timeout === null
          ? null
          : setTimeout(() => {
              timedOut = true;
              stop.abort();
            }, timeout);
      process.once("SIGINT", () => stop.abort());
      const step = waiter(states, { agent: args.agent, job: args.job });
      try {
        for await (const line of client(args).watchAgents({}, stop.signal)) {
          const r = step(line);
          if (!r) continue;
          if ("reached" in r) return reached(r.reached, Boolean(args.json));
          throw new PlanterError(
            "E_NOT_FOUND",
            "gone" in r ? `agent ${r.gone.runtime_id} is gone (${stateText(r.gone)})` : `no agent ${r.missing}`,
            { hint: "see planter agents ls" },
          ).withExit(WAIT_GONE);
        }
        throw new PlanterError("E_DAEMON_UNREACHABLE", "planterd ended the watch before the state was reached");
      } catch (e) {
        if (timedOut) {
          const who = args.agent
            ? `agent ${args.agent} did not reach`
            : args.job
              ? `the agent of job ${args.job} did not reach`
              : "no agent reached";
          write(2, `planter: ${who} ${states.join(" or ")} within ${args.timeout}\n`);
          return EXIT.waitTimeout;
        }
        if (stop.signal.aborted) return EXIT.error;
        throw e;
      } finally {
        if (timer) clearTimeout(timer);
      }
    },
  }),
  [
    "planter agents wait --state waiting_approval --timeout 10m   # any agent",
    "planter agents wait --state completed,idle --agent rt-5626f2c99f1e64d7",
    "planter agents wait --state waiting_input --job j-0c3f… && echo ready",
  ],
);

export const agents = defineCommand({
  meta: {
    name: "agents",
    description: "The AI coding agents planterd observes, and their states (ls, watch, wait)",
  },
  args: clientArgs,
  subCommands: { ls: agentsLs, watch: agentsWatch, wait: agentsWait },
});
