/**
 * cgroup v2 enforcement, where the host delegates a cgroup to planterd: each job's tree runs in
 * its own group with memory.max, memory.oom.group and pids.max, so the kernel stops a job that
 * outgrows its memory limit and cgroup.kill reaches every process it ever started.
 *
 * Layout under the daemon's delegated group G (systemd `Delegate=yes`):
 *   G/planterd/     planterd and the exit-status recorders (a group with children holds no processes)
 *   G/jobs/<id>/    one job's tree
 * When planterd runs in the root group (a container of its own), G is <mount>/planter.
 *
 * Not exercised on a real cgroup v2 host yet (see plans/tracker.md); unit tests run the detection
 * and every file write against a fake tree.
 */
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** What the detection reads of the host; tests hand in a fake tree. */
export interface CgroupHost {
  /** Text of /proc/self/mountinfo. */
  mountinfo: string;
  /** Text of /proc/self/cgroup. */
  selfCgroup: string;
  /** planterd's pid. */
  pid: number;
  /** Whether planterd may write `path` (access W_OK by default). */
  writable?: (path: string) => boolean;
}

/** A usable delegated cgroup v2 subtree, or why there is none. */
export type CgroupProbe = { ok: true; mount: string; own: string; base: string } | { ok: false; why: string };

const NEEDED = ["memory", "pids"];

/** The first cgroup2 mount of a mountinfo text: its mount point and the root it shows. */
export function cgroup2Mount(mountinfo: string): { point: string; root: string } | null {
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    if (line.slice(sep + 3).split(" ")[0] !== "cgroup2") continue;
    const f = line.slice(0, sep).split(" ");
    if (f[3] && f[4]) return { root: unescapeOctal(f[3]), point: unescapeOctal(f[4]) };
  }
  return null;
}

/** mountinfo escapes spaces and a few other bytes as \NNN octal. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** The unified-hierarchy path of /proc/self/cgroup (the `0::` line), or null. */
export function ownCgroupPath(selfCgroup: string): string | null {
  for (const line of selfCgroup.split("\n")) if (line.startsWith("0::")) return line.slice(3).trim() || null;
  return null;
}

const canWrite = (p: string) => {
  try {
    accessSync(p, constants.W_OK);
    return true;
  } catch {
    return false;
  }
};

const readText = (p: string): string | null => {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return null;
  }
};

/**
 * Whether planterd can give each job a cgroup v2 group of its own: a cgroup2 hierarchy, the
 * memory and pids controllers in planterd's group, write access to it (delegation), and no
 * other process in it (a group that has children may hold no processes).
 */
export function detectCgroup(host: CgroupHost): CgroupProbe {
  const writable = host.writable ?? canWrite;
  const mount = cgroup2Mount(host.mountinfo);
  if (!mount) return { ok: false, why: "no cgroup v2 hierarchy is mounted (the host uses cgroup v1)" };
  const path = ownCgroupPath(host.selfCgroup);
  if (path === null) return { ok: false, why: "planterd is in no cgroup v2 group (/proc/self/cgroup has no 0:: line)" };
  const rel = mount.root !== "/" && path.startsWith(mount.root) ? path.slice(mount.root.length) || "/" : path;
  let own = rel === "/" ? mount.point : join(mount.point, rel);
  // A planterd started from the leaf an earlier one moved into: the delegated group is its parent.
  if (rel !== "/" && basename(own) === "planterd" && existsSync(join(dirname(own), "jobs"))) own = dirname(own);
  const controllers = (readText(join(own, "cgroup.controllers")) ?? "").trim().split(/\s+/).filter(Boolean);
  const missing = NEEDED.filter((c) => !controllers.includes(c));
  if (missing.length) {
    return {
      ok: false,
      why: `cgroup v2 group ${own} lacks the ${missing.join(" and ")} controller${missing.length > 1 ? "s" : ""} (has: ${controllers.join(" ") || "none"})`,
    };
  }
  for (const f of [own, join(own, "cgroup.procs"), join(own, "cgroup.subtree_control")]) {
    if (!writable(f)) {
      return {
        ok: false,
        why: `cgroup v2 group ${own} is not delegated to planterd (${f} is not writable); run planterd as a systemd unit with Delegate=yes`,
      };
    }
  }
  if (rel === "/") return { ok: true, mount: mount.point, own, base: join(mount.point, "planter") };
  const others = (readText(join(own, "cgroup.procs")) ?? "")
    .split("\n")
    .map((l) => Number(l.trim()))
    .filter((p) => p > 0 && p !== host.pid);
  if (others.length) {
    return {
      ok: false,
      why: `cgroup v2 group ${own} also holds other processes (${others.slice(0, 5).join(" ")}); planterd needs a delegated group of its own (systemd Delegate=yes)`,
    };
  }
  return { ok: true, mount: mount.point, own, base: own };
}

