/**
 * What a `vm` job boots (lib/sandbox/vm.ts): a Debian kernel fetched with `apt-get download` and
 * unpacked with `dpkg-deb -x` (never installed on the host), and an initramfs planter builds from
 * busybox-static and its guest init. Both are kept in a cache dir (`[vm] cache_dir`, default
 * `STATE/vm`) and made once: the initramfs is named by a hash of its inputs, so a changed init,
 * busybox or kernel gives a new one.
 */
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { execSync } from "../host/exec.ts";
import { HOST_ENV } from "./env.ts";
import { lookupUser, systemProgram } from "./identity.ts";

/** The Debian package whose dependency names the kernel image (the generic one: the cloud kernel has no 9p). */
export const KERNEL_PACKAGE = "linux-image-amd64";

/**
 * Modules the guest loads, in order: virtio over PCI, its serial ports (the job's output and
 * status) and 9p (the host's view). The Debian kernel builds all of them as modules. Not virtio
 * over MMIO (the microvm machine): Debian's kernel cannot take MMIO devices from the command line
 * (no VIRTIO_MMIO_CMDLINE_DEVICES), and microvm's ACPI tables hung it under TCG here.
 */
export const GUEST_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_pci_modern_dev",
  "virtio_pci_legacy_dev",
  "virtio_pci",
  "virtio_console",
  "netfs",
  "fscache",
  "9pnet",
  "9pnet_virtio",
  "9p",
] as const;

/** The static busybox the guest runs (Debian's busybox-static). */
export const BUSYBOX = "/bin/busybox";

/** Where the files a guest reads are shown in the sandbox QEMU runs in (its private /tmp). */
export const VM_DIR = "/tmp/.planter-vm";

/**
 * The guest's PID 1: a busybox script. Not the compiled planter binary: at ~100 MB it would be
 * copied into every VM's memory at boot, where the script and busybox take 2 MB. It mounts the
 * host's view (the sandbox QEMU runs in, exported read-only over 9p) as the job's root, each
 * writable bind of that view over its own 9p share, a private /tmp, /dev and /proc; runs the job as
 * the job's uid with its script on stdin (`sh -s`: its env, cwd and argv, as a warm sandbox gets
 * them); passes the signals the host writes to the signal port on to the job's process group; and
 * writes "CODE [oom]" to the status port before it reboots (QEMU then exits).
 */
export const GUEST_INIT = `#!/bin/busybox sh
b=/bin/busybox
st=/dev/null
fail() { echo "planter-vm: $*" >&2; echo "125" >"$st"; $b reboot -f; }
$b mount -t devtmpfs dev /dev
$b mount -t proc proc /proc
$b mount -t sysfs sys /sys
for m in ${GUEST_MODULES.join(" ")}; do $b insmod "/lib/mod/$m.ko" || fail "cannot load $m"; done
# The serial ports come up as the host answers: wait for the three.
n=0
while :; do
  for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] || continue
    read -r name <"$p/name"
    case $name in out) out=/dev/\${p##*/} ;; err) err=/dev/\${p##*/} ;; status) st=/dev/\${p##*/} ;; signal) sig=/dev/\${p##*/} ;; esac
  done
  [ -c "$out" ] && [ -c "$err" ] && [ -c "$st" ] && [ -c "$sig" ] && break
  n=$((n + 1)); [ $n -lt 2000 ] || fail "the serial ports did not appear"
  $b usleep 1000
done
# A port opens once at a time: the job inherits these two.
exec >"$out" 2>"$err"
$b mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 root /root || fail "cannot mount the host's view"
# A missing file would end the shell at "." (a special builtin): checked first.
[ -r /root${VM_DIR}/conf ] || fail "no job configuration"
. /root${VM_DIR}/conf
exec 3</root${VM_DIR}/job || fail "no job"
$b mount -t tmpfs -o "size=$tmp,mode=1777,nosuid,nodev" tmp /root/tmp || fail "cannot mount /tmp"
$b mount -t devtmpfs dev /root/dev
$b mkdir -p /root/dev/shm
$b mount -t tmpfs -o size=67108864,mode=1777,nosuid,nodev shm /root/dev/shm
$b mount -t proc proc /root/proc
$b mount -t sysfs -o ro sys /root/sys
i=1
while eval "p=\\\${rw_$i-}"; [ -n "$p" ]; do
  # A share under /tmp (the guest's own now) gets its mount point there.
  [ -d "/root$p" ] || $b mkdir -p "/root$p"
  $b mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=524288 "rw$i" "/root$p" || fail "cannot mount $p"
  i=$((i + 1))
done
o1=$($b awk '$1 == "oom_kill" { print $2 }' /proc/vmstat)
# Signals for the job from the host (the wrapper writes their names to the signal port): to its
# process group once it runs, as a job on the host gets them. Nothing but these names is acted on.
( while read -r s; do
  case $s in TERM | INT | HUP | QUIT | USR1 | USR2) ;; *) continue ;; esac
  while [ ! -s /jobpid ]; do $b usleep 10000; done
  $b kill -s "$s" "-$($b cat /jobpid)" 2>/dev/null
done <"$sig" ) &
# The job in the foreground, leading a session of its own (its pid, in /jobpid, is its group):
# an asynchronous list would start it with SIGINT and SIGQUIT ignored, which no sh can trap then.
if [ "$uid" = 0 ]; then
  $b setsid $b sh -c 'echo $$ >/jobpid; exec "$@"' job $b chroot /root /bin/sh -s <&3 3<&-
else
  $b setsid $b sh -c 'echo $$ >/jobpid; exec "$@"' job $b chroot /root "$setpriv" --reuid="$uid" --regid="$gid" $groups --no-new-privs --inh-caps=-all -- /bin/sh -s <&3 3<&-
fi
c=$?
exec 3<&-
o2=$($b awk '$1 == "oom_kill" { print $2 }' /proc/vmstat)
w=
[ "$c" = 137 ] && [ "\${o2:-0}" != "\${o1:-0}" ] && w=oom
echo "$c $w" >"$st"
$b reboot -f
`;

