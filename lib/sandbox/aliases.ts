/**
 * Other names of a host path through the host's own bind mounts. A cover hides a path, and the
 * kernel resolves a mount point by name: the same directory mounted a second time elsewhere on the
 * host (`mount --bind /var/lib /mnt/var`, a home bound into a chroot, a container's volume) shows
 * it again under that name, in the read-only view every job has of the host. The mount table says
 * where: every mount of the same filesystem whose root lies above the hidden path shows it at its
 * own point, and one whose root lies inside it shows a part of it.
 */
import { readFileSync } from "node:fs";
import { within } from "./paths.ts";

/** One line of a mountinfo text: the filesystem (major:minor), the root it shows, its point, its type. */
export interface MountLine {
  dev: string;
  root: string;
  point: string;
  fstype: string;
}

const unescapeOctal = (s: string) =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/** The mounts of a mountinfo text, in mount order. */
export function parseMountinfo(text: string): MountLine[] {
  const out: MountLine[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f.length < 5 || !f[2] || !f[3] || !f[4]) continue;
    const sep = line.indexOf(" - ");
    const fstype = sep < 0 ? "" : (line.slice(sep + 3).split(" ")[0] ?? "");
    out.push({ dev: f[2], root: unescapeOctal(f[3]), point: unescapeOctal(f[4]), fstype });
  }
  return out;
}

/** The last mount table read and its parse: read again every time, parsed again only when it changed. */
let lastTable: { text: string; mounts: readonly MountLine[] } | null = null;

/** planterd's mount table (the one bwrap copies), or none where there is no /proc. Not to be changed. */
export function hostMounts(): readonly MountLine[] {
  let text: string;
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  if (lastTable?.text !== text) lastTable = { text, mounts: Object.freeze(parseMountinfo(text)) };
  return lastTable.mounts;
}

/**
 * Kernel filesystems the sandbox brings its own of (/proc, /dev): the host's mounted anywhere else
 * (a chroot's `proc`, `dev` and `dev/pts`) would show the host's processes — and through
 * `/proc/PID/root` of a process of the job's user, the whole host — its devices and terminals.
 */
const KERNEL_TYPES = new Set(["proc", "devtmpfs", "devpts"]);

/** Mount points of the host's kernel filesystems outside /proc, /sys and /dev (where the sandbox has its own). */
export function strayKernelMounts(mounts: readonly MountLine[]): string[] {
  return mounts
    .filter((m) => KERNEL_TYPES.has(m.fstype) && !["/proc", "/sys", "/dev"].some((k) => within(m.point, k)))
    .map((m) => m.point);
}

const join = (a: string, rel: string) => (rel ? (a === "/" ? `/${rel}` : `${a}/${rel}`) : a);
const rest = (p: string, base: string) => (p === base ? "" : p.slice(base === "/" ? 1 : base.length + 1));

/**
 * The other paths under which `path` (canonical), or a part of it, is reachable through `mounts`:
 * `/mnt/var/lib/planter` for `/var/lib/planter` when `/var` is also mounted at `/mnt/var`; `/srv/x`
 * when `/var/lib/planter/cells/a` is mounted there. Never `path` itself.
 */
export function aliasesOf(path: string, mounts: readonly MountLine[]): string[] {
  // The mount `path` is on: the deepest point above it, the last mounted there.
  let on: MountLine | null = null;
  for (const m of mounts) if (within(path, m.point) && (!on || m.point.length >= on.point.length)) on = m;
  if (!on) return [];
  const inFs = join(on.root, rest(path, on.point));
  const out = new Set<string>();
  for (const m of mounts) {
    if (m === on || m.dev !== on.dev) continue;
    if (within(inFs, m.root)) out.add(join(m.point, rest(inFs, m.root)));
    else if (within(m.root, inFs)) out.add(m.point);
  }
  out.delete(path);
  return [...out];
}
