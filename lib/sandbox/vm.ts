/**
 * The `vm` backend (Linux): each job in its own virtual machine, QEMU's `microvm` machine with a
 * Debian kernel and planter's initramfs (lib/sandbox/vm-assets.ts).
 *
 * QEMU itself runs in the bwrap sandbox a bwrap job of the same policy would get (unprivileged,
 * as the job's user, planter's state, homes, credentials and other cells hidden, no network
 * namespace of the host's), and exports that sandbox's `/` to the guest read-only over virtio-9p:
 * the guest sees exactly the view a bwrap job sees, and whatever it makes QEMU do, QEMU can reach
 * no more than a bwrap job could. Each writable bind of the view (the cell dir, its home, the
 * policy's read_write dirs) is a 9p share of its own, writable; covers and read-only binds inside
 * them hold there too, since QEMU's 9p server walks the sandbox's mounts.
 *
 * The job's stdout and stderr are two virtio serial ports whose QEMU ends are QEMU's stdout and
 * stderr: the recorder's pipes, pumped into the job's logs as for every sandboxed job. A third
 * port carries "CODE [oom]" into a file of the job dir (bound into the sandbox), which the wrapper
 * script reads when QEMU has exited and exits with; planterd reads it too (a guest OOM kill is
 * the job's memory limit). The guest's memory is the job's max_rss_bytes.
 */
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import type { Backend, PlanInput, PlanRequest, Probe, SpawnPlan } from "./backend.ts";
import { BwrapBackend, installHint as bwrapInstallHint, bwrapPlan, linkedCredential, spawnPlanOf } from "./bwrap.ts";
import { HOST_ENV } from "./env.ts";
import { type Identity, systemProgram } from "./identity.ts";
import { seccompProgram } from "./seccomp.ts";
import { fsKind, type Mount } from "./view.ts";
import { BUSYBOX, cachedAssets, ensureAssets, isStatic, VM_DIR, type VmAssets } from "./vm-assets.ts";

/** Guest memory when the job has no max_rss_bytes, MiB. */
export const DEFAULT_VM_MEMORY_MB = 256;
/** The least guest memory a job may ask for (the kernel and init take ~40 MiB), MiB. */
export const MIN_VM_MEMORY_MB = 96;
/**
 * What QEMU itself holds beside the guest's memory (its code, the 9p server, TCG's translation
 * cache): added to a vm job's max_rss_bytes for the host's own limit (cgroup and monitor), so the
 * guest's kernel, not the host's, is what stops a job at its limit.
 */
export const VM_OVERHEAD_BYTES = 192 * 1024 * 1024;

/**
 * The limits planterd holds a job's processes to on the host: a vm job's memory limit is its
 * guest's memory, enforced by the guest's kernel; QEMU beside it may hold VM_OVERHEAD_BYTES more.
 */
export function hostLimits<L extends { max_rss_bytes?: number }>(limits: L, backend: string): L {
  if (backend !== "vm") return limits;
  const guest = limits.max_rss_bytes ?? DEFAULT_VM_MEMORY_MB * 1024 * 1024;
  return { ...limits, max_rss_bytes: guest + VM_OVERHEAD_BYTES };
}

/** The job dir's file where the VM's status port writes "CODE [oom]". */
export const VM_STATUS_FILE = "vm-status";

/** How QEMU runs guests: KVM, or TCG (emulation, ~10× slower to boot, no /dev/kvm needed). */
export type VmAccel = "kvm" | "tcg";

/** The vm backend's settings (config `[vm]`). */
export interface VmSettings {
  /** Where the kernel and initramfs are kept (shared by every daemon that names the same dir). */
  cacheDir: string;
  /** "kvm" (default), or "tcg": emulation, for hosts without KVM (slow: seconds to boot). */
  accel: VmAccel;
}

/** Why /dev/kvm cannot run the guest's kernel here, or null when it can (as far as can be told without booting). */
export function kvmProblem(dev = "/dev/kvm", sys = "/sys/module"): string | null {
  if (!existsSync(dev))
    return `${dev} does not exist (no KVM: the CPU's virtualisation is off, or this is a VM without nested virtualisation)`;
  try {
    accessSync(dev, constants.R_OK | constants.W_OK);
  } catch {
    const st = statSync(dev);
    return `${dev} is not readable and writable by this user (mode ${(st.mode & 0o777).toString(8)}, gid ${st.gid})`;
  }
  // PVM (pagetable-based KVM for hosts without hardware virtualisation) runs only kernels built
  // as PVM guests: Debian's hangs in its first instructions.
  if (existsSync(join(sys, "kvm_pvm"))) {
    return `${dev} is PVM (module kvm_pvm: KVM without hardware virtualisation), which boots only kernels built as PVM guests, not Debian's`;
  }
  return null;
}

