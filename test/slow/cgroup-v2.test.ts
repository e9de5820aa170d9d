/**
 * planter's cgroup v2 path on a real cgroup v2 hierarchy. This host is cgroup v1 (and its mounts are
 * not ours to change), so the hierarchy is a QEMU guest's: Debian's kernel (the vm jobs' cache,
 * lib/sandbox/vm-assets.ts), an initramfs of its own whose init mounts the host's root read-only
 * over 9p, a tmpfs /tmp, proc, sysfs and a pure cgroup2 hierarchy at /sys/fs/cgroup with memory
 * and pids enabled in the root's subtree_control, then switch_root's into the host's root (a
 * chroot may make no user namespace: bwrap) and runs the compiled planter's planterd as root in a
 * group of its own (as a systemd unit with Delegate=yes has), state on the guest's tmpfs. The guest
 * script runs jobs with the CLI and reports each end as JSON on the serial port; the assertions
 * are here. QEMU runs as nobody (the 9p share reads the host as nobody). KVM where /dev/kvm boots
 * the guest, else TCG: one boot, 1-5 minutes on a loaded 2-core host.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { kvmProblem } from "../../lib/sandbox/vm.ts";
import { BUSYBOX, cpio, ensureKernel, GUEST_MODULES, isStatic } from "../../lib/sandbox/vm-assets.ts";

const ROOT = join(import.meta.dir, "..", "..");
const cache = process.env.PLANTER_TEST_VM_CACHE ?? "/var/tmp/planter-test-vm";
const accel = kvmProblem() === null ? "kvm" : "tcg";
const QEMU = "/usr/bin/qemu-system-x86_64";
const MiB = 1024 * 1024;
/** The whole guest run: boot, planterd's start (~15-40 s under TCG), five jobs, the groups' removal. */
const GUEST_MS = 15 * 60_000;

function unusable(): string | null {
  if (process.platform !== "linux" || process.arch !== "x64") return "needs x86-64 Linux";
  if (process.getuid?.() !== 0) return "needs root (QEMU runs as nobody, the test prepares its files)";
  if (!existsSync(QEMU)) return `no ${QEMU} (apt-get install qemu-system-x86)`;
  if (!existsSync(BUSYBOX) || !isStatic(BUSYBOX)) return "no static busybox (apt-get install busybox-static)";
  try {
    ensureKernel(cache);
  } catch (e) {
    return `no guest kernel: ${(e as Error).message}`;
  }
  return null;
}
const why = unusable();

/** The guest's PID 1 until switch_root: the mounts, a pure cgroup2 hierarchy, then the script. */
const init = (dir: string) => `#!/bin/busybox sh
b=/bin/busybox
$b mount -t devtmpfs dev /dev
$b mount -t proc proc /proc
$b mount -t sysfs sys /sys
exec >/dev/ttyS0 2>&1
for m in ${GUEST_MODULES.join(" ")}; do $b insmod "/lib/mod/$m.ko" || echo "R11 fail insmod $m"; done
$b mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 root /root || echo "R11 fail 9p"
$b mount -t tmpfs -o size=512m,mode=1777 tmp /root/tmp
$b mount -t tmpfs -o size=16m,mode=755 run /root/run
$b mount -t devtmpfs dev /root/dev
for l in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2; do $b ln -s "\${l#*:}" "/root/dev/\${l%%:*}"; done
$b mkdir -p /root/dev/shm
$b mount -t tmpfs -o size=64m,mode=1777 shm /root/dev/shm
$b mount -t proc proc /root/proc
$b mount -t sysfs sys /root/sys
# The guest's own sysctl (Debian's kernel refuses unprivileged user namespaces by default): bwrap.
echo 1 >/proc/sys/kernel/unprivileged_userns_clone
$b mount -t cgroup2 cgroup2 /root/sys/fs/cgroup || echo "R11 fail cgroup2"
echo "+memory +pids" >/root/sys/fs/cgroup/cgroup.subtree_control || echo "R11 fail subtree_control"
echo "R11 kernel \\"$($b uname -r)\\""
exec $b switch_root /root /bin/busybox sh -c '/bin/sh ${dir}/guest.sh ${dir}/planter; echo "R11 end $?"; /bin/busybox reboot -f'
echo "R11 fail switch_root"
$b reboot -f
`;

/**
 * The guest's script (the host's /bin/sh, in the host's root): planterd in /sys/fs/cgroup/svc, alone,
 * then each job to its end, reported as "R11 NAME JSON" (its status, its stdout).
 */
