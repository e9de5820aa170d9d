#!/usr/bin/env bun
/** `sandbox` / `planter sandbox`: check, render and run sandbox policies without the daemon. */
import { chownSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { defineCommand } from "citty";
import { PlanterError } from "../lib/api/errors.ts";
import { afterDashes, jsonArg, usage } from "../lib/cli/args.ts";
import { examples } from "../lib/cli/help.ts";
import { allowRest, runCli } from "../lib/cli/main.ts";
import { print, printable, printJson, shellLine, write } from "../lib/cli/output.ts";
import type { PlanRequest, SpawnPlan } from "../lib/sandbox/backend.ts";
import { checkSandbox } from "../lib/sandbox/check.ts";
import type { Identity } from "../lib/sandbox/identity.ts";
import { backendByName, platformBackend } from "../lib/sandbox/index.ts";
import { noneBackend } from "../lib/sandbox/none.ts";
import { within } from "../lib/sandbox/paths.ts";
import { complete, type EffectivePolicy, readPolicyFile, resolvePolicyPaths } from "../lib/sandbox/policy.ts";
import { checkCellWritable, hostRequest, spawnPlan } from "../lib/sandbox/run.ts";
import {
  readGlobalGit,
  readOnlyPaths,
  review,
  snapshot,
  TreeTooLarge,
  type WorkspaceSnapshot,
  walkBudget,
} from "../lib/sandbox/workspace.ts";

/**
 * Snapshots of the trees a sandboxed command may write (the cell dir when writable, each
 * read_write path), as planterd takes them for a job (lib/daemon/launch.ts snapshotWorkspace).
 */
function workspaceTrees(
  cell: string,
  policy: EffectivePolicy,
  identity: Identity | null,
): { root: string; before: WorkspaceSnapshot }[] {
  if (policy.workspace_config === "allow") return [];
  const writable = [...(policy.fs_mode === "writable" ? [cell] : []), ...policy.read_write];
  const roots = writable.filter((w) => !writable.some((o) => o !== w && within(w, o)));
  const files: { path: string; home: string | null; owner: number }[] = [];
  for (const h of new Set([identity?.home, homedir()].filter((x): x is string => !!x && x !== "/"))) {
    const owner = statSync(h, { throwIfNoEntry: false })?.uid;
    if (owner === undefined) continue;
    files.push({ path: `${h}/.gitconfig`, home: h, owner }, { path: `${h}/.config/git/config`, home: h, owner });
  }
  for (const path of ["/etc/gitconfig", "/usr/local/etc/gitconfig"]) files.push({ path, home: null, owner: 0 });
  const global = readGlobalGit(files);
  return roots.map((root) => {
    try {
      return { root, before: snapshot(root, [], global, walkBudget(WORKSPACE_MAX_ENTRIES)) };
    } catch (e) {
      if (!(e instanceof TreeTooLarge)) throw e;
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `${root} holds more than ${WORKSPACE_MAX_ENTRIES} entries`, {
        hint: 'a tree too large to review cannot be protected: use a smaller cell dir, or a policy with workspace_config = "allow"',
      });
    }
  });
}

/** planterd's default `[sandbox] workspace_max_entries`. */
const WORKSPACE_MAX_ENTRIES = 1_000_000;

/** After the command: set aside what it added or changed that the host would run, and say so on stderr. */
function reviewTrees(trees: { root: string; before: WorkspaceSnapshot }[]): void {
  for (const t of trees) {
    for (const f of review(t.root, t.before, { jobId: `exec-${process.pid}` })) {
      const where = f.saved_as ? `set aside as ${f.saved_as}` : "could not be set aside";
      write(
        2,
        `sandbox: ${printable(f.path)} (${f.kind}: ${printable(f.detail)}) ${printable(where)}${f.restored ? ", earlier version restored" : ""}\n`,
      );
    }
  }
}

const verbose = { verbose: { type: "boolean", description: "print stacks with errors" } } as const;

