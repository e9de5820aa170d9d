/**
 * Sandbox policies: what a job may reach. Set per cell; a job may narrow its cell's policy,
 * never widen it. Paths are literal (no globs) and resolved through symlinks before use.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { normalize } from "node:path";
import * as v from "valibot";
import { badRequest, PlanterError } from "../api/errors.ts";
import { EnvMap, EnvName, SafeString, summarizeIssues } from "../api/strings.ts";
import { canonicalRules, describeNetwork, type NetRules, parseEntry, uncovered } from "../net/policy.ts";
import {
  canonical,
  canonicalAs,
  KERNEL_DIRS,
  plantedSymlink,
  type Resolver,
  resolveAs,
  unsafeBind,
  within,
} from "./paths.ts";

const PolicyPath = v.pipe(
  SafeString,
  v.minLength(1),
  v.maxLength(4096),
  v.check((p) => p.startsWith("/"), "must be an absolute path"),
  v.check((p) => !/[*?[]/.test(p), "paths are literal: no glob characters"),
);
const PathList = v.pipe(v.array(PolicyPath), v.maxLength(256, "at most 256 paths"));

/** One egress entry: `host`, `*.domain`, `host:port`, an IP address, `[IPv6]:port` or a CIDR. */
export const NetEntry = v.pipe(
  v.string(),
  v.check(
    (e) => typeof parseEntry(e) !== "string",
    (issue) => {
      const e = issue.input as string;
      return `${JSON.stringify(e)} is not a network entry: ${parseEntry(e)}`;
    },
  ),
);
const NetList = v.pipe(v.array(NetEntry), v.maxLength(1024, "at most 1024 entries"));

/** The list form of `network`: only what `allow` names, less what `deny` names. */
export const NetworkRules = v.strictObject({
  allow: v.optional(NetList),
  deny: v.optional(NetList),
  /** Loopback, private, link-local and CGNAT addresses a name resolves to (off: refused). */
  allow_local: v.optional(v.boolean()),
});

/** `none` (no network), `host` (the host's, unfiltered) or a list through planter's egress proxy. */
export const Network = v.union(
  [v.picklist(["none", "host"]), NetworkRules],
  'network is "none", "host" or {allow: [...], deny: [...], allow_local: false}',
);
export type Network = "none" | "host" | NetRules;

/** A sandbox policy as given (every field optional). */
export const Policy = v.strictObject({
  fs_mode: v.optional(v.picklist(["read_only", "writable"])),
  network: v.optional(Network),
  read_write: v.optional(PathList),
  read_only: v.optional(PathList),
  deny: v.optional(PathList),
  /** Unix sockets the job may connect to (an ssh-agent, say); none by default. */
  unix_sockets: v.optional(PathList),
  /** "protect" (default): git metadata and tool config in the cell stay out of the job's reach. */
  workspace_config: v.optional(v.picklist(["protect", "allow"])),
  env: v.optional(
    v.strictObject({
      pass: v.optional(v.pipe(v.array(EnvName), v.maxLength(256))),
      set: v.optional(EnvMap),
    }),
  ),
});
export type Policy = v.InferOutput<typeof Policy>;

/** A policy with every field filled in. */
export interface EffectivePolicy {
  fs_mode: "read_only" | "writable";
  network: Network;
  read_write: string[];
  read_only: string[];
  deny: string[];
  unix_sockets: string[];
  workspace_config: "protect" | "allow";
  env: { pass: string[]; set: Record<string, string> };
}

/** What a cell gets when it names no policy: its dir writable, no network. */
export const DEFAULT_POLICY: EffectivePolicy = {
  fs_mode: "writable",
  network: "none",
  read_write: [],
  read_only: [],
  deny: [],
  unix_sockets: [],
  workspace_config: "protect",
  env: { pass: [], set: {} },
};

