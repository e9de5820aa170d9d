/** Who jobs run as: jobs.user, the user a root peer's jobs run as in system mode. */
import { shellLine } from "../../cli/output.ts";
import { DEFAULT_ROOT_PEER_USER } from "../../config.ts";
import { jobUseraddArgs, nologinShell } from "../../host/groups.ts";
import { lookupUser, type PasswdEntry } from "../../sandbox/identity.ts";
import { type Check, fail, ok, type Result, skip } from "../check.ts";
import type { DoctorContext } from "../context.ts";
import { edit } from "./config.ts";

/**
 * jobs.user from the configured `[jobs] root_peer_user` and its passwd entry (or null): it must
 * exist and not be uid 0, or planterd runs a root peer's jobs as nobody.
 */
export function jobUserResult(o: {
  name: string;
  entry: PasswdEntry | null;
  configPath: string;
  shell: string;
  sudo: string;
  restart: string;
}): Result {
  if (o.entry && o.entry.uid !== 0) return ok(`root's jobs run as ${o.name} (uid ${o.entry.uid}, gid ${o.entry.gid})`);
  if (o.entry) {
    return fail(
      `user ${o.name} ([jobs] root_peer_user) is uid 0: planterd never runs a job as root, so root's jobs run as nobody`,
      `name an unprivileged user in [jobs] root_peer_user (default ${DEFAULT_ROOT_PEER_USER}, which install creates), then restart planterd`,
      `${edit(o.configPath, o.sudo)} && ${o.restart}`,
    );
  }
  const create =
    o.name === DEFAULT_ROOT_PEER_USER
      ? "`planter install` creates it; or create it by hand"
      : "install creates only the default user; create this one by hand";
  return fail(
    `user ${o.name} ([jobs] root_peer_user) does not exist: root's jobs run as nobody instead`,
    `${create}, then restart planterd (it looks the user up when it starts)`,
    `${o.sudo}${shellLine(["useradd", ...jobUseraddArgs(o.name, o.shell)])} && ${o.restart}`,
  );
}

const user: Check<DoctorContext> = {
  id: "jobs.user",
  description: "system mode: the user a root peer's jobs run as ([jobs] root_peer_user) exists and is not root",
  async run(ctx) {
    if (ctx.paths.mode !== "system" || ctx.platform !== "linux")
      return skip("user mode: jobs run as the user planterd runs as");
    if (!ctx.config.ok) return skip("the config is invalid (see check config)");
    const name = ctx.config.config.jobs.root_peer_user;
    return jobUserResult({
      name,
      // The lookup planterd itself makes (/etc/passwd, then NSS).
      entry: lookupUser(name, ctx.passwdFile),
      configPath: ctx.paths.configPath,
      shell: nologinShell(),
      sudo: ctx.commands.sudo,
      restart: ctx.commands.restart,
    });
  },
};

export const jobsChecks = [user];
