#!/usr/bin/env bun
/**
 * `doctor` / `planter doctor`: health checks with fix hints. Exit 0 with no failure (warnings
 * allowed), 1 with a failure, 2 when doctor itself broke (or was used wrongly).
 */
import { defineCommand } from "citty";
import { PlanterError } from "../lib/api/errors.ts";
import { jsonArg, parseDuration, socketArg, usage } from "../lib/cli/args.ts";
import { examples } from "../lib/cli/help.ts";
import { allowRest, reportError, runCli } from "../lib/cli/main.ts";
import { printJson, write } from "../lib/cli/output.ts";
import { exitCode } from "../lib/doctor/check.ts";
import { CHECKS, runDoctor } from "../lib/doctor/index.ts";
import { listText, reportJson, reportText } from "../lib/doctor/report.ts";
import { BUILD } from "../lib/version.ts";

const doctor = defineCommand({
  meta: {
    name: "doctor",
    description: "Check this host's planter setup and say how to fix what is wrong",
  },
  args: {
    ids: {
      type: "positional",
      required: false,
      description: "check ids or areas (socket, state…) to run; default all",
    },
    "list-checks": { type: "boolean", description: "list the check ids with what each checks" },
    timeout: { type: "string", description: "time each check may take (default 3s)", valueHint: "DURATION" },
    ...socketArg,
    ...jsonArg,
    verbose: { type: "boolean", description: "print the stack of a check that broke" },
  },
  async run({ args, rawArgs }) {
    const ids = positionals(rawArgs);
    if (args["list-checks"]) {
      if (ids.length) throw usage("--list-checks takes no check ids");
      if (args.json) printJson({ checks: CHECKS.map((c) => ({ id: c.id, description: c.description })) });
      else write(1, listText(CHECKS));
      return 0;
    }
    const timeoutMs = args.timeout ? parseDuration(args.timeout, "--timeout") : undefined;
    if (timeoutMs !== undefined && timeoutMs < 1) throw usage("--timeout must be more than 0");
    try {
      const report = await runDoctor(ids, { socket: args.socket, timeoutMs });
      const { version, commit } = report.ctx.expected;
      if (args.json) printJson(reportJson(report, version));
      else {
        const p = report.ctx.paths;
        write(1, reportText(report, `planter doctor ${version} (${commit}) · ${p.mode} mode · ${p.socketPath}`));
      }
      for (const b of report.errors) {
        const e = b.error as Error;
        write(2, `doctor: check ${b.id} broke: ${e?.message ?? String(b.error)}\n`);
        if (args.verbose && e?.stack) write(2, `${e.stack}\n`);
      }
      return exitCode(report);
    } catch (e) {
      if (e instanceof PlanterError && e.code === "E_USAGE") throw e;
      // Doctor itself broke (not a finding about the host): exit 2, never 1.
      reportError(e, { json: args.json, verbose: args.verbose });
      return 2;
    }
  },
});
allowRest(doctor);
examples(doctor, ["planter doctor", "planter doctor socket daemon.reachable", "planter doctor --json"]);

/** The free arguments: check ids (option values are skipped). */
function positionals(rawArgs: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i] as string;
    if (a === "--") {
      out.push(...rawArgs.slice(i + 1));
      break;
    }
    if ((a === "--timeout" || a === "--socket") && !rawArgs[i + 1]?.startsWith("-")) i++;
    else if (!a.startsWith("-")) out.push(a);
  }
  return out;
}

export default doctor;

if (import.meta.main)
  await runCli(doctor, process.argv.slice(2), "doctor", () => `planter ${BUILD.version} (${BUILD.commit})`);
