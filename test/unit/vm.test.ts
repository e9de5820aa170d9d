/** The vm backend's pure parts: the initramfs archive, QEMU's arguments, the guest's job and config, limits. */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makePipes } from "../../lib/jobs/recorder.ts";
import {
  guestConf,
  guestJobScript,
  hostLimits,
  kvmProblem,
  qemuArgs,
  readVmStatus,
  VM_OVERHEAD_BYTES,
  VM_STATUS_FILE,
  vmMemoryMb,
  withKvmGroup,
  writableShares,
} from "../../lib/sandbox/vm.ts";
import {
  cachedAssets,
  cpio,
  ensureAssets,
  GUEST_INIT,
  GUEST_MODULES,
  isStatic,
  untrustedCache,
} from "../../lib/sandbox/vm-assets.ts";

describe("initramfs", () => {
  test("cpio writes newc entries, 4-byte aligned, and a trailer", () => {
    const a = cpio([{ path: "init", mode: 0o100755, data: new TextEncoder().encode("#!/bin/sh\n") }]);
    const text = new TextDecoder().decode(a);
    expect(text.startsWith("070701")).toBe(true);
    // mode 0o100755 = 0x81ed, size 10 = 0xa, name "init\0" = 5
    expect(text.slice(6 + 8, 6 + 16)).toBe("000081ed");
    expect(text.slice(6 + 6 * 8, 6 + 7 * 8)).toBe("0000000a");
    expect(text).toContain("init\0");
    expect(text).toContain("#!/bin/sh\n");
    expect(text).toContain("TRAILER!!!\0");
    expect(a.length % 4).toBe(0);
  });

  test("the guest init loads every module it names, and reboots once the status is written", () => {
    for (const m of GUEST_MODULES) expect(GUEST_INIT).toContain(m);
    expect(GUEST_INIT.indexOf('echo "$c $w" >"$st"')).toBeLessThan(GUEST_INIT.lastIndexOf("reboot -f"));
    // Never the guest's root for the job unless the host's uid was root.
    expect(GUEST_INIT).toContain('--reuid="$uid"');
  });

  test("isStatic tells a static ELF from a dynamic one", () => {
    expect(isStatic("/bin/sh")).toBe(false);
    const dir = mkdtempSync("/tmp/pt-vm-");
    writeFileSync(join(dir, "x"), "#!/bin/sh\n");
    expect(isStatic(join(dir, "x"))).toBe(false);
    rmSync(dir, { recursive: true });
  });
});

describe("the guest's job", () => {
  test("argv, env and cwd travel as quoted shell words, then exec with stdin /dev/null", () => {
    const s = guestJobScript({ argv: ["/bin/echo", "a b", "it's"], env: { FOO: "x'y", "BAD-NAME": "1" }, cwd: "/c d" });
    expect(s).toBe(
      "cd -- '/c d' || exit 125\nunset OLDPWD PWD\nexport FOO='x'\\''y'\nset -- '/bin/echo' 'a b' 'it'\\''s'\nexec \"$@\" </dev/null\n",
    );
  });

  test("the config names the uid, groups, /tmp and each writable share in order", () => {
    expect(
      guestConf({
        uid: 1000,
        gid: 100,
        groups: [4, 5],
        tmpBytes: 1024,
        setpriv: "/usr/bin/setpriv",
        writable: ["/c", "/h 1"],
      }),
    ).toBe("uid=1000\ngid=100\ngroups='--groups=4,5'\ntmp=1024\nsetpriv='/usr/bin/setpriv'\nrw_1='/c'\nrw_2='/h 1'\n");
    expect(guestConf({ uid: 1, gid: 1, groups: [], tmpBytes: 1, setpriv: "s", writable: [] })).toContain(
      "groups='--clear-groups'",
    );
  });
});

