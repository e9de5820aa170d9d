/**
 * The network short forms of `run`, `cell create` and `cell update`: `--net-allow`, `--net-deny`
 * (repeatable, or comma lists), `--net-local` and `--net none|host` build a policy's `network`
 * without a policy file, checked entry by entry with the policy's own schema.
 */
import type { ArgDef } from "citty";
import * as v from "valibot";
import { summarizeIssues } from "../api/strings.ts";
import { NetEntry, Network, type Policy, readPolicyFile } from "../sandbox/policy.ts";
import { repeated, usage } from "./args.ts";

/** The options, spread into each command that takes them: a cell's (`set`) or a job's (`narrow`). */
export function netArgs(verb: "set" | "narrow") {
  const entries = "host, *.domain (not the domain itself), host:port, IP or CIDR; repeatable or comma-separated";
  return {
    "net-allow": {
      type: "string",
      description:
        verb === "set"
          ? `let jobs reach only these destinations (an allow list): ${entries}`
          : `narrow the cell's allow list for this job (each entry within one of the cell's): ${entries}`,
      valueHint: "ENTRIES",
    },
    "net-deny": {
      type: "string",
      description: `refuse these even where an allow entry matches (deny wins): ${entries}`,
      valueHint: "ENTRIES",
    },
    "net-local": {
      type: "boolean",
      description:
        "with an allow list: listed names may resolve to loopback, private and link-local addresses (cloud metadata stays refused)",
    },
    net: {
      type: "enum",
      options: ["none", "host"],
      description:
        verb === "set"
          ? "no network at all, or the host's network unfiltered (instead of an allow list)"
          : "none: no network for this job (host: only on a cell that has the host's network)",
    },
  } as const satisfies Record<string, ArgDef>;
}

/** An allow list as a policy gives it (every field optional). */
type NetRulesIn = Exclude<NonNullable<Policy["network"]>, string>;

/** What the short forms were given. */
export interface NetShort {
  allow: string[];
  deny: string[];
  local: boolean;
  mode: "none" | "host" | undefined;
}

/** The short forms of a command line (`args` as citty parsed them, `rawArgs` for the repeated ones). */
export function netShort(rawArgs: string[], args: { net?: string | undefined; "net-local"?: boolean }): NetShort {
  return {
    allow: entries(repeated(rawArgs, "net-allow"), "--net-allow"),
    deny: entries(repeated(rawArgs, "net-deny"), "--net-deny"),
    local: Boolean(args["net-local"]),
    mode: args.net === "none" || args.net === "host" ? args.net : undefined,
  };
}

/** Every entry of comma lists, each checked as a policy's network entries are; the first bad one is named. */
export function entries(values: string[], option: string): string[] {
  const out: string[] = [];
  for (const value of values) {
    for (const item of value.split(",")) {
      const e = item.trim();
      if (!e) {
        throw usage(
          `${option} ${JSON.stringify(value)} has an empty entry`,
          `list entries separated by single commas: ${option} registry.npmjs.org,'*.github.com'`,
        );
      }
      const r = v.safeParse(NetEntry, e);
      if (!r.success) {
        throw usage(`${option}: ${r.issues[0]?.message}`, 'see docs/sandbox.md "Network" for the entries a list takes');
      }
      if (!out.includes(e)) out.push(e);
    }
  }
  return out;
}

/** The network the short forms name, or undefined when none was given. */
export function shortNetwork(s: NetShort): Policy["network"] {
  const list = s.allow.length > 0 || s.deny.length > 0 || s.local;
  if (s.mode && list) {
    throw usage(
      `--net ${s.mode} cannot go with ${listOptions(s)}`,
      "--net none|host is the whole network setting; --net-allow, --net-deny and --net-local make an allow list",
    );
  }
  if (s.mode) return s.mode;
  if (!list) return undefined;
  return {
    ...(s.allow.length ? { allow: s.allow } : {}),
    ...(s.deny.length ? { deny: s.deny } : {}),
    ...(s.local ? { allow_local: true } : {}),
  };
}

