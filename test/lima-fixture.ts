/**
 * A host with the fake `limactl` (test/shims/limactl) first on PATH, and helpers to build the
 * binary copied into its "VM". The VM is a guest root under bubblewrap with a real planterd.
 */
import { mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./harness.ts";

export const SHIMS = join(ROOT, "test", "shims");

/** Whether this machine can run the fake VM (bubblewrap and the guest's systemd and account tools). */
export const haveLimaTools = ["bwrap", "systemd-socket-activate", "systemd-tmpfiles", "groupadd", "usermod"].every(
  (p) => Bun.which(p, { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }),
);

/** Compile scripts/planter.ts to `out` (the Linux binary install --lima copies into the VM). */
export async function buildPlanter(out: string, commit = "limafixture"): Promise<void> {
  const p = Bun.spawn(
    [
      "bun",
      "build",
      "--compile",
      "--format=esm",
      "--define",
      `PLANTER_COMMIT="${commit}"`,
      "scripts/planter.ts",
      "--outfile",
      out,
    ],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
  );
  if ((await p.exited) !== 0) throw new Error(await new Response(p.stderr).text());
}

export interface LimaHost {
  base: string;
  home: string;
  /** LIMA_HOME. */
  lima: string;
  /** A directory to mount into the VM. */
  mount: string;
  env: Record<string, string>;
  /** The VM's root directory. */
  guest: string;
  /** The forwarded host socket. */
  socket: string;
}

/** A fresh host under `work/name`: home, LIMA_HOME, a directory to mount, the fake limactl first on PATH. */
export function limaHost(work: string, name: string): LimaHost {
  const base = join(work, name);
  const home = join(base, "home");
  const lima = join(base, "lima");
  const bin = join(base, "bin");
  const mount = join(base, "src");
  for (const d of [home, bin, mount]) mkdirSync(d, { recursive: true });
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

/** Run argv with exactly `env`; collect its output. */
export async function runWith(env: Record<string, string>, argv: string[], cwd?: string) {
  const p = Bun.spawn(argv, { env, cwd, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

/** The fake limactl itself. */
export const fakeLimactl = (env: Record<string, string>, ...args: string[]) =>
  runWith(env, [join(SHIMS, "limactl"), ...args]);
