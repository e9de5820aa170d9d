/** Who may talk to planterd: the policy from config `[authz]`, and the decision for one peer. */
import type { InstallMode } from "../paths.ts";
import { parseGroups, read } from "../sandbox/identity.ts";
import type { Peer } from "./peer.ts";

/** The resolved policy: numeric ids. */
export interface AuthzPolicy {
  uids: number[];
  gids: number[];
  /** Names for messages. */
  groupNames: string[];
  strict: boolean;
}

/** A group's gid from /etc/group (no NSS: a group planter relies on is a local one). */
export function groupGid(name: string, groupFile = "/etc/group"): number | null {
  return parseGroups(read(groupFile)).get(name) ?? null;
}

/**
 * System mode's group (socket group and allowed group): PLANTER_GROUP when set (also to "", none),
 * else `[authz] group` (default `planter`). Tests set it so that what the host has installed (a
 * group planter or not) never decides their daemons' layout.
 */
export function systemGroup(cfg: { group?: string }, env: Record<string, string | undefined> = process.env): string {
  return env.PLANTER_GROUP ?? cfg.group ?? "planter";
}

/**
 * The policy: configured uids and groups, plus the defaults — user mode allows the daemon's
 * own uid and root; system mode allows root and members of the system group (`planter`).
 */
export function resolvePolicy(
  cfg: { allowed_uids: number[]; allowed_groups: string[]; strict: boolean; group?: string },
  mode: InstallMode,
  selfUid: number,
  lookup: (name: string) => number | null = groupGid,
  env: Record<string, string | undefined> = process.env,
): AuthzPolicy {
  const uids = new Set<number>([0, ...cfg.allowed_uids]);
  const groups = new Set<string>(cfg.allowed_groups);
  const group = systemGroup(cfg, env);
  if (mode === "user") uids.add(selfUid);
  else if (group) groups.add(group);
  const gids: number[] = [];
  const names: string[] = [];
  for (const g of groups) {
    const gid = /^\d+$/.test(g) ? Number(g) : lookup(g);
    if (gid !== null) {
      gids.push(gid);
      names.push(g);
    }
  }
  return { uids: [...uids].sort((a, b) => a - b), gids, groupNames: names, strict: cfg.strict };
}

export type Decision = { allow: true; warn?: string } | { allow: false; message: string; hint: string };

/** Decide for one peer. Unknown credentials are refused (fail closed) unless strict is off. */
export function decide(policy: AuthzPolicy, peer: Peer | null): Decision {
  const allowed = `allowed: uid ${policy.uids.join(", ")}${policy.groupNames.length ? `; groups ${policy.groupNames.join(", ")}` : ""}`;
  let why: string | null = null;
  if (!peer) why = "planterd could not read the peer's credentials";
  else if (policy.uids.includes(peer.uid)) return { allow: true };
  else if (peer.groups.some((g) => policy.gids.includes(g)) || policy.gids.includes(peer.gid)) return { allow: true };
  else why = `uid ${peer.uid} is not allowed to use planterd (${allowed})`;
  if (!policy.strict) return { allow: true, warn: `${why}; served because [authz] strict = false` };
  const hint = policy.groupNames.includes("planter")
    ? "ask an admin to add you to group planter: sudo usermod -aG planter $USER, then log in again"
    : "add your uid to [authz] allowed_uids (or a group of yours to allowed_groups) in planterd's config and restart it";
  return { allow: false, message: why, hint };
}

/** Rate limit for authz.denied events: at most one per uid per window, counting the rest. */
export class DenialLog {
  private readonly last = new Map<number, { at: number; suppressed: number }>();
  constructor(private readonly windowMs = 10_000) {}

  /** Returns the number of denials suppressed since the last record, or null to skip this one. */
  shouldRecord(uid: number, now = Date.now()): number | null {
    const e = this.last.get(uid);
    if (e && now - e.at < this.windowMs) {
      e.suppressed++;
      return null;
    }
    const suppressed = e?.suppressed ?? 0;
    this.last.set(uid, { at: now, suppressed: 0 });
    if (this.last.size > 10_000) this.last.clear();
    return suppressed;
  }
}
