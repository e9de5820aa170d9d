/**
 * install --lima: the Linux agent in a Lima VM `planter`, reached through the socket Lima forwards
 * to the host. Phases create, start, copy, units, forward, ready — each with its own time limit
 * and hint. Recorded in install-state.json (`vm`) so uninstall deletes the VM only when install
 * created it and --purge is given.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { arch as osArch, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import type { InstallMode } from "../paths.ts";
import { BUILD } from "../version.ts";
import { describe, exec } from "./exec.ts";
import { newInstallState, targetPaths } from "./install.ts";
import { type InstallState, installStatePath, readInstallState, sha256File } from "./install-state.ts";
import {
  BUN_ARCH,
  checkElf,
  GUEST_BINARY,
  GUEST_PROVISION,
  GUEST_STAGED,
  hostLimaArch,
  hostSocketPath,
  LAYOUT,
  LAYOUT_FILE,
  LIMA_VM,
  type LimaArch,
  type LimaInstance,
  type LimaVmType,
  limactlWithin,
  limaVmType,
  parseList,
  renderLimaTemplate,
  renderProvisionScript,
  waitForPath,
} from "./lima.ts";
import { waitReady } from "./planterd.ts";
import { type Step, type StepEvent, type StepReport, Transaction } from "./transaction.ts";

export type LimaPhase = "create" | "start" | "copy" | "units" | "forward" | "ready";

/** Each phase's time limit (ms). Create and start include downloading and booting the image. */
export const PHASE_TIMEOUT_MS: Record<LimaPhase, number> = {
  create: 600_000,
  start: 600_000,
  copy: 120_000,
  units: 120_000,
  forward: 30_000,
  ready: 30_000,
};

const PHASE_HINT: Record<LimaPhase, string> = {
  create: `see \`limactl create\`'s output above; \`limactl delete ${LIMA_VM}\` removes a half-made VM`,
  start: `see ~/.lima/${LIMA_VM}/ha.stderr.log, or run \`limactl start ${LIMA_VM}\` to watch it boot`,
  copy: `check that the VM runs (\`limactl list\`) and has disk space (\`limactl shell ${LIMA_VM} df -h /usr/local\`)`,
  units: `see \`limactl shell ${LIMA_VM} sudo journalctl -u planterd.socket -u planterd.service\``,
  forward: `restart the VM to set up the forward again: \`limactl stop ${LIMA_VM} && limactl start ${LIMA_VM}\``,
  ready: `see \`limactl shell ${LIMA_VM} sudo journalctl -u planterd.service\`, then \`doctor lima\``,
};

export interface LimaInstallOptions {
  mode: InstallMode;
  prefix?: string;
  /** The Linux binary for the VM (default: see linuxBinary). */
  binary?: string;
  /** Replace a different binary already in the VM and restart its socket unit. */
  upgrade: boolean;
  dryRun: boolean;
  cpus: number;
  memory: string;
  disk: string;
  mounts: string[];
  /** The VM's architecture when install creates it (default: the host's). */
  arch?: LimaArch;
  /** Readiness wait (the `ready` phase). */
  waitMs: number;
  timeouts?: Partial<Record<LimaPhase, number>>;
  env?: Record<string, string | undefined>;
  progress?: (line: string) => void;
  /** Called at every point of the step engine (tests stop a run there). */
  observe?: (e: StepEvent) => void;
}

export interface LimaInstallResult {
  dry_run: boolean;
  vm: string;
  /** Phases that changed something, in order. */
  changed: LimaPhase[];
  /** The plan (dry run), or each step with what the run did. */
  steps: StepReport[];
  host_socket: string;
  state_file: string;
  ready: boolean | null;
  version: string | null;
}

/** The VM record in install-state.json. */
export type VmRecord = NonNullable<InstallState["vm"]>;

