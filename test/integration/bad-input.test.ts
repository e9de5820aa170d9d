/**
 * Bad input: every malformed, unknown or conflicting request gets one clear 4xx error envelope
 * with its stable code, and changes nothing (jobs, cells and the event stream stay as they were).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Cell, EventRecord, Job } from "../../lib/api/contract.ts";
import { cleanup, type DaemonHandle, raw, startDaemon } from "../harness.ts";

let d: DaemonHandle;
/** A finished job with 5 bytes of stdout, for the log parameter checks. */
let done: Job;
/** This daemon's event stream id. */
let stream: string;

beforeAll(async () => {
  d = await startDaemon();
  await d.client.createCell({ name: "keep" });
  const j = await d.client.createJob({ argv: ["printf", "hello"], cell: "keep" });
  done = (await d.client.waitJob(j.id, 20_000)).job;
  expect(done.state).toBe("exited");
  const first = await d.client.events({ limit: 1 }).next();
  const cursor = (first.value as EventRecord).cursor;
  stream = cursor.slice(0, cursor.indexOf(":"));
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

interface Snapshot {
  jobs: Job[];
  cells: Cell[];
  events: EventRecord[];
}

/** Everything a bad request must leave alone. */
async function snapshot(): Promise<Snapshot> {
  const events: EventRecord[] = [];
  for await (const e of d.client.events({ limit: 10_000 })) events.push(e);
  return {
    jobs: (await d.client.listJobs({ limit: 1000 })).jobs,
    cells: (await d.client.listCells()).cells,
    events,
  };
}

/** Run `fn` and check that jobs, cells and events are exactly as before. */
async function changesNothing(fn: () => Promise<void>): Promise<void> {
  const before = await snapshot();
  await fn();
  expect(await snapshot()).toEqual(before);
}

type Res = Awaited<ReturnType<typeof raw>>;

/** The response is exactly one error envelope with this status and code; returns the inner error. */
function refused(r: Res, status: number, code: string) {
  expect({ status: r.status, code: r.json?.error?.code }).toEqual({ status, code });
  expect(Object.keys(r.json)).toEqual(["error"]);
  const err = r.json.error as NonNullable<Res["json"]["error"]>;
  expect(typeof err.message).toBe("string");
  expect(err.message.length).toBeGreaterThan(0);
  return err;
}

const post = (path: string, body: unknown) => raw(d.socket, "POST", path, JSON.stringify(body));

/** A schema failure: 400 E_BAD_REQUEST whose message and details name the offending field path. */
async function schemaError(path: string, body: unknown, field: string, what: string) {
  const err = refused(await post(path, body), 400, "E_BAD_REQUEST");
  expect(err.message).toStartWith(`invalid ${what}: × `);
  expect(err.message).toContain(`→ at ${field}`);
  expect(err.details?.path).toBe(field);
  return err;
}

describe("request bodies", () => {
  test("malformed JSON is E_BAD_REQUEST with a hint", async () => {
    await changesNothing(async () => {
      for (const [path, text] of [
        ["/v1/jobs", "{not json"],
        ["/v1/jobs", '{"argv": ["true"]'],
        ["/v1/jobs", "{'argv': ['true']}"],
        ["/v1/cells", '{"name": "x",}'],
        [`/v1/jobs/${done.id}/kill`, "{"],
      ] as const) {
        const err = refused(await raw(d.socket, "POST", path, text), 400, "E_BAD_REQUEST");
        expect(err.message).toStartWith("malformed JSON body: ");
        expect(err.hint).toBe("send a JSON object with Content-Type: application/json");
      }
    });
  });

  test("a body that is not a JSON object is refused as such", async () => {
    await changesNothing(async () => {
      for (const [text, what] of [
        ['["true"]', "an array"],
        ["null", "null"],
        ["42", "a number"],
        ['"true"', "a string"],
        ["true", "a boolean"],
      ] as const) {
        for (const path of ["/v1/jobs", "/v1/cells"]) {
          const err = refused(await raw(d.socket, "POST", path, text), 400, "E_BAD_REQUEST");
          expect(err.message).toBe(`request body must be a JSON object, not ${what}`);
        }
      }
    });
  });

  test("unknown fields, top-level and nested, are named by their path", async () => {
    await changesNothing(async () => {
      const err = await schemaError("/v1/jobs", { argv: ["true"], limits: { bogus: 1 } }, "limits.bogus", "job");
      expect(err).toEqual({
        code: "E_BAD_REQUEST",
        message: 'invalid job: × Invalid key: Expected never but received "bogus" → at limits.bogus',
        details: { path: "limits.bogus", expected: "never", received: '"bogus"' },
      });
      await schemaError("/v1/jobs", { argv: ["true"], bogus: 1 }, "bogus", "job");
      await schemaError(
        "/v1/jobs",
        { argv: ["true"], sandbox: { mode: "disabled", net: "host" } },
        "sandbox.net",
        "job",
      );
      await schemaError("/v1/cells", { name: "fresh", extra: true }, "extra", "cell");
      await schemaError("/v1/cells", { name: "fresh", limits: { max_cpu: 1 } }, "limits.max_cpu", "cell");
      await schemaError(`/v1/jobs/${done.id}/kill`, { signal: "TERM", now: true }, "now", "kill request");
    });
  });

  test("wrong types are named by their path", async () => {
    await changesNothing(async () => {
      const cases: [string, Record<string, unknown>, string, string][] = [
        ["/v1/jobs", { argv: "true" }, "argv", "job"],
        ["/v1/jobs", { argv: ["echo", 1] }, "argv.1", "job"],
        ["/v1/jobs", { argv: ["true"], cwd: 5 }, "cwd", "job"],
        ["/v1/jobs", { argv: ["true"], cwd: "relative/dir" }, "cwd", "job"],
        ["/v1/jobs", { argv: ["true"], env: { A: 1 } }, "env.A", "job"],
        ["/v1/jobs", { argv: ["true"], env: { "1BAD": "x" } }, "env.1BAD", "job"],
        ["/v1/jobs", { argv: ["true"], limits: { timeout_ms: "5" } }, "limits.timeout_ms", "job"],
        ["/v1/jobs", { argv: ["true"], limits: { timeout_ms: -1 } }, "limits.timeout_ms", "job"],
        ["/v1/jobs", { argv: ["true"], limits: { max_rss_bytes: 1.5 } }, "limits.max_rss_bytes", "job"],
        ["/v1/jobs", { argv: ["true"], sandbox: { mode: "weird" } }, "sandbox.mode", "job"],
        ["/v1/jobs", { argv: ["true"], cell: 5 }, "cell", "job"],
        ["/v1/jobs", { argv: ["true"], request_ref: 5 }, "request_ref", "job"],
        ["/v1/jobs", { argv: ["true"], request_ref: "" }, "request_ref", "job"],
        ["/v1/cells", { name: 5 }, "name", "cell"],
        ["/v1/cells", { name: "fresh", dir: "not/absolute" }, "dir", "cell"],
        ["/v1/cells", { name: "fresh", env: { A: null } }, "env.A", "cell"],
        [`/v1/jobs/${done.id}/kill`, { signal: "FOO" }, "signal", "kill request"],
        [`/v1/jobs/${done.id}/kill`, { force: "yes" }, "force", "kill request"],
      ];
      for (const [path, body, field, what] of cases) await schemaError(path, body, field, what);
    });
  });

  test("network lists: a bad entry is named by its path", async () => {
    await changesNothing(async () => {
      const cell = (network: unknown) => ({ name: "fresh", sandbox: { policy: { network } } });
      const entry = await schemaError(
        "/v1/cells",
        cell({ allow: ["ok.test", "bad entry"] }),
        "sandbox.policy.network.allow.1",
        "cell",
      );
      expect(entry.message).toContain('× "bad entry" is not a network entry: whitespace in an entry');
      await schemaError(
        "/v1/jobs",
        { argv: ["true"], sandbox: { policy: { network: { deny: ["*.*.x"] } } } },
        "sandbox.policy.network.deny.0",
        "job",
      );
      await schemaError("/v1/cells", cell("hosts"), "sandbox.policy.network", "cell");
    });
  });

  test("a missing argv, an empty argv and an empty argv[0] are refused at argv", async () => {
    await changesNothing(async () => {
      await schemaError("/v1/jobs", {}, "argv", "job");
      await schemaError("/v1/jobs", { cell: "keep" }, "argv", "job");
      const empty = await schemaError("/v1/jobs", { argv: [] }, "argv", "job");
      expect(empty.message).toContain("× argv needs at least the program to run → at argv");
      const emptyProgram = await schemaError("/v1/jobs", { argv: ["", "x"] }, "argv", "job");
      expect(emptyProgram.message).toBe("invalid job: × argv[0] must not be empty → at argv");
    });
  });

  test("NUL bytes in argv, env, cwd and cell dir strings are refused at their path", async () => {
    await changesNothing(async () => {
      const nul = (path: string, body: Record<string, unknown>, field: string, what: string) =>
        schemaError(path, body, field, what).then((e) => expect(e.message).toContain("× NUL bytes are not allowed"));
      await nul("/v1/jobs", { argv: ["tr\0ue"] }, "argv.0", "job");
      await nul("/v1/jobs", { argv: ["echo", "a", "b\0c"] }, "argv.2", "job");
      await nul("/v1/jobs", { argv: ["true"], env: { A: "x\0y" } }, "env.A", "job");
      await nul("/v1/jobs", { argv: ["true"], cwd: "/tmp\0/x" }, "cwd", "job");
      await nul("/v1/cells", { name: "fresh", dir: "/tmp\0" }, "dir", "cell");
      await nul("/v1/cells", { name: "fresh", env: { A: "\0" } }, "env.A", "cell");
      // A NUL in an env name fails the name rule.
      await schemaError("/v1/jobs", { argv: ["true"], env: { "A\0B": "x" } }, "env.A\0B", "job");
    });
  });

  test("a body over 1 MiB is 413 E_PAYLOAD_TOO_LARGE, declared or streamed", async () => {
    const big = new TextEncoder().encode(JSON.stringify({ argv: ["echo", "x".repeat(1024 * 1024)] }));
    await changesNothing(async () => {
      for (const path of ["/v1/jobs", "/v1/cells"]) {
        const err = refused(await raw(d.socket, "POST", path, big), 413, "E_PAYLOAD_TOO_LARGE");
        expect(err).toEqual({
          code: "E_PAYLOAD_TOO_LARGE",
          message: "request body is larger than 1048576 bytes",
          hint: "send a smaller request (config [api] max_body_bytes sets the limit)",
        });
      }
      // Chunked transfer: no Content-Length, so the limit is enforced while reading.
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < big.length; i += 64 * 1024) c.enqueue(big.subarray(i, i + 64 * 1024));
          c.close();
        },
      });
      const res = await fetch("http://planterd/v1/jobs", {
        unix: d.socket,
        method: "POST",
        body,
        headers: { "content-type": "application/json" },
      });
      expect(res.headers.get("content-length")).not.toBeNull();
      expect({ status: res.status, body: await res.json() }).toEqual({
        status: 413,
        body: {
          error: {
            code: "E_PAYLOAD_TOO_LARGE",
            message: "request body is larger than 1048576 bytes",
            hint: "send a smaller request (config [api] max_body_bytes sets the limit)",
          },
        },
      });
    });
    // The daemon is still serving, and a body just under the limit is fine as far as size goes.
    expect(await d.client.health()).toEqual({ ok: true });
    const under = JSON.stringify({ argv: ["true"], env: { PAD: "x".repeat(1024 * 1024 - 100) } });
    expect(Buffer.byteLength(under)).toBeLessThanOrEqual(1024 * 1024);
    const ok = await raw(d.socket, "POST", "/v1/jobs", under);
    expect(ok.status).toBe(201);
    await d.client.waitJob(ok.json.id as string, 20_000);
  });
});

