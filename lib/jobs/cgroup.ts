/**
 * Kernel enforcement of job limits with cgroups, where planterd may make groups: each job's tree
 * runs in a group of its own with a memory limit and a process limit, so the kernel stops a job
 * that outgrows its memory (memfd, SysV shm and tmpfs pages included, which no RSS sample sees),
 * a fork bomb cannot take more than its `pids.max`, and a kill reaches every process the job ever
 * started.
 *
 * cgroup v2, under the daemon's delegated group G (systemd `Delegate=yes`):
 *   G/planterd/     planterd and the exit-status recorders (a group with children holds no processes)
 *   G/jobs/<id>/    one job's tree: memory.max, memory.oom.group, pids.max, cgroup.kill
 * When planterd runs in the root group (a container of its own), G is <mount>/planter.
 *
 * cgroup v1 (hybrid hosts without a usable v2 tree; planterd as root): in each of the memory,
 * pids and (when mounted) freezer hierarchies, under planterd's own group P there:
 *   P/planter/<id>/ memory.limit_in_bytes (+ memsw), pids.max; a kill freezes the group, sends
 *                   SIGKILL to every member and thaws it, so a forking tree cannot outrun it
 * Jobs stay inside planterd's own groups, so limits an operator put on planterd hold for its jobs;
 * P/planter gets a pids.max below P's so a bomb leaves planterd room to work.
 *
 * The v2 path has not run on a real cgroup v2 host (see plans/tracker.md); unit tests run its
 * detection and file writes against a fake tree. The v1 path runs for real in the tests here.
 */
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { heldFiles } from "./proc.ts";

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

/** One mount of a mountinfo text: its filesystem type, super options, the root it shows, its point. */
interface MountEntry {
  fstype: string;
  superOptions: string[];
  root: string;
  point: string;
}

/** The mounts of a mountinfo text (lines without the ` - ` separator or a point are skipped). */
function mountEntries(mountinfo: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const tail = line.slice(sep + 3).split(" ");
    const f = line.slice(0, sep).split(" ");
    if (!f[3] || !f[4]) continue;
    out.push({
      fstype: tail[0] ?? "",
      superOptions: (tail[2] ?? "").split(","),
      root: unescapeOctal(f[3]),
      point: unescapeOctal(f[4]),
    });
  }
  return out;
}

/** The first cgroup2 mount of a mountinfo text: its mount point and the root it shows. */
export function cgroup2Mount(mountinfo: string): { point: string; root: string } | null {
  const m = mountEntries(mountinfo).find((e) => e.fstype === "cgroup2");
  return m ? { root: m.root, point: m.point } : null;
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

/** What the detections read of this host, or why it cannot be read. */
function hostCgroupFiles(): CgroupHost | { why: string } {
  if (process.platform !== "linux") return { why: "cgroups exist on Linux only" };
  const mountinfo = readText("/proc/self/mountinfo");
  const selfCgroup = readText("/proc/self/cgroup");
  if (mountinfo === null || selfCgroup === null) return { why: "cannot read /proc/self/mountinfo" };
  return { mountinfo, selfCgroup, pid: process.pid };
}

/** The detection against this host's real files. */
export function detectHostCgroup(): CgroupProbe {
  const host = hostCgroupFiles();
  return "why" in host ? { ok: false, why: host.why } : detectCgroup(host);
}

/** What the kernel counted in a job's groups: OOM kills and forks refused at pids.max. */
export interface CgroupCounters {
  oomKills: number;
  /** Forks the kernel refused because the group was at its pids.max. */
  pidsHits: number;
}

/** How a job's group ended: its counters and the peak memory the kernel saw. */
export interface CgroupEnd extends CgroupCounters {
  peakBytes: number | null;
}

/** The limits a job's group is made with. */
export interface GroupLimits {
  max_rss_bytes?: number;
  max_pids?: number;
}

/** Per-job groups of one cgroup version: what planterd calls at startup and per job. */
export interface JobGroups {
  readonly mode: "cgroup v2" | "cgroup v1";
  /** pids.max of a job that sets no max_pids. */
  readonly pidsMax: number;
  /** The pids.max all jobs share, set by `prepare` below planterd's own (null: none). */
  readonly sharedPidsMax: number | null;
  /** Make the layout under planterd's own group(s). */
  prepare(pid: number): void;
  /** Make job `id`'s group(s) with its limits; returns the value stored in the job's row. */
  create(id: string, limits: GroupLimits): string;
}

/** Per-job groups under a detected delegated cgroup v2 subtree. */
export class JobCgroups implements JobGroups {
  readonly mode = "cgroup v2";
  readonly sharedPidsMax = null;
  constructor(
    readonly probe: Extract<CgroupProbe, { ok: true }>,
    readonly pidsMax: number,
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
  create(id: string, limits: GroupLimits): string {
    const dir = join(this.probe.base, "jobs", id);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "memory.max"), `${limits.max_rss_bytes ?? "max"}\n`);
    // An OOM kill takes the whole group, never one process of the tree.
    writeFileSync(join(dir, "memory.oom.group"), "1\n");
    writeFileSync(join(dir, "pids.max"), `${limits.max_pids ?? this.pidsMax}\n`);
    return dir;
  }
}