/** The kernel and initramfs a VM boots, ready in the cache dir. */
export interface VmAssets {
  kernel: string;
  initrd: string;
  version: string;
}

/**
 * Why the cache dir cannot be trusted with what every vm job boots, or null. A kernel or initramfs
 * planted there runs every later job's guest, with each job's cell shared into it: only planterd's
 * own user and root may write the dir, what it holds, and every directory above it (a directory
 * others may write lets them swap the path, unless it is sticky and root's, like /tmp). A
 * configured `[vm] cache_dir` that another user made first (`/var/tmp/…`) is refused, not used.
 */
export function untrustedCache(cache: string): string | null {
  let real: string;
  try {
    real = realpathSync(cache);
  } catch {
    real = cache; // made by planterd (its parents are checked below)
  }
  return untrustedParents(cache, real) ?? untrustedContents(real, real, 0);
}

const mine = (st: { uid: number }) => st.uid === (process.geteuid?.() ?? 0) || st.uid === 0;

/** The parents, as the path is resolved (a symlink on the way is its directory's to swap). */
function untrustedParents(cache: string, real: string): string | null {
  for (let p = dirname(real); ; p = dirname(p)) {
    const st = statSync(p, { throwIfNoEntry: false });
    if (st) {
      const stickyRoot = (st.mode & 0o1000) !== 0 && st.uid === 0;
      if ((st.mode & 0o022) !== 0 && !stickyRoot) return `${p}, above the cache dir, is writable by others`;
      if (!mine(st) && !stickyRoot) return `${p}, above the cache dir, belongs to uid ${st.uid}`;
    }
    if (p === "/") break;
  }
  for (let p = dirname(cache); cache !== real && p !== "/"; p = dirname(p)) {
    const st = lstatSync(p, { throwIfNoEntry: false });
    if (st && !st.isSymbolicLink() && (st.mode & 0o1022) === 0o022)
      return `${p}, on the way to the cache dir, is writable by others`;
  }
  return null;
}