describe("QEMU", () => {
  const base = {
    qemu: "/usr/bin/qemu-system-x86_64",
    memoryMb: 256,
    kernelFd: "9",
    initrdFd: "10",
    statusFd: "11",
    writable: ["/cell"],
  };
  test("no NIC, the root shared read-only, each writable dir as its own share", () => {
    const a = qemuArgs({ ...base, accel: "kvm" });
    expect(a.slice(a.indexOf("-nic"), a.indexOf("-nic") + 2)).toEqual(["-nic", "none"]);
    expect(a).toContain("local,id=root,path=/,security_model=none,multidevs=remap,readonly=on");
    expect(a).toContain("local,id=rw1,path=/cell,security_model=none,multidevs=remap");
    expect(a).toContain("/proc/self/fd/9");
    expect(a.slice(a.indexOf("-m"), a.indexOf("-m") + 2)).toEqual(["-m", "256"]);
    expect(a).toContain("host");
    expect(qemuArgs({ ...base, accel: "tcg" })).not.toContain("kvm");
  });

  test("the job's streams are its own fds 1 and 2 reopened (no stdio chardev); TCG counts instructions for its clocks", () => {
    const a = qemuArgs({ ...base, accel: "tcg" });
    expect(a).toContain("file,id=out,path=/proc/self/fd/1");
    expect(a).toContain("file,id=err,path=/proc/self/fd/2");
    expect(a.some((x) => x.startsWith("stdio"))).toBe(false);
    expect(a.slice(a.indexOf("-icount"), a.indexOf("-icount") + 2)).toEqual(["-icount", "shift=auto,sleep=on"]);
    expect(qemuArgs({ ...base, accel: "kvm" })).not.toContain("-icount");
  });

  test("the guest's memory is max_rss_bytes, at least the kernel's need", () => {
    expect(vmMemoryMb(undefined)).toBe(256);
    expect(vmMemoryMb(512 * 1024 * 1024)).toBe(512);
    expect(() => vmMemoryMb(32 * 1024 * 1024)).toThrow(/below the 96 MiB/);
  });

  test("the host's memory limit of a vm job leaves room for QEMU; other backends' stay", () => {
    expect(hostLimits({ max_rss_bytes: 100 }, "vm").max_rss_bytes).toBe(100 + VM_OVERHEAD_BYTES);
    expect(hostLimits({ max_rss_bytes: 100 }, "bwrap").max_rss_bytes).toBe(100);
    expect(hostLimits({} as { max_rss_bytes?: number }, "vm").max_rss_bytes).toBe(
      256 * 1024 * 1024 + VM_OVERHEAD_BYTES,
    );
  });

  test("only directories are shared writable", () => {
    expect(writableShares([{ op: "bind", path: "/tmp", write: true, why: "cell" }])).toEqual(["/tmp"]);
    expect(() => writableShares([{ op: "bind", path: "/etc/hostname", write: true, why: "rw" }])).toThrow(
      /only directories/,
    );
    expect(writableShares([{ op: "bind", path: "/etc/hostname", write: false, why: "ro" }])).toEqual([]);
  });

  test("the kvm group is added to the job's identity for QEMU only where KVM is used", () => {
    const id = { uid: 1000, gid: 1000, groups: [5], user: "u", home: null };
    expect(withKvmGroup(id, "kvm", 107)?.groups).toEqual([5, 107]);
    expect(withKvmGroup(id, "tcg", 107)).toBe(id);
    expect(withKvmGroup(null, "kvm", 107)).toBeNull();
  });

  test("KVM problems are named: no device, PVM", () => {
    const dir = mkdtempSync("/tmp/pt-vm-");
    expect(kvmProblem(join(dir, "kvm"), dir)).toContain("does not exist");
    writeFileSync(join(dir, "kvm"), "");
    expect(kvmProblem(join(dir, "kvm"), dir)).toBeNull();
    writeFileSync(join(dir, "kvm_pvm"), "");
    expect(kvmProblem(join(dir, "kvm"), dir)).toContain("PVM");
    rmSync(dir, { recursive: true });
  });

  test("the status port's line: code and oom", () => {
    const dir = mkdtempSync("/tmp/pt-vm-");
    expect(readVmStatus(dir)).toBeNull();
    writeFileSync(join(dir, VM_STATUS_FILE), "137 oom\n");
    expect(readVmStatus(dir)).toEqual({ code: 137, oom: true });
    writeFileSync(join(dir, VM_STATUS_FILE), "3 \n");
    expect(readVmStatus(dir)).toEqual({ code: 3, oom: false });
    rmSync(dir, { recursive: true });
  });
});