/** The gid owning /dev/kvm (the `kvm` group on Debian), when it is not world-accessible. */
export function kvmGroup(dev = "/dev/kvm"): number | null {
  try {
    const st = statSync(dev);
    return (st.mode & 0o006) === 0o006 ? null : st.gid;
  } catch {
    return null;
  }
}

/**
 * The identity a vm job runs as on the host: the job's, with the group that owns /dev/kvm added
 * (QEMU opens it). Only for the VM's QEMU: the job inside the guest gets the job's own groups.
 */
export function withKvmGroup(id: Identity | null, accel: VmAccel, gid = kvmGroup()): Identity | null {
  if (!id || accel !== "kvm" || gid === null || id.groups.includes(gid) || id.gid === gid) return id;
  return { ...id, groups: [...id.groups, gid] };
}

/** The QEMU binary for this host's architecture, from the system's own dirs. */
export function qemuPath(): string | null {
  return process.arch === "x64" ? systemProgram("qemu-system-x86_64") : null;
}

/** How to get QEMU and busybox-static with this host's package manager. */
export function vmInstallHint(): string {
  return Bun.which("apt-get", { PATH: HOST_ENV.PATH })
    ? "install them: sudo apt-get install qemu-system-x86 busybox-static"
    : "install QEMU (qemu-system-x86_64) and a static busybox with your package manager";
}

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * What the guest's `sh -s` reads as the job (pure): its cwd, its environment and its argv, then
 * `exec`, as a warm sandbox's shell gets them (lib/jobs/warm.ts): nothing of the job is in any
 * command line, of the host's or the guest's.
 */
