/** The socket: socket.present, socket.perms (the layout planterd insists on), socket.group-membership. */
import { lstatSync, readFileSync } from "node:fs";
import { shellLine } from "../../cli/output.ts";
import { groupGid, systemGroup } from "../../daemon/authz.ts";
import { checkDir, checkParents, checkSocket, expectedLayout } from "../../daemon/layout.ts";
import { socketDir } from "../../paths.ts";
import { type Check, fail, ok, type Result, skip, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";

const present: Check<DoctorContext> = {
  id: "socket.present",
  description: "the socket file exists at the path clients use",
  async run(ctx) {
    const path = ctx.paths.socketPath;
    try {
      const st = lstatSync(path);
      if (!st.isSocket()) {
        return fail(
          `${path} exists but is not a socket`,
          "something else took the socket's path; move it aside and start planterd",
          `mv ${shellLine([path])} ${shellLine([`${path}.old`])} && ${ctx.commands.start}`,
        );
      }
      return ok(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EACCES") {
        return fail(
          `cannot look into ${socketDir(path)}: permission denied`,
          "in system mode only root and group planter may enter the socket directory (see socket.group-membership)",
          `sudo usermod -aG planter ${invokingUser(ctx)}`,
        );
      }
      return fail(
        `no socket at ${path}`,
        "planterd is not running, or listens elsewhere (PLANTER_SOCKET, PLANTER_HOME or [daemon] socket)",
        ctx.commands.start,
      );
    }
  },
};

const oct = (m: number) => `0${m.toString(8)}`;

const perms: Check<DoctorContext> = {
  id: "socket.perms",
  description: "socket and directory have the owner, group and mode planterd expects; no parent writable by others",
  async run(ctx) {
    const p = await ctx.result("socket.present");
    if (p.status !== "ok") return skip("no socket to check (see socket.present)");
    const path = ctx.paths.socketPath;
    const dir = socketDir(path);
    const system = ctx.paths.mode === "system";
    const group = systemGroup(ctx.config.ok ? ctx.config.config.authz : {}, ctx.env);
    const layout = expectedLayout(
      ctx.paths.mode,
      ctx.uid,
      system && group ? groupGid(group, ctx.groupFile) : null,
      group,
    );
    const problems = [...checkDir(dir, layout), ...checkParents(dir, layout.uid), ...checkSocket(path, layout)];
    if (problems.length) {
      return fail(
        problems.map((x) => x.message).join("; "),
        "planterd checks the layout at startup only: since then it changed, so others may reach the socket (and the next start will refuse)",
        problems.map((x) => asCommand(x.fix, ctx.commands.sudo)).join(" && "),
      );
    }
    const owner = layout.groupName ? `uid ${layout.uid}, group ${layout.groupName}` : `uid ${layout.uid}`;
    return ok(`dir ${oct(layout.dirMode)}, socket ${oct(layout.socketMode)}, ${owner}`);
  },
};

/** A layout fix as one command that can be chained: comments dropped, prose before "or:" dropped. */
export function asCommand(fix: string, sudo: string): string {
  let c = fix.includes("or: ") ? fix.slice(fix.lastIndexOf("or: ") + 4) : fix;
  c = c.replace(/\s+#.*$/, "").trim();
  return c.startsWith("sudo ") ? c : `${sudo}${c}`;
}

/** The user doctor runs for: SUDO_USER under sudo, else the current user (by uid, from the passwd file). */
export function invokingUser(ctx: Pick<DoctorContext, "env" | "uid" | "passwdFile">): string {
  if (ctx.env.SUDO_USER && ctx.uid === 0) return ctx.env.SUDO_USER;
  try {
    for (const line of readFileSync(ctx.passwdFile, "utf8").split("\n")) {
      const f = line.split(":");
      if (f[0] && f[2] === String(ctx.uid)) return f[0];
    }
  } catch {
    // no passwd file: fall back to the environment
  }
  return ctx.env.USER || ctx.env.LOGNAME || `$(id -un)`;
}

/** A user's uid and primary gid from a passwd file. */
export function passwdEntry(user: string, passwdFile: string): { uid: number; gid: number } | null {
  try {
    for (const line of readFileSync(passwdFile, "utf8").split("\n")) {
      const f = line.split(":");
      if (f[0] === user && f[2] && f[3]) return { uid: Number(f[2]), gid: Number(f[3]) };
    }
  } catch {
    return null;
  }
  return null;
}

/** Group `name`'s gid and members from a group file, or null. */
export function groupEntry(name: string, groupFile: string): { gid: number; members: string[] } | null {
  try {
    for (const line of readFileSync(groupFile, "utf8").split("\n")) {
      const f = line.split(":");
      if (f[0] === name && f[2] && /^\d+$/.test(f[2]))
        return {
          gid: Number(f[2]),
          members: (f[3] ?? "")
            .split(",")
            .map((m) => m.trim())
            .filter(Boolean),
        };
    }
  } catch {
    return null;
  }
  return null;
}

/**
 * socket.group-membership in system mode: may `user` use the socket? Root always may; others
 * need group planter (per the group file; `sessionGids`, when given, are the groups the current
 * session really has: a membership added later takes a new login).
 */
export function membershipResult(o: {
  user: string;
  uid: number | null;
  primaryGid: number | null;
  allowedUids: number[];
  groupFile: string;
  sessionGids: number[] | null;
  restart: string;
}): Result {
  if (o.uid === 0) return ok(`${o.user} (uid 0) is always allowed`);
  if (o.uid !== null && o.allowedUids.includes(o.uid)) return ok(`${o.user} (uid ${o.uid}) is in [authz] allowed_uids`);
  const g = groupEntry("planter", o.groupFile);
  if (!g) {
    return fail(
      "group planter does not exist: only root may use the system socket",
      "install creates the group and adds you; by hand: create it, add yourself, restart planterd, log in again",
      `sudo groupadd --system planter && sudo usermod -aG planter ${o.user} && ${o.restart}`,
    );
  }
  const member = g.members.includes(o.user) || o.primaryGid === g.gid;
  if (!member) {
    return fail(
      `${o.user} is not in group planter: planterd refuses their connections`,
      "add the user to group planter, then log in again (or run `newgrp planter`) for it to take effect",
      `sudo usermod -aG planter ${o.user}`,
    );
  }
  if (o.sessionGids && !o.sessionGids.includes(g.gid)) {
    return warn(
      `${o.user} is in group planter, but this session started before that`,
      "group changes take effect at the next login",
      "newgrp planter",
    );
  }
  return ok(`${o.user} is in group planter (gid ${g.gid})`);
}

const membership: Check<DoctorContext> = {
  id: "socket.group-membership",
  description: "system mode: the invoking user (SUDO_USER or you) is in group planter, so planterd serves them",
  async run(ctx) {
    if (ctx.paths.mode !== "system") return skip("user mode: the socket is yours alone, no group involved");
    const user = invokingUser(ctx);
    const viaSudo = Boolean(ctx.env.SUDO_USER) && ctx.uid === 0;
    const pw = viaSudo ? passwdEntry(user, ctx.passwdFile) : { uid: ctx.uid, gid: process.getgid?.() ?? -1 };
    return membershipResult({
      user,
      uid: pw?.uid ?? null,
      primaryGid: pw?.gid ?? null,
      allowedUids: ctx.config.ok ? ctx.config.config.authz.allowed_uids : [],
      groupFile: ctx.groupFile,
      sessionGids: viaSudo ? null : (process.getgroups?.() ?? null),
      restart: ctx.commands.restart,
    });
  },
};

export const socketChecks = [present, perms, membership];
