/**
 * A target's health as planter records it (plans/design.md "Targets"): what a client saw of a
 * target, reported to its own local planterd, which stores each change as a `target.health` event.
 *
 * - **ok**: it answered at the first try, and (for `target check`) every endpoint answered and
 *   planterd is ready;
 * - **degraded**: it answered, but only after a failure — a retry (ssh), an https endpoint that
 *   failed while another answered (or is left out after failing) — or answers without being ready,
 *   or a followed event stream broke and is being resumed;
 * - **down**: no answer within the bounds (every endpoint, every retry), or a followed stream that
 *   could not be resumed three times.
 *
 * Shared by the client (which reports) and the route table (which checks the report); nothing here
 * imports daemon code.
 */
import * as v from "valibot";
import { Target } from "../cli/client-config.ts";

export const HEALTHS = ["ok", "degraded", "down"] as const;
export type Health = (typeof HEALTHS)[number];

/** `POST /v1/targets/health`: one observation of one of the caller's targets. */
export const TargetHealthIn = v.strictObject({
  /** The caller's name for the target (a name in the caller's own registry, or lima). */
  target: Target,
  health: v.picklist(HEALTHS),
  /** What failed, when something did: an error code and its message. */
  error: v.optional(
    v.strictObject({
      code: v.pipe(v.string(), v.regex(/^E_[A-Z_]{1,40}$/, "an error code (E_…)")),
      message: v.pipe(v.string(), v.maxLength(1024)),
    }),
  ),
  /** The endpoint that failed (an https URL, an ssh or unix URL), when one is known. */
  endpoint: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(512))),
});
export type TargetHealthIn = v.InferOutput<typeof TargetHealthIn>;

/** The answer: whether a change was recorded (an observation of the health already recorded is not). */
export interface TargetHealthResult {
  recorded: boolean;
  target: string;
  from: Health;
  to: Health;
}

/** The subject of a target's health events: the reporting uid's own name space (`target/UID/NAME`). */
export function healthSubject(uid: number, target: string): string {
  return `target/${uid}/${target}`;
}