const GUEST = `#!/bin/sh
P=$1
export PLANTER_HOME=/tmp/ph PLANTER_GROUP= HOME=/tmp NO_COLOR=1
mkdir -p $PLANTER_HOME
# A slow tick: the kernel, not the monitor's RSS sample, is to stop the memory job.
printf '[monitor]\\ninterval_ms = 2000\\n[sandbox]\\nmode = "disabled"\\nwarm_ms = 0\\n[jobs]\\nroot_peer_user = "nobody"\\n' >$PLANTER_HOME/config.toml
echo "R11 controllers \\"$(cat /sys/fs/cgroup/cgroup.subtree_control)\\""
mkdir /sys/fs/cgroup/svc
sh -c 'echo $$ >/sys/fs/cgroup/svc/cgroup.procs && exec "$0" daemon' "$P" >/tmp/planterd.log 2>&1 &
n=0
until [ -S $PLANTER_HOME/run/planterd.sock ]; do
  sleep 1; n=$((n + 1))
  [ $n -lt 600 ] || { echo "R11 fail \\"no socket: $(tr '\\n' ' ' </tmp/planterd.log)\\""; exit 1; }
done
echo "R11 up_s $n"
ready=$(curl -s --unix-socket $PLANTER_HOME/run/planterd.sock http://planterd/v1/ready)
echo "R11 ready $ready"
# Never a bomb the kernel does not bound.
case $ready in *'"enforcement":"cgroup v2"'*) ;; *) echo 'R11 fail "not cgroup v2"'; exit 1 ;; esac
job() {
  k=$1; shift
  id=$("$P" run --detach "$@" 2>/tmp/err) || { echo "R11 fail \\"$k: $(tr '\\n' ' ' </tmp/err)\\""; return; }
  # One command for its end and its record (each command of the compiled CLI is seconds under TCG).
  echo "R11 $k $("$P" job wait --timeout 300s --json "$id" 2>/dev/null | tr -d '\\n')"
  echo "R11 $k.out \\"$(tr '\\n' ' ' <$PLANTER_HOME/state/jobs/$id/stdout)\\""
}
job memory --max-rss 64M -- perl -e '$x = "a" x (300 * 1024 * 1024); print "held\\n"; sleep 5'
# Pages no RSS sample sees (a file in the guest's tmpfs): only the kernel's memory.max stops them.
job tmpfs --max-rss 64M -- sh -c 'head -c 300M /dev/zero >/tmp/fill; echo wrote $?; rm -f /tmp/fill'
rm -f /tmp/fill
job bomb --max-pids 32 -- sh -c 'f() { f | f & }; f; wait; sleep 300'
job sandboxed --sandbox enforced -- sh -c 'id -u; cat /proc/self/cgroup'
job sandboxed-bomb --sandbox enforced --max-pids 32 -- sh -c 'f() { f | f & }; f; wait; sleep 300'
job sandboxed-memory --sandbox enforced --max-rss 64M -- perl -e '$x = "a" x (300 * 1024 * 1024); print "held\\n"; sleep 5'
# Each job's group is removed after it (retried while killed members exit).
n=0
while ls -d /sys/fs/cgroup/svc/jobs/*/ >/dev/null 2>&1 && [ $n -lt 30 ]; do sleep 1; n=$((n + 1)); done
echo "R11 groups \\"$(cd /sys/fs/cgroup && find . -mindepth 1 -type d | sort | tr '\\n' ' ')\\""
echo "R11 planterd \\"$(tr '\\n' ' ' </tmp/planterd.log)\\""
`;

let dir = "";
let report = new Map<string, unknown>();
let serial = "";

