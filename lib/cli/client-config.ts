/**
 * The config's `[client]` section, the target registry (`[targets.NAME]`) and the options every
 * client command takes (`--socket`, `--target`), apart from lib/config.ts (planterd's whole
 * schema) and the client itself, so that a client command reads its target without loading the rest.
 */
import type { ArgDef } from "citty";
import * as v from "valibot";
import { parseTargetUrl } from "../targets/url.ts";

/** The targets every planter knows: this host's planterd and the agent in the Lima VM. */
export const BUILTIN_TARGETS = ["local", "lima"] as const;
/** Names no registered target may take: the built-in ones, and `all` (what `--targets all` means). */
export const RESERVED_NAMES = [...BUILTIN_TARGETS, "all"] as const;

/** A registered target's name: short, lower case, usable in a TOML table header and a file name. */
export const TargetName = v.pipe(
  v.string(),
  v.regex(/^[a-z][a-z0-9_-]{0,31}$/, "a name of lower-case letters, digits, - and _ (at most 32, a letter first)"),
  v.check((n) => !(RESERVED_NAMES as readonly string[]).includes(n), "local, lima and all are reserved"),
);

/** Where client commands send their requests: local, lima or a registered name (docs/usage.md "Targets"). */
export const Target = v.pipe(
  v.string(),
  v.check((n) => (BUILTIN_TARGETS as readonly string[]).includes(n) || v.is(TargetName, n), "a target name"),
);
export type Target = v.InferOutput<typeof Target>;

/** A target URL, checked as the client will use it. */
const TargetUrl = v.pipe(
  v.string(),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    try {
      parseTargetUrl(dataset.value);
    } catch (e) {
      addIssue({ message: (e as Error).message });
    }
  }),
);
const AbsPath = v.pipe(v.string(), v.startsWith("/", "an absolute path"));

/**
 * `[targets.NAME]`: one registered target. `urls` lists its endpoints (several only for https: reads
 * go round-robin over the healthy ones); the TLS files and the token for https, the key and the
 * known_hosts file for ssh (else ssh's own configuration decides).
 */
export const TargetEntry = v.pipe(
  v.strictObject({
    urls: v.pipe(v.array(TargetUrl), v.minLength(1, "at least one URL")),
    /** https: the CA that signed planterd's certificate (else the system's CAs). */
    ca: v.optional(AbsPath),
    /** https: a client certificate and its key. */
    cert: v.optional(AbsPath),
    key: v.optional(AbsPath),
    /** https: a bearer token, read from this file (0600, the user's own) at each use. */
    token_file: v.optional(AbsPath),
    /** ssh: the private key (ssh -i). */
    identity: v.optional(AbsPath),
    /** ssh: the known_hosts file holding the host's key (else ssh's default ones). */
    known_hosts: v.optional(AbsPath),
  }),
  v.check(
    (t) => t.urls.length === 1 || t.urls.every((u) => u.startsWith("https://")),
    "several URLs only for https endpoints",
  ),
  v.check((t) => (t.cert === undefined) === (t.key === undefined), "cert and key go together"),
);
export type TargetEntry = v.InferOutput<typeof TargetEntry>;

/** `[targets]`: every registered target by name. */
export const TargetsSection = v.record(TargetName, TargetEntry);
export type TargetsSection = v.InferOutput<typeof TargetsSection>;

/**
 * `[client]`: read by client commands (`planter run`, `cell`, `job`, `logs`, `events`), never by
 * planterd, which accepts the section so that one file serves both.
 */
export const ClientSection = v.strictObject({
  /** The default target: "local" (this host's planterd), "lima" (the agent in the Lima VM) or a registered name. */
  target: v.optional(Target),
});
export type ClientSection = v.InferOutput<typeof ClientSection>;

/** The built-in targets a client command can name without registering them. */
export const TARGETS = BUILTIN_TARGETS;

/** --socket, accepted by every client command. */
export const socketArg = {
  socket: {
    type: "string",
    description: "planterd socket path (default: PLANTER_SOCKET, PLANTER_HOME or the mode's path)",
    valueHint: "PATH",
  },
} as const satisfies Record<string, ArgDef>;

/** --target, accepted by every client command (docs/usage.md "Targets"). */
export const targetArg = {
  target: {
    type: "string",
    description:
      "where to send the request: local, lima or a name from `planter target ls` (default: PLANTER_TARGET, the config's [client] target, else local)",
    valueHint: "NAME",
  },
} as const satisfies Record<string, ArgDef>;

/** --targets and --all-targets: the commands that read several targets at once (job ls, events, agents ls). */
export const targetsArg = {
  targets: {
    type: "string",
    description:
      "read these targets at once, comma-separated (all: every registered one and local); rows say their target",
    valueHint: "A,B",
  },
  "all-targets": { type: "boolean", description: "read local and every registered target at once (--targets all)" },
} as const satisfies Record<string, ArgDef>;

/** The root's --all: before the command, every target (`planter --all job ls`); after it, the command's own. */
export const allArg = {
  all: {
    type: "boolean",
    description:
      "before the command: read local and every registered target at once (planter --all job ls, events, agents ls); after it, the command's own --all (job ls --all: every job)",
  },
} as const satisfies Record<string, ArgDef>;

/** --socket and --target: the options of every client command. */
export const clientArgs = { ...socketArg, ...targetArg } as const satisfies Record<string, ArgDef>;