// ---- cgroup v1 ----

/** The v1 hierarchies a job group uses, in the order they are made; freezer is optional (kills fall back to repeated sweeps). */
const V1_CONTROLLERS = ["memory", "pids", "freezer"] as const;
type V1Controller = (typeof V1_CONTROLLERS)[number];

/** A job's v1 groups, one dir per hierarchy. */
export type V1Dirs = Partial<Record<V1Controller, string>>;

/** A usable set of cgroup v1 hierarchies, or why there is none. */
export type CgroupV1Probe = { ok: true; own: V1Dirs } | { ok: false; why: string };

/** Mount points of the v1 hierarchies in a mountinfo text, by controller. */
export function cgroup1Mounts(mountinfo: string): Map<string, { point: string; root: string }> {
  const found = new Map<string, { point: string; root: string }>();
  for (const m of mountEntries(mountinfo)) {
    if (m.fstype !== "cgroup") continue;
    for (const opt of m.superOptions) if (!found.has(opt)) found.set(opt, { root: m.root, point: m.point });
  }
  return found;
}

/** planterd's group in each v1 hierarchy, from /proc/self/cgroup (`N:ctrl,ctrl:/path`). */
export function ownCgroup1Paths(selfCgroup: string): Map<string, string> {
  const paths = new Map<string, string>();
  for (const line of selfCgroup.split("\n")) {
    const m = /^\d+:([^:]+):(.*)$/.exec(line.trim());
    if (!m) continue;
    for (const c of (m[1] as string).split(",")) paths.set(c, m[2] as string);
  }
  return paths;
}

/**
 * Whether planterd can give each job v1 groups: the memory and pids hierarchies mounted, and
 * planterd's own group in each writable (root; v1 has no safe delegation to other users).
 */
export function detectCgroupV1(host: CgroupHost): CgroupV1Probe {
  const writable = host.writable ?? canWrite;
  const mounts = cgroup1Mounts(host.mountinfo);
  const paths = ownCgroup1Paths(host.selfCgroup);
  const own: V1Dirs = {};
  for (const c of V1_CONTROLLERS) {
    const m = mounts.get(c);
    const path = paths.get(c);
    if (!m || path === undefined) {
      if (c === "freezer") continue;
      return { ok: false, why: `the cgroup v1 ${c} hierarchy is not mounted` };
    }
    const rel = m.root !== "/" && path.startsWith(m.root) ? path.slice(m.root.length) : path;
    const dir = rel === "/" || rel === "" ? m.point : join(m.point, rel);
    if (!writable(dir) || !writable(join(dir, "cgroup.procs"))) {
      if (c === "freezer") continue;
      return {
        ok: false,
        why: `cgroup v1 group ${dir} is not writable by planterd (cgroup v1 needs planterd as root)`,
      };
    }
    own[c] = dir;
  }
  return { ok: true, own };
}