export function guestJobScript(job: { argv: string[]; env: Record<string, string>; cwd: string }): string {
  const env = Object.entries(job.env)
    .filter(([k]) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
    .map(([k, v]) => `export ${k}=${quote(v)}\n`)
    .join("");
  return `cd -- ${quote(job.cwd)} || exit 125\nunset OLDPWD PWD\n${env}set -- ${job.argv.map(quote).join(" ")}\nexec "$@" </dev/null\n`;
}

/** The FIFO in the sandbox's own /tmp whose lines reach the guest's signal port (QEMU's `pipe` chardev). */
export const VM_SIGNAL = `${VM_DIR}/signal`;

/**
 * The wrapper QEMU runs under in the sandbox: QEMU, signals for the job passed to the guest (the
 * wrapper is the only process of the sandbox planterd signals: `signalTree`), then the guest's
 * status (written by its status port) as this script's exit code. No status: the VM stopped
 * before its job ended (a crash, or QEMU killed): 125 and why, on the job's stderr. The FIFO is
 * under VM_DIR, which the guest's own /tmp hides from the job.
 */
export const VM_WRAPPER = `s=$1; shift
g=${VM_SIGNAL}
mkfifo -m 600 "$g" || exit 125
# Held open here read-write: a write never waits for a reader (QEMU gone already, or not yet there).
exec 4<>"$g"
# A signal for the job (planterd sends it here, never to QEMU, which would stop the VM at once):
# its name to the guest's signal port, whose init sends it to the job's process group.
for n in TERM INT HUP QUIT USR1 USR2; do trap "echo $n >&4" "$n"; done
"$@" </dev/null 4>&- &
p=$!
# wait returns early when a trapped signal comes: wait again until QEMU has ended.
while :; do wait "$p"; q=$?; kill -0 "$p" 2>/dev/null || break; done
c=; { read -r c _ <"/proc/self/fd/$s"; } 2>/dev/null
case $c in
''|*[!0-9]*) echo "planter: the VM stopped before its job ended (qemu exit $q)" >&2; exit 125 ;;
esac
exit "$c"`;

/** The guest's memory for a job's limits, MiB (an error when below MIN_VM_MEMORY_MB). */
export function vmMemoryMb(maxRss: number | undefined): number {
  if (maxRss === undefined) return DEFAULT_VM_MEMORY_MB;
  const mb = Math.floor(maxRss / (1024 * 1024));
  if (mb < MIN_VM_MEMORY_MB) {
    throw new PlanterError(
      "E_BAD_REQUEST",
      `a vm job's max_rss_bytes is its VM's memory, and ${maxRss} bytes is below the ${MIN_VM_MEMORY_MB} MiB its kernel needs`,
      { hint: `give it at least ${MIN_VM_MEMORY_MB * 1024 * 1024} bytes (--max-rss ${MIN_VM_MEMORY_MB}M)` },
    );
  }
  return mb;
}

/** The variable assignments the guest init sources (`conf`): the job's uid, /tmp and writable shares. */
export function guestConf(o: {
  uid: number;
  gid: number;
  groups: number[];
  tmpBytes: number;
  setpriv: string;
  writable: string[];
}): string {
  const lines = [
    `uid=${o.uid}`,
    `gid=${o.gid}`,
    `groups=${quote(o.groups.length ? `--groups=${o.groups.join(",")}` : "--clear-groups")}`,
    `tmp=${o.tmpBytes}`,
    `setpriv=${quote(o.setpriv)}`,
    ...o.writable.map((p, i) => `rw_${i + 1}=${quote(p)}`),
  ];
  return `${lines.join("\n")}\n`;
}

/**
 * The guest kernel's command line: quiet, no ACPI (PCI is found by its config ports), the delay
 * loop and TSC taken as given (no calibration), and a reboot by triple fault, at once (QEMU,
 * started with -no-reboot, then exits).
 */
export const BOOT_ARGS = "quiet loglevel=0 panic=-1 rdinit=/init reboot=t acpi=off mitigations=off random.trust_cpu=on";

/** QEMU's arguments (pure): `fds` name the kernel's and initramfs' fds in the sandbox. */
export function qemuArgs(o: {
  qemu: string;
  accel: VmAccel;
  memoryMb: number;
  kernelFd: string;
  initrdFd: string;
  statusFd: string;
  writable: string[];
}): string[] {
  const share = (id: string, path: string, ro: boolean) => [
    "-fsdev",
    `local,id=${id},path=${path},security_model=none,multidevs=remap${ro ? ",readonly=on" : ""}`,
    "-device",
    `virtio-9p-pci,fsdev=${id},mount_tag=${id}`,
  ];
  return [
    o.qemu,
    "-M",
    "pc",
    ...(o.accel === "kvm"
      ? ["-accel", "kvm", "-cpu", "host"]
      : ["-accel", "tcg,tb-size=32", "-icount", "shift=auto,sleep=on"]),
    "-m",
    String(o.memoryMb),
    "-smp",
    "1",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-nic",
    "none",
    "-kernel",
    `/proc/self/fd/${o.kernelFd}`,
    "-initrd",
    `/proc/self/fd/${o.initrdFd}`,
    "-append",
    BOOT_ARGS,
    "-device",
    "virtio-serial-pci",
    // stdout and stderr, reopened as /proc/self/fd/1 and 2: the recorder's FIFOs, which a vm job's
    // user owns (pipesForJob). Not `-chardev stdio`: QEMU's stdin (/dev/null) at its end closes that
    // port's host side, and the guest's writes to it then block for good.
    "-chardev",
    "file,id=out,path=/proc/self/fd/1",
    "-device",
    "virtserialport,chardev=out,name=out",
    "-chardev",
    "file,id=err,path=/proc/self/fd/2",
    "-device",
    "virtserialport,chardev=err,name=err",
    "-chardev",
    `file,id=status,path=/proc/self/fd/${o.statusFd}`,
    "-device",
    "virtserialport,chardev=status,name=status",
    // Signals for the job: lines the wrapper writes to VM_SIGNAL (one FIFO QEMU opens read-write).
    "-chardev",
    `pipe,id=signal,path=${VM_SIGNAL}`,
    "-device",
    "virtserialport,chardev=signal,name=signal",
    ...share("root", "/", true),
    ...o.writable.flatMap((p, i) => share(`rw${i + 1}`, p, false)),
  ];
}

/** The writable directories of a view, in mount order (shallower first): one 9p share each. */
export function writableShares(view: Mount[]): string[] {
  const out: string[] = [];
  for (const m of view) {
    if (m.op !== "bind" || !m.write) continue;
    if (fsKind(m.path) !== "dir") {
      throw new PlanterError(
        "E_SANDBOX_UNAVAILABLE",
        `${m.path} is a writable file in the job's policy, and a vm job shares only directories with its VM`,
        { hint: "name its directory in read_write, or run the job with the bwrap backend" },
      );
    }
    out.push(m.path);
  }
  return out;
}

/** The guest's exit status line as the status port wrote it: the code, and whether the guest ran out of memory. */
export function readVmStatus(jobDir: string): { code: number; oom: boolean } | null {
  try {
    const m = /^(\d{1,3}) ?(oom)?\s*$/.exec(readFileSync(join(jobDir, VM_STATUS_FILE), "utf8"));
    return m ? { code: Number(m[1]), oom: m[2] === "oom" } : null;
  } catch {
    return null;
  }
}

export class VmBackend implements Backend {
  readonly name = "vm";
  private assets: VmAssets | null = null;
  private preparing: Promise<VmAssets> | null = null;

  constructor(
    readonly settings: VmSettings,
    private readonly bwrap: string | null = Bun.which("bwrap"),
    private readonly qemu: string | null = qemuPath(),
  ) {}

  /** The accelerator jobs get. */
  accel(): VmAccel {
    return this.settings.accel;
  }

  /** Why vm jobs cannot run here (what is missing), or null. */
  problem(): { message: string; hint: string } | null {
    if (process.platform !== "linux")
      return { message: "vm jobs run on Linux only", hint: "use the bwrap backend (or seatbelt on macOS)" };
    if (!this.bwrap) return { message: "bubblewrap is missing (QEMU runs in its sandbox)", hint: bwrapInstallHint() };
    if (!this.qemu) return { message: "QEMU (qemu-system-x86_64) is not installed", hint: vmInstallHint() };
    if (!existsSync(BUSYBOX) || !isStatic(BUSYBOX))
      return { message: `${BUSYBOX} is missing or not static (the guest's tools)`, hint: vmInstallHint() };
    if (this.settings.accel === "kvm") {
      const k = kvmProblem();
      if (k) {
        return {
          message: `KVM cannot run vm jobs here: ${k}`,
          hint: 'use a host with KVM (or the bwrap backend); [vm] accel = "tcg" emulates the VM instead (seconds per boot)',
        };
      }
    }
    return null;
  }

  async probe(): Promise<Probe> {
    const p = this.problem();
    if (p) return { ok: false, message: p.message, hint: p.hint };
    return { ok: true, message: `QEMU with ${this.accel()}`, userns: "enabled" };
  }

  /** Fetch the kernel and build the initramfs when missing (once at a time); before the first plan. */
  prepare(): Promise<VmAssets> {
    if (this.assets) return Promise.resolve(this.assets);
    const cached = cachedAssets(this.settings.cacheDir);
    if (cached) {
      this.assets = cached;
      return Promise.resolve(cached);
    }
    this.preparing ??= new Promise<VmAssets>((resolve, reject) => {
      // apt-get is synchronous here but short after the first fetch; the first takes seconds.
      setImmediate(() => {
        try {
          this.assets = ensureAssets(this.settings.cacheDir);
          resolve(this.assets);
        } catch (e) {
          reject(e);
        } finally {
          this.preparing = null;
        }
      });
    });
    return this.preparing;
  }

  plan(req: PlanRequest): SpawnPlan {
    const p = this.problem();
    if (p) throw new PlanterError("E_SANDBOX_UNAVAILABLE", p.message, { hint: p.hint });
    const assets = this.assets ?? cachedAssets(this.settings.cacheDir);
    if (!assets)
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", "the VM's kernel and initramfs are not ready", {
        hint: "planterd fetches them at the first vm job; see its log",
      });
    if (!existsSync(req.cellDir))
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `cell dir ${req.cellDir} does not exist`);
    if (req.policy.network !== "none") {
      throw new PlanterError(
        "E_SANDBOX_UNAVAILABLE",
        "a vm job runs without network: network host and allow lists are not built for the vm backend yet",
        { hint: 'give the job network "none", or run it with the bwrap backend' },
      );
    }
    if (req.policy.unix_sockets.length) {
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", "a vm job cannot reach host Unix sockets", {
        hint: "run the job with the bwrap backend",
      });
    }
    const accel = this.accel();
    const memoryMb = vmMemoryMb(req.vmMemoryBytes);
    const uid = req.identity?.uid ?? process.getuid?.() ?? 0;
    const gid = req.identity?.gid ?? process.getgid?.() ?? 0;
    const groups = req.identity ? req.identity.groups : [];
    const setpriv = systemProgram("setpriv") ?? "/usr/bin/setpriv";
    const enc = new TextEncoder();
    const job = guestJobScript(req);
    const status = join(req.jobDir, VM_STATUS_FILE);
    const wrap = (fd: (input: PlanInput) => string, view: Mount[]) => {
      const writable = writableShares(view);
      const conf = guestConf({ uid, gid, groups, tmpBytes: req.tmpBytes, setpriv, writable });
      const args = [
        "--dir",
        VM_DIR,
        "--file",
        fd({ data: enc.encode(conf) }),
        `${VM_DIR}/conf`,
        "--file",
        fd({ data: enc.encode(job) }),
        `${VM_DIR}/job`,
      ];
      // The status file too is an fd QEMU and the wrapper reopen (bwrap would resolve a bind of it
      // as the job's user, who cannot search planter's state dir).
      const statusFd = fd({ path: status });
      // Inherited by QEMU and opened by it as /proc/self/fd/N: the cache dir need not be in the view.
      const kernelFd = fd({ path: assets.kernel });
      const initrdFd = fd({ path: assets.initrd });
      const qemu = qemuArgs({ qemu: this.qemu as string, accel, memoryMb, kernelFd, initrdFd, statusFd, writable });
      return { args, argv: ["/bin/sh", "-c", VM_WRAPPER, "planter-vm", statusFd, ...qemu] };
    };
    const plan = bwrapPlan({ ...req, env: HOST_ENV, cwd: "/" }, this.bwrap as string, fsKind, {
      seccomp: seccompProgram({ allowUnixSockets: false }),
      devices: accel === "kvm" ? ["/dev/kvm"] : [],
      wrap,
    });
    const linked = linkedCredential(plan.view);
    if (linked) {
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `credential ${linked.path} cannot be hidden: ${linked.why}`, {
        hint: `remove the other link (find / -xdev -samefile ${linked.path})`,
      });
    }
    return { ...spawnPlanOf(plan), pipesForJob: true, files: [{ path: status, content: "", forJob: true }] };
  }
}