/** The list options given, in words: "--net-allow", "--net-allow and --net-local", … */
function listOptions(s: NetShort): string {
  const given = [s.allow.length ? "--net-allow" : "", s.deny.length ? "--net-deny" : "", s.local ? "--net-local" : ""];
  const names = given.filter(Boolean);
  return names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)}` : (names[0] ?? "");
}

/** "makes" or "make", after the list options given. */
const makes = (s: NetShort) => ([s.allow.length, s.deny.length, s.local].filter(Boolean).length > 1 ? "make" : "makes");

/**
 * `policy` (from `--policy FILE`, or none) with the short forms' network merged in: lists join
 * (allow entries of both, deny entries of both); anything that says two things (a file's `none`
 * and an allow list, `host` and `none`, `allow_local: false` and `--net-local`) is a usage error.
 * The result is checked whole as a policy's network is.
 */
export function withShortNetwork(policy: Policy | undefined, s: NetShort, file?: string): Policy | undefined {
  const short = shortNetwork(s);
  if (short === undefined) return policy;
  const given = policy?.network;
  const from = file ? `the policy ${file}` : "the policy";
  let network: NonNullable<Policy["network"]>;
  if (given === undefined) network = short;
  else if (typeof given === "string" || typeof short === "string") {
    if (given !== short) {
      const fileSays = typeof given === "string" ? `network "${given}"` : "an allow list";
      const optionsSay =
        typeof short === "string"
          ? `--net ${short} sets network "${short}"`
          : `${listOptions(s)} ${makes(s)} it an allow list`;
      throw usage(
        `${from} sets ${fileSays}, but ${optionsSay}`,
        `say the network once: in ${file ?? "the policy file"} or with the --net options`,
      );
    }
    network = given;
  } else network = joinLists(given, short, from, file);
  const r = v.safeParse(Network, network);
  if (!r.success) throw usage(`the network options: ${summarizeIssues(r.issues)}`);
  return { ...policy, network };
}

/** Two allow lists as one: the entries of both; `allow_local` said twice must agree. */
function joinLists(given: NetRulesIn, short: NetRulesIn, from: string, file?: string): NetRulesIn {
  if (given.allow_local === false && short.allow_local) {
    throw usage(
      `${from} sets allow_local false and --net-local sets it true`,
      `say it once: in ${file ?? "the policy file"} or with --net-local`,
    );
  }
  const join = (a?: string[], b?: string[]) => (a || b ? [...new Set([...(a ?? []), ...(b ?? [])])] : undefined);
  const allow = join(given.allow, short.allow);
  const deny = join(given.deny, short.deny);
  const local = short.allow_local ?? given.allow_local;
  return {
    ...(allow ? { allow } : {}),
    ...(deny ? { deny } : {}),
    ...(local !== undefined ? { allow_local: local } : {}),
  };
}

/**
 * A request's `sandbox` from `--sandbox`, `--backend`, `--policy FILE` and the network short forms (`run` and
 * `cell create` alike), or undefined when none was given.
 */
export function sandboxFromArgs(
  args: {
    sandbox?: "disabled" | "permissive" | "enforced";
    backend?: "bwrap" | "seatbelt" | "vm";
    policy?: string;
    net?: string;
    "net-local"?: boolean;
  },
  rawArgs: string[],
):
  | { mode?: "disabled" | "permissive" | "enforced"; backend?: "bwrap" | "seatbelt" | "vm"; policy?: Policy }
  | undefined {
  const policy = withShortNetwork(
    args.policy ? readPolicyFile(args.policy) : undefined,
    netShort(rawArgs, args),
    args.policy,
  );
  if (!args.sandbox && !args.backend && !policy) return undefined;
  return {
    ...(args.sandbox ? { mode: args.sandbox } : {}),
    ...(args.backend ? { backend: args.backend } : {}),
    ...(policy ? { policy } : {}),
  };
}