describe("unknown ids and names", () => {
  test("unknown job ids are 404 E_NOT_FOUND on every job route", async () => {
    await changesNothing(async () => {
      for (const [method, path] of [
        ["GET", "/v1/jobs/j-nope"],
        ["GET", "/v1/jobs/j-nope/logs"],
        ["GET", "/v1/jobs/j-nope/logs?stream=stderr&follow=1&wait_ms=50"],
        ["GET", "/v1/jobs/j-nope/wait?timeout_ms=10"],
        ["POST", "/v1/jobs/j-nope/kill"],
        ["DELETE", "/v1/jobs/j-nope"],
      ] as const) {
        const err = refused(
          await raw(d.socket, method, path, method === "POST" ? "{}" : undefined),
          404,
          "E_NOT_FOUND",
        );
        expect(err).toEqual({
          code: "E_NOT_FOUND",
          message: 'no job "j-nope"',
          hint: "list jobs with `planter job ls`",
        });
      }
    });
  });

  test("unknown cells are 404 E_NOT_FOUND, for cell routes and for a job's cell", async () => {
    await changesNothing(async () => {
      const expected = {
        code: "E_NOT_FOUND",
        message: 'no cell named "ghost"',
        hint: "create it with `planter cell create ghost`",
      };
      expect(refused(await raw(d.socket, "GET", "/v1/cells/ghost"), 404, "E_NOT_FOUND")).toEqual(expected);
      expect(refused(await raw(d.socket, "DELETE", "/v1/cells/ghost?force=1"), 404, "E_NOT_FOUND")).toEqual(expected);
      expect(refused(await post("/v1/jobs", { argv: ["true"], cell: "ghost" }), 404, "E_NOT_FOUND")).toEqual(expected);
    });
  });

  test("a job list page after an unknown job is refused", async () => {
    await changesNothing(async () => {
      const err = refused(await raw(d.socket, "GET", "/v1/jobs?after=j-nope"), 400, "E_BAD_REQUEST");
      expect(err.message).toBe("after=j-nope names no job");
    });
  });

  test("invalid cell names in a body are refused at their path", async () => {
    await changesNothing(async () => {
      for (const name of ["..", ".", "a/b", "", "a".repeat(64), "Upper", "-dash", "sp ace", "ü"]) {
        const c = await schemaError("/v1/cells", { name }, "name", "cell");
        expect(c.message).toContain("a cell name is 1-63 characters of a-z 0-9 . _ - starting with a letter or digit");
        await schemaError("/v1/jobs", { argv: ["true"], cell: name }, "cell", "job");
      }
    });
    // 63 characters is the longest valid name.
    const longest = "a".repeat(63);
    expect((await post("/v1/cells", { name: longest })).status).toBe(201);
    expect((await raw(d.socket, "DELETE", `/v1/cells/${longest}`)).status).toBe(200);
  });

  test("invalid cell names in a path are a bad request, not a cell to create", async () => {
    // A name that can never exist must not answer "create it with `planter cell create NAME`".
    await changesNothing(async () => {
      for (const name of ["Upper", "a%2Fb", "a".repeat(64)]) {
        for (const method of ["GET", "DELETE"]) {
          const err = refused(await raw(d.socket, method, `/v1/cells/${name}`), 400, "E_BAD_REQUEST");
          expect(err.message).toContain("a cell name is 1-63 characters");
        }
      }
    });
  });

  test("a malformed path segment is refused", async () => {
    const err = refused(await raw(d.socket, "GET", "/v1/jobs/%E0%A4%A"), 400, "E_BAD_REQUEST");
    expect(err.message).toBe('malformed path segment "%E0%A4%A"');
  });
});

