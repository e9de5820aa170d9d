/**
 * The accounts a system install manages: the group `planter` and its members, and the job user
 * (`[jobs] root_peer_user`, default `planter-job`) — getent, groupadd, usermod, gpasswd,
 * groupdel, useradd, userdel, each through exec.ts.
 */
import { existsSync } from "node:fs";
import { type PasswdEntry, parsePasswd } from "../sandbox/identity.ts";
import { exec } from "./exec.ts";

/** A group's gid and members from `getent group NAME`, or null when it does not exist. */
export async function getentGroup(name: string): Promise<{ gid: number; members: string[] } | null> {
  const r = await exec("getent", ["group", name], { nothrow: true });
  if (r.code !== 0) return null;
  const [, , gid, members] = r.stdout.trim().split(":");
  return { gid: Number(gid), members: members ? members.split(",").filter(Boolean) : [] };
}

/** A user's passwd entry from `getent passwd NAME`, or null when it does not exist. */
export async function getentPasswd(name: string): Promise<PasswdEntry | null> {
  const r = await exec("getent", ["passwd", name], { nothrow: true });
  if (r.code !== 0) return null;
  return parsePasswd(r.stdout).find((e) => e.name === name) ?? null;
}

async function must(program: string, ...args: string[]): Promise<void> {
  await exec(program, args);
}

export const groupadd = (name: string) => must("groupadd", "--system", name);
export const groupdel = (name: string) => must("groupdel", name);
export const addMember = (user: string, group: string) => must("usermod", "-aG", group, user);
export const removeMember = (user: string, group: string) => must("gpasswd", "-d", user, group);

/** The host's nologin shell: /usr/sbin/nologin, else /sbin/nologin (older layouts), else the former. */
export function nologinShell(exists: (p: string) => boolean = existsSync): string {
  return ["/usr/sbin/nologin", "/sbin/nologin"].find(exists) ?? "/usr/sbin/nologin";
}

/** useradd's arguments for a job user: a system uid, its own group, no home dir, no login. */
export const jobUseraddArgs = (name: string, shell: string) => [
  "--system",
  "--user-group",
  "--no-create-home",
  "--home-dir",
  "/nonexistent",
  "--shell",
  shell,
  name,
];

export const useraddJobUser = (name: string, shell: string) => must("useradd", ...jobUseraddArgs(name, shell));
export const userdel = (name: string) => must("userdel", name);
