/**
 * The MCP server (#17). (a) A `run` of `true` with wait through MCP over stdio (`planter mcp`, the
 * SDK's own client keeping one session) against the CLI's `planter run -- true`, both the compiled
 * binary on one planterd, enforced (bwrap), interleaved. Goal: MCP p50 ≤ 2× the CLI's. (b) What
 * MCP adds to start-up: `planter mcp` answering initialize against `planter --version` (the relay
 * loads no MCP code); and planterd's first /mcp request (the SDK loaded then) against the next.
 */
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { baseEnv } from "../test/harness.ts";
import { BINARY, ensureBinary, header, note, percentile, report, spread, withDaemon } from "./common.ts";

const BENCH = "22 mcp";
const RUNS = 40;

async function timedProc(argv: string[], env: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn(argv, { env, stdin: "ignore", stdout: "ignore", stderr: "inherit" });
  if ((await p.exited) !== 0) throw new Error(`${argv.join(" ")} failed`);
  return performance.now() - t0;
}

async function mcpPost(socket: string, body: unknown): Promise<number> {
  const t0 = performance.now();
  const r = await fetch("http://planterd/mcp", {
    unix: socket,
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify(body),
  } as RequestInit);
  await r.text();
  return performance.now() - t0;
}

export async function mcpBench(): Promise<void> {
  header(`${BENCH}: run true through MCP over stdio vs planter run -- true (compiled, enforced)`);
  await ensureBinary();
  await withDaemon(
    "compiled",
    async (d) => {
      const list = { jsonrpc: "2.0", id: 1, method: "tools/list" };
      const first = await mcpPost(d.socket, list);
      const next: number[] = [];
      for (let i = 0; i < 10; i++) next.push(await mcpPost(d.socket, list));
      note(`planterd's first /mcp request (the SDK loaded): ${first.toFixed(1)} ms; the next ones: ${spread(next, 2)}`);

      const env = baseEnv(d.home);
      const c = new McpClient({ name: "bench", version: "1" });
      const t0 = performance.now();
      await c.connect(new StdioClientTransport({ command: BINARY, args: ["mcp"], env }));
      note(`planter mcp started and answered initialize in ${(performance.now() - t0).toFixed(1)} ms`);
      const version: number[] = [];
      for (let i = 0; i < 10; i++) version.push(await timedProc([BINARY, "--version"], env));
      note(`planter --version: ${spread(version, 1)}`);

      const viaMcp: number[] = [];
      const viaCli: number[] = [];
      for (let i = 0; i < RUNS + 3; i++) {
        const a = performance.now();
        const r = (await c.callTool({ name: "run", arguments: { argv: ["true"], wait_s: 30 } })) as {
          structuredContent?: { job?: { exit_code?: number } };
        };
        const m = performance.now() - a;
        if (r.structuredContent?.job?.exit_code !== 0) throw new Error(`run true: ${JSON.stringify(r)}`);
        const cli = await timedProc([BINARY, "run", "--", "true"], env);
        if (i >= 3) {
          viaMcp.push(m);
          viaCli.push(cli);
        }
      }
      await c.close();
      note(`MCP run true (wait): ${spread(viaMcp, 1)}`);
      note(`planter run -- true: ${spread(viaCli, 1)}`);
      const ratio = percentile(viaMcp, 50) / percentile(viaCli, 50);
      report(BENCH, "MCP run true p50 / CLI run true p50", ratio, "×", "le", 2);
    },
    '[sandbox]\nmode = "enforced"\n',
  );
}
