/** The group `planter` and its members: getent, groupadd, usermod, gpasswd, groupdel — through one wrapper each. */
import { describe, run } from "./exec.ts";

/** A group's gid and members from `getent group NAME`, or null when it does not exist. */
export async function getentGroup(name: string): Promise<{ gid: number; members: string[] } | null> {
  const r = await run("getent", "group", name);
  if (r.code !== 0) return null;
  const [, , gid, members] = r.stdout.trim().split(":");
  return { gid: Number(gid), members: members ? members.split(",").filter(Boolean) : [] };
}

async function must(program: string, ...args: string[]): Promise<void> {
  const r = await run(program, ...args);
  if (r.code !== 0) throw new Error(describe(program, args, r));
}

export const groupadd = (name: string) => must("groupadd", "--system", name);
export const groupdel = (name: string) => must("groupdel", name);
export const addMember = (user: string, group: string) => must("usermod", "-aG", group, user);
export const removeMember = (user: string, group: string) => must("gpasswd", "-d", user, group);