function fail(phase: LimaPhase, message: string): never {
  throw new PlanterError("E_UNAVAILABLE", `lima ${phase}: ${message}`, { hint: PHASE_HINT[phase], details: { phase } });
}

async function must(phase: LimaPhase, ms: number, ...args: string[]): Promise<string> {
  const r = await limactlWithin(ms, ...args);
  if (r.code !== 0) fail(phase, describe("limactl", args, r));
  return r.stdout;
}

/** The instance named `name`, or null. */
export async function findInstance(name = LIMA_VM): Promise<LimaInstance | null> {
  const r = await limactlWithin(30_000, "list", "--json");
  if (r.code === 127)
    throw new PlanterError("E_UNAVAILABLE", "limactl is not installed", {
      hint: "install Lima (`brew install lima`), then run install --lima again",
    });
  if (r.code !== 0) throw new PlanterError("E_UNAVAILABLE", describe("limactl", ["list", "--json"], r));
  return parseList(r.stdout).find((i) => i.name === name) ?? null;
}

/**
 * The Linux binary for a VM of `arch`: explicit; else, in a source checkout, dist/planter-linux-<arch>
 * (cross-compiled when missing); else this binary when it is one, or planter-linux-<arch> beside it.
 */
export async function linuxBinary(explicit: string | undefined, arch: LimaArch, progress: (l: string) => void) {
  if (explicit) {
    if (!existsSync(explicit)) throw new PlanterError("E_USAGE", `--lima-binary ${explicit} does not exist`);
    return explicit;
  }
  const name = `planter-linux-${BUN_ARCH[arch]}`;
  if (Bun.main.startsWith("/$bunfs")) {
    if (process.platform === "linux" && hostLimaArch(osArch()) === arch) return process.execPath;
    const beside = join(dirname(process.execPath), name);
    if (existsSync(beside)) return beside;
    throw new PlanterError("E_UNAVAILABLE", `no Linux binary for the VM (${arch}): ${beside} is missing`, {
      hint: `download the linux-${BUN_ARCH[arch]} release tarball and pass its binary: install --lima --lima-binary PATH/planter`,
    });
  }
  const repo = join(import.meta.dir, "..", "..");
  const out = join(repo, "dist", name);
  if (!existsSync(out)) {
    progress(`cross-compiling dist/${name} from this source checkout`);
    const args = ["build", "--compile", "--minify", "--format=esm", `--target=bun-linux-${BUN_ARCH[arch]}`];
    const r = await exec(process.execPath, [...args, join(repo, "scripts", "planter.ts"), "--outfile", out], {
      timeoutMs: 600_000,
      nothrow: true,
    });
    if (r.code !== 0)
      throw new PlanterError("E_UNAVAILABLE", `cannot build ${name}: ${describe("bun", args, r)}`, {
        hint: `build it with \`bun build --compile --target=bun-linux-${BUN_ARCH[arch]} scripts/planter.ts --outfile dist/${name}\`, or pass --lima-binary`,
      });
  }
  return out;
}

/**
 * The binary to copy into a VM of `arch` (see linuxBinary) and its sha256; refused unless it is an
 * ELF for that architecture. `what` begins the error message; `details` go with the error.
 */
export async function vmBinary(
  explicit: string | undefined,
  arch: LimaArch,
  progress: (l: string) => void,
  what: string,
  details: Record<string, unknown>,
): Promise<{ binary: string; sha256: string }> {
  const binary = await linuxBinary(explicit, arch, progress);
  const bad = checkElf(binary, arch);
  if (bad)
    throw new PlanterError("E_USAGE", `${what}: ${bad}`, {
      hint: `pass the linux-${BUN_ARCH[arch]} binary with --lima-binary, or build it: bun build --compile --target=bun-linux-${BUN_ARCH[arch]} scripts/planter.ts`,
      details,
    });
  return { binary, sha256: sha256File(binary) };
}

