import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import {
  CELL_NAME_RE,
  CellCreate,
  JobCreate,
  KillRequest,
  parseBody,
  passthroughCode,
} from "../../lib/api/contract.ts";
import type { PlanterError } from "../../lib/api/errors.ts";
import { bodyHash } from "../../lib/state/idempotency.ts";

describe("cell names", () => {
  test.each(["a", "default", "build-1", "x.y_z", "0", "a".repeat(63)])("%p is valid", (n) => {
    expect(CELL_NAME_RE.test(n)).toBe(true);
  });
  test.each(["", ".", "..", "-a", "_a", ".a", "A", "a/b", "a b", "a".repeat(64), "a\0", "ä"])("%p is refused", (n) => {
    expect(v.is(CellCreate, { name: n })).toBe(false);
  });
});

describe("job bodies", () => {
  const err = (body: unknown) => {
    try {
      parseBody(JobCreate, body, "job");
    } catch (e) {
      return e as PlanterError;
    }
    throw new Error("expected an error");
  };

  test("a minimal body parses", () => {
    expect(parseBody(JobCreate, { argv: ["true"] }, "job")).toEqual({ argv: ["true"] });
  });

  test("errors name the path, what was expected and what was received", () => {
    const e = err({ argv: ["x"], limits: { timeout_ms: "5" } });
    expect(e.code).toBe("E_BAD_REQUEST");
    expect(e.message).toContain("→ at limits.timeout_ms");
    expect(e.details).toEqual({ path: "limits.timeout_ms", expected: "number", received: '"5"' });
  });

  test("unknown fields, empty argv, empty program, NUL bytes and relative cwd are refused", () => {
    expect(err({ argv: ["x"], bogus: 1 }).message).toContain("bogus");
    expect(err({ argv: [] }).message).toContain("argv needs at least the program");
    expect(err({ argv: [""] }).message).toContain("argv[0] must not be empty");
    expect(err({ argv: ["a\0b"] }).message).toContain("NUL bytes");
    expect(err({ argv: ["x"], env: { A: "\0" } }).message).toContain("NUL bytes");
    expect(err({ argv: ["x"], env: { "1A": "x" } }).message).toContain("env name");
    expect(err({ argv: ["x"], cwd: "rel" }).message).toContain("absolute path");
    expect(err({ argv: ["x"], limits: { timeout_ms: 0 } }).message).toContain("limits.timeout_ms");
    expect(err({ argv: ["x"], limits: { timeout_ms: 1.5 } }).message).toContain("limits.timeout_ms");
    expect(err(null).message).toContain("invalid job");
  });

  test("kill requests take known signals only", () => {
    expect(v.is(KillRequest, { signal: "TERM" })).toBe(true);
    expect(v.is(KillRequest, { signal: "SIGTERM" })).toBe(false);
    expect(v.is(KillRequest, { force: "yes" })).toBe(false);
  });
});

describe("exit code passthrough", () => {
  test.each([
    [{ exit_code: 0, signal: null, reason: "exited" }, 0],
    [{ exit_code: 143, signal: "TERM", reason: "terminated_by_user" }, 143],
    [{ exit_code: null, signal: "KILL", reason: "forced_kill" }, 137],
    [{ exit_code: null, signal: null, reason: "spawn_error" }, 127],
    [{ exit_code: null, signal: null, reason: "lost" }, 1],
  ] as const)("%p → %p", (job, code) => {
    expect(passthroughCode(job)).toBe(code);
  });
});

describe("idempotency body hash", () => {
  test("ignores key order and request_ref, but not values", () => {
    expect(bodyHash({ argv: ["a"], cell: "c", request_ref: "1" })).toBe(
      bodyHash({ cell: "c", argv: ["a"], request_ref: "2" }),
    );
    expect(bodyHash({ argv: ["a"] })).not.toBe(bodyHash({ argv: ["b"] }));
    expect(bodyHash({ env: { A: "1", B: "2" } })).toBe(bodyHash({ env: { B: "2", A: "1" } }));
  });
});
