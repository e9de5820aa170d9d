/** `planter cell create|ls|show|rm`. */
import { resolve as resolvePath } from "node:path";
import { defineCommand } from "citty";
import type { Cell, CellCreateIn, CellUpdateIn } from "../../api/contract.ts";
import { describeNetwork, readPolicyFile } from "../../sandbox/policy.ts";
import { client, clientArgs, envPairs, repeated, usage } from "../args.ts";
import { examples } from "../help.ts";
import { netArgs, netShort, sandboxFromArgs, shortNetwork, withShortNetwork } from "../network.ts";
import { dim, printable as p, print, printJson, table, write } from "../output.ts";
import { pathForTarget } from "../target.ts";
import { limitArgs, limitsFromArgs, limitsLine } from "../units.ts";
import { common, olderDaemon } from "./common.ts";

function cellLines(c: Cell): string {
  const env = Object.entries(c.env).map(([k, v]) => `${k}=${v}`);
  return [
    `name:     ${c.name}`,
    `dir:      ${c.dir}`,
    `created:  ${c.created_at}`,
    `jobs:     ${c.jobs.running} running, ${c.jobs.total} in all`,
    `env:      ${env.length ? env.join(" ") : "-"}`,
    `limits:   ${limitsLine(c.limits)}`,
  ]
    .map((line, i) => p(line) + (i === 1 && c.managed ? dim(" (managed by planter)") : ""))
    .concat(sandboxLines(c))
    .join("\n");
}

/**
 * The sandbox a cell's jobs get, for people: the mode, then the policy field by field (the
 * network in words), saying what is the cell's own and what the defaults.
 */
export function sandboxLines(c: Cell): string[] {
  const eff = c.effective_sandbox;
  // A planterd older than `effective_sandbox` says only what the cell was given.
  if (!eff) return [p(`sandbox:  ${c.sandbox.mode ?? "(daemon default)"}`)];
  const pol = eff.policy;
  const list = (xs: string[]) => (xs.length ? xs.join(", ") : "-");
  const lines = [
    `sandbox:  ${eff.mode}${c.sandbox.mode ? "" : " (the daemon's default)"}`,
    `policy:   ${c.sandbox.policy ? "the cell's own, over the config's default" : "the config's default"}${eff.mode === "disabled" ? " (applied only to jobs that raise the mode: this cell's jobs run unsandboxed)" : ""}`,
    `  network:      ${describeNetwork(pol.network)}`,
    ...(eff.refused ? [`  REFUSED:      ${eff.refused}: its jobs are refused until the policy changes`] : []),
    `  cell dir:     ${pol.fs_mode === "writable" ? "writable" : "read-only"}`,
    `  read-write:   ${list(pol.read_write)}`,
    `  read-only:    ${list(pol.read_only)}`,
    `  deny:         ${list(pol.deny)}`,
    ...(pol.unix_sockets.length ? [`  unix sockets: ${list(pol.unix_sockets)}`] : []),
    ...(pol.workspace_config === "allow" ? ["  workspace:    not protected (workspace_config allow)"] : []),
    ...(pol.env.pass.length ? [`  env pass:     ${list(pol.env.pass)}`] : []),
    ...(Object.keys(pol.env.set).length
      ? [
          `  env set:      ${Object.entries(pol.env.set)
            .map(([k, v]) => `${k}=${v}`)
            .join(" ")}`,
        ]
      : []),
  ];
  return lines.map(p);
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
    backend: {
      type: "enum",
      options: ["bwrap", "seatbelt", "vm"],
      description:
        'sandbox backend for the cell\'s jobs: vm runs each job in its own KVM virtual machine (Linux with /dev/kvm; docs/sandbox.md "VM jobs")',
    },
    policy: {
      type: "string",
      description: 'sandbox policy file for the cell\'s jobs (JSON, or .toml; see docs/sandbox.md "Policies")',
      valueHint: "FILE",
    },
    ...netArgs("set"),
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
    const sandbox = sandboxFromArgs(args, rawArgs);
    if (sandbox) body.sandbox = sandbox;
    if (args["request-ref"]) body.request_ref = args["request-ref"];
    const cell = await api.createCell(body);
    if (args.json) printJson(cell);
    else print(`created cell ${p(cell.name)} at ${p(cell.dir)}`);
    return 0;
  },
});

examples(cellCreate, [
  "planter cell create build --env CI=1 --timeout 30m",
  "planter cell create web --dir ~/src/web --net-allow registry.npmjs.org,'*.github.com'",
  "planter cell create tools --policy tools-policy.json --sandbox enforced",
]);

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
  meta: {
    name: "show",
    description:
      "Show one cell: its dir, jobs, env, limits and the sandbox its jobs get (the mode, and the policy over the config's default, its network in words); --json: all of it",
  },
  args: { name: { type: "positional", description: "cell name", required: true }, ...common },
  async run({ args }) {
    const cell = await client(args).getCell(args.name);
    if (args.json) printJson(cell);
    else print(cellLines(cell));
    return 0;
  },
});

const cellUpdate = defineCommand({
  meta: {
    name: "update",
    description:
      "Change a cell's sandbox: --policy FILE replaces its whole policy; the --net options alone replace only its network (list every entry it keeps); --sandbox sets its mode. " +
      "Narrower or wider, by the cell's owner, never past the config's [network] ceiling; recorded as a cell.updated event. " +
      "Jobs running now keep the policy they started with; jobs started from now on get the new one",
  },
  args: {
    name: { type: "positional", description: "cell name", required: true },
    policy: {
      type: "string",
      description:
        'a policy file that replaces the cell\'s whole policy (JSON, or .toml; see docs/sandbox.md "Policies")',
      valueHint: "FILE",
    },
    ...netArgs("set"),
    sandbox: {
      type: "enum",
      options: ["disabled", "permissive", "enforced"],
      description: "sandbox mode for the cell's jobs",
    },
    ...common,
  },
  async run({ args, rawArgs }) {
    const short = netShort(rawArgs, args);
    const body: CellUpdateIn = { sandbox: {} };
    if (args.policy) body.sandbox.policy = withShortNetwork(readPolicyFile(args.policy), short, args.policy);
    else {
      const network = shortNetwork(short);
      if (network !== undefined) body.sandbox.network = network;
    }
    if (args.sandbox) body.sandbox.mode = args.sandbox;
    if (!Object.keys(body.sandbox).length) {
      throw usage(
        "nothing to change: give --policy FILE, a --net option or --sandbox MODE",
        `planter cell update ${args.name} --net-allow registry.npmjs.org`,
      );
    }
    const cell = await client(args).updateCell(args.name, body).catch(olderDaemon("cell update"));
    if (args.json) printJson(cell);
    else {
      print([`updated cell ${p(cell.name)}; its jobs from now on get:`, ...sandboxLines(cell)].join("\n"));
      if (cell.jobs.running)
        write(2, `planter: ${cell.jobs.running} job(s) running in ${p(cell.name)} keep the policy they started with\n`);
    }
    return 0;
  },
});
examples(cellUpdate, [
  "planter cell update web --net-allow registry.npmjs.org,'*.npmjs.org'   # npm install, nothing else",
  "planter cell update web --net-allow '*.github.com' --net-deny gist.github.com",
  "planter cell update web --net none                # no network again",
  "planter cell update web --policy web-policy.json  # the whole policy from a file",
]);

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
  meta: { name: "cell", description: "Manage cells (create, ls, show, update, rm)" },
  args: clientArgs,
  subCommands: { create: cellCreate, ls: cellLs, show: cellShow, update: cellUpdate, rm: cellRm },
});