/** What install --lima's steps share: options, the transaction, the instance as last listed, the guest as probed. */
interface LimaRun {
  opts: LimaInstallOptions;
  tx: Transaction;
  ms: (p: LimaPhase) => number;
  hostSocket: string;
  stateDir: string;
  result: LimaInstallResult;
  inst: LimaInstance | null;
  arch: LimaArch;
  vmType: LimaVmType;
  /** The binary for the VM and its sha256 (a dry run: not looked for). */
  binary: string;
  sha: string;
  /** What the copy phase found in the guest. */
  guest: { sha: string | null; layoutOk: boolean } | null;
}

/** Install (or check, or upgrade) the planter agent in the Lima VM. */
export async function installLima(opts: LimaInstallOptions): Promise<LimaInstallResult> {
  const progress = opts.progress ?? (() => undefined);
  const env = { ...process.env, ...opts.env };
  const t = targetPaths(opts);
  const stateFile = installStatePath(t.stateDir);
  const hostSocket = hostSocketPath(env);
  const tx = new Transaction({ root: "/", dryRun: opts.dryRun, progress, observe: opts.observe });
  const previous = readInstallState(stateFile);
  const inst = await findInstance();
  const hostArch = hostLimaArch();
  // The VM's architecture: the existing VM's, else the one asked for, else the host's.
  const arch: LimaArch = inst ? (inst.arch === "aarch64" ? "aarch64" : "x86_64") : (opts.arch ?? hostArch);
  const r: LimaRun = {
    opts,
    tx,
    ms: (p) => opts.timeouts?.[p] ?? PHASE_TIMEOUT_MS[p],
    hostSocket,
    stateDir: t.stateDir,
    result: {
      dry_run: opts.dryRun,
      vm: LIMA_VM,
      changed: [],
      steps: [],
      host_socket: hostSocket,
      state_file: stateFile,
      ready: null,
      version: null,
    },
    inst,
    arch,
    vmType: limaVmType(process.platform, hostArch, arch),
    binary: "",
    sha: "",
    guest: null,
  };
  const steps = limaSteps(r);
  if (opts.dryRun) {
    r.result.steps = tx.plan(steps);
    return r.result;
  }
  // The binary must be an ELF for the VM's architecture: checked before any VM is created or started.
  const vb = await vmBinary(opts.binary, arch, progress, "lima copy", { phase: "copy" });
  r.binary = vb.binary;
  r.sha = vb.sha256;
  const now = new Date().toISOString();
  tx.keep(
    previous ??
      newInstallState(
        opts.mode,
        "/",
        t,
        { os: process.platform, arch: osArch(), os_release: null, package_manager: null, systemd: false },
        now,
      ),
    stateFile,
  );
  mkdirSync(t.stateDir, { recursive: true, mode: 0o700 });
  if (inst && !tx.state.vm)
    tx.record((st) => {
      st.vm = {
        name: LIMA_VM,
        created_by_installer: false,
        arch: inst.arch,
        host_socket: hostSocket,
        binary_sha256: null,
      };
    });
  r.result.steps = await tx.run(steps);
  return r.result;
}

