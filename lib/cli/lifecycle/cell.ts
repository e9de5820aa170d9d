/** `planter cell create|ls|show|rm`. */
import { resolve as resolvePath } from "node:path";
import { defineCommand } from "citty";
import type { Cell, CellCreateIn } from "../../api/contract.ts";
import { readPolicyFile } from "../../sandbox/policy.ts";
import { client, clientArgs, envPairs, repeated } from "../args.ts";
import { dim, printable as p, print, printJson, table } from "../output.ts";
import { pathForTarget } from "../target.ts";
import { limitArgs, limitsFromArgs, limitsLine } from "../units.ts";
import { common } from "./common.ts";

function cellLines(c: Cell): string {
  const env = Object.entries(c.env).map(([k, v]) => `${k}=${v}`);
  return [
    `name:     ${c.name}`,
    `dir:      ${c.dir}`,
    `created:  ${c.created_at}`,
    `jobs:     ${c.jobs.running} running, ${c.jobs.total} in all`,
    `env:      ${env.length ? env.join(" ") : "-"}`,
    `limits:   ${limitsLine(c.limits)}`,
    `sandbox:  ${c.sandbox.mode ?? "(daemon default)"}`,
  ]
    .map((line, i) => p(line) + (i === 1 && c.managed ? dim(" (managed by planter)") : ""))
    .join("\n");
}

const cellCreate = defineCommand({
  meta: {
    name: "create",
    description: "Create a cell: a named working directory with default env, limits and sandbox mode for its jobs",
  },
  args: {
    name: {
      type: "positional",
      description: "cell name: 1-63 of a-z 0-9 . _ - starting with a letter or digit",
      required: true,
    },
    dir: {
      type: "string",
      description: "use this existing directory instead of one under the state dir (never deleted by planter)",
      valueHint: "DIR",
    },
    env: {
      type: "string",
      alias: "e",
      description: "default environment for the cell's jobs, repeatable",
      valueHint: "NAME=VALUE",
    },
    sandbox: {
      type: "enum",
      options: ["disabled", "permissive", "enforced"],
      description: "sandbox mode for the cell's jobs",
    },
    policy: {
      type: "string",
      description: 'sandbox policy file for the cell\'s jobs (JSON, or .toml; see docs/sandbox.md "Policies")',
      valueHint: "FILE",
    },
    "request-ref": {
      type: "string",
      description: "idempotency key: repeating the same request returns the first result",
      valueHint: "REF",
    },
    ...limitArgs,
    ...common,
  },
  async run({ args, rawArgs }) {
    const api = client(args);
    const body: CellCreateIn = { name: args.name };
    if (args.dir) body.dir = await pathForTarget(args, resolvePath(args.dir), "--dir");
    const env = envPairs(repeated(rawArgs, "env", "e"));
    if (env) body.env = env;
    const limits = limitsFromArgs(args);
    if (limits) body.limits = limits;
    if (args.sandbox || args.policy) {
      body.sandbox = {
        ...(args.sandbox ? { mode: args.sandbox } : {}),
        ...(args.policy ? { policy: readPolicyFile(args.policy) } : {}),
      };
    }
    if (args["request-ref"]) body.request_ref = args["request-ref"];
    const cell = await api.createCell(body);
    if (args.json) printJson(cell);
    else print(`created cell ${p(cell.name)} at ${p(cell.dir)}`);
    return 0;
  },
});

const cellLs = defineCommand({
  meta: { name: "ls", description: "List cells" },
  args: { ...common },
  async run({ args }) {
    const { cells } = await client(args).listCells();
    if (args.json) printJson(cells);
    else
      print(
        table(
          ["NAME", "RUNNING", "JOBS", "DIR"],
          cells.map((c) => [c.name, String(c.jobs.running), String(c.jobs.total), c.dir]),
        ),
      );
    return 0;
  },
});

const cellShow = defineCommand({
  meta: { name: "show", description: "Show one cell" },
  args: { name: { type: "positional", description: "cell name", required: true }, ...common },
  async run({ args }) {
    const cell = await client(args).getCell(args.name);
    if (args.json) printJson(cell);
    else print(cellLines(cell));
    return 0;
  },
});

const cellRm = defineCommand({
  meta: {
    name: "rm",
    description:
      "Remove a cell with its jobs and their logs (and its directory when planter made it). Refuses while jobs run unless --force",
  },
  args: {
    name: { type: "positional", description: "cell name", required: true },
    force: { type: "boolean", alias: "f", description: "kill the cell's running jobs (SIGKILL) first" },
    ...common,
  },
  async run({ args }) {
    const r = await client(args).removeCell(args.name, Boolean(args.force));
    if (args.json) printJson(r);
    else print(`removed cell ${p(r.removed)} (${p(r.jobs_removed)} job(s))`);
    return 0;
  },
});

export const cell = defineCommand({
  meta: { name: "cell", description: "Manage cells (create, ls, show, rm)" },
  args: clientArgs,
  subCommands: { create: cellCreate, ls: cellLs, show: cellShow, rm: cellRm },
});
