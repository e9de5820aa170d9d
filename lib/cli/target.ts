/**
 * Targets: where client commands send their requests — this host's planterd (`local`) or the
 * Linux agent in the Lima VM `planter` (`lima`, through the socket Lima forwards to the host).
 * Precedence: `--target` > `PLANTER_TARGET` > the config's `[client] target` > `local`;
 * `--socket` overrides them all (only an explicit `--target lima` beside it keeps the mount check).
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { homedir } from "node:os";
import * as v from "valibot";
import { Client, startHint } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import { summarizeIssues } from "../api/strings.ts";
import { guestPathOf, hostSocketPath, LIMA_VM, type LimaMount } from "../host/lima-paths.ts";
import { systemdRunning } from "../host/systemd.ts";
import { resolvePaths } from "../paths.ts";
import { ClientSection, TARGETS, Target } from "./client-config.ts";

type Env = Record<string, string | undefined>;

/** What decided the target. */
export type TargetSource = "flag" | "env" | "config" | "socket" | "default";

export interface ResolvedTarget {
  target: Target;
  source: TargetSource;
}

export { TARGETS };

function checkName(value: string, where: string): Target {
  const r = v.safeParse(Target, value);
  if (r.success) return r.output;
  throw new PlanterError("E_USAGE", `${where} must be one of ${TARGETS.join(", ")}, not ${JSON.stringify(value)}`, {
    hint: 'local: this host\'s planterd; lima: the agent in the Lima VM (docs/usage.md "Targets")',
  });
}

/**
 * The target by precedence: `flag` > `env` > `config` > local. With `socket` set, only the flag
 * counts (the socket names the daemon). `config` is called only when it decides.
 */
export function resolveTarget(input: {
  flag?: string;
  env?: string;
  socket?: string;
  config?: () => Target | undefined;
}): ResolvedTarget {
  if (input.flag) return { target: checkName(input.flag, "--target"), source: "flag" };
  if (input.socket) return { target: "local", source: "socket" };
  if (input.env) return { target: checkName(input.env, "PLANTER_TARGET"), source: "env" };
  const fromConfig = input.config?.();
  if (fromConfig) return { target: fromConfig, source: "config" };
  return { target: "local", source: "default" };
}

const ClientPart = v.looseObject({ client: v.optional(ClientSection) });

/** `[client] target` of the config file at `path` (undefined when the file or the key is absent). */
export function configTarget(path: string): Target | undefined {
  if (!existsSync(path)) return undefined;
  let raw: unknown;
  try {
    raw = Bun.TOML.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new PlanterError("E_CONFIG", `cannot read the client target from config ${path}: ${(e as Error).message}`, {
      hint: `fix ${path}, or name the target with --target or PLANTER_TARGET`,
    });
  }
  const r = v.safeParse(ClientPart, raw);
  if (!r.success)
    throw new PlanterError("E_CONFIG", `invalid config ${path}: ${summarizeIssues(r.issues)}`, {
      hint: `[client] target is "local" or "lima"; fix ${path}, or name the target with --target or PLANTER_TARGET`,
    });
  return r.output.client?.target;
}

/** Client options as citty parses them. */
export interface TargetArgs {
  socket?: string;
  target?: string;
}

const resolved = new WeakMap<object, ResolvedTarget>();

/** The target of one command invocation (resolved once per parsed arguments). */
export function targetOf(args: TargetArgs, env: Env = process.env): ResolvedTarget {
  let t = resolved.get(args);
  if (!t) {
    t = resolveTarget({
      flag: args.target,
      env: env.PLANTER_TARGET,
      socket: args.socket,
      config: () => configTarget(resolvePaths(env).configPath),
    });
    resolved.set(args, t);
  }
  return t;
}

/** The hint for a Lima target that does not answer. */
export function limaHint(): string {
  return `start the VM with \`limactl start ${LIMA_VM}\`; if there is none yet, \`planter install --lima\` creates it (\`planter doctor lima\` says which); or use --target local`;
}