/** The dir and everything in it that a boot reads. */
function untrustedContents(p: string, real: string, depth: number): string | null {
  const st = lstatSync(p, { throwIfNoEntry: false });
  if (!st) return null;
  if (!mine(st)) return `${p} belongs to uid ${st.uid}, not to planterd's user or root`;
  if ((st.mode & 0o022) !== 0) return `${p} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
  if (st.isSymbolicLink() && p !== real) return `${p} is a symlink`;
  if (!st.isDirectory() || depth >= 4) return null;
  for (const e of readdirSync(p)) {
    if (e.startsWith(".fetch-")) continue; // a fetch in progress (0700, or _apt's)
    const why = untrustedContents(join(p, e), real, depth + 1);
    if (why) return why;
  }
  return null;
}

/** The cache dir, refused when another user could have put what it holds there (`untrustedCache`). */
function trustedCache(cache: string): void {
  const why = untrustedCache(cache);
  if (why) {
    throw unavailable(
      `the vm cache dir ${cache} cannot be trusted: ${why}`,
      "every vm job boots the kernel and initramfs kept there: give [vm] cache_dir a directory only planterd's user (or root) can write, in parents no other user can change, or remove it and let planterd make it",
    );
  }
}

/** Run a program to its end (quietly); its code and output. */
function run(argv: string[], cwd?: string): { code: number; out: string; err: string } {
  const [program, ...args] = argv;
  // apt-get download of a kernel is the long one: ten minutes before it counts as failed.
  const r = execSync(program as string, args, { cwd, env: HOST_ENV, clean: true, timeoutMs: 600_000, nothrow: true });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

function unavailable(message: string, hint: string): PlanterError {
  return new PlanterError("E_SANDBOX_UNAVAILABLE", message, { hint });
}

/**
 * The kernel in `cache` (`kernel/VERSION/vmlinuz` and its modules), fetched and unpacked when
 * missing: `apt-get download` of the metapackage names the image package, which is downloaded
 * and unpacked in a temp dir; only the kernel and GUEST_MODULES are kept (a few MB of ~70).
 */
export function ensureKernel(cache: string): { kernel: string; modules: string; version: string } {
  const current = join(cache, "kernel", "current");
  if (existsSync(current)) {
    const version = kernelVersion(readFileSync(current, "utf8"));
    const dir = join(cache, "kernel", version);
    // A cache made for another module list is fetched again.
    const whole = [join(dir, "vmlinuz"), ...GUEST_MODULES.map((m) => join(dir, "modules", `${m}.ko`))].every(
      existsSync,
    );
    if (whole) return { kernel: join(dir, "vmlinuz"), modules: join(dir, "modules"), version };
  }
  const apt = systemProgram("apt-get");
  const dpkgDeb = systemProgram("dpkg-deb");
  if (!apt || !dpkgDeb) {
    throw unavailable(
      `no kernel for vm jobs in ${cache}, and apt-get/dpkg-deb are missing to fetch one`,
      `planter fetches Debian's ${KERNEL_PACKAGE} with apt-get download; on another distribution put a kernel and its modules in ${join(cache, "kernel")} (docs/sandbox.md "VM jobs")`,
    );
  }
  mkdirSync(join(cache, "kernel"), { recursive: true, mode: 0o755 });
  const tmp = mkdtempSync(join(cache, "kernel", ".fetch-"));
  try {
    // apt-get download writes as _apt where it can: the dir is _apt's (never writable by all, where
    // another user could put a .deb or a symlink that root then unpacks through).
    const aptUser = lookupUser("_apt");
    if (aptUser && process.geteuid?.() === 0) chownSync(tmp, aptUser.uid, 0);
    const meta = run([apt, "download", KERNEL_PACKAGE], tmp);
    const metaDeb = readdirSync(tmp).find((f) => f.endsWith(".deb"));
    if (meta.code !== 0 || !metaDeb) {
      throw unavailable(
        `cannot download ${KERNEL_PACKAGE}: ${meta.err.trim().split("\n").pop() ?? "apt-get failed"}`,
        "run apt-get update, check the network, then run the job again",
      );
    }
    const dep = run([dpkgDeb, "-f", join(tmp, metaDeb), "Depends"]).out;
    const image = /linux-image-[0-9][^\s,(]*/.exec(dep)?.[0];
    if (!image) throw unavailable(`${KERNEL_PACKAGE} names no kernel image (${dep.trim()})`, "run apt-get update");
    const got = run([apt, "download", image], tmp);
    const deb = readdirSync(tmp).find((f) => f.startsWith(`${image}_`) && f.endsWith(".deb"));
    if (got.code !== 0 || !deb) throw unavailable(`cannot download ${image}: ${got.err.trim()}`, "run apt-get update");
    const x = join(tmp, "x");
    const un = run([dpkgDeb, "-x", join(tmp, deb), x]);
    if (un.code !== 0) throw unavailable(`cannot unpack ${deb}: ${un.err.trim()}`, "check the disk of the cache dir");
    const version = image.replace(/^linux-image-/, "");
    const vmlinuz = join(x, "boot", `vmlinuz-${version}`);
    const mods = join(x, "lib", "modules", version, "kernel");
    const dir = join(cache, "kernel", version);
    const stage = join(tmp, "out");
    mkdirSync(join(stage, "modules"), { recursive: true });
    writeFileSync(join(stage, "vmlinuz"), readFileSync(vmlinuz), { mode: 0o644 });
    // QEMU, as the job's user, reopens it (/proc/self/fd/N checks its mode): readable by all, whatever planterd's umask.
    chmodSync(join(stage, "vmlinuz"), 0o644);
    writeFileSync(join(stage, "config"), readFileSync(join(x, "boot", `config-${version}`)), { mode: 0o644 });
    for (const m of GUEST_MODULES) {
      const found = findModule(mods, m);
      if (!found) throw unavailable(`kernel ${version} has no module ${m}`, "use a Debian kernel with 9p and virtio");
      writeFileSync(join(stage, "modules", `${m}.ko`), readFileSync(found), { mode: 0o644 });
    }
    rmSync(dir, { recursive: true, force: true });
    renameSync(stage, dir);
    writeFileSync(`${current}.tmp`, `${version}\n`, { mode: 0o644 });
    renameSync(`${current}.tmp`, current);
    return { kernel: join(dir, "vmlinuz"), modules: join(dir, "modules"), version };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The path of module `name` (`name.ko`, uncompressed) under `dir`, searched depth-first. */
function findModule(dir: string, name: string): string | null {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const f = findModule(p, name);
      if (f) return f;
    } else if (e.name === `${name}.ko`) return p;
  }
  return null;
}

