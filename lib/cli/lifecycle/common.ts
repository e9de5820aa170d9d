/** What the lifecycle commands share: their common options, and how an older planterd's refusal is said. */
import { PlanterError } from "../../api/errors.ts";
import { clientArgs, jsonArg } from "../args.ts";

export const common = {
  ...clientArgs,
  ...jsonArg,
  verbose: { type: "boolean", description: "print stacks with errors" },
} as const;

/**
 * Rethrow `e`; when it is how a planterd older than this planter refuses `what` (a method or a
 * query value it does not know: a Lima VM not upgraded since the client was), say that instead.
 */
export function olderDaemon(what: string): (e: unknown) => never {
  return (e) => {
    const unknown =
      e instanceof PlanterError &&
      e.code === "E_BAD_REQUEST" &&
      (/^method [A-Z]+ is not allowed on \//.test(e.message) || e.message.startsWith("unknown query parameter "));
    if (!unknown) throw e;
    throw new PlanterError(
      "E_BAD_REQUEST",
      `this planterd does not know ${what}: it is older than this planter (it answered: ${(e as PlanterError).message})`,
      { hint: "upgrade planterd to this planter's version (install again; a Lima VM: install --lima --upgrade)" },
    );
  };
}
