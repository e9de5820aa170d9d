/** `planter agent run`: an AI coding agent's CLI as an interactive job in a cell's sandbox (#16). */
import { defineCommand } from "citty";
import { AGENT_PROGRAMS, agentArgv, EGRESS_PRESETS } from "../../agents/hooks.ts";
import { AGENT_KINDS, type AgentKind } from "../../agents/model.ts";
import type { JobCreateIn } from "../../api/contract.ts";
import { readPolicyFile } from "../../sandbox/policy.ts";
import { afterDashes, client, envPairs, repeated, usage } from "../args.ts";
import { attachArgs, attachJob } from "../attach.ts";
import { examples } from "../help.ts";
import { allowRest } from "../main.ts";
import { printable as p, print, printJson } from "../output.ts";
import { windowSize } from "../rawmode.ts";
import { isTerminal } from "../tty.ts";
import { common } from "./common.ts";

/** The agent's program: `--program`, else found on your PATH, else its name (the job's PATH decides). */
function program(kind: AgentKind, given: string | undefined): string {
  if (given) return given;
  return Bun.which(AGENT_PROGRAMS[kind]) ?? AGENT_PROGRAMS[kind];
}

export const run = defineCommand({
  meta: {
    name: "run",
    description:
      "Start an agent CLI (claude, codex or gemini) as an interactive job in a cell's sandbox: its network is the agent's API hosts only (unless the cell allows more), its hooks report its state to planter; Ctrl-P Ctrl-Q detaches, planter attach JOB comes back",
  },
  args: {
    agent: { type: "positional", description: `the agent: ${AGENT_KINDS.join(", ")}`, required: true },
    cell: {
      type: "string",
      alias: "c",
      description: "cell to run in (default: the agent's own cell agent-AGENT, made on first use with its API hosts)",
      valueHint: "NAME",
    },
    policy: {
      type: "string",
      description: "narrow the cell's sandbox policy for this job with a policy file (never widen it)",
      valueHint: "FILE",
    },
    env: {
      type: "string",
      alias: "e",
      description: "set an environment variable, repeatable (the job does not inherit yours)",
      valueHint: "NAME=VALUE",
    },
    "pass-env": {
      type: "string",
      description: "copy a variable of yours into the job (an API key), repeatable",
      valueHint: "NAME",
    },
    program: { type: "string", description: "the agent's program (default: found on your PATH)", valueHint: "PATH" },
    detach: { type: "boolean", alias: "d", description: "print the job id and return (planter attach JOB later)" },
    ...attachArgs,
    ...common,
  },
  async run({ args, rawArgs }) {
    const kind = args.agent as AgentKind;
    if (!AGENT_KINDS.includes(kind))
      throw usage(`unknown agent ${JSON.stringify(args.agent)}`, `planter agent run ${AGENT_KINDS.join("|")}`);
    const rest = afterDashes(rawArgs) ?? [];
    const env: Record<string, string> = { ...(envPairs(repeated(rawArgs, "env", "e")) ?? {}) };
    for (const name of repeated(rawArgs, "pass-env")) {
      const value = process.env[name];
      if (value === undefined) throw usage(`--pass-env ${name}: it is not set in your environment`);
      env[name] = value;
    }
    if (process.env.TERM && !env.TERM) env.TERM = process.env.TERM;
    if (!args.detach && !(isTerminal(0) && isTerminal(1)))
      throw usage("an agent needs a terminal on stdin and stdout (or --detach, then planter attach)");
    const argv = agentArgv(kind, rest, program(kind, args.program));
    const body: JobCreateIn = {
      argv,
      agent: { kind },
      tty: windowSize(1) ?? windowSize(0) ?? { cols: 80, rows: 24 },
      ...(Object.keys(env).length ? { env } : {}),
      ...(args.cell ? { cell: args.cell } : {}),
      ...(args.policy ? { sandbox: { policy: readPolicyFile(args.policy) } } : {}),
    };
    const api = client(args);
    const job = await api.createJob(body);
    if (args.detach) {
      if (args.json) printJson(job);
      else print(p(job.id));
      return 0;
    }
    return attachJob(api, job.id, { readOnly: false, detachKeys: args["detach-keys"] });
  },
});
allowRest(run, "[AGENT ARGS…]");
examples(run, [
  "planter agent run claude",
  "planter agent run claude --pass-env ANTHROPIC_API_KEY -- --model sonnet",
  "planter agent run codex --cell work -d   # prints the job id; planter attach ID",
]);

export const agent = defineCommand({
  meta: {
    name: "agent",
    description: `Run AI coding agents in cells (run); report the state of agents you run elsewhere (hooks). The agents' API hosts: ${Object.entries(
      EGRESS_PRESETS,
    )
      .map(([k, h]) => `${k}: ${h.join(", ")}`)
      .join("; ")}`,
  },
  subCommands: {
    run,
    hooks: () => import("../agent-hooks.ts").then((m) => m.hooks),
    report: () => import("../agent-report.ts").then((m) => m.report),
  },
});