/** A client for the command's target: `--socket`, else the target's socket (the Lima VM's must exist). */
export function targetClient(args: TargetArgs, env: Env = process.env): Client {
  const t = targetOf(args, env);
  if (args.socket) return new Client(args.socket, t.target === "lima" ? limaHint() : undefined);
  if (t.target === "local") {
    const paths = resolvePaths(env);
    const hint = startHint({ mode: paths.mode, uid: process.getuid?.() ?? 1000, systemd: systemdRunning() });
    return new Client(paths.socketPath, hint);
  }
  const socket = hostSocketPath(env);
  if (!existsSync(socket))
    throw new PlanterError(
      "E_DAEMON_UNREACHABLE",
      `the Lima VM ${LIMA_VM} is not running or not installed: no forwarded planterd socket at ${socket} (target lima, from ${sourceText(t.source)})`,
      { hint: limaHint() },
    );
  return new Client(socket, limaHint());
}

function sourceText(s: TargetSource): string {
  return {
    flag: "--target",
    env: "PLANTER_TARGET",
    config: "[client] target in the config",
    socket: "--socket",
    default: "the default",
  }[s];
}

/** The mounts of the Lima VM, asked of `limactl list --json` once per invocation. */
let mountsOnce: Promise<LimaMount[]> | undefined;
export function limaMounts(env: Env = process.env): Promise<LimaMount[]> {
  mountsOnce ??= (async () => {
    const { instanceMounts, limactlWithin, parseList } = await import("../host/limactl.ts");
    const r = await limactlWithin(15_000, "list", "--json", LIMA_VM);
    const fail = (why: string, hint: string) =>
      new PlanterError("E_UNAVAILABLE", `cannot read the mounts of the Lima VM ${LIMA_VM}: ${why}`, { hint });
    if (r.code !== 0)
      throw fail(
        r.stderr.trim() || `limactl exited ${r.code}`,
        "check `limactl list`; `planter doctor lima` says more",
      );
    let inst: ReturnType<typeof parseList>[number] | undefined;
    try {
      inst = parseList(r.stdout).find((i) => i.name === LIMA_VM);
    } catch (e) {
      throw fail(`limactl list --json printed something else: ${(e as Error).message}`, "check `limactl list --json`");
    }
    if (!inst) throw fail("limactl does not list it", "`planter install --lima` creates it");
    return instanceMounts(inst, env.HOME || homedir());
  })();
  return mountsOnce;
}

const real = (p: string) => {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
};

/** A mount list for people: `/Users/me, /tmp/lima (read-only), /src → /mnt/src`. */
export function describeMounts(mounts: LimaMount[]): string {
  if (!mounts.length) return "none";
  return mounts
    .map(
      (m) =>
        `${m.location}${m.mountPoint !== m.location ? ` → ${m.mountPoint}` : ""}${m.writable ? "" : " (read-only)"}`,
    )
    .join(", ");
}

/**
 * Where the VM sees `hostPath` (absolute), both sides through their symlinks so that a link
 * cannot lead outside a mount; a usage error naming the mounts when none holds it. Pure.
 */
export function guestPathOrRefuse(hostPath: string, what: string, mounts: LimaMount[], realpath = real): string {
  const canonical = mounts.map((m) => ({ ...m, location: realpath(m.location) }));
  const guest = guestPathOf(realpath(hostPath), canonical);
  if (guest !== null) return guest;
  throw new PlanterError(
    "E_USAGE",
    `${what} ${hostPath} is not on a directory the Lima VM ${LIMA_VM} mounts, so its agent cannot see it`,
    {
      hint: `the VM mounts: ${describeMounts(mounts)}. Use a directory under one of them, or add a mount (\`limactl edit ${LIMA_VM}\`, then \`limactl stop ${LIMA_VM} && limactl start ${LIMA_VM}\`); or use --target local`,
      details: { path: hostPath, mounts },
    },
  );
}

/** The path to send for a directory given on the command line: as is for local, the guest's path for lima. */
export async function pathForTarget(args: TargetArgs, hostPath: string, what: string): Promise<string> {
  if (targetOf(args).target !== "lima") return hostPath;
  return guestPathOrRefuse(hostPath, what, await limaMounts());
}
