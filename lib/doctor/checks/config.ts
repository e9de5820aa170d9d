/** The config file and what it says about access: config, authz.strict. */
import { shellLine } from "../../cli/output.ts";
import { type Check, fail, ok, type Result, skip, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";

/** Open a file in an editor (sudoedit where root owns it). */
export const edit = (path: string, sudo: string) =>
  sudo ? `sudoedit ${shellLine([path])}` : `\${EDITOR:-vi} ${shellLine([path])}`;

export const config: Check<DoctorContext> = {
  id: "config",
  description: "the config file parses and every key is known and valid (planterd refuses to start otherwise)",
  async run(ctx) {
    const path = ctx.paths.configPath;
    if (!ctx.config.ok) {
      return fail(
        ctx.config.error.message,
        ctx.config.error.hint ?? `fix ${path} (see docs/install.md "Configuration")`,
        edit(path, ctx.commands.sudo),
      );
    }
    return ok(ctx.config.exists ? `${path}: valid` : `no config file at ${path}: every key has its default`);
  },
};

/** authz.strict from the config's `[authz] strict`. */
export function strictResult(strict: boolean, configPath: string, c: { restart: string; sudo: string }): Result {
  if (strict) return ok("[authz] strict = true: peers the policy does not allow are refused");
  return warn(
    "[authz] strict = false: planterd serves peers its policy would refuse (each with an authz.unstrict event)",
    "anyone who can open the socket can run commands as planterd's user; use this for local development only",
    `${c.sudo}sed -i 's/^\\(\\s*strict\\s*=\\s*\\)false/\\1true/' ${shellLine([configPath])} && ${c.restart}`,
  );
}

export const authzStrict: Check<DoctorContext> = {
  id: "authz.strict",
  description: "[authz] strict is on, so planterd refuses peers its policy does not allow",
  async run(ctx) {
    if (!ctx.config.ok) return skip("the config is invalid (see check config)");
    return strictResult(ctx.config.config.authz.strict, ctx.paths.configPath, ctx.commands);
  },
};

/**
 * mcp: what `[mcp]` lets MCP callers do, and whether its TCP listener can open (planterd only
 * logs a refusal and goes on serving the socket).
 */
export const mcp: Check<DoctorContext> = {
  id: "mcp",
  description: "the MCP server's ceiling holds jobs in a sandbox, and its TCP listener (if set) has a 0600 token",
  async run(ctx) {
    if (!ctx.config.ok) return skip("the config is invalid (see check config)");
    const c = ctx.config.config.mcp;
    const path = ctx.paths.configPath;
    if (!c.enabled) return ok("[mcp] enabled = false: /mcp answers 404 and no TCP port is opened");
    if (c.listen) {
      const { parseListen, readToken } = await import("../../daemon/mcp.ts");
      const problem = (() => {
        try {
          parseListen(c.listen);
          if (!c.token_file) return "[mcp] listen is set without token_file: the TCP listener stays shut";
          readToken(c.token_file);
          if (!c.as_user && ctx.paths.mode === "system") return "[mcp] listen needs as_user in system mode";
          return null;
        } catch (e) {
          return (e as Error).message;
        }
      })();
      if (problem) {
        return fail(
          problem,
          'planterd serves MCP on its socket but does not open the TCP port (docs/mcp.md "The TCP listener")',
          c.token_file && !problem.includes("listen")
            ? `${ctx.commands.sudo}chmod 600 ${shellLine([c.token_file])} && ${ctx.commands.restart}`
            : edit(path, ctx.commands.sudo),
        );
      }
    }
    if (c.min_mode !== "enforced") {
      return warn(
        `[mcp] min_mode = "${c.min_mode}": an MCP caller's job may run unsandboxed (no policy holds it then)`,
        "agents reaching planter through MCP should run enforced",
        edit(path, ctx.commands.sudo),
      );
    }
    return ok(
      `MCP on the socket (/mcp, planter mcp)${c.listen ? ` and on http://${c.listen}/mcp with a bearer token` : ""}; jobs enforced, network host ${c.network.allow_host ? "allowed" : "refused"}`,
    );
  },
};
