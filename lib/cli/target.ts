/**
 * Targets: where client commands send their requests — this host's planterd (`local`), the Linux
 * agent in the Lima VM `planter` (`lima`, through the socket Lima forwards to the host), or a
 * target registered with `planter target add` (`[targets.NAME]` in the config: a socket, ssh or
 * https; lib/targets/). Precedence: `--target` > `PLANTER_TARGET` > the config's `[client] target`
 * > `local`; `--socket` overrides them all (only an explicit `--target lima` beside it keeps the
 * mount check). The ssh and https transports are loaded only when a target needs them.
 */
import { existsSync, realpathSync } from "node:fs";
import { homedir } from "node:os";
import { Client, startHint } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import { guestPathOf, hostSocketPath, LIMA_VM, type LimaMount } from "../host/lima-paths.ts";
import { systemdRunning } from "../host/systemd.ts";
import { resolvePaths } from "../paths.ts";
import { readClientConfig } from "../targets/registry.ts";
import { type Endpoint, parseTargetUrl } from "../targets/url.ts";
import { TARGETS, type TargetEntry } from "./client-config.ts";

type Env = Record<string, string | undefined>;

/** What decided the target. */
export type TargetSource = "flag" | "env" | "config" | "socket" | "default";

export interface ResolvedTarget {
  /** local, lima or a registered name. */
  target: string;
  source: TargetSource;
}

export { TARGETS };

function checkName(value: string, where: string, known: () => string[]): string {
  if ((TARGETS as readonly string[]).includes(value)) return value;
  const names = known();
  if (names.includes(value)) return value;
  throw new PlanterError(
    "E_USAGE",
    `${where} must be one of ${[...TARGETS, ...names].join(", ")}, not ${JSON.stringify(value)}`,
    {
      hint: 'local: this host\'s planterd; lima: the agent in the Lima VM; others are added with `planter target add NAME URL` (docs/usage.md "Targets")',
    },
  );
}

/**
 * The target by precedence: `flag` > `env` > `config` > local. With `socket` set, only the flag
 * counts (the socket names the daemon). `config` and `known` (the registered names) are called
 * only when they decide.
 */
export function resolveTarget(input: {
  flag?: string;
  env?: string;
  socket?: string;
  config?: () => string | undefined;
  known?: () => string[];
}): ResolvedTarget {
  const known = input.known ?? (() => []);
  if (input.flag) return { target: checkName(input.flag, "--target", known), source: "flag" };
  if (input.socket) return { target: "local", source: "socket" };
  if (input.env) return { target: checkName(input.env, "PLANTER_TARGET", known), source: "env" };
  const fromConfig = input.config?.();
  if (fromConfig) return { target: fromConfig, source: "config" };
  return { target: "local", source: "default" };
}

/** `[client] target` of the config file at `path` (undefined when the file or the key is absent). */
export function configTarget(path: string): string | undefined {
  return readClientConfig(path).target;
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
    const configPath = () => resolvePaths(env).configPath;
    t = resolveTarget({
      flag: args.target,
      env: env.PLANTER_TARGET,
      socket: args.socket,
      config: () => configTarget(configPath()),
      known: () => Object.keys(readClientConfig(configPath()).targets),
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
  return clientOf(t.target, env, sourceText(t.source));
}

/** The registered target `name` (undefined for local, lima and unknown names). */
export function registered(name: string, env: Env = process.env): TargetEntry | undefined {
  if ((TARGETS as readonly string[]).includes(name)) return undefined;
  const targets = readClientConfig(resolvePaths(env).configPath).targets;
  return Object.hasOwn(targets, name) ? targets[name] : undefined;
}

/** A client for the target `name` (local, lima or registered). */
export function clientOf(name: string, env: Env = process.env, from = "the command line"): Client {
  if (name === "local") {
    const paths = resolvePaths(env);
    const hint = startHint({ mode: paths.mode, uid: process.getuid?.() ?? 1000, systemd: systemdRunning() });
    return new Client(paths.socketPath, hint);
  }
  if (name === "lima") return limaClient(env, `target lima, from ${from}`);
  const entry = registered(name, env);
  if (!entry)
    throw new PlanterError("E_USAGE", `there is no target ${JSON.stringify(name)}`, {
      hint: "planter target ls lists them; planter target add NAME URL adds one",
    });
  return entryClient(name, entry, env);
}

function limaClient(env: Env, what: string): Client {
  const socket = hostSocketPath(env);
  if (!existsSync(socket))
    throw new PlanterError(
      "E_DAEMON_UNREACHABLE",
      `the Lima VM ${LIMA_VM} is not running or not installed: no forwarded planterd socket at ${socket} (${what})`,
      { hint: limaHint() },
    );
  return new Client(socket, limaHint());
}

/** An ssh target's bounds: an answer begins within 5 s; a read is tried twice more, after 0.2 s then 0.4 s (jittered). */
export const SSH_RETRY = { timeoutMs: 5000, retries: 2, backoffMs: 200 } as const;

/** A client for a registered target's entry: its socket, its ssh forward, or its https endpoints. */
export function entryClient(name: string, entry: TargetEntry, env: Env = process.env): Client {
  const endpoints = entry.urls.map(parseTargetUrl);
  const first = endpoints[0] as Endpoint;
  const check = `planter target check ${name}`;
  switch (first.kind) {
    case "unix":
      return new Client(first.socket, `nothing answers at ${first.socket} (target ${name}); \`${check}\` says more`);
    case "lima":
      return limaClient(env, `target ${name}`);
    case "ssh": {
      const plan = { name, endpoint: first, identity: entry.identity, knownHosts: entry.known_hosts, env };
      // The forward's socket is known before ssh runs: the client checks it as any socket of the user's.
      const local = sshForwardPath(name, env);
      return new Client(local, `the ssh forward of target ${name} does not answer; \`${check}\` says more`, [], {
        prepare: (stale) => import("../targets/ssh.ts").then((m) => m.ensureForward(plan, stale)),
        retry: SSH_RETRY,
      });
    }
    case "https":
      return new Client(`https target ${name}`, undefined, [], {
        remote: () =>
          import("../targets/https.ts").then((m) =>
            m.httpsTransport(name, endpoints as Extract<Endpoint, { kind: "https" }>[], entry, sshDir(env)),
          ),
      });
  }
}

/**
 * The directory of this user's target state — ssh masters and forwards, https endpoints' skip
 * times — 0700 (lib/targets/ssh.ts makes and checks it): `$PLANTER_HOME/targets` (tests), else
 * `$XDG_RUNTIME_DIR/planter-targets`, else `~/.local/state/planter/targets`; never a shared
 * directory such as /tmp.
 */
export function sshDir(env: Env = process.env): string {
  if (env.PLANTER_HOME) return `${env.PLANTER_HOME}/targets`;
  if (env.XDG_RUNTIME_DIR) return `${env.XDG_RUNTIME_DIR}/planter-targets`;
  return `${env.HOME || homedir()}/.local/state/planter/targets`;
}

/** The local socket a target's ssh forward listens on. */
export function sshForwardPath(name: string, env: Env = process.env): string {
  return `${sshDir(env)}/${name}.sock`;
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
  const t = targetOf(args).target;
  if (t !== "lima" && !(t !== "local" && registered(t)?.urls[0] === "lima")) return hostPath;
  return guestPathOrRefuse(hostPath, what, await limaMounts());
}
