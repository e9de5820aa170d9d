/**
 * planter's MCP server (#17, docs/mcp.md), built on the official SDK's low-level `Server` (its
 * tools take JSON Schema, which planter makes from its valibot schemas). planterd serves it at
 * `/mcp` (Streamable HTTP) statelessly: every request gets a server of its own bound to the
 * caller's dispatcher, so nothing of one caller is in memory for another, and a restarted planterd
 * answers the next request as the last. What lasts is planter's own state: a run's task *is* its
 * job (JobTasks), so tasks/get and tasks/result work across restarts too.
 */

import type { CreateTaskOptions, TaskStore } from "@modelcontextprotocol/sdk/experimental/tasks/interfaces.js";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  type CallToolResult,
  ErrorCode,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  type Request,
  type RequestId,
  type Result,
  type Task,
} from "@modelcontextprotocol/sdk/types.js";
import { toJsonSchema } from "@valibot/to-json-schema";
import * as v from "valibot";
import { FINAL_STATES, type Job } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import { ROUTES } from "../api/routes.ts";
import { summarizeIssues } from "../api/strings.ts";
import type { Dispatch } from "../daemon/dispatch.ts";
import { BUILD } from "../version.ts";
import {
  failedRun,
  outputOf,
  type RunArgs,
  runResult,
  startRun,
  TOOLS,
  type Tool,
  type ToolContext,
  type ToolResult,
} from "./tools.ts";

/** JSON Schema of a valibot schema, as tools/list shows it (checks it cannot say are left to the call). */
function schemaOf(s: v.GenericSchema): Record<string, unknown> {
  const out = toJsonSchema(s, { errorMode: "ignore" }) as Record<string, unknown>;
  delete out.$schema;
  return out.type === "object" ? out : { type: "object", ...out };
}

let listed: unknown[] | null = null;
/** tools/list's answer (made once). */
export function toolList(): unknown[] {
  listed ??= TOOLS.map((t) => ({
    name: t.name,
    title: t.title,
    description: t.description,
    inputSchema: schemaOf(t.input),
    outputSchema: schemaOf(t.output),
    annotations: { title: t.title, ...t.annotations },
    ...(t.task ? { execution: { taskSupport: "optional" } } : {}),
  }));
  return listed;
}

/** A planter error as a tool's error result (the model reads it and may try otherwise). */
function errorResult(e: PlanterError): CallToolResult {
  const error = {
    code: e.code,
    message: e.message,
    ...(e.hint ? { hint: e.hint } : {}),
    ...(e.details ? { details: e.details } : {}),
  };
  // No structuredContent: clients check it against the tool's output schema even on errors.
  return {
    isError: true,
    content: [
      { type: "text", text: `${e.code}: ${e.message}${e.hint ? `\nhint: ${e.hint}` : ""}` },
      { type: "text", text: JSON.stringify({ error }) },
    ],
  };
}

const toCall = (r: ToolResult, isError = false): CallToolResult => ({
  content: [{ type: "text", text: r.text }],
  structuredContent: r.structured,
  ...(isError ? { isError: true } : {}),
});

function parseArgs(tool: Tool, args: unknown): unknown {
  const r = v.safeParse(tool.input, args ?? {});
  if (r.success) return r.output;
  throw new McpError(ErrorCode.InvalidParams, `invalid arguments for ${tool.name}: ${summarizeIssues(r.issues)}`);
}

/** How long a task's result is kept: as long as its job (removed with `job rm`). */
const TASK_POLL_MS = 500;

function taskOf(job: Job): Task {
  const status = !FINAL_STATES.has(job.state)
    ? "working"
    : job.state === "killed" && job.reason === "terminated_by_user"
      ? "cancelled"
      : job.state === "exited"
        ? "completed"
        : "failed";
  const message =
    job.state === "exited"
      ? `exit ${job.exit_code}`
      : FINAL_STATES.has(job.state)
        ? `${job.state}: ${job.reason ?? ""}${job.message ? ` (${job.message})` : ""}`
        : job.state;
  return {
    taskId: job.id,
    status,
    statusMessage: message,
    ttl: null,
    createdAt: job.created_at,
    lastUpdatedAt: job.finished_at ?? job.started_at ?? job.created_at,
    pollInterval: TASK_POLL_MS,
  };
}

/**
 * MCP tasks backed by planter's jobs: a task id is a job id, its status the job's, its result the
 * job's output (read when asked). Nothing is kept in memory; a task is seen by whoever may see
 * the job, and cancelling it kills the job.
 */
export class JobTasks implements TaskStore {
  constructor(private readonly t: ToolContext) {}

  private async job(id: string): Promise<Job | null> {
    try {
      return await this.t.api.call(ROUTES.getJob, { params: { id } }, this.t.signal);
    } catch (e) {
      if (e instanceof PlanterError && e.code === "E_NOT_FOUND") return null;
      throw e;
    }
  }

  async createTask(params: CreateTaskOptions, _id: RequestId, _req: Request): Promise<Task> {
    const id = params.context?.job_id;
    if (typeof id !== "string") throw new McpError(ErrorCode.InternalError, "a task is made only for a job");
    const job = await this.job(id);
    if (!job) throw new McpError(ErrorCode.InternalError, `job ${id} is gone`);
    return taskOf(job);
  }

