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