beforeAll(async () => {
  if (why) return;
  // Not under /tmp: the guest's /tmp is its own tmpfs. Readable by nobody (QEMU's 9p reads as nobody).
  dir = mkdtempSync("/var/tmp/pt-cg2-");
  chmodSync(dir, 0o1777);
  const compile = Bun.spawnSync([join(ROOT, ".ci", "compile"), join(dir, "planter"), "cgroup-v2-test"], {
    cwd: ROOT,
    stdout: "ignore",
    stderr: "pipe",
  });
  if (compile.exitCode !== 0) throw new Error(`compile: ${compile.stderr.toString()}`);
  chmodSync(join(dir, "planter"), 0o755);
  writeFileSync(join(dir, "guest.sh"), GUEST, { mode: 0o755 });
  const k = ensureKernel(cache);
  const archive = cpio([
    ...["bin", "dev", "proc", "sys", "root", "lib", "lib/mod"].map((path) => ({ path, mode: 0o040755 })),
    { path: "bin/busybox", mode: 0o100755, data: readFileSync(BUSYBOX) },
    { path: "init", mode: 0o100755, data: new TextEncoder().encode(init(dir)) },
    ...GUEST_MODULES.map((m) => ({
      path: `lib/mod/${m}.ko`,
      mode: 0o100644,
      data: readFileSync(join(k.modules, `${m}.ko`)),
    })),
  ]);
  writeFileSync(join(dir, "initrd.gz"), Bun.gzipSync(archive, { level: 1 }), { mode: 0o644 });
  const out = join(dir, "serial.out");
  const qemu = Bun.spawn(
    [
      "setpriv",
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      QEMU,
      "-M",
      "pc",
      ...(accel === "kvm"
        ? ["-accel", "kvm", "-cpu", "host"]
        : ["-accel", "tcg,tb-size=256", "-icount", "shift=auto,sleep=on", "-cpu", "max"]),
      "-m",
      "1536",
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
      k.kernel,
      "-initrd",
      join(dir, "initrd.gz"),
      "-append",
      "quiet loglevel=0 panic=-1 rdinit=/init reboot=t acpi=off mitigations=off random.trust_cpu=on",
      "-serial",
      `file:${out}`,
      "-fsdev",
      "local,id=root,path=/,security_model=none,multidevs=remap,readonly=on",
      "-device",
      "virtio-9p-pci,fsdev=root,mount_tag=root",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const limit = setTimeout(() => qemu.kill("SIGKILL"), GUEST_MS);
  await qemu.exited;
  clearTimeout(limit);
  serial = existsSync(out) ? readFileSync(out, "utf8") : "";
  report = new Map();
  for (const line of serial.split("\n")) {
    const m = /^R11 (\S+) (.*)$/.exec(line.trim());
    if (!m) continue;
    try {
      report.set(m[1] as string, JSON.parse(m[2] as string));
    } catch {
      report.set(m[1] as string, m[2]);
    }
  }
}, GUEST_MS + 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const job = (k: string) => {
  // `job wait --json`: the job as it ended, and whether the wait timed out.
  const j = (report.get(k) as { job?: Job } | undefined)?.job;
  if (!j || typeof j !== "object") throw new Error(`no report of ${k} from the guest:\n${serial.slice(-4000)}`);
  return j;
};

describe.skipIf(why !== null)(`cgroup v2 in a guest (${why ?? accel})`, () => {
  test("the guest ran: its own kernel, a pure cgroup2 hierarchy with memory and pids, planterd using it", () => {
    expect(report.get("fail")).toBeUndefined();
    expect(report.get("end")).toBe(0);
    const host = Bun.spawnSync(["uname", "-r"]).stdout.toString().trim();
    expect(report.get("kernel")).toMatch(/^\d+\.\d+/);
    expect(report.get("kernel")).not.toBe(host);
    expect(report.get("controllers")).toBe("memory pids");
    const ready = report.get("ready") as { limits: { enforcement: string; cgroup_unavailable: string | null } };
    expect(ready.limits).toMatchObject({ enforcement: "cgroup v2", cgroup_unavailable: null });
  });

  test("a memory limit: memory_limit, by the RSS sample or by the kernel's OOM kill of the group", () => {
    const j = job("memory");
    expect([j.state, j.reason, j.enforcement, j.sandbox.backend]).toEqual([
      "killed",
      "memory_limit",
      "cgroup v2",
      "none",
    ]);
    expect(j.limit_exceeded).toMatchObject({ limit: "max_rss_bytes", max: 64 * MiB });
    expect(j.limit_exceeded?.value).toBeGreaterThan(64 * MiB);
    // RSS counts the binary's file pages, which the group is not charged for: the sample may see
    // the limit passed first (TERM), or the kernel's memory.max (KILL, memory.oom.group).
    expect(["TERM", "KILL"]).toContain(j.signal as string);
    expect(report.get("memory.out")).toBe("");
  });

  test("memory no RSS sample sees (tmpfs pages) is stopped by the group's memory.max", () => {
    const j = job("tmpfs");
    // Never 300 MB written: the kernel OOM-kills the group (memory_limit, from memory.events) or
    // refuses the pages (the write fails and the job ends on its own).
    expect(report.get("tmpfs.out")).not.toBe("wrote 0 ");
    if (j.reason === "memory_limit") {
      expect([j.state, j.signal]).toEqual(["killed", "KILL"]);
      expect(j.limit_exceeded).toMatchObject({ limit: "max_rss_bytes", max: 64 * MiB });
    } else expect([j.state, j.reason]).toEqual(["failed", "exited"]);
    console.log(`tmpfs job: ${j.state} ${j.reason} ${j.signal ?? j.exit_code} (${JSON.stringify(j.limit_exceeded)})`);
  });

  test("a fork bomb held at pids.max and killed as process_limit", () => {
    const j = job("bomb");
    expect([j.state, j.reason, j.enforcement]).toEqual(["killed", "process_limit", "cgroup v2"]);
    expect(j.limit_exceeded).toMatchObject({ limit: "max_pids", max: 32 });
  });

  test("sandboxed (bwrap as nobody): in its own group, a bomb and a memory hog stopped the same way", () => {
    const s = job("sandboxed");
    expect([s.state, s.reason, s.exit_code, s.enforcement, s.sandbox.backend]).toEqual([
      "exited",
      "exited",
      0,
      "cgroup v2",
      "bwrap",
    ]);
    // Its uid, and its cgroup as bwrap's cgroup namespace shows it: the job's group is its root.
    expect(report.get("sandboxed.out")).toBe("65534 0::/ ");
    const b = job("sandboxed-bomb");
    expect([b.state, b.reason]).toEqual(["killed", "process_limit"]);
    const m = job("sandboxed-memory");
    expect([m.state, m.reason]).toEqual(["killed", "memory_limit"]);
  });

  test("every job's group is removed after it; planterd's own layout stays", () => {
    expect(report.get("groups")).toBe("./svc ./svc/jobs ./svc/planterd ");
  });
});
