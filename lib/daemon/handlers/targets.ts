/**
 * POST /v1/targets/health: a client says what it saw of one of its targets (lib/targets/health.ts).
 * The caller is the peer planterd identified (socket credentials, or a TCP identity); the event is
 * stored under that uid's name space only, so no peer can write another's targets' health.
 */
import { PlanterError } from "../../api/errors.ts";
import type { Routes } from "../../api/routes.ts";
import { healthSubject, type TargetHealthResult } from "../../targets/health.ts";
import type { Context } from "../context.ts";
import { ok, type Reply, type Req } from "../router.ts";

export function reportHealth(ctx: Context, req: Req<Routes["reportTargetHealth"]>): Reply<TargetHealthResult> {
  const peer = req.peer;
  if (!peer)
    throw new PlanterError("E_UNAUTHORIZED_PEER", "planterd cannot tell who sent this report", {
      hint: "target health is taken only where planterd reads peer credentials (or a TCP identity)",
    });
  const b = req.body;
  const subject = healthSubject(peer.uid, b.target);
  const ledger = ctx.targetHealth;
  const from = ledger.current(ctx.db, subject);
  if (from === b.health) return ok({ recorded: false, target: b.target, from, to: b.health });
  const refused = ledger.take(peer.uid);
  if (refused === null)
    throw new PlanterError(
      "E_RATE_LIMITED",
      `too many target health changes from uid ${peer.uid}: this one is not recorded`,
      {
        hint: `planterd records a burst of changes, then one every few seconds; next in ${ledger.waitMs(peer.uid)} ms`,
      },
    );
  ctx.write((ev) =>
    ev.push({
      kind: "target.health",
      subject,
      data: {
        target: b.target,
        uid: peer.uid,
        from,
        to: b.health,
        health: b.health,
        ...(b.error ? { error: b.error } : {}),
        ...(b.endpoint ? { endpoint: b.endpoint } : {}),
        ...(refused ? { refused } : {}),
        ...req.audit,
      },
    }),
  );
  ledger.remember(subject, b.health);
  return ok({ recorded: true, target: b.target, from, to: b.health });
}