/** The v1 detection against this host's real files. */
export function detectHostCgroupV1(): CgroupV1Probe {
  const host = hostCgroupFiles();
  return "why" in host ? { ok: false, why: host.why } : detectCgroupV1(host);
}

/** Tasks planterd keeps for itself below a pids.max an operator set on its own group. */
export const PIDS_RESERVE = 64;

/** Per-job groups in the cgroup v1 memory, pids and freezer hierarchies. */
export class JobCgroupsV1 implements JobGroups {
  readonly mode = "cgroup v1";
  sharedPidsMax: number | null = null;
  constructor(
    readonly own: V1Dirs,
    readonly pidsMax: number,
  ) {}

  private base(c: V1Controller): string | null {
    const dir = this.own[c];
    return dir ? join(dir, "planter") : null;
  }

  /**
   * Make P/planter in each hierarchy. Where planterd's own pids group is limited, its jobs
   * together get that limit less a reserve, so a bomb cannot take the tasks planterd needs.
   */
  prepare(_pid: number): void {
    for (const c of V1_CONTROLLERS) {
      const b = this.base(c);
      if (b) mkdirSync(b, { recursive: true });
    }
    const pids = this.own.pids as string;
    const limit = Number((readText(join(pids, "pids.max")) ?? "max").trim());
    if (Number.isFinite(limit)) {
      this.sharedPidsMax = Math.max(1, limit - PIDS_RESERVE);
      writeFileSync(join(pids, "planter", "pids.max"), `${this.sharedPidsMax}\n`);
    }
  }

  create(id: string, limits: GroupLimits): string {
    const dirs: V1Dirs = {};
    try {
      for (const c of V1_CONTROLLERS) {
        const b = this.base(c);
        if (!b) continue;
        const dir = join(b, id);
        mkdirSync(dir);
        dirs[c] = dir;
      }
      if (limits.max_rss_bytes !== undefined) {
        const mem = dirs.memory as string;
        writeFileSync(join(mem, "memory.limit_in_bytes"), `${limits.max_rss_bytes}\n`);
        // With swap accounting, memory + swap too: a limit must not become a licence to swap.
        if (existsSync(join(mem, "memory.memsw.limit_in_bytes"))) {
          writeFileSync(join(mem, "memory.memsw.limit_in_bytes"), `${limits.max_rss_bytes}\n`);
        }
      }
      writeFileSync(join(dirs.pids as string, "pids.max"), `${limits.max_pids ?? this.pidsMax}\n`);
    } catch (e) {
      for (const d of Object.values(dirs)) removeDir(d);
      throw e;
    }
    return `v1:${JSON.stringify(dirs)}`;
  }
}

// ---- a job's groups as stored, whichever version made them ----

type Stored = { v: 2; dir: string } | { v: 1; dirs: V1Dirs };

function parseStored(stored: string): Stored {
  if (!stored.startsWith("v1:")) return { v: 2, dir: stored };
  try {
    const o = JSON.parse(stored.slice(3)) as Record<string, unknown>;
    const dirs: V1Dirs = {};
    for (const c of V1_CONTROLLERS) {
      if (typeof o[c] === "string") dirs[c] = o[c] as string;
    }
    return { v: 1, dirs };
  } catch {
    return { v: 1, dirs: {} };
  }
}

/**
 * Set a job's limits on groups made before it was known (a warm sandbox's, made with none):
 * memory (v2 memory.max; v1 memory.limit_in_bytes, and memsw where swap is accounted) and pids.max.
 */
export function setGroupLimits(stored: string, limits: GroupLimits, pidsMax: number): void {
  const s = parseStored(stored);
  const pids = `${limits.max_pids ?? pidsMax}\n`;
  if (s.v === 2) {
    writeFileSync(join(s.dir, "memory.max"), `${limits.max_rss_bytes ?? "max"}\n`);
    writeFileSync(join(s.dir, "pids.max"), pids);
    return;
  }
  if (limits.max_rss_bytes !== undefined && s.dirs.memory) {
    writeFileSync(join(s.dirs.memory, "memory.limit_in_bytes"), `${limits.max_rss_bytes}\n`);
    if (existsSync(join(s.dirs.memory, "memory.memsw.limit_in_bytes"))) {
      writeFileSync(join(s.dirs.memory, "memory.memsw.limit_in_bytes"), `${limits.max_rss_bytes}\n`);
    }
  }
  if (s.dirs.pids) writeFileSync(join(s.dirs.pids, "pids.max"), pids);
}

