/** What the lifecycle commands share: their common options. */
import { clientArgs, jsonArg } from "../args.ts";

export const common = {
  ...clientArgs,
  ...jsonArg,
  verbose: { type: "boolean", description: "print stacks with errors" },
} as const;
