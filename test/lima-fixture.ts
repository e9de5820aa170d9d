/**
 * A host with the fake `limactl` (test/shims/limactl) first on PATH, and helpers to build the
 * binary copied into its "VM". The VM is a guest root under bubblewrap with a real planterd.
 */
import { chmodSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { runWith, SHIMS } from "./host-fixture.ts";

/** planterBinary is the Linux binary install --lima copies into the VM. */
export { planterBinary, runWith } from "./host-fixture.ts";

/**
 * Whether this machine can run the fake VM: bubblewrap and the guest's systemd and account tools,
 * and root (the guest root's files, its accounts and its system-mode planterd are really root's).
 */
export const haveLimaTools =
  process.getuid?.() === 0 &&
  ["bwrap", "systemd-socket-activate", "systemd-tmpfiles", "groupadd", "usermod"].every((p) =>
    Bun.which(p, { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }),
  );

export interface LimaHost {
  base: string;
  home: string;
  /** LIMA_HOME. */
  lima: string;
  /** A directory to mount into the VM (not created with `{ mount: false }`). */
  mount: string;
  env: Record<string, string>;
  /** The VM's root directory. */
  guest: string;
  /** The forwarded host socket. */
  socket: string;
}

/** A fresh host under `work/name`: home, LIMA_HOME, a directory to mount, the fake limactl first on PATH. */
export function limaHost(work: string, name: string, opts: { mount?: boolean } = {}): LimaHost {
  const base = join(work, name);
  const home = join(base, "home");
  const lima = join(base, "lima");
  const bin = join(base, "bin");
  const mount = join(base, "src");
  for (const d of opts.mount === false ? [home, bin] : [home, bin, mount]) mkdirSync(d, { recursive: true });
  // The guest planterd (root) runs a root peer's jobs as nobody: it must reach the mounts.
  for (const d of [work, base]) chmodSync(d, 0o711);
  if (opts.mount !== false) chmodSync(mount, 0o1777);
  symlinkSync(join(SHIMS, "limactl"), join(bin, "limactl"));
  const env: Record<string, string> = {
    PATH: `${bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
    HOME: home,
    LIMA_HOME: lima,
    XDG_RUNTIME_DIR: join(base, "run"),
    PLANTER_MODE: "user",
    NO_COLOR: "1",
    TZ: "UTC",
  };
  return {
    base,
    home,
    lima,
    mount,
    env,
    guest: join(lima, "planter", "guest"),
    socket: join(lima, "planter", "sock", "planterd.sock"),
  };
}

/** The fake limactl itself. */
export const fakeLimactl = (env: Record<string, string>, ...args: string[]) =>
  runWith(env, [join(SHIMS, "limactl"), ...args]);

/** The fake VMs of a host, as `limactl list --json` has them. */
export const fakeVms = async (env: Record<string, string>) =>
  (await fakeLimactl(env, "list", "--json")).stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { name: string; status: string; arch: string });

/**
 * Fresh hosts under `work` (see limaHost), each remembered so that `deleteVms` deletes its VM
 * `planter` (which stops its guest planterd): call it in afterAll, so even a failed test's VM goes.
 */
export function limaHosts(work: string) {
  const limaHomes: string[] = [];
  return {
    host(name: string, opts: { mount?: boolean } = {}): LimaHost {
      const h = limaHost(work, name, opts);
      limaHomes.push(h.lima);
      return h;
    },
    deleteVms: () =>
      Promise.all(
        limaHomes.map((l) =>
          fakeLimactl({ ...process.env, LIMA_HOME: l } as Record<string, string>, "delete", "--force", "planter"),
        ),
      ),
  };
}

/** Whether a pid can be signalled (a guest planterd still there). */
export const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