/** Fill in the defaults. */
export function complete(p: Policy | undefined, base: EffectivePolicy = DEFAULT_POLICY): EffectivePolicy {
  return {
    fs_mode: p?.fs_mode ?? base.fs_mode,
    network: completeNetwork(p?.network, base.network),
    read_write: p?.read_write ?? base.read_write,
    read_only: p?.read_only ?? base.read_only,
    deny: p?.deny ?? base.deny,
    unix_sockets: p?.unix_sockets ?? base.unix_sockets ?? [],
    workspace_config: p?.workspace_config ?? base.workspace_config ?? "protect",
    env: { pass: p?.env?.pass ?? base.env.pass, set: p?.env?.set ?? base.env.set },
  };
}

/**
 * A network setting filled in: a list's missing fields come from the base's list (none when the
 * base is no list), its entries in canonical spelling.
 */
function completeNetwork(n: Policy["network"], base: Network): Network {
  if (n === undefined) return typeof base === "string" ? base : canonicalRules(base);
  if (typeof n === "string") return n;
  const b = typeof base === "string" ? undefined : base;
  return canonicalRules({
    allow: n.allow ?? b?.allow,
    deny: n.deny ?? b?.deny,
    allow_local: n.allow_local ?? b?.allow_local,
  });
}

export { within } from "./paths.ts";
export { describeNetwork };

/** A refusal: what widened (or exceeded) and the hint. */
export interface NetWidening {
  what: string;
  hint: string;
}

/**
 * The job's network, narrowed from its cell's, or why the job's widens it. `none` narrows
 * everything; `host` only the host's; a list may follow `host` or narrow a list: each of its allow
 * entries must lie within one of the cell's (`*.b.com` covers `a.b.com`; a CIDR covers a smaller
 * one; an entry without a port covers every port), `allow_local` only where the cell's is on, and
 * the cell's deny entries always stay (the job's are added). A list the job gives without `allow`
 * keeps the cell's.
 */
export function narrowNetwork(cell: Network, job: Policy["network"]): Network | NetWidening {
  if (job === undefined) return cell;
  if (job === "none") return "none";
  if (job === "host") {
    if (cell === "host") return "host";
    return cell === "none"
      ? { what: "network host on a cell without network", hint: 'give the cell network = "host"' }
      : { what: "network host on a cell with an allow list", hint: "add what the job needs to the cell's allow list" };
  }
  if (cell === "none") {
    return { what: "a network allow list on a cell without network", hint: "give the cell an allow list (or host)" };
  }
  const given = canonicalRules({ allow: job.allow, deny: job.deny, allow_local: job.allow_local });
  if (cell === "host") return { ...given, allow: job.allow ? given.allow : [] };
  const allow = job.allow ? given.allow : cell.allow;
  const wider = uncovered(cell.allow, allow);
  if (wider.length) {
    return {
      what: `network allow ${wider.join(", ")} is not allowed by the cell`,
      hint: `the cell allows ${cell.allow.length ? cell.allow.join(", ") : "nothing"}; add it there`,
    };
  }
  if (given.allow_local && !cell.allow_local) {
    return { what: "network allow_local on a cell without it", hint: "give the cell allow_local = true" };
  }
  return {
    allow,
    deny: [...new Set([...cell.deny, ...given.deny])],
    allow_local: job.allow_local ?? cell.allow_local,
  };
}

/** The config's `[network]` ceiling (lib/config.ts). */
export interface NetCeiling {
  allow_host: boolean;
  allow?: string[] | undefined;
  deny: string[];
  allow_local: boolean;
}

/**
 * A cell's or job's network under the config's ceiling, or why it exceeds it: `host` only while
 * `allow_host`; a list's allow entries within the ceiling's `allow` (when it has one), its
 * `allow_local` only while the ceiling's is on, and the ceiling's deny entries added.
 */
