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
import { targetsArg } from "../client-config.ts";
import { examples } from "../help.ts";
import { eachTarget, errorsJson, reportFailures, targetsOf } from "../multi.ts";
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

function agentTable(agents: (Agent & { target?: string })[], withTarget = false): string {
  return table(
    [...(withTarget ? ["TARGET"] : []), "RUNTIME", "AGENT", "STATE", "SINCE", "WHERE", "DETAIL"],
    agents.map((a) => [
      ...(withTarget ? [a.target ?? ""] : []),
      a.runtime_id,
      a.agent,
      stateText(a),
      since(a.since),
      where(a),
      a.detail ?? "",
    ]),
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
    args: { ...filterArgs, ...common, ...targetsArg },
    async run({ args }) {
      const query = {
        state: args.state as AgentState | undefined,
        agent: args.agent as AgentKind | undefined,
        job: args.job,
      };
      const many = targetsOf(args);
      if (many) {
        const results = await eachTarget(many, (c) => c.listAgents(query));
        const rows = results.flatMap((r) => (r.ok ? r.value.agents.map((a) => ({ target: r.target, ...a })) : []));
        if (args.json) printJson({ agents: rows, errors: errorsJson(results) });
        else if (rows.length) print(agentTable(rows, true));
        else write(2, "planter: no agents observed on these targets\n");
        return reportFailures(results);
      }
      const list = await client(args).listAgents(query);
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

/** The guards of an action, from its options (docs/usage.md "Agents"). */
const guardArgs = {
  "if-runtime": {
    type: "string",
    description: "act only if the agent is still this runtime (from agents ls): else E_RUNTIME_STALE",
    valueHint: "RUNTIME",
  },
  "if-state": {
    type: "string",
    description: `act only in these states (comma list of ${AGENT_STATES.join(", ")}): else E_STATE_CHANGED`,
    valueHint: "STATES",
  },
  "if-updated-within": {
    type: "string",
    description: "act only if its state was confirmed this recently (5s, 1m): else E_STATE_CHANGED",
    valueHint: "DURATION",
  },
  "request-ref": {
    type: "string",
    description: "idempotency key: the same request again answers the first action, never acts twice",
    valueHint: "REF",
  },
} as const satisfies Record<string, ArgDef>;

function guardsOf(args: {
  "if-runtime"?: string;
  "if-state"?: string;
  "if-updated-within"?: string;
  "request-ref"?: string;
}) {
  const states = args["if-state"]?.split(",").map((x) => x.trim());
  for (const st of states ?? [])
    if (!AGENT_STATES.includes(st as AgentState)) throw usage(`--if-state: unknown state ${JSON.stringify(st)}`);
  return {
    ...(args["if-runtime"] ? { if_runtime: args["if-runtime"] } : {}),
    ...(states ? { if_state: states as AgentState[] } : {}),
    ...(args["if-updated-within"]
      ? { if_updated_within: parseDuration(args["if-updated-within"], "--if-updated-within") }
      : {}),
    ...(args["request-ref"] ? { request_ref: args["request-ref"] } : {}),
  };
}

const runtimeArg = {
  type: "positional",
  description: "the agent's runtime id (planter agents ls)",
  required: true,
} as const;

const agentsSend = examples(
  defineCommand({
    meta: {
      name: "send",
      description: "Type text and keys into an agent (its pane, or its job's terminal), only while the guards hold",
    },
    args: {
      runtime: runtimeArg,
      text: { type: "string", description: "text typed as it is", valueHint: "TEXT" },
      key: {
        type: "string",
        description: "a key after the text, repeatable: Enter, Escape, Tab, Up, Down, C-c and others",
        valueHint: "KEY",
      },
      ...guardArgs,
      ...common,
    },
    async run({ args, rawArgs }) {
      const keys: string[] = [];
      for (let i = 0; i < rawArgs.length; i++)
        if (rawArgs[i] === "--key" && rawArgs[i + 1]) keys.push(rawArgs[i + 1] as string);
      if (!args.text && !keys.length) throw usage("nothing to send: --text TEXT, --key KEY or both");
      const r = await client(args).agentSend(args.runtime, {
        ...(args.text ? { text: args.text } : {}),
        ...(keys.length ? { keys: keys as never } : {}),
        ...guardsOf(args),
      });
      if (args.json) printJson(r);
      else print(`${r.replayed ? "already sent" : `sent ${r.written} bytes`} (${r.action_id})`);
      return 0;
    },
  }),
  [
    "planter agents send rt-5626f2c99f1e64d7 --key Enter --if-state waiting_approval   # approve what it asks",
    'planter agents send rt-5626f2c99f1e64d7 --text "run the tests" --key Enter --if-state waiting_input',
  ],
);

const agentsOutput = examples(
  defineCommand({
    meta: { name: "output", description: "The last lines of an agent's pane (or its job's screen)" },
    args: {
      runtime: runtimeArg,
      lines: { type: "string", alias: "n", description: "how many (default 40)", valueHint: "N" },
      "if-runtime": guardArgs["if-runtime"],
      ...common,
    },
    async run({ args }) {
      const lines = args.lines ? Number(args.lines) : undefined;
      if (lines !== undefined && !(Number.isInteger(lines) && lines >= 1))
        throw usage("--lines takes a whole number ≥ 1");
      const r = await client(args).agentOutput(args.runtime, {
        ...(lines ? { lines } : {}),
        ...(args["if-runtime"] ? { if_runtime: args["if-runtime"] } : {}),
      });
      if (args.json) printJson(r);
      else for (const l of r.lines ?? []) print(p(l));
      return 0;
    },
  }),
  ["planter agents output rt-5626f2c99f1e64d7 -n 20"],
);

const agentsKill = examples(
  defineCommand({
    meta: {
      name: "kill",
      description: "End an agent: its job (as job kill does), or its own process (TERM; --force: KILL), never its pane",
    },
    args: {
      runtime: runtimeArg,
      force: { type: "boolean", description: "KILL at once" },
      ...guardArgs,
      ...common,
    },
    async run({ args }) {
      const r = await client(args).agentKill(args.runtime, { force: Boolean(args.force), ...guardsOf(args) });
      if (args.json) printJson(r);
      else print(`${r.replayed ? "already asked" : "asked to end"} (${r.action_id})`);
      return 0;
    },
  }),
  ["planter agents kill rt-5626f2c99f1e64d7 --if-state idle,completed"],
);

const agentsAttach = examples(
  defineCommand({
    meta: {
      name: "attach",
      description:
        "Attach your terminal to an agent: its job's terminal (Ctrl-P Ctrl-Q detaches), or its tmux pane (tmux's own attach)",
    },
    args: { runtime: runtimeArg, ...common },
    async run({ args }) {
      const api = client(args);
      const a = (await api.listAgents({})).agents.find((x) => x.runtime_id === args.runtime);
      if (!a)
        throw new PlanterError("E_NOT_FOUND", `no agent ${args.runtime}`, { hint: "list them: planter agents ls" });
      if (a.runtime.job_id) {
        const { attachJob } = await import("../attach.ts");
        return attachJob(api, a.runtime.job_id, { readOnly: false });
      }
      if (!a.runtime.tmux_socket || !a.runtime.pane_id || !a.pane)
        throw usage(`agent ${a.runtime_id} is in no pane planter can attach to`);
      const target = `${a.pane.session}:${a.pane.window}.${a.pane.index}`;
      const env = { ...process.env };
      delete env.TMUX;
      const t = Bun.spawn(["tmux", "-S", a.runtime.tmux_socket, "attach-session", "-t", target], {
        stdio: ["inherit", "inherit", "inherit"],
        env,
      });
      return await t.exited;
    },
  }),
  ["planter agents attach rt-5626f2c99f1e64d7"],
);

export const agents = defineCommand({
  meta: {
    name: "agents",
    description:
      "The AI coding agents planterd observes, their states, and acting on them (ls, watch, wait, send, output, kill, attach)",
  },
  args: clientArgs,
  subCommands: {
    ls: agentsLs,
    watch: agentsWatch,
    wait: agentsWait,
    send: agentsSend,
    output: agentsOutput,
    kill: agentsKill,
    attach: agentsAttach,
  },
});