/** The bwrap backend's probe is the vm backend's too (QEMU runs in its sandbox). */
export async function probeVm(vm: VmBackend): Promise<Probe> {
  const b = await new BwrapBackend().probe();
  if (!b.ok) return { ...b, message: `bubblewrap: ${b.message}` };
  return vm.probe();
}

/**
 * Boot the guest once, outside any sandbox and with no job: its init finds no job configuration,
 * writes status 125 and reboots. That status in `ms` is a VM that boots (doctor's `sandbox.vm`).
 */
export async function bootProbe(
  vm: VmBackend,
  assets: VmAssets,
  ms = 10_000,
): Promise<{ ok: boolean; ms: number; message: string }> {
  const qemu = qemuPath();
  if (!qemu) return { ok: false, ms: 0, message: "QEMU is not installed" };
  const dir = mkdtempSync(join(tmpdir(), "planter-vm-probe-"));
  try {
    const args = qemuArgs({
      qemu,
      accel: vm.accel(),
      memoryMb: MIN_VM_MEMORY_MB,
      kernelFd: "",
      initrdFd: "",
      statusFd: "",
      writable: [],
    }).map((a) =>
      // The guest's ports to files of the probe's dir (a reopened fd 2 would be Bun's pipe, a socket: ENXIO).
      /^file,id=(status|out|err),path=\/proc\/self\/fd\/\d*$/.test(a)
        ? a.replace(/path=.*/, `path=${dir}/${a.split(",")[1]?.slice(3)}`)
        : a.replace("path=/,", `path=${dir},`),
    );
    args[args.indexOf("-kernel") + 1] = assets.kernel;
    args[args.indexOf("-initrd") + 1] = assets.initrd;
    const t = performance.now();
    const p = Bun.spawn(args, { stdin: "ignore", stdout: "ignore", stderr: "pipe", env: HOST_ENV });
    const timer = setTimeout(() => p.kill("SIGKILL"), ms);
    const code = await p.exited;
    clearTimeout(timer);
    const took = Math.round(performance.now() - t);
    let status = "";
    try {
      status = readFileSync(join(dir, "status"), "utf8").trim();
    } catch {
      // no status: it never reached its init
    }
    if (status.startsWith("125")) return { ok: true, ms: took, message: `booted to its init and back in ${took} ms` };
    const err = (await new Response(p.stderr).text()).trim().split("\n").pop() ?? "";
    return {
      ok: false,
      ms: took,
      message:
        p.signalCode === "SIGKILL"
          ? `no boot within ${ms} ms`
          : `QEMU exited ${code} without booting${err ? `: ${err}` : ""}`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
