/** request_ref records: the same ref and body replay the first result; another body conflicts. */
import type { Database } from "bun:sqlite";
import { createHash } from "node:crypto";
import { PlanterError } from "../api/errors.ts";

/** A stable hash of a request body (keys sorted, `request_ref` left out). */
export function bodyHash(body: Record<string, unknown>): string {
  const { request_ref: _ref, ...rest } = body;
  return createHash("sha256").update(stableJson(rest)).digest("hex");
}

function stableJson(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(stableJson).join(",")}]`;
  if (x && typeof x === "object") {
    const o = x as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(x);
}

/** The id recorded for (scope, ref), or null; throws E_IDEMPOTENCY_CONFLICT when the body differs. */
export function lookupRef(db: Database, scope: string, ref: string, hash: string): string | null {
  const row = db.query("SELECT body_hash, result_id FROM idempotency WHERE scope = ? AND ref = ?").get(scope, ref) as {
    body_hash: string;
    result_id: string;
  } | null;
  if (!row) return null;
  if (row.body_hash !== hash) {
    throw new PlanterError(
      "E_IDEMPOTENCY_CONFLICT",
      `request_ref ${JSON.stringify(ref)} was already used with a different request`,
      {
        hint: "use a new request_ref for a different request",
        details: { request_ref: ref, first_result: row.result_id },
      },
    );
  }
  return row.result_id;
}

/** Record the result of a request made with a ref. Call in the same transaction as the creation. */
export function recordRef(db: Database, scope: string, ref: string, hash: string, resultId: string): void {
  db.query("INSERT INTO idempotency (scope, ref, body_hash, result_id, created_at) VALUES (?, ?, ?, ?, ?)").run(
    scope,
    ref,
    hash,
    resultId,
    Date.now(),
  );
}
