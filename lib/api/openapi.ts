/**
 * An OpenAPI 3.1 document of the route table (lib/api/routes.ts): paths, methods, path
 * parameters, query values (from their schemas), request bodies (JSON Schema from the valibot
 * schemas) and replies (statuses, content types, the reply type's name). Development only:
 * `make openapi` writes docs/openapi.json, and a test keeps that file equal to what the table
 * says. Nothing of the binary imports this (it needs @valibot/to-json-schema, a dev dependency).
 */
import { toJsonSchema } from "@valibot/to-json-schema";
import { API_VERSION } from "./contract.ts";
import { ERROR_STATUS } from "./errors.ts";
import { PARAM_DOCS, ROUTES, type Route } from "./routes.ts";

/** The reply types' names, as contract.ts declares them (the document names them; it does not spell them out). */
const REPLY_TYPES: Record<keyof typeof ROUTES, string> = {
  health: "{ ok: boolean }",
  ready: "ReadyInfo",
  version: "VersionInfo",
  createCell: "Cell",
  listCells: "{ cells: Cell[] }",
  getCell: "Cell",
  updateCell: "Cell",
  removeCell: "{ removed: string, jobs_removed: number }",
  createJob: "Job (attach=1: frames, lib/api/frames.ts)",
  listJobs: "{ jobs: Job[], next_after: string | null }",
  getJob: "Job",
  removeJob: "{ removed: string }",
  killJob: "Job",
  waitJob: "{ job: Job, timed_out: boolean }",
  logs: "LogChunk",
  logStream: "the log's bytes",
  logFd: "an empty 200 answer whose head carries the log file's descriptor (SCM_RIGHTS)",
  events: "EventRecord per line",
  attach: "101 Switching Protocols: a WebSocket of terminal frames",
  writeStdin: "{ written: number, eof: boolean }",
  screen: "ScreenInfo",
  listAgents: "AgentList { agents: Agent[], cursor: string } (lib/agents/model.ts)",
  watchAgents: "AgentWatchLine per line: snapshot | delta | reset (lib/agents/model.ts)",
  reportAgent: "AgentReportResult { outcome, changed, agent: Agent }",
  agentSend: "ActionResult { action_id, runtime_id, type, replayed, written } (lib/agents/actions.ts)",
  agentKill: "ActionResult { action_id, runtime_id, type, replayed }",
  agentOutput: "ActionResult { action_id, runtime_id, type, replayed, lines }",
  reportTargetHealth: "TargetHealthResult { recorded, target, from, to } (lib/targets/health.ts)",
};

const openapiPath = (path: string) => path.replace(/:([a-z_]+)/g, "{$1}");

function operation(name: keyof typeof ROUTES, route: Route) {
  const parameters: unknown[] = [];
  for (const m of route.path.matchAll(/:([a-z_]+)/g))
    parameters.push({ name: m[1], in: "path", required: true, schema: { type: "string" } });
  for (const [name, schema] of Object.entries(route.query))
    parameters.push({ name, in: "query", required: false, schema: PARAM_DOCS.get(schema) ?? { type: "string" } });
  const types = route.types ?? [route.reply === "lines" ? "application/x-ndjson" : "application/json"];
  const responses: Record<string, unknown> = {};
  for (const status of route.ok) {
    responses[String(status)] = {
      description: REPLY_TYPES[name],
      content: Object.fromEntries(types.map((t) => [t, {}])),
    };
  }
  responses.default = {
    description: 'the error envelope {"error": {code, message, hint?, details?}}',
    content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
  };
  return {
    operationId: name,
    summary: route.summary,
    ...(parameters.length ? { parameters } : {}),
    ...(route.body
      ? {
          requestBody: {
            required: true,
            content: {
              "application/json": {
                schema: toJsonSchema(route.body, { errorMode: "ignore", target: "openapi-3.0" } as never),
              },
              ...(route.bytesBody ? { [route.bytesBody]: { schema: { type: "string", format: "binary" } } } : {}),
            },
          },
        }
      : {}),
    responses,
  };
}

export function openapi(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [name, route] of Object.entries(ROUTES) as [keyof typeof ROUTES, Route][]) {
    const path = openapiPath(route.path);
    paths[path] = { ...paths[path], [route.method.toLowerCase()]: operation(name, route) };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "planterd API",
      version,
      description: `HTTP/1.1 + JSON on planterd's Unix socket, API version ${API_VERSION} under /v1. Generated from lib/api/routes.ts; the reply types are declared in lib/api/contract.ts and described in docs/api.md.`,
    },
    paths,
    components: {
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["code", "message"],
              properties: {
                code: {
                  type: "string",
                  enum: Object.keys(ERROR_STATUS).filter((c) => ERROR_STATUS[c as keyof typeof ERROR_STATUS] !== 0),
                },
                message: { type: "string" },
                hint: { type: "string" },
                details: { type: "object" },
              },
            },
          },
        },
      },
    },
  };
}

/** The route table as Markdown rows for docs/api.md. */
export function routeTable(): string {
  const rows = ["| route | query | body | reply |", "| --- | --- | --- | --- |"];
  for (const [name, route] of Object.entries(ROUTES) as [keyof typeof ROUTES, Route][]) {
    const query = Object.entries(route.query)
      .map(([k, s]) => {
        const d = PARAM_DOCS.get(s) ?? {};
        const range =
          d.enum !== undefined
            ? (d.enum as string[]).join("\\|")
            : d.type === "integer"
              ? `${d.minimum}–${d.maximum}`
              : "text";
        return `\`${k}\` (${range}${d.default !== undefined ? `; ${d.default}` : ""})`;
      })
      .join(", ");
    rows.push(
      `| \`${route.method} ${openapiPath(route.path)}\`<br>${route.summary} | ${query || "—"} | ${route.body ? (route.bodyName ?? "JSON") + (route.bytesBody ? `, or bytes (${route.bytesBody})` : "") : "—"} | ${route.ok.join(", ")}: ${REPLY_TYPES[name].replace(/\|/g, "\\|")} |`,
    );
  }
  return `${rows.join("\n")}\n`;
}

const BEGIN = "<!-- routes: generated by `make openapi` from lib/api/routes.ts -->\n";
const END = "<!-- end of routes -->";

/** docs/api.md with its route table replaced by the table's current rows. */
export function withRouteTable(doc: string): string {
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error("docs/api.md has no routes markers");
  return doc.slice(0, a + BEGIN.length) + routeTable() + doc.slice(b);
}

if (import.meta.main) {
  const { readFileSync, writeFileSync } = await import("node:fs");
  const { join } = await import("node:path");
  const root = join(import.meta.dir, "../..");
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  writeFileSync(join(root, "docs/openapi.json"), `${JSON.stringify(openapi(pkg.version), null, 2)}\n`);
  const md = join(root, "docs/api.md");
  writeFileSync(md, withRouteTable(readFileSync(md, "utf8")));
}