const root = process.getuid?.() === 0;
describe("the job's pipes", () => {
  test.skipIf(!root)(
    `a vm job's FIFOs are its user's (QEMU reopens them), still 0600; other jobs' stay planterd's${root ? "" : " (skipped: needs root to chown)"}`,
    () => {
      const dir = mkdtempSync("/tmp/pt-vm-");
      try {
        makePipes(join(dir, "vm"), { uid: 65534, gid: 65534 });
        makePipes(join(dir, "other"));
        for (const s of [".out", ".err"]) {
          const vm = statSync(join(dir, `vm${s}`));
          expect([vm.isFIFO(), vm.uid, vm.gid, vm.mode & 0o777]).toEqual([true, 65534, 65534, 0o600]);
          const other = statSync(join(dir, `other${s}`));
          expect([other.uid, other.mode & 0o777]).toEqual([0, 0o600]);
        }
      } finally {
        rmSync(dir, { recursive: true });
      }
    },
  );
});

describe("the kernel cache", () => {
  /** A cache as planterd leaves it: kernel/current, the version's kernel and modules, an initramfs. */
  function cacheIn(parent: string): string {
    const c = join(parent, "vm");
    mkdirSync(join(c, "kernel", "6.1.0-9-amd64", "modules"), { recursive: true, mode: 0o755 });
    writeFileSync(join(c, "kernel", "current"), "6.1.0-9-amd64\n");
    writeFileSync(join(c, "kernel", "6.1.0-9-amd64", "vmlinuz"), "kernel");
    for (const m of GUEST_MODULES) writeFileSync(join(c, "kernel", "6.1.0-9-amd64", "modules", `${m}.ko`), "ko");
    return c;
  }

  test.skipIf(!root)(
    "another user's dir or file in the cache, or a parent others may write, makes it untrusted; planterd's own is trusted",
    () => {
      const base = mkdtempSync("/tmp/pt-vmcache-");
      try {
        chmodSync(base, 0o755);
        const c = cacheIn(base);
        expect(untrustedCache(c)).toBeNull();
        expect(untrustedCache(join(base, "not-made-yet"))).toBeNull();
        // A file in it another user owns (a planted kernel or initramfs).
        chownSync(join(c, "kernel", "6.1.0-9-amd64", "vmlinuz"), 65534, 65534);
        expect(untrustedCache(c)).toContain("vmlinuz belongs to uid 65534");
        chownSync(join(c, "kernel", "6.1.0-9-amd64", "vmlinuz"), 0, 0);
        // The dir itself made by another user first (a configured /var/tmp/… path).
        chownSync(c, 65534, 65534);
        expect(untrustedCache(c)).toContain(`${c} belongs to uid 65534`);
        expect(() => ensureAssets(c)).toThrow("cannot be trusted");
        expect(cachedAssets(c)).toBeNull();
        chownSync(c, 0, 0);
        // Writable by others, or below a parent others may write that is not sticky.
        chmodSync(join(c, "kernel"), 0o777);
        expect(untrustedCache(c)).toContain("is writable by others");
        chmodSync(join(c, "kernel"), 0o755);
        chmodSync(base, 0o777);
        expect(untrustedCache(c)).toContain("above the cache dir, is writable by others");
        chmodSync(base, 0o1777);
        expect(untrustedCache(c)).toBeNull();
      } finally {
        rmSync(base, { recursive: true, force: true });
      }
    },
  );

  test("kernel/current naming a path out of the cache is refused", () => {
    const base = mkdtempSync("/tmp/pt-vmcache-");
    try {
      const c = cacheIn(base);
      writeFileSync(join(c, "kernel", "current"), "../../../../tmp/evil\n");
      expect(cachedAssets(c)).toBeNull();
      expect(() => ensureAssets(c)).toThrow("names no version");
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