/** Every cgroup.procs file the job's first process writes itself into. */
export function groupProcs(stored: string): string[] {
  const s = parseStored(stored);
  if (s.v === 2) return [join(s.dir, "cgroup.procs")];
  return Object.values(s.dirs).map((d) => join(d, "cgroup.procs"));
}

/** The value of `key` in a flat-keyed file ("key N" lines), 0 when absent. */
const counter = (text: string, key: string) => {
  const line = text.startsWith(`${key} `) ? 0 : text.indexOf(`\n${key} `) + 1;
  if (line === 0 && !text.startsWith(`${key} `)) return 0;
  return Number.parseInt(text.slice(line + key.length + 1), 10) || 0;
};

/** The files a job's counters are in: OOM kills (and their keys), refused forks, tasks now. */
interface CounterFiles {
  oom: string | null;
  oomKeys: string[];
  pidsEvents: string | null;
  pidsCurrent: string | null;
}

function counterFiles(stored: string): CounterFiles {
  const s = parseStored(stored);
  if (s.v === 2) {
    return {
      oom: join(s.dir, "memory.events"),
      oomKeys: ["oom_kill", "oom_group_kill"],
      pidsEvents: join(s.dir, "pids.events"),
      pidsCurrent: join(s.dir, "pids.current"),
    };
  }
  return {
    oom: s.dirs.memory ? join(s.dirs.memory, "memory.oom_control") : null,
    oomKeys: ["oom_kill"],
    pidsEvents: s.dirs.pids ? join(s.dirs.pids, "pids.events") : null,
    pidsCurrent: s.dirs.pids ? join(s.dirs.pids, "pids.current") : null,
  };
}

/** The counters in `f`: refused forks, and OOM kills when `memory` (0 where not read). */
function readCounters(f: CounterFiles, memory: boolean, read: (path: string) => string | null): CgroupCounters {
  let oomKills = 0;
  if (memory && f.oom) {
    const text = read(f.oom) ?? "";
    for (const k of f.oomKeys) oomKills = Math.max(oomKills, counter(text, k));
  }
  return { oomKills, pidsHits: f.pidsEvents ? counter(read(f.pidsEvents) ?? "", "max") : 0 };
}

function readTasks(f: CounterFiles, read: (path: string) => string | null): number | null {
  const t = f.pidsCurrent ? (read(f.pidsCurrent) ?? "").trim() : "";
  return t !== "" && Number.isFinite(Number(t)) ? Number(t) : null;
}

/**
 * What the kernel counted in a job's groups (one or two small reads).
 * `memory`: read the OOM counter too.
 */
export function groupCounters(stored: string, memory = true): CgroupCounters {
  return readCounters(counterFiles(stored), memory, readText);
}

/**
 * A job's counter files held open while it runs: the monitor reads them every tick, one pread
 * each instead of an open, read and close (a file that cannot be held is read by path).
 */
export class GroupFiles {
  private readonly fds = new Map<string, number>();
  private readonly buf = Buffer.allocUnsafe(256);
  private readonly files: CounterFiles;

  constructor(private readonly stored: string) {
    this.files = counterFiles(stored);
  }

  private read = (path: string): string | null => {
    let fd = this.fds.get(path);
    if (fd === undefined) {
      if (heldFiles.open >= heldFiles.max) return readText(path);
      try {
        fd = openSync(path, "r");
      } catch {
        return null;
      }
      this.fds.set(path, fd);
      heldFiles.open++;
    }
    try {
      return this.buf.toString("latin1", 0, readSync(fd, this.buf, 0, this.buf.length, 0));
    } catch {
      // the group was removed: the next read opens the path again
      this.fds.delete(path);
      closeSync(fd);
      heldFiles.open--;
      return null;
    }
  };