  async getTask(taskId: string): Promise<Task | null> {
    const job = await this.job(taskId);
    return job ? taskOf(job) : null;
  }

  async storeTaskResult(): Promise<void> {
    // The job is the result.
  }

  async getTaskResult(taskId: string): Promise<Result> {
    const job = await this.job(taskId);
    if (!job) throw new McpError(ErrorCode.InvalidParams, `Task not found: ${taskId}`);
    return toCall(await runResult(this.t, job, false), failedRun(job)) as Result;
  }

  async updateTaskStatus(taskId: string, status: Task["status"]): Promise<void> {
    if (status !== "cancelled") return;
    await this.t.api.call(ROUTES.killJob, { params: { id: taskId }, body: {} }, this.t.signal);
  }

  async listTasks(cursor?: string): Promise<{ tasks: Task[]; nextCursor?: string }> {
    const page = await this.t.api.call(
      ROUTES.listJobs,
      { query: { limit: 50, after: cursor, order: "newest" } },
      this.t.signal,
    );
    return { tasks: page.jobs.map(taskOf), ...(page.next_after ? { nextCursor: page.next_after } : {}) };
  }
}

const LOG_URI = /^planter:\/\/jobs\/([^/]+)\/(stdout|stderr)$/;

/** An MCP server for one request of one caller. */
export function mcpServer(api: Dispatch, signal: AbortSignal, maxOutput: number): Server {
  const t: ToolContext = { api, signal, maxOutput };
  const server = new Server(
    { name: "planter", title: "planter", version: BUILD.version },
    {
      capabilities: {
        tools: {},
        resources: {},
        tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } },
      },
      taskStore: new JobTasks(t),
      instructions:
        "planter runs commands in sandboxed cells on this host: use run for any command (it waits up to wait_s seconds, then answers with the job id; job_wait, job_output and job_kill reach the job later). The file tools read and write inside a cell exactly as its jobs may.",
    },
  );
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: toolList() as never }));
  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const tool = TOOLS.find((x) => x.name === req.params.name);
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `no tool named ${JSON.stringify(req.params.name)}`);
    const args = parseArgs(tool, req.params.arguments);
    const token = req.params._meta?.progressToken;
    const call: ToolContext = {
      ...t,
      signal: AbortSignal.any([signal, extra.signal]),
      progress:
        token === undefined
          ? undefined
          : (progress, message) =>
              extra.sendNotification({
                method: "notifications/progress",
                params: { progressToken: token, progress, message },
              }),
    };
    try {
      if (req.params.task) {
        if (!tool.task || !extra.taskStore)
          throw new McpError(ErrorCode.InvalidParams, `${tool.name} does not run as a task`);
        const job = await startRun(args as v.InferOutput<typeof RunArgs>, call);
        const task = await extra.taskStore.createTask({ context: { job_id: job.id }, pollInterval: TASK_POLL_MS });
        return { task } as never;
      }
      const r = await tool.run(args as never, call);
      const job = (r.structured as { job?: Job }).job;
      return toCall(r, tool.name === "run" || tool.name === "job_wait" ? !!job && failedRun(job as Job) : false);
    } catch (e) {
      if (e instanceof PlanterError) return errorResult(e);
      throw e;
    }
  });
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: ["stdout", "stderr"].map((s) => ({
      uriTemplate: `planter://jobs/{job}/${s}`,
      name: `job-${s}`,
      title: `A job's ${s}`,
      description: `The ${s} log of a planter job (the first ${maxOutput} bytes and the last; job_output reads any part)`,
      mimeType: "text/plain",
    })),
  }));
  server.setRequestHandler(ListResourcesRequestSchema, async (req) => {
    const page = await api.call(
      ROUTES.listJobs,
      { query: { limit: 50, after: req.params?.cursor, order: "newest" } },
      signal,
    );
    return {
      resources: page.jobs.flatMap((j) =>
        (["stdout", "stderr"] as const).map((s) => ({
          uri: `planter://jobs/${j.id}/${s}`,
          name: `${j.id}/${s}`,
          title: `${s} of ${j.argv.join(" ").slice(0, 60)} (${j.state})`,
          mimeType: "text/plain",
        })),
      ),
      ...(page.next_after ? { nextCursor: page.next_after } : {}),
    };
  });
  server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
    const m = LOG_URI.exec(req.params.uri);
    if (!m)
      throw new McpError(ErrorCode.InvalidParams, `no resource ${req.params.uri}: planter://jobs/JOB/stdout|stderr`);
    try {
      const out = await outputOf(t, decodeURIComponent(m[1] as string), m[2] as "stdout", maxOutput);
      return { contents: [{ uri: req.params.uri, mimeType: "text/plain", text: out.text }] };
    } catch (e) {
      if (e instanceof PlanterError) throw new McpError(ErrorCode.InvalidParams, `${e.code}: ${e.message}`);
      throw e;
    }
  });
  return server;
}
