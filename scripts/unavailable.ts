/** Entries of the multi-call binary that this build does not ship yet. */
import { defineCommand } from "citty";
import { PlanterError } from "../lib/api/errors.ts";

/** A command that explains it is not in this build yet (tracked in plans/tracker.md). */
export function unavailable(name: string, what: string) {
  return defineCommand({
    meta: { name, description: `${what} (not in this build yet)` },
    run() {
      throw new PlanterError("E_UNAVAILABLE", `planter ${name} is not part of this build yet`, {
        hint: "see plans/tracker.md for what is done and what is next",
      });
    },
  });
}