export function capNetwork(ceiling: NetCeiling, n: Network): Network | NetWidening {
  if (n === "none") return n;
  const where = "the config's [network] ceiling";
  if (n === "host") {
    return ceiling.allow_host
      ? n
      : { what: `network host is beyond ${where} (allow_host = false)`, hint: "use an allow list" };
  }
  const wider = ceiling.allow ? uncovered(ceiling.allow, n.allow) : [];
  if (wider.length) {
    return {
      what: `network allow ${wider.join(", ")} is beyond ${where}`,
      hint: `the config allows ${ceiling.allow?.length ? ceiling.allow.join(", ") : "nothing"}; ask its owner to add it`,
    };
  }
  if (n.allow_local && !ceiling.allow_local) {
    return { what: `network allow_local is beyond ${where} (allow_local = false)`, hint: "list the addresses instead" };
  }
  return { ...n, deny: [...new Set([...n.deny, ...canonicalRules({ deny: ceiling.deny }).deny])] };
}

/** Whether a narrowing or capping answered a refusal. */
export const isWidening = (x: Network | NetWidening): x is NetWidening => typeof x === "object" && "what" in x;

/**
 * The job's effective policy: the cell's, narrowed by the job's. Both must already be resolved
 * (`resolvePolicy`), so narrowing compares canonical paths. Anything that would widen the cell's
 * policy is refused with E_BAD_REQUEST and a hint. `visible` tells whether the cell's sandbox
 * shows a path at all (a job's `read_only` may not name one it hides).
 */
export function narrow(
  cell: EffectivePolicy,
  job: Policy | undefined,
  cellDir: string,
  visible: (path: string) => boolean = () => true,
): EffectivePolicy {
  if (!job) return cell;
  const widen = (what: string, hint: string) =>
    badRequest(
      `the job's sandbox policy widens its cell's: ${what}`,
      `a job may only narrow its cell's policy; ${hint}`,
    );
  if (job.fs_mode === "writable" && cell.fs_mode === "read_only") {
    throw widen("fs_mode writable on a read_only cell", "change the cell's policy, or use another cell");
  }
  const network = narrowNetwork(cell.network, job.network);
  if (isWidening(network)) throw widen(network.what, network.hint);
  if (job.workspace_config === "allow" && cell.workspace_config === "protect") {
    throw widen("workspace_config allow on a protecting cell", 'give the cell workspace_config = "allow"');
  }
  const fsMode = job.fs_mode ?? cell.fs_mode;
  const listed = listWidening(cell, job, cellDir, visible);
  if (listed) throw widen(listed.what, listed.hint);
  return {
    fs_mode: fsMode,
    network,
    read_write: job.read_write ?? cell.read_write,
    read_only: [...new Set([...cell.read_only, ...(job.read_only ?? [])])],
    deny: [...new Set([...cell.deny, ...(job.deny ?? [])])],
    unix_sockets: job.unix_sockets ?? cell.unix_sockets,
    workspace_config: job.workspace_config ?? cell.workspace_config,
    env: { pass: job.env?.pass ?? cell.env.pass, set: { ...cell.env.set, ...(job.env?.set ?? {}) } },
  };
}

/**
 * The first of a job's read_write, unix_sockets, read_only paths and env.pass names that its
 * cell's policy does not give it (or that lies in one of the cell's deny paths), as what and hint.
 */
function listWidening(
  cell: EffectivePolicy,
  job: Policy,
  cellDir: string,
  visible: (path: string) => boolean,
): { what: string; hint: string } | null {
  for (const p of job.read_write ?? []) {
    const ok = cell.read_write.some((c) => within(p, c)) || (cell.fs_mode === "writable" && within(p, cellDir));
    if (!ok) return { what: `read_write ${p} is not writable in the cell`, hint: "add it to the cell's read_write" };
    const denied = cell.deny.find((d) => within(p, d));
    if (denied) {
      return {
        what: `read_write ${p} lies in the cell's deny path ${denied}`,
        hint: "only the cell's own policy may carve out of its deny paths",
      };
    }
  }
  for (const p of job.unix_sockets ?? []) {
    const denied = cell.deny.find((d) => within(p, d));
    if (denied)
      return { what: `unix_sockets ${p} lies in the cell's deny path ${denied}`, hint: "choose another socket" };
    if (!cell.unix_sockets.includes(p))
      return { what: `unix_sockets ${p} is not allowed by the cell`, hint: "add it to the cell's unix_sockets" };
  }
  for (const p of job.read_only ?? []) {
    if (!visible(p)) return { what: `read_only ${p} is hidden in the cell`, hint: "add it to the cell's read_only" };
  }
  for (const name of job.env?.pass ?? []) {
    if (!cell.env.pass.includes(name))
      return { what: `env.pass ${name} is not passed by the cell`, hint: "add it to the cell's env.pass" };
  }
  return null;
}