describe("query parameters", () => {
  const logs = (q: string) => raw(d.socket, "GET", `/v1/jobs/${done.id}/logs?${q}`);

  test("negative, huge and non-numeric log offsets and limits are refused by name", async () => {
    await changesNothing(async () => {
      const cases: [string, string][] = [
        ["offset=-1", "offset must be between 0 and 9007199254740991, not -1"],
        ["offset=99999999999999999999", "offset must be between 0 and 9007199254740991, not 99999999999999999999"],
        ["offset=abc", 'offset must be an integer, not "abc"'],
        ["offset=1.5", 'offset must be an integer, not "1.5"'],
        ["offset=1e3", 'offset must be an integer, not "1e3"'],
        ["offset=0x10", 'offset must be an integer, not "0x10"'],
        ["max_bytes=-5", "max_bytes must be between 0 and 9007199254740991, not -5"],
        ["max_bytes=9007199254740992", "max_bytes must be between 0 and 9007199254740991, not 9007199254740992"],
        ["max_bytes=lots", 'max_bytes must be an integer, not "lots"'],
        ["wait_ms=-1&follow=1", "wait_ms must be between 0 and 3600000, not -1"],
        ["wait_ms=3600001&follow=1", "wait_ms must be between 0 and 3600000, not 3600001"],
        ["stream=stdin", 'stream must be stdout or stderr, not "stdin"'],
        ["follow=yes", 'follow must be 1 or 0, not "yes"'],
      ];
      for (const [q, message] of cases) {
        expect({ q, error: refused(await logs(q), 400, "E_BAD_REQUEST") }).toEqual({
          q,
          error: { code: "E_BAD_REQUEST", message },
        });
      }
    });
  });

  test("an offset beyond the end of the log is refused with the size", async () => {
    await changesNothing(async () => {
      const err = refused(await logs("offset=6"), 400, "E_BAD_REQUEST");
      expect(err).toEqual({
        code: "E_BAD_REQUEST",
        message: "offset 6 is beyond the end of stdout (5 bytes)",
        hint: "resume from next_offset of the last chunk",
        details: { size: 5 },
      });
      const errStderr = refused(await logs("stream=stderr&offset=1"), 400, "E_BAD_REQUEST");
      expect(errStderr.details).toEqual({ size: 0 });
    });
    // The end itself is a valid offset.
    expect((await logs("offset=5")).json).toEqual({
      stream: "stdout",
      offset: 5,
      next_offset: 5,
      size: 5,
      data: "",
      eof: true,
      complete: true,
    });
  });

  test("other out-of-range parameters are refused by name", async () => {
    await changesNothing(async () => {
      for (const [path, message] of [
        ["/v1/jobs?limit=0", "limit must be between 1 and 1000, not 0"],
        ["/v1/jobs?limit=1001", "limit must be between 1 and 1000, not 1001"],
        ["/v1/jobs?limit=ten", 'limit must be an integer, not "ten"'],
        ["/v1/jobs?state=done", 'state must be one of pending, running, exited, failed, killed, lost, not "done"'],
        [`/v1/jobs/${done.id}/wait?timeout_ms=-1`, "timeout_ms must be between 0 and 3600000, not -1"],
        ["/v1/events?limit=0", "limit must be between 1 and 10000, not 0"],
        ["/v1/events?follow=2", 'follow must be 1 or 0, not "2"'],
        ["/v1/cells/keep?force=1", 'unknown query parameter "force"'],
      ] as const) {
        expect({ path, message: refused(await raw(d.socket, "GET", path), 400, "E_BAD_REQUEST").message }).toEqual({
          path,
          message,
        });
      }
      const force = refused(await raw(d.socket, "DELETE", "/v1/cells/keep?force=maybe"), 400, "E_BAD_REQUEST");
      expect(force.message).toBe('force must be 1 or 0, not "maybe"');
    });
  });

  test("unknown query parameters are refused with the allowed ones", async () => {
    await changesNothing(async () => {
      for (const [method, path, hint] of [
        ["GET", `/v1/jobs/${done.id}/logs?offset=0&bogus=1`, "allowed: stream, offset, max_bytes, follow, wait_ms"],
        ["GET", "/v1/jobs?bogus=1", "allowed: cell, state, limit, after, order"],
        ["GET", "/v1/events?bogus=1", "allowed: cursor, follow, limit, kind, subject"],
        ["GET", `/v1/jobs/${done.id}/wait?timeout=5`, "allowed: timeout_ms"],
        ["GET", "/v1/cells?bogus=1", "this endpoint takes no query parameters"],
        ["GET", "/v1/health?bogus=1", "this endpoint takes no query parameters"],
        ["DELETE", "/v1/cells/keep?bogus=1", "allowed: force"],
        ["DELETE", `/v1/jobs/${done.id}?bogus=1`, "this endpoint takes no query parameters"],
      ] as const) {
        const err = refused(await raw(d.socket, method, path), 400, "E_BAD_REQUEST");
        const name = path.includes("timeout=") ? "timeout" : "bogus";
        expect(err).toEqual({ code: "E_BAD_REQUEST", message: `unknown query parameter "${name}"`, hint });
      }
      // Refused before anything is created, even with a valid body.
      for (const [path, body] of [
        ["/v1/jobs?dry_run=1", { argv: ["true"] }],
        ["/v1/cells?dry_run=1", { name: "fresh" }],
      ] as const) {
        const err = refused(await post(path, body), 400, "E_BAD_REQUEST");
        expect(err.message).toBe('unknown query parameter "dry_run"');
      }
    });
  });

  test("an invalid cursor is E_CURSOR_INVALID with the oldest valid cursor", async () => {
    await changesNothing(async () => {
      for (const cursor of ["zzz", "abc:1", `${stream}:`, `${stream}:-1`, `${stream}:1.5`, `${stream}:999999`, ":1"]) {
        const err = refused(
          await raw(d.socket, "GET", `/v1/events?cursor=${encodeURIComponent(cursor)}`),
          400,
          "E_CURSOR_INVALID",
        );
        expect({ cursor, details: err.details }).toEqual({ cursor, details: { oldest_cursor: `${stream}:0` } });
        expect(err.hint).toBeString();
      }
    });
  });
});