/** One entry of a newc cpio archive. */
export interface CpioEntry {
  path: string;
  mode: number;
  data?: Uint8Array;
}

/** A newc ("070701") cpio archive of `entries`, as the kernel unpacks an initramfs (pure). */
export function cpio(entries: CpioEntry[]): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  let size = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    size += b.length;
  };
  const pad = () => {
    const n = (4 - (size % 4)) % 4;
    if (n) push(new Uint8Array(n));
  };
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  let ino = 1;
  for (const e of [...entries, { path: "TRAILER!!!", mode: 0 }]) {
    const name = enc.encode(`${e.path}\0`);
    const data = "data" in e && e.data ? e.data : new Uint8Array();
    const isDir = (e.mode & 0o170000) === 0o040000;
    const fields = [ino++, e.mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, 0, 0, name.length, 0];
    push(enc.encode(`070701${fields.map(hex).join("")}`));
    push(name);
    pad();
    push(data);
    pad();
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Whether `file` is a statically linked ELF (no PT_INTERP): a guest has no libc to load. */
export function isStatic(file: string): boolean {
  const b = readFileSync(file);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const size = b.readUInt16LE(0x36);
  const count = b.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) if (b.readUInt32LE(phoff + i * size) === 3) return false;
  return true;
}

/**
 * The initramfs for the kernel in `modules` (built in `cache` when its inputs changed): busybox
 * at /bin/busybox, the guest init at /init, the modules at /lib/mod. Its name holds a hash of
 * every input, so an older one is never booted with a newer init.
 */
export function ensureInitramfs(cache: string, modules: string, busybox = BUSYBOX): string {
  if (!existsSync(busybox) || !isStatic(busybox)) {
    throw unavailable(
      `${busybox} is missing or not statically linked: a vm job's guest runs busybox with no libc`,
      "install it: sudo apt-get install busybox-static",
    );
  }
  const bb = readFileSync(busybox);
  const mods = GUEST_MODULES.map((m) => ({ m, data: readFileSync(join(modules, `${m}.ko`)) }));
  const h = createHash("sha256").update("planter-initramfs-2\0").update(GUEST_INIT).update(bb);
  for (const { m, data } of mods) h.update(m).update(data);
  const file = join(cache, `initramfs-${h.digest("hex").slice(0, 16)}.gz`);
  if (existsSync(file)) return file;
  const dir = 0o040755;
  const archive = cpio([
    ...["bin", "dev", "proc", "sys", "root", "lib", "lib/mod"].map((path) => ({ path, mode: dir })),
    { path: "bin/busybox", mode: 0o100755, data: bb },
    { path: "init", mode: 0o100755, data: new TextEncoder().encode(GUEST_INIT) },
    ...mods.map(({ m, data }) => ({ path: `lib/mod/${m}.ko`, mode: 0o100644, data })),
  ]);
  mkdirSync(cache, { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, Bun.gzipSync(archive, { level: 1 }), { mode: 0o644 });
  chmodSync(tmp, 0o644); // reopened by QEMU as the job's user, as the kernel is
  renameSync(tmp, file);
  return file;
}

/** The version `kernel/current` names: one plain file name (never a path out of the cache). */
function kernelVersion(text: string): string {
  const v = text.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._+~-]*$/.test(v))
    throw unavailable(
      `the vm cache's kernel/current names no version: ${JSON.stringify(v.slice(0, 80))}`,
      "remove the cache's kernel dir: planterd fetches it again",
    );
  return v;
}

/** The kernel and initramfs in `cache`, fetched or built on first use. */
export function ensureAssets(cache: string): VmAssets {
  trustedCache(cache);
  mkdirSync(cache, { recursive: true, mode: 0o755 });
  const k = ensureKernel(cache);
  return { kernel: k.kernel, initrd: ensureInitramfs(cache, k.modules), version: k.version };
}

/** The kernel and initramfs when both are already in `cache` (no fetch, no build), else null. */
export function cachedAssets(cache: string): VmAssets | null {
  try {
    if (untrustedCache(cache)) return null;
    const version = kernelVersion(readFileSync(join(cache, "kernel", "current"), "utf8"));
    const dir = join(cache, "kernel", version);
    if (!statSync(join(dir, "vmlinuz")).isFile()) return null;
    if (!GUEST_MODULES.every((m) => existsSync(join(dir, "modules", `${m}.ko`)))) return null;
    return { kernel: join(dir, "vmlinuz"), initrd: ensureInitramfs(cache, join(dir, "modules")), version };
  } catch {
    return null;
  }
}