/**
 * Resolve every path to its canonical form (symlinks, `..`, trailing slashes). A read_write,
 * read_only or unix_sockets path must exist; a deny path that does not exist is dropped (there
 * is nothing to hide).
 *
 * `as`: the user who named the paths, when planterd (root) resolves them for someone else (a peer's
 * policy, a peer's cell policy at each of its jobs). Every directory on the way must then be
 * searchable by that user, and the path root goes on with is the one that user's own lookup
 * reached: a symlink the user retargets between the check and root's lookup, or after the cell
 * was made, never makes root resolve (and bind, or answer about) a path the user cannot reach.
 * What is bound is then opened as exactly that path (`openChecked`).
 */
export function resolvePolicy<P extends Policy>(p: P, writable: string[] = [], as: Resolver | null = null): P {
  const must = (given: string, field: string) => {
    const path = bare(given);
    const planted = plantedSymlink(path, writable);
    if (planted) {
      throw badRequest(
        `sandbox ${field} path ${path} is refused: ${planted}`,
        "a symlink a job could have planted is never followed into a bind; name its target itself if you mean it",
      );
    }
    return as ? canonicalAs(path, as, `sandbox ${field} path`) : canonical(path, `sandbox ${field} path`);
  };
  const out = { ...p };
  if (p.read_write) out.read_write = p.read_write.map((x) => must(x, "read_write"));
  if (p.read_only) out.read_only = p.read_only.map((x) => must(x, "read_only"));
  if (p.unix_sockets) out.unix_sockets = p.unix_sockets.map((x) => must(x, "unix_sockets"));
  // A trailing slash on a file's path makes it "not exist" (ENOTDIR): never a reason to drop a deny.
  // A missing one is kept (its existing head resolved; a trailing slash says "a directory"): it
  // may appear while a job runs, and the launch holds it with a placeholder.
  if (p.deny)
    out.deny = [
      ...new Set(
        p.deny.map((x) => {
          const b = bare(x);
          // A deny path only hides more: one the user cannot reach is resolved as root names it.
          const found = as ? resolveAs(b, as) : null;
          if (found && "path" in found) return found.path;
          return existsSync(b) ? realpathSync(b) : missingPath(b, x !== b && b !== "/");
        }),
      ),
    ];
  return out;
}

/**
 * A missing path in canonical form: its nearest existing ancestor resolved, the rest as written
 * (normalised), with a trailing slash when `dir`.
 */
function missingPath(p: string, dir: boolean): string {
  const parts = normalize(p).split("/").filter(Boolean);
  let head = parts.length;
  while (head > 0 && !existsSync(`/${parts.slice(0, head).join("/")}`)) head--;
  const base = realpathSync(`/${parts.slice(0, head).join("/")}`);
  const rest = parts.slice(head).join("/");
  return `${base === "/" ? "" : base}/${rest}${dir ? "/" : ""}`;
}

/** A path without trailing slashes (`/` stays `/`). */
const bare = (p: string) => p.replace(/\/+$/, "") || "/";

/** `resolvePolicy` for a complete policy. */
export function resolvePolicyPaths(
  p: EffectivePolicy,
  writable: string[] = [],
  as: Resolver | null = null,
): EffectivePolicy {
  return resolvePolicy(p as Policy, writable, as) as EffectivePolicy;
}

