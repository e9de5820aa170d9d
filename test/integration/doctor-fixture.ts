/**
 * Spawned by doctor.test.ts: runs doctor's library with parameters a test injects in code
 * (systemd present, the version to expect, the passwd file), in a process whose PATH holds the
 * recording shims, and prints the report with the fix commands it chose.
 */
import { runDoctor } from "../../lib/doctor/index.ts";

const opts = JSON.parse(process.argv[2] ?? "{}") as {
  ids?: string[];
  systemd?: boolean;
  expected?: { version: string; commit: string };
  passwdFile?: string;
};
const r = await runDoctor(opts.ids ?? [], {
  systemd: opts.systemd,
  expected: opts.expected,
  passwdFile: opts.passwdFile,
});
process.stdout.write(`${JSON.stringify({ ok: r.ok, checks: r.checks, commands: r.ctx.commands })}\n`);