/**
 * A request for the calling user. `scratch`: exec's own fresh dir (mkdtemp: a name planted first
 * by another user, a symlink to a root dir, is never used); render only names one.
 */
function request(
  policy: EffectivePolicy,
  cellDir: string,
  argv: string[],
  scratch = join(tmpdir(), "planter-sandbox-XXXXXX"),
): PlanRequest {
  return hostRequest({
    argv,
    cellDir,
    policy,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: scratch,
      ...(process.env.TERM ? { TERM: process.env.TERM } : {}),
      ...policy.env.set,
    },
    jobDir: scratch,
    scratch,
  });
}

const check = defineCommand({
  meta: {
    name: "check",
    description:
      "Probe the sandbox for real: a sandboxed process must write inside its cell, and fail to write outside it and to reach the network",
  },
  args: { ...jsonArg, ...verbose },
  async run({ args }) {
    const backend = platformBackend();
    const probe = backend
      ? await backend.probe()
      : { ok: false, message: `no sandbox backend for ${process.platform}` };
    const r = await checkSandbox(backend, probe);
    if (args.json) printJson(r);
    else {
      print(`backend: ${r.backend ?? "none"}${r.version ? ` (${r.version})` : ""}`);
      print(`user namespaces: ${r.userns ?? "unknown"}`);
      for (const c of r.checks) print(`${c.ok ? "ok  " : "FAIL"}  ${c.id}: ${c.detail}`);
      print(r.ok ? "sandbox: ok" : `sandbox: NOT working: ${r.message}`);
      if (!r.ok && r.hint) print(`hint: ${r.hint}`);
    }
    return r.ok ? 0 : 1;
  },
});

const render = defineCommand({
  meta: {
    name: "render",
    description: "Print the bwrap argv or the Seatbelt profile a policy gives, without running anything",
  },
  args: {
    policy: {
      type: "string",
      description: "policy file (JSON, or .toml); default: the default policy",
      valueHint: "FILE",
    },
    backend: {
      type: "enum",
      options: ["bwrap", "seatbelt"],
      description: "backend to render for (default: this platform's)",
    },
    cell: { type: "string", description: "cell directory (default: the current directory)", valueHint: "DIR" },
    ...jsonArg,
    ...verbose,
  },
  async run({ args, rawArgs }) {
    const name = args.backend ?? (process.platform === "darwin" ? "seatbelt" : "bwrap");
    const backend = backendByName(name);
    if (!backend) throw usage(`unknown backend ${name}`);
    let policy = complete(args.policy ? readPolicyFile(args.policy) : undefined);
    // Paths are resolved where they will be used: on this host, for this host's backend.
    if (platformBackend()?.name === name) policy = resolvePolicyPaths(policy);
    const cell = resolve(args.cell ?? process.cwd());
    const argv = afterDashes(rawArgs) ?? ["/bin/sh"];
    const req = request(policy, existsSync(cell) ? realpathSync(cell) : cell, argv.length ? argv : ["/bin/sh"]);
    if (name === "seatbelt") {
      const { seatbeltProfile } = await import("../lib/sandbox/seatbelt.ts");
      const profile = seatbeltProfile(req);
      if (args.json) printJson({ backend: name, profile });
      else write(1, profile);
    } else {
      const { bwrapPlan, renderArgs } = await import("../lib/sandbox/bwrap.ts");
      const argvOut = renderArgs(bwrapPlan(req, Bun.which("bwrap") ?? "bwrap"));
      if (args.json) printJson({ backend: name, argv: argvOut });
      else print(shellLine(argvOut));
    }
    return 0;
  },
});