/** The phases as steps: create and start as `limactl list` saw the VM; copy and units as the guest is found when they run. */
function limaSteps(r: LimaRun): Step[] {
  const { opts } = r;
  const steps: Step[] = [];
  if (!r.inst)
    steps.push({
      id: "create",
      describe: `create VM ${LIMA_VM} (${r.vmType}, ${r.arch}, Ubuntu 24.04, ${opts.cpus} cpus, ${opts.memory}, ${opts.disk})`,
      apply: () => createVm(r),
    });
  if (r.inst?.status !== "Running")
    steps.push({
      id: "start",
      describe: `start VM ${LIMA_VM}`,
      needed: () => r.inst?.status !== "Running",
      apply: async () => {
        r.tx.progress(`starting VM ${LIMA_VM} (first boot downloads the image)`);
        await must("start", r.ms("start"), "start", "--tty=false", LIMA_VM);
        r.result.changed.push("start");
      },
    });
  steps.push(
    {
      id: "copy",
      describe: `copy the Linux binary to ${GUEST_BINARY} in the VM (when it differs${opts.upgrade ? "" : "; --upgrade to replace one"})`,
      needed: () => probeGuest(r),
      apply: async () => {
        r.tx.progress(`copying ${r.binary} into the VM`);
        await must("copy", r.ms("copy"), "copy", r.binary, `${LIMA_VM}:${GUEST_STAGED}`);
        r.result.changed.push("copy");
      },
    },
    {
      id: "units",
      describe: "run the provision script: group planter, units, planterd.socket, layout sentinel",
      needed: () => {
        const changes = r.guest?.sha !== r.sha || !r.guest?.layoutOk;
        // The guest has this binary and the layout: only the record is brought up to date.
        if (!changes) recordBinary(r);
        return changes;
      },
      apply: async () => {
        await provisionGuest(r.ms("units"));
        // A running planterd keeps the old binary until its socket unit restarts (jobs keep running: KillMode=process).
        if (r.guest?.sha) await guestShell(r, "units", "sudo", "systemctl", "restart", "planterd.socket");
        r.tx.progress(
          r.guest?.sha
            ? "replaced the binary and restarted planterd.socket in the VM"
            : "provisioned planterd in the VM",
        );
        r.result.changed.push("units");
        recordBinary(r);
      },
    },
    {
      id: "forward",
      describe: `wait for the forwarded socket ${r.hostSocket}`,
      apply: async () => {
        // Lima makes the host end of the socket once the VM runs.
        if (!(await waitForPath(r.hostSocket, r.ms("forward"))))
          fail("forward", `${r.hostSocket} did not appear within ${r.ms("forward")} ms`);
      },
    },
    {
      id: "ready",
      describe: "a real API call through the forwarded socket",
      apply: async () => {
        r.tx.progress(`waiting for planterd through ${r.hostSocket}`);
        r.result.ready = await waitReady(r.hostSocket, Math.min(opts.waitMs, r.ms("ready")));
        if (!r.result.ready) fail("ready", `planterd in the VM did not answer through ${r.hostSocket}`);
        const { Client } = await import("../api/client.ts");
        r.result.version = (await new Client(r.hostSocket).version()).version;
        r.tx.progress(`planterd ${r.result.version} answers in the VM`);
      },
    },
  );
  return steps;
}

/** create: the template written to the state dir, `limactl create`; the VM recorded as install's before it is made. */
async function createVm(r: LimaRun): Promise<void> {
  const { opts, tx } = r;
  const dir = join(r.stateDir, "lima");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const template = join(dir, `${LIMA_VM}.yaml`);
  const text = renderLimaTemplate({
    name: LIMA_VM,
    cpus: opts.cpus,
    memory: opts.memory,
    disk: opts.disk,
    mounts: opts.mounts,
    arch: r.arch,
    vmType: r.vmType,
  });
  writeFileSync(template, text);
  // Recorded first: a create that fails or is stopped half-way may leave a half-made VM, which uninstall --purge deletes.
  tx.record((st) => {
    st.vm = { name: LIMA_VM, created_by_installer: true, arch: r.arch, host_socket: r.hostSocket, binary_sha256: null };
  });
  tx.progress(`creating VM ${LIMA_VM} (${r.arch}, ${r.vmType}) from ${template}`);
  await must("create", r.ms("create"), "create", "--tty=false", "--name", LIMA_VM, template);
  r.result.changed.push("create");
  r.inst = (await findInstance()) ?? fail("create", `limactl create succeeded but ${LIMA_VM} is not listed`);
}

const guestShell = (r: LimaRun, phase: LimaPhase, ...cmd: string[]) =>
  must(phase, r.ms(phase), "shell", "--workdir", "/", LIMA_VM, ...cmd);