/** The detection against this host's real files. */
export function detectHostCgroup(): CgroupProbe {
  if (process.platform !== "linux") return { ok: false, why: "cgroups exist on Linux only" };
  const mountinfo = readText("/proc/self/mountinfo");
  const selfCgroup = readText("/proc/self/cgroup");
  if (mountinfo === null || selfCgroup === null) return { ok: false, why: "cannot read /proc/self/mountinfo" };
  return detectCgroup({ mountinfo, selfCgroup, pid: process.pid });
}

/** How a job's group ended: OOM kills counted by the kernel and the peak memory it saw. */
export interface CgroupEnd {
  oomKills: number;
  peakBytes: number | null;
}

/** Per-job groups under a detected delegated subtree. */
export class JobCgroups {
  constructor(
    readonly probe: Extract<CgroupProbe, { ok: true }>,
    private readonly pidsMax: number,
  ) {}

  /**
   * Make the layout: planterd leaves its own group for G/planterd (a group with children may
   * hold no processes), then memory and pids are enabled for G's children and G/jobs's children.
   */
  prepare(pid: number): void {
    const { base, own, mount } = this.probe;
    if (base === own) {
      mkdirSync(join(own, "planterd"), { recursive: true });
      writeFileSync(join(own, "planterd", "cgroup.procs"), `${pid}\n`);
    } else {
      writeFileSync(join(mount, "cgroup.subtree_control"), "+memory +pids\n");
      mkdirSync(base, { recursive: true });
    }
    writeFileSync(join(base, "cgroup.subtree_control"), "+memory +pids\n");
    mkdirSync(join(base, "jobs"), { recursive: true });
    writeFileSync(join(base, "jobs", "cgroup.subtree_control"), "+memory +pids\n");
  }

  /** The group of job `id`, created with its limits: memory.max, memory.oom.group = 1, pids.max. */
  create(id: string, maxRssBytes: number | undefined): string {
    const dir = join(this.probe.base, "jobs", id);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "memory.max"), `${maxRssBytes ?? "max"}\n`);
    // An OOM kill takes the whole group, never one process of the tree.
    writeFileSync(join(dir, "memory.oom.group"), "1\n");
    writeFileSync(join(dir, "pids.max"), `${this.pidsMax}\n`);
    return dir;
  }

  /** Kill every process of the group at once (cgroup.kill, Linux 5.14+); false where unsupported. */
  kill(dir: string): boolean {
    const f = join(dir, "cgroup.kill");
    if (!existsSync(f)) return false;
    try {
      writeFileSync(f, "1\n");
      return true;
    } catch {
      return false;
    }
  }

  /** What the kernel recorded of a job's group: OOM kills and peak memory (memory.peak, 5.19+). */
  static end(dir: string): CgroupEnd {
    const events = readText(join(dir, "memory.events")) ?? "";
    const count = (key: string) => Number(new RegExp(`^${key} (\\d+)$`, "m").exec(events)?.[1] ?? 0);
    const peak = Number((readText(join(dir, "memory.peak")) ?? "").trim());
    return {
      oomKills: Math.max(count("oom_kill"), count("oom_group_kill")),
      peakBytes: Number.isFinite(peak) && peak > 0 ? peak : null,
    };
  }

  /** Remove an emptied group; one still holding processes stays (false). */
  static remove(dir: string): boolean {
    try {
      rmdirSync(dir);
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * argv that moves itself into the group whose `cgroup.procs` is `procs`, then execs `argv`: the
 * job's first process is in its group before it can fork. The recorder stays outside, so it
 * outlives an OOM kill of the group and still records the exit status.
 */
export function cgroupArgv(procs: string, argv: string[]): string[] {
  const script =
    '{ echo $$ > "$0"; } 2>/dev/null || { echo "planter: cannot enter cgroup: $0" >&2; exit 125; }\nexec "$@"';
  return ["/bin/sh", "-c", script, procs, ...argv];
}