/**
 * Why a resolved policy is unsafe, or null: a bind over planter's own paths, a writable system
 * directory, a unix socket path that is no socket, a denied file with other hard links (the job
 * could read it through them).
 */
export function unsafePolicy(p: EffectivePolicy, protect: string[]): string | null {
  for (const [list, write] of [
    [p.read_write, true],
    [p.read_only, false],
    [p.unix_sockets, false],
  ] as const) {
    for (const x of list) {
      const why = unsafeBind(x, write, { protect });
      if (why) return `sandbox path ${x}: ${why}`;
    }
  }
  for (const x of p.unix_sockets) {
    if (!lstatSync(x).isSocket()) return `sandbox unix_sockets path ${x} is not a Unix socket`;
  }
  // Listing a socket lets the job create Unix sockets at all; in the host's network namespace that
  // reaches every abstract socket of the host (X11, D-Bus, container shims), which no list can name.
  if (p.unix_sockets.length && p.network === "host") {
    return `sandbox unix_sockets (${p.unix_sockets.join(", ")}) with network "host" would reach every abstract Unix socket of the host; use network "none" with unix_sockets, or no unix_sockets`;
  }
  for (const x of p.deny) {
    // The sandbox's own /proc, /dev and /sys are not the host's: a cover there would hide the
    // sandbox's own (a denied /dev/shm once took the place of a file planter kept there, and every job failed).
    const kernel = KERNEL_DIRS.find((k) => within(x, k) || within(k, x));
    if (kernel)
      return `sandbox deny path ${x}: it overlaps ${kernel}, which the sandbox provides itself (the host's is never shown)`;
    if (!existsSync(x)) continue;
    const linked = hardLinked(x);
    if (linked) return `sandbox deny path ${x}: ${linked}`;
  }
  return null;
}

/** Entries a deny dir's hard-link check looks at before it gives up (and refuses). */
const DENY_WALK_LIMIT = 20_000;

/**
 * Why a denied path is still readable through another name, or null: a file (or a file below a
 * denied dir) with other hard links, which a job could open where they are. A dir too large to
 * check is refused rather than trusted.
 */
export function hardLinked(
  path: string,
  limit = DENY_WALK_LIMIT,
  tooMany: "refuse" | "pass" = "refuse",
): string | null {
  const st = lstatSync(path);
  if (st.isFile())
    return st.nlink > 1 ? `it has ${st.nlink - 1} other hard link(s), through which a job could still read it` : null;
  if (!st.isDirectory()) return null;
  let seen = 0;
  const stack = [path];
  while (stack.length) {
    const dir = stack.pop() as string;
    let entries: import("node:fs").Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (++seen > limit) {
        if (tooMany === "pass") return null;
        return `it holds more than ${limit} entries, too many to check for hard links; deny smaller paths`;
      }
      const full = `${dir}/${e.name}`;
      if (e.isDirectory()) stack.push(full);
      else if (e.isFile() && lstatSync(full).nlink > 1) {
        return `${full} has other hard link(s), through which a job could still read it`;
      }
    }
  }
  return null;
}

/** Read a policy file (JSON, or TOML when it ends in .toml) and validate it. */
export function readPolicyFile(file: string): Policy {
  let raw: unknown;
  try {
    const text = readFileSync(file, "utf8");
    raw = file.endsWith(".toml") ? Bun.TOML.parse(text) : JSON.parse(text);
  } catch (e) {
    throw new PlanterError("E_BAD_REQUEST", `cannot read policy ${file}: ${(e as Error).message}`, {
      hint: 'a policy is a JSON (or .toml) object; see docs/sandbox.md "Policies"',
    });
  }
  const r = v.safeParse(Policy, raw);
  if (!r.success) throw new PlanterError("E_BAD_REQUEST", `invalid policy ${file}: ${summarizeIssues(r.issues)}`);
  return r.output;
}