  /** `groupCounters` through the held files. */
  counters(memory: boolean): CgroupCounters {
    return readCounters(this.files, memory, this.read);
  }

  /** `groupTasks` through the held files. */
  tasks(): number | null {
    return readTasks(this.files, this.read);
  }

  /**
   * `groupMembers`, read afresh: a v1 `cgroup.procs` held open keeps answering the list it made
   * at its first read.
   */
  members(): number[] {
    return groupMembers(this.stored);
  }

  /** Let go of the files. */
  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    heldFiles.open -= this.fds.size;
    this.fds.clear();
  }
}

/** The peak memory the kernel saw in a job's groups (v2: memory.peak, 5.19+), or null. */
export function groupPeak(stored: string): number | null {
  const s = parseStored(stored);
  const file =
    s.v === 2 ? join(s.dir, "memory.peak") : s.dirs.memory && join(s.dirs.memory, "memory.max_usage_in_bytes");
  const peak = file ? Number((readText(file) ?? "").trim()) : Number.NaN;
  return Number.isFinite(peak) && peak > 0 ? peak : null;
}

/** Tasks in a job's pids group now, or null where unknown. */
export function groupTasks(stored: string): number | null {
  return readTasks(counterFiles(stored), readText);
}

/** What the kernel recorded of a job's groups: OOM kills, peak memory, refused forks. */
export function groupEnd(stored: string): CgroupEnd {
  return { ...groupCounters(stored), peakBytes: groupPeak(stored) };
}

const members = (dir: string): number[] =>
  (readText(join(dir, "cgroup.procs")) ?? "")
    .split("\n")
    .map(Number)
    .filter((p) => p > 0);

/** The processes in a job's group now (its pids group on v1): the job's own, however they left its tree. */
export function groupMembers(stored: string): number[] {
  const s = parseStored(stored);
  const dir = s.v === 2 ? s.dir : (s.dirs.pids ?? s.dirs.freezer ?? s.dirs.memory);
  return dir ? members(dir) : [];
}

const killAll = (pids: number[]) => {
  for (const p of pids) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // gone already
    }
  }
};

/**
 * SIGKILL every process of the job's groups at once: cgroup.kill on v2 (5.14+); on v1 the
 * freezer stops the tree (no fork can race the kill), every member gets SIGKILL, and the thaw
 * lets them die. Without a freezer, sweeps until the group is empty. False where nothing could.
 */
export function killGroup(stored: string): boolean {
  const s = parseStored(stored);
  if (s.v === 2) {
    const f = join(s.dir, "cgroup.kill");
    if (!existsSync(f)) return false;
    try {
      writeFileSync(f, "1\n");
      return true;
    } catch {
      return false;
    }
  }
  const any = s.dirs.freezer ?? s.dirs.pids ?? s.dirs.memory;
  if (!any || !existsSync(any)) return false;
  const fr = s.dirs.freezer;
  // Most jobs end with an empty group: nothing to freeze.
  if (!members(s.dirs.pids ?? any).length && (!fr || !members(fr).length)) return true;
  if (fr) {
    try {
      writeFileSync(join(fr, "freezer.state"), "FROZEN\n");
      for (let i = 0; i < 200 && (readText(join(fr, "freezer.state")) ?? "").trim() === "FREEZING"; i++) {
        Bun.sleepSync(1);
      }
      killAll(members(fr));
    } finally {
      try {
        writeFileSync(join(fr, "freezer.state"), "THAWED\n");
      } catch {
        // removed meanwhile
      }
    }
  }
  const dir = s.dirs.pids ?? any;
  for (let i = 0; i < 50; i++) {
    const left = members(dir);
    if (!left.length) break;
    killAll(left);
  }
  return true;
}

function removeDir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT";
  }
}

/** Remove a job's emptied groups; a group still holding processes stays (false). */
export function removeGroup(stored: string): boolean {
  const s = parseStored(stored);
  if (s.v === 2) return removeDir(s.dir);
  let ok = true;
  for (const d of Object.values(s.dirs)) ok = removeDir(d) && ok;
  return ok;
}