describe("request_ref", () => {
  test("a replay returns the first job; another body with the same ref conflicts", async () => {
    const body = { argv: ["printf", "once"], env: { A: "1", B: "2" }, request_ref: "ref-job-1" };
    const first = await post("/v1/jobs", body);
    expect(first.status).toBe(201);
    const id = first.json.id as string;
    await d.client.waitJob(id, 20_000);

    await changesNothing(async () => {
      // Same body, keys in another order: the same request.
      const replay = await post("/v1/jobs", {
        request_ref: "ref-job-1",
        env: { B: "2", A: "1" },
        argv: ["printf", "once"],
      });
      expect(replay.status).toBe(200);
      expect(replay.json).toEqual((await d.client.getJob(id)) as unknown as Record<string, unknown>);

      for (const other of [
        { ...body, argv: ["printf", "twice"] },
        { ...body, env: { A: "1" } },
        { ...body, cell: "keep" },
      ]) {
        const err = refused(await post("/v1/jobs", other), 409, "E_IDEMPOTENCY_CONFLICT");
        expect(err).toEqual({
          code: "E_IDEMPOTENCY_CONFLICT",
          message: 'request_ref "ref-job-1" was already used with a different request',
          hint: "use a new request_ref for a different request",
          details: { request_ref: "ref-job-1", first_result: id },
        });
      }
    });
    const withRef = (await d.client.listJobs({ limit: 1000 })).jobs.filter((j) => j.request_ref === "ref-job-1");
    expect(withRef.map((j) => j.id)).toEqual([id]);
    expect(Buffer.from((await d.client.logs(id, {})).data, "base64").toString()).toBe("once");
  });

  test("request_ref of cells replays and conflicts the same way", async () => {
    const first = await post("/v1/cells", { name: "refcell", request_ref: "ref-cell-1" });
    expect(first.status).toBe(201);
    await changesNothing(async () => {
      const replay = await post("/v1/cells", { name: "refcell", request_ref: "ref-cell-1" });
      expect({ status: replay.status, json: replay.json }).toEqual({ status: 200, json: first.json });
      const err = refused(
        await post("/v1/cells", { name: "refcell2", request_ref: "ref-cell-1" }),
        409,
        "E_IDEMPOTENCY_CONFLICT",
      );
      expect(err.details).toEqual({ request_ref: "ref-cell-1", first_result: "refcell" });
    });
  });

  test("a job ref and a cell ref are separate namespaces", async () => {
    const cell = await post("/v1/cells", { name: "shared-ref", request_ref: "ref-shared" });
    const job = await post("/v1/jobs", { argv: ["true"], request_ref: "ref-shared" });
    expect([cell.status, job.status]).toEqual([201, 201]);
    await d.client.waitJob(job.json.id as string, 20_000);
  });

  test("replaying a ref whose job was removed is a client error, and never runs the job twice", async () => {
    const body = { argv: ["printf", "at-most-once"], request_ref: "ref-removed" };
    const first = await post("/v1/jobs", body);
    expect(first.status).toBe(201);
    await d.client.waitJob(first.json.id as string, 20_000);
    await d.client.removeJob(first.json.id as string);
    await changesNothing(async () => {
      const replay = await post("/v1/jobs", body);
      // Today: 500 E_INTERNAL "UNIQUE constraint failed: idempotency.scope, idempotency.ref".
      expect(replay.json?.error?.code).not.toBe("E_INTERNAL");
      expect(replay.status).toBeGreaterThanOrEqual(400);
      expect(replay.status).toBeLessThan(500);
    });
  });
});