/** The copy phase's question: the guest's sentinel and binary (one `limactl shell`); true when the binary must be copied. */
async function probeGuest(r: LimaRun): Promise<boolean> {
  const lines = (
    await guestShell(
      r,
      "copy",
      "sh",
      "-c",
      `cat ${LAYOUT_FILE} 2>/dev/null; sha256sum ${GUEST_BINARY} 2>/dev/null; true`,
    )
  ).split("\n");
  const sha = lines.map((l) => /^([0-9a-f]{64}) /.exec(l)?.[1]).find(Boolean) ?? null;
  r.guest = { sha, layoutOk: lines.includes(LAYOUT) };
  if (sha && sha !== r.sha && !r.opts.upgrade)
    throw new PlanterError("E_CONFLICT", `the VM ${LIMA_VM} has another planter binary (sha256 ${sha.slice(0, 12)}…)`, {
      hint: "replace it and restart planterd in the VM with: install --lima --upgrade",
    });
  return sha !== r.sha;
}

/** The VM record once the guest runs this binary. */
function recordBinary(r: LimaRun): void {
  r.tx.record((st) => {
    if (!st.vm) return;
    st.vm.arch = r.arch;
    st.vm.binary_sha256 = r.sha;
    st.vm.host_socket = r.hostSocket;
    st.version = BUILD.version;
    st.commit = BUILD.commit;
    st.updated_at = new Date().toISOString();
  });
}

/** The guest user's name (`id -un` in the VM), checked before it goes into a script. */
export async function guestUser(timeoutMs: number): Promise<string> {
  const user = (await must("units", timeoutMs, "shell", "--workdir", "/", LIMA_VM, "id", "-un")).trim();
  if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(user)) fail("units", `unexpected guest user name ${JSON.stringify(user)}`);
  return user;
}

/**
 * The `units` phase: the provision script, rendered for the real guest user, copied into the VM and
 * run as root (copied rather than passed as `sh -c TEXT`: `limactl shell` re-parses its arguments).
 * `sentinel: false` leaves the layout sentinel to the caller (migrate lima writes it after verifying).
 */
export async function provisionGuest(timeoutMs: number, opts: { sentinel?: boolean } = {}): Promise<void> {
  const user = await guestUser(timeoutMs);
  const tmp = mkdtempSync(join(tmpdir(), "planter-lima-"));
  try {
    const script = join(tmp, "provision.sh");
    writeFileSync(script, renderProvisionScript({ user, sentinel: opts.sentinel }));
    await must("units", timeoutMs, "copy", script, `${LIMA_VM}:${GUEST_PROVISION}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  await must("units", timeoutMs, "shell", "--workdir", "/", LIMA_VM, "sudo", "sh", GUEST_PROVISION);
  await must("units", timeoutMs, "shell", "--workdir", "/", LIMA_VM, "rm", "-f", GUEST_PROVISION);
}

/**
 * uninstall's part: the VM is deleted only when install created it and `purge` is given.
 * Returns the record to keep (null when the VM was deleted), so a later --purge can still delete it.
 */
export async function uninstallLimaVm(
  vm: VmRecord,
  opts: { purge: boolean; dryRun: boolean },
  progress: (line: string) => void,
  warn: (w: string) => void,
): Promise<VmRecord | null> {
  if (!opts.purge || !vm.created_by_installer) {
    progress(
      vm.created_by_installer
        ? `kept VM ${vm.name} (uninstall --purge deletes it)`
        : `kept VM ${vm.name}: install did not create it`,
    );
    return vm.created_by_installer ? vm : null;
  }
  if (!opts.dryRun) {
    const r = await limactlWithin(120_000, "delete", "--force", vm.name);
    if (r.code !== 0) {
      warn(`could not delete VM ${vm.name}: ${describe("limactl", ["delete", "--force", vm.name], r)}`);
      return vm;
    }
  }
  progress(`deleted VM ${vm.name}`);
  return null;
}
