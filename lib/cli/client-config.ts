/**
 * The config's `[client]` section and the options every client command takes (`--socket`,
 * `--target`), apart from lib/config.ts (planterd's whole schema) and the client itself, so that a
 * client command reads its target without loading the rest.
 */
import type { ArgDef } from "citty";
import * as v from "valibot";

/** Where client commands send their requests (docs/usage.md "Targets"). */
export const Target = v.picklist(["local", "lima"]);
export type Target = v.InferOutput<typeof Target>;

/**
 * `[client]`: read by client commands (`planter run`, `cell`, `job`, `logs`, `events`), never by
 * planterd, which accepts the section so that one file serves both.
 */
export const ClientSection = v.strictObject({
  /** The default target: "local" (this host's planterd) or "lima" (the agent in the Lima VM). */
  target: v.optional(Target),
});
export type ClientSection = v.InferOutput<typeof ClientSection>;

/** The targets a client command can name. */
export const TARGETS = Target.options;

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
    description: `where to send the request: ${TARGETS.join(" or ")} (default: PLANTER_TARGET, the config's [client] target, else local)`,
    valueHint: TARGETS.join("|"),
  },
} as const satisfies Record<string, ArgDef>;

/** --socket and --target: the options of every client command. */
export const clientArgs = { ...socketArg, ...targetArg } as const satisfies Record<string, ArgDef>;