const exec = defineCommand({
  meta: {
    name: "exec",
    description: "Run one command sandboxed (no daemon) and exit with its code",
  },
  args: {
    mode: {
      type: "enum",
      options: ["disabled", "permissive", "enforced"],
      description: "sandbox mode (default enforced)",
    },
    policy: { type: "string", description: "policy file (JSON, or .toml)", valueHint: "FILE" },
    cell: { type: "string", description: "cell directory (default: the current directory)", valueHint: "DIR" },
    ...verbose,
  },
  async run({ args, rawArgs }) {
    const argv = afterDashes(rawArgs) ?? [];
    if (!argv.length) throw usage("nothing to run", "sandbox exec [options] -- COMMAND [ARGS…]");
    const mode = args.mode ?? "enforced";
    const cell = realpathSync(resolve(args.cell ?? process.cwd()));
    const policy = resolvePolicyPaths(complete(args.policy ? readPolicyFile(args.policy) : undefined));
    // The scratch dir (the command's HOME and job dir) is made here, exclusively, and root then
    // chowns it to the user the command runs as: a predictable name (it held the pid) planted by
    // another user as a symlink had root chown its target and write there.
    const scratch = mkdtempSync(join(tmpdir(), "planter-sandbox-"));
    try {
      return await execIn(scratch, { mode, cell, policy, argv });
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  },
});

async function execIn(
  scratch: string,
  { mode, cell, policy, argv }: { mode: string; cell: string; policy: EffectivePolicy; argv: string[] },
): Promise<number> {
  const req = request(policy, cell, argv, scratch);
  checkCellWritable(cell, req.identity);
  let plan: SpawnPlan = noneBackend.plan(req);
  let trees: { root: string; before: WorkspaceSnapshot }[] = [];
  if (mode !== "disabled") {
    const backend = platformBackend();
    const probe = backend
      ? await backend.probe()
      : { ok: false, message: `no sandbox backend for ${process.platform}`, hint: undefined };
    if (backend && probe.ok) {
      // The same workspace protection as a planterd job: git metadata and tool config the host
      // runs are read-only in the sandbox, and what the command adds is set aside after it.
      trees = workspaceTrees(cell, policy, req.identity);
      req.workspaceReadOnly = trees.flatMap((t) => readOnlyPaths(t.before));
      plan = backend.plan(req);
    } else if (mode === "enforced") {
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `sandbox unavailable: ${probe.message}`, {
        hint: probe.hint ?? "run `planter sandbox check`",
      });
    } else write(2, `sandbox: warning: running unsandboxed (${probe.message})\n`);
  }
  try {
    mkdirSync(req.scratch, { recursive: true, mode: 0o700 });
    if (req.identity) chownSync(req.scratch, req.identity.uid, req.identity.gid);
    for (const d of plan.dirs ?? []) mkdirSync(d, { recursive: true, mode: 0o700 });
    for (const f of plan.files ?? []) writeFileSync(f.path, f.content, { mode: 0o600 });
    const n = policy.network;
    const egress = typeof n === "object" ? { rules: n } : undefined;
    const p = spawnPlan(plan, req.identity, req.scratch, ["inherit", "inherit", "inherit"], egress);
    const forward = (sig: NodeJS.Signals) => () => p.kill(sig);
    process.on("SIGINT", forward("SIGINT"));
    process.on("SIGTERM", forward("SIGTERM"));
    const code = await p.exited;
    if (p.signalCode)
      return 128 + ((require("node:os").constants.signals as Record<string, number>)[p.signalCode] ?? 0);
    return code;
  } finally {
    rmSync(req.scratch, { recursive: true, force: true });
    reviewTrees(trees);
  }
}
allowRest(exec);
examples(exec, ["planter sandbox exec --cell . -- make test", "planter sandbox exec --policy p.json -- ls ~"]);
allowRest(render);

const sandbox = defineCommand({
  meta: {
    name: "sandbox",
    description: "Check, render and run sandbox policies without the daemon (check, render, exec)",
  },
  subCommands: { check, render, exec },
});

export default sandbox;

if (import.meta.main) await runCli(sandbox, process.argv.slice(2), "sandbox");