describe("endpoints and methods", () => {
  test("an unknown endpoint is 404 E_NOT_FOUND with a hint", async () => {
    await changesNothing(async () => {
      for (const [method, path] of [
        ["GET", "/v1/nope"],
        ["GET", "/v2/jobs"],
        ["GET", "/"],
        ["GET", "/v1"],
        ["POST", `/v1/jobs/${done.id}/restart`],
        ["GET", `/v1/jobs/${done.id}/logs/extra`],
      ] as const) {
        const err = refused(
          await raw(d.socket, method, path, method === "POST" ? "{}" : undefined),
          404,
          "E_NOT_FOUND",
        );
        expect(err).toEqual({
          code: "E_NOT_FOUND",
          message: `no such endpoint: ${method} ${path}`,
          hint: "the API lives under /v1; see docs/api.md",
        });
      }
    });
  });

  test("a cell update that is malformed, empty, says the network twice or names a bad entry changes nothing", async () => {
    await changesNothing(async () => {
      for (const [body, message] of [
        ["{", "malformed JSON body: "],
        ["[]", "request body must be a JSON object, not an array"],
        ["{}", 'invalid cell update: × Invalid key: Expected "sandbox" but received undefined → at sandbox'],
        ['{"sandbox": {}}', "invalid cell update: × name something to change: mode, policy or network → at sandbox"],
        [
          '{"sandbox": {"policy": {"network": "none"}, "network": "host"}}',
          "invalid cell update: × give the network once: in policy or in network, not both → at sandbox",
        ],
        [
          '{"sandbox": {"network": {"allow": ["ok.example", "10.0.0.1/8"]}}}',
          'invalid cell update: × "10.0.0.1/8" is not a network entry: 10.0.0.1/8 has bits set past its prefix; did you mean 10.0.0.0/8? → at sandbox.network.allow.1',
        ],
        ['{"sandbox": {"mode": "off"}}', "invalid cell update: × Invalid type: "],
        [
          '{"sandbox": {"network": "host"}, "name": "other"}',
          'invalid cell update: × Invalid key: Expected never but received "name" → at name',
        ],
      ] as const) {
        const err = refused(await raw(d.socket, "PATCH", "/v1/cells/keep", body), 400, "E_BAD_REQUEST");
        expect([body, err.message.startsWith(message)]).toEqual([body, true]);
      }
      const missing = refused(
        await raw(d.socket, "PATCH", "/v1/cells/nosuch", '{"sandbox": {"network": "host"}}'),
        404,
        "E_NOT_FOUND",
      );
      expect(missing.message).toBe('no cell named "nosuch"');
      refused(
        await raw(d.socket, "PATCH", "/v1/cells/keep?force=1", '{"sandbox": {"network": "host"}}'),
        400,
        "E_BAD_REQUEST",
      );
    });
  });

  test("a wrong method on a known endpoint is refused, naming the method", async () => {
    await changesNothing(async () => {
      for (const [method, path] of [
        ["PUT", "/v1/jobs"],
        ["DELETE", "/v1/jobs"],
        // PATCH /v1/cells/{name} changes a cell's sandbox (#15); PUT is no method of it.
        ["PUT", "/v1/cells/keep"],
        ["PATCH", "/v1/jobs"],
        ["POST", "/v1/health"],
        ["POST", "/v1/events"],
        ["GET", `/v1/jobs/${done.id}/kill`],
        ["POST", `/v1/jobs/${done.id}/logs`],
        ["PUT", `/v1/jobs/${done.id}`],
      ] as const) {
        const body = method === "GET" ? undefined : JSON.stringify({ argv: ["true"] });
        const err = refused(await raw(d.socket, method, path, body), 405, "E_BAD_REQUEST");
        expect(err.code).toBe("E_BAD_REQUEST");
        expect(err.message).toBe(`method ${method} is not allowed on ${path}`);
        expect(err.hint).toMatch(/^allowed: (GET|POST|DELETE)/);
      }
    });
  });
});
