/** The route table (lib/api/routes.ts): the router built from it, query values, paths, and the documents made from it. */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { openapi, withRouteTable } from "../../lib/api/openapi.ts";
import { pathOf, queryOf, ROUTES } from "../../lib/api/routes.ts";
import { olderDaemon } from "../../lib/cli/lifecycle/common.ts";
import { parseQuery, Router } from "../../lib/daemon/router.ts";
import { routes } from "../../lib/daemon/routes.ts";

const ROOT = join(import.meta.dir, "..", "..");

const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    const err = e as { code: string; message: string; hint?: string };
    return { code: err.code, message: err.message, hint: err.hint };
  }
  throw new Error("expected a refusal");
};

describe("the router is the table", () => {
  test("every route of the table is registered, once, in the table's order", () => {
    expect(routes().routes).toEqual(Object.values(ROUTES));
  });

  test("each path and method finds its route; the parameters are decoded", () => {
    const r = routes();
    for (const route of Object.values(ROUTES)) {
      const path = pathOf(route.path, { id: "j 1/x", name: "c1" });
      const hit = r.match(route.method, path);
      expect(hit.route).toBe(route);
      if (route.path.includes(":id")) expect(hit.params).toEqual({ id: "j 1/x" });
    }
  });
});

describe("query values, parsed by the route's schemas", () => {
  test("typed values and defaults; empty is absent; the first of a repeated name counts", () => {
    const q = (s: string) => parseQuery(ROUTES.listJobs, new URLSearchParams(s));
    expect(q("")).toEqual({ cell: undefined, state: undefined, limit: 100, after: undefined, order: "oldest" });
    expect(q("cell=a&state=running&limit=5&order=newest&after=")).toEqual({
      cell: "a",
      state: "running",
      limit: 5,
      after: undefined,
      order: "newest",
    });
    expect(q("limit=7&limit=9").limit).toBe(7);
    expect(parseQuery(ROUTES.logs, new URLSearchParams("follow=true&wait_ms=0"))).toEqual({
      stream: "stdout",
      offset: 0,
      max_bytes: undefined,
      follow: true,
      wait_ms: 0,
    });
  });

  test("a bad value is refused with its name; an unknown name with the allowed ones", () => {
    const q = (route: (typeof ROUTES)[keyof typeof ROUTES], s: string) =>
      refusal(() => parseQuery(route, new URLSearchParams(s)));
    expect(q(ROUTES.listJobs, "limit=1e3")).toEqual({
      code: "E_BAD_REQUEST",
      message: 'limit must be an integer, not "1e3"',
      hint: undefined,
    });
    expect(q(ROUTES.listJobs, "order=latest").message).toBe('order must be oldest or newest, not "latest"');
    expect(q(ROUTES.events, "limit=10001").message).toBe("limit must be between 1 and 10000, not 10001");
    expect(q(ROUTES.listJobs, "cell=" + "x".repeat(1025)).message).toBe("cell is too long");
    expect(q(ROUTES.getJob, "x=1")).toEqual({
      code: "E_BAD_REQUEST",
      message: 'unknown query parameter "x"',
      hint: "this endpoint takes no query parameters",
    });
    expect(q(ROUTES.waitJob, "timeout=1").hint).toBe("allowed: timeout_ms");
  });

  test("what a client sends is what planterd parses back", () => {
    const sent = { cell: "a b&c", state: "exited", limit: 3, order: "newest" } as const;
    const back = parseQuery(ROUTES.listJobs, new URLSearchParams(queryOf(sent).slice(1)));
    expect(back).toEqual({ ...sent, after: undefined });
    // Flags: true as 1, false left out.
    expect(queryOf({ follow: true, force: false, x: undefined })).toBe("?follow=1");
    expect(pathOf("/v1/jobs/:id/kill", { id: "../x?y" })).toBe("/v1/jobs/..%2Fx%3Fy/kill");
  });
});

describe("the documents made from the table", () => {
  test("docs/openapi.json and the route table in docs/api.md are current (make openapi)", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
    expect(JSON.parse(readFileSync(join(ROOT, "docs/openapi.json"), "utf8"))).toEqual(
      JSON.parse(JSON.stringify(openapi(pkg.version))),
    );
    const md = readFileSync(join(ROOT, "docs/api.md"), "utf8");
    expect(withRouteTable(md)).toBe(md);
  });

  test("every route is in the document, with its query values and body", () => {
    const doc = openapi("0") as { paths: Record<string, Record<string, { parameters?: { name: string }[] }>> };
    for (const route of Object.values(ROUTES)) {
      const op = doc.paths[route.path.replace(/:([a-z_]+)/g, "{$1}")]?.[route.method.toLowerCase()];
      expect(op).toBeDefined();
      const names = (op?.parameters ?? []).map((p) => p.name);
      for (const q of Object.keys(route.query)) expect(names).toContain(q);
    }
  });
});

describe("a planterd older than this planter", () => {
  /** The router and query parsing of a planterd from before PATCH /v1/cells and events by kind. */
  const never = () => {
    throw new Error("not called");
  };
  const older = new Router().add(ROUTES.getCell, never).add(ROUTES.removeCell, never);
  const { kind: _kind, subject: _subject, ...oldQuery } = ROUTES.events.query;
  const oldEvents = { ...ROUTES.events, query: oldQuery };
  const said = (e: unknown, what: string) => refusal(() => olderDaemon(what)(e));
  const caught = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e;
    }
    throw new Error("expected a refusal");
  };

  test("its refusal of a method or a query value is said as what it is, with what to do", () => {
    const hint = "upgrade planterd to this planter's version (install again; a Lima VM: install --lima --upgrade)";
    expect(
      said(
        caught(() => older.match("PATCH", "/v1/cells/web")),
        "cell update",
      ),
    ).toEqual({
      code: "E_BAD_REQUEST",
      message:
        "this planterd does not know cell update: it is older than this planter (it answered: method PATCH is not allowed on /v1/cells/web)",
      hint,
    });
    const q = caught(() => parseQuery(oldEvents, new URLSearchParams("kind=job")));
    expect(said(q, "events by --kind or --subject")).toEqual({
      code: "E_BAD_REQUEST",
      message:
        'this planterd does not know events by --kind or --subject: it is older than this planter (it answered: unknown query parameter "kind")',
      hint,
    });
  });

  test("any other refusal passes as it is", () => {
    const other = caught(() => parseQuery(ROUTES.events, new URLSearchParams("kind=JOB")));
    expect(said(other, "x")).toEqual(refusal(() => parseQuery(ROUTES.events, new URLSearchParams("kind=JOB"))));
  });
});
