/**
 * install: put planter on a host so that it starts on demand, recording everything it changes in
 * install-state.json (see install-state.ts) so that uninstall can take back exactly that.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { arch, homedir } from "node:os";
import { dirname, join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { DEFAULT_ROOT_PEER_USER } from "../config.ts";
import { type InstallMode, resolvePaths, socketDir } from "../paths.ts";
import { BUILD } from "../version.ts";
import { DEFAULT_CONFIG } from "./default-config.ts";
import { describe, exec } from "./exec.ts";
import {
  addMember,
  getentGroup,
  getentPasswd,
  groupadd,
  jobUseraddArgs,
  nologinShell,
  useraddJobUser,
} from "./groups.ts";
import { INSTALL_STATE_VERSION, type InstallState, installStatePath, readInstallState } from "./install-state.ts";
import { renderPlist } from "./launchd.ts";
import { agentPlistPath, LABEL, loadAgent, macPlatform, plannedAgent, refuseOnMac } from "./macos.ts";
import { startDirect, stopDaemons, waitReady } from "./planterd.ts";
import {
  managerRunning,
  mustSystemctl,
  renderServiceUnit,
  renderSocketUnit,
  renderTmpfiles,
  tmpfilesCreate,
  type UnitParams,
  unitSetup,
  wantsLink,
} from "./systemd.ts";
import { type Step, type StepEvent, type StepReport, Transaction } from "./transaction.ts";

export interface InstallOptions {
  mode: InstallMode;
  /** Bin dir parent (bin dir = prefix/bin). */
  prefix?: string;
  /**
   * Staging root: every path is written below it, and nothing on the running host changes — no
   * account created, no program started, no systemctl: units are enabled offline, and the group and
   * job user are recorded for the package to create when it is installed.
   */
  root: string;
  /** The binary to install (default: this one, or dist/planter of a source checkout, built when missing). */
  binary?: string;
  dryRun: boolean;
  waitMs: number;
  /**
   * Use systemd units: "auto" (when a service manager answers; always under a staging root), "yes"
   * (write and enable them; offline when no manager runs, e.g. in an image build), "no" (start
   * planterd directly; under a staging root, write no units).
   */
  systemd?: "auto" | "yes" | "no";
  env?: Record<string, string | undefined>;
  /** Report progress (one line per step). */
  progress?: (line: string) => void;
  /** The host's platform (default process.platform); "darwin" installs a launchd agent (lib/host/macos.ts). */
  platform?: NodeJS.Platform;
  /** The installing user's uid (default process.getuid()); macOS loads the agent into gui/<uid>. */
  uid?: number;
  /** Called at every point of the step engine (tests stop a run there). */
  observe?: (e: StepEvent) => void;
}

export interface InstallResult {
  upgrade: boolean;
  dry_run: boolean;
  mode: InstallMode;
  root: string;
  /** The plan (dry run), or each step with what the run did. */
  steps: StepReport[];
  state_file: string;
  daemon: InstallState["daemon"];
  ready: boolean | null;
  socket: string;
  /** The job user as recorded (system mode; null in user mode and in a dry run). */
  job_user: InstallState["job_user"] | null;
}

/** Entry links placed in the bin dir. Generic names (install, logs, doctor…) are left out: they would shadow system commands. */
export const BIN_LINKS = ["planterd"];

/** Default config written when none exists. */
export { DEFAULT_CONFIG };

function osRelease(root: string): Record<string, string> | null {
  const p = join(root, "etc", "os-release");
  if (!existsSync(p)) return null;
  const out: Record<string, string> = {};
  for (const line of readFileSync(p, "utf8").split("\n")) {
    const m = /^([A-Z_]+)=("?)(.*)\2$/.exec(line.trim());
    if (m && ["ID", "VERSION_ID", "PRETTY_NAME"].includes(m[1] as string))
      out[(m[1] as string).toLowerCase()] = m[3] as string;
  }
  return out;
}

function packageManager(): string | null {
  const system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const pm of ["apt-get", "dnf", "yum", "pacman", "zypper", "apk", "brew"])
    if (Bun.which(pm, { PATH: system })) return pm;
  return null;
}

/** The binary to install: explicit, this compiled binary, or the source checkout's dist/planter (built when missing). */
export async function sourceBinary(explicit: string | undefined, progress: (l: string) => void): Promise<string> {
  if (explicit) {
    if (!existsSync(explicit)) throw new PlanterError("E_USAGE", `--binary ${explicit} does not exist`);
    return explicit;
  }
  if (Bun.main.startsWith("/$bunfs")) return process.execPath;
  const repo = join(import.meta.dir, "..", "..");
  const built = join(repo, "dist", "planter");
  if (!existsSync(built)) {
    progress("building dist/planter from this source checkout");
    const r = await exec("make", ["-C", repo, "build"], { timeoutMs: 600_000, nothrow: true });
    if (r.code !== 0)
      throw new PlanterError("E_UNAVAILABLE", `cannot build planter: ${describe("make", ["build"], r)}`, {
        hint: "run `make build` and fix what it reports",
      });
  }
  return built;
}

/** Target paths (as the installed system sees them). */
export function targetPaths(opts: {
  mode: InstallMode;
  prefix?: string;
  env?: Record<string, string | undefined>;
  platform?: NodeJS.Platform;
}) {
  const env: Record<string, string | undefined> = { ...process.env, ...opts.env, PLANTER_MODE: opts.mode };
  const paths = resolvePaths(
    env,
    opts.platform ?? process.platform,
    opts.mode === "system" ? 0 : (process.getuid?.() ?? 1000),
  );
  const home = env.HOME || homedir();
  const prefix = opts.prefix ?? (opts.mode === "system" ? "/usr/local" : join(home, ".local"));
  const unitDir =
    opts.mode === "system"
      ? "/etc/systemd/system"
      : join(env.XDG_CONFIG_HOME || join(home, ".config"), "systemd", "user");
  return { ...paths, binDir: join(prefix, "bin"), prefix, unitDir, tmpfiles: "/etc/tmpfiles.d/planter.conf" };
}

/** The record of an install about to begin at `now`: no files, directories, units or group yet; no daemon. */
export function newInstallState(
  mode: InstallMode,
  root: string,
  t: ReturnType<typeof targetPaths>,
  platform: InstallState["platform"],
  now: string,
): InstallState {
  return {
    schema_version: INSTALL_STATE_VERSION,
    version: BUILD.version,
    commit: BUILD.commit,
    mode,
    root,
    prefix: t.prefix,
    installed_at: now,
    updated_at: now,
    platform,
    paths: { state_dir: t.stateDir, socket: t.socketPath, config: t.configPath, bin_dir: t.binDir },
    files: [],
    dirs_created: [],
    units: [],
    group: null,
    job_user: null,
    daemon: { managed_by: "none", pid: null },
  };
}

/** What install's plan is made of: the options, the target paths, and what was looked up before anything changes. */
interface Setup {
  opts: InstallOptions;
  tx: Transaction;
  t: ReturnType<typeof targetPaths>;
  mac: boolean;
  uid: number;
  plist: string;
  stateFile: string;
  previous: InstallState | null;
  units: "live" | "offline" | null;
  binary: string;
  bin: string;
  backupDir: string;
  group: string | null;
  /** The user install adds to the group (the sudo caller; system mode). */
  invoking: string | null;
  jobUser: string | null;
  result: InstallResult;
}

/** Install (or upgrade) planter; returns what was done (a dry run: the plan). */
export async function install(opts: InstallOptions): Promise<InstallResult> {
  const s = await prepare(opts);
  const steps = installSteps(s);
  if (opts.dryRun) {
    s.result.steps = s.tx.plan(steps);
    return s.result;
  }
  await open(s);
  s.result.steps = await s.tx.run(steps);
  s.result.daemon = s.tx.state.daemon;
  if (s.jobUser) s.result.job_user = s.tx.state.job_user;
  return s.result;
}

/** Refusals, the previous record, how units are set up, the binary: everything the plan depends on, changing nothing. */
async function prepare(opts: InstallOptions): Promise<Setup> {
  const progress = opts.progress ?? (() => undefined);
  const tx = new Transaction({ root: opts.root, dryRun: opts.dryRun, progress, observe: opts.observe });
  const t = targetPaths(opts);
  const mac = (opts.platform ?? process.platform) === "darwin";
  const uid = opts.uid ?? process.getuid?.() ?? 1000;
  if (mac) refuseOnMac({ mode: opts.mode, uid, systemd: opts.systemd });
  const stateFile = installStatePath(t.stateDir);
  const previous = readInstallState(tx.R(stateFile));
  if (previous && previous.mode !== opts.mode) {
    throw new PlanterError("E_CONFLICT", `planter is installed here in ${previous.mode} mode`, {
      hint: `uninstall it first, or run install --${previous.mode}`,
    });
  }
  const systemdOpt = opts.systemd ?? "auto";
  // Only a live host is asked whether its service manager runs; a staging root is another host's.
  const running = !mac && !tx.staged && systemdOpt !== "no" && (await managerRunning(opts.mode));
  const units = mac ? null : unitSetup({ systemd: systemdOpt, staged: tx.staged, running });
  const binary = opts.dryRun ? (opts.binary ?? "(this planter binary)") : await sourceBinary(opts.binary, progress);
  const system = opts.mode === "system";
  return {
    opts,
    tx,
    t,
    mac,
    uid,
    plist: agentPlistPath({ ...process.env, ...opts.env }.HOME || homedir()),
    stateFile,
    previous,
    units,
    binary,
    bin: join(t.binDir, "planter"),
    backupDir: join(t.stateDir, "install-backup"),
    group: system ? "planter" : null,
    invoking: system ? (opts.env?.SUDO_USER ?? process.env.SUDO_USER ?? null) : null,
    // A root peer's jobs run as this user when planterd is root (lib/sandbox/identity.ts).
    jobUser: system && !mac ? DEFAULT_ROOT_PEER_USER : null,
    result: {
      upgrade: previous !== null,
      dry_run: opts.dryRun,
      mode: opts.mode,
      root: opts.root,
      steps: [],
      state_file: tx.R(stateFile),
      daemon: previous?.daemon ?? { managed_by: "none", pid: null },
      ready: null,
      socket: t.socketPath,
      job_user: null,
    },
  };
}

/** The steps, in order: files, accounts, the service, readiness. */
function installSteps(s: Setup): Step[] {
  return [...fileSteps(s), ...accountSteps(s), ...serviceSteps(s), ...readySteps(s)];
}

/** Begin the record (the previous one, or a new one), the staging root and the state dir; save it. */
async function open(s: Setup): Promise<void> {
  const { opts, tx, t } = s;
  const macInfo = s.mac && !s.previous ? await macPlatform(opts.env ?? {}, arch()) : null;
  const now = new Date().toISOString();
  const state =
    s.previous ??
    newInstallState(
      opts.mode,
      opts.root,
      t,
      macInfo ?? {
        os: process.platform,
        arch: arch(),
        os_release: osRelease(opts.root),
        package_manager: packageManager(),
        systemd: s.units !== null,
      },
      now,
    );
  state.version = BUILD.version;
  state.commit = BUILD.commit;
  state.updated_at = now;
  tx.keep(state, s.stateFile);
  // A staging root (a packager's DESTDIR) is made when missing.
  if (tx.staged) mkdirSync(opts.root, { recursive: true, mode: 0o755 });
  // The record lives in the state dir: made (and noted in the record) before the record's first save.
  tx.mkdirs(t.stateDir, 0o700, false);
  tx.save();
  tx.progress(
    `${s.previous ? "upgrading" : "installing"} planter ${BUILD.version} (${opts.mode} mode${tx.staged ? `, staging root ${opts.root}` : ""})`,
  );
}

function fileSteps(s: Setup): Step[] {
  const { tx, t, bin, backupDir } = s;
  const steps: Step[] = [
    {
      id: "binary",
      describe: `${s.previous ? "replace" : "install"} ${t.binDir}/planter (from ${s.binary})`,
      apply: () => {
        tx.mkdirs(t.binDir);
        tx.putFile(bin, "binary", { copy: s.binary, mode: 0o755 }, backupDir);
        tx.progress(`installed ${bin}`);
      },
    },
    ...BIN_LINKS.map(
      (l): Step => ({
        id: `link.${l}`,
        describe: `link ${t.binDir}/${l} → planter`,
        apply: () => tx.putFile(join(t.binDir, l), "link", { link: "planter" }, backupDir),
      }),
    ),
  ];
  steps.push(docsStep(s));
  if (!existsSync(tx.R(t.configPath)))
    steps.push({
      id: "config",
      describe: `write a default config ${t.configPath}`,
      needed: () => !existsSync(tx.R(t.configPath)),
      apply: () => {
        tx.mkdirs(dirname(t.configPath));
        tx.putFile(t.configPath, "config", { text: DEFAULT_CONFIG, mode: 0o644 }, backupDir);
        tx.progress(`wrote ${t.configPath}`);
      },
    });
  return steps;
}

/** Where each shell and man look for planter's completions and page, under the install prefix. */
export function docPaths(prefix: string) {
  const share = join(prefix, "share");
  return {
    bash: join(share, "bash-completion", "completions", "planter"),
    zsh: join(share, "zsh", "site-functions", "_planter"),
    fish: join(share, "fish", "vendor_completions.d", "planter.fish"),
    man: join(share, "man", "man1", "planter.1"),
  };
}

/** Shell completions and planter(1), generated from the command tree of the planter being installed. */
function docsStep(s: Setup): Step {
  const { tx, t, backupDir } = s;
  const at = docPaths(t.prefix);
  return {
    id: "docs",
    describe: `write completions for bash, zsh and fish and the man page planter(1) under ${join(t.prefix, "share")}`,
    apply: async () => {
      const { completionScript, manPageText } = await import("../cli/completion.ts");
      for (const shell of ["bash", "zsh", "fish"] as const) {
        tx.mkdirs(dirname(at[shell]));
        tx.putFile(at[shell], "completion", { text: await completionScript(shell), mode: 0o644 }, backupDir);
      }
      tx.mkdirs(dirname(at.man));
      tx.putFile(at.man, "manpage", { text: await manPageText(), mode: 0o644 }, backupDir);
      tx.progress(`wrote completions and the man page under ${join(t.prefix, "share")}`);
    },
  };
}

function accountSteps(s: Setup): Step[] {
  const steps: Step[] = [];
  if (s.group && s.tx.staged) steps.push(stagedGroupStep(s, s.group));
  else if (s.group) {
    steps.push(groupStep(s, s.group));
    if (s.invoking && s.invoking !== "root") steps.push(membershipStep(s, s.group, s.invoking));
  }
  if (s.jobUser) steps.push(s.tx.staged ? stagedJobUserStep(s, s.jobUser) : jobUserStep(s, s.jobUser));
  return steps;
}

const groupaddLine = (group: string) => `groupadd --system ${group}`;
const useraddLine = (user: string) => `useradd ${jobUseraddArgs(user, nologinShell()).join(" ")}`;

/** A staging root is packaged for another host: this host's accounts are not the target's. */
function stagedGroupStep(s: Setup, group: string): Step {
  return {
    id: "group",
    describe: `group ${group}: not created in a staging root; the package must create it when installed (${groupaddLine(group)})`,
    apply: () => {
      s.tx.record((st) => {
        st.group ??= {
          name: group,
          existed_before: null,
          created_by_installer: false,
          members_added: [],
          create_at_package_install: true,
        };
      });
      s.tx.progress(
        `staging root: group ${group} is not created here; the package must create it: ${groupaddLine(group)}`,
      );
    },
  };
}

/**
 * Run `change` after recording `intent` (write-ahead: a run killed during `change` leaves the
 * intent and `pending`, which uninstall checks against the host); a failed change takes the intent back.
 */
async function intended(
  tx: Transaction,
  intent: (st: InstallState) => void,
  revert: (st: InstallState) => void,
  change: () => Promise<void>,
) {
  tx.record(intent);
  try {
    await change();
  } catch (e) {
    tx.record(revert);
    throw e;
  }
}

function groupStep(s: Setup, group: string): Step {
  const { tx } = s;
  return {
    id: "group",
    describe: `create group ${group} unless it exists (${groupaddLine(group)})`,
    needed: async () => {
      const existing = await getentGroup(group);
      if (!tx.state.group)
        tx.record((st) => {
          st.group = {
            name: group,
            existed_before: existing !== null,
            created_by_installer: false,
            members_added: [],
            create_at_package_install: false,
          };
        });
      return existing === null;
    },
    apply: async () => {
      const set = (v: boolean) => (st: InstallState) => {
        if (st.group) st.group.created_by_installer = v;
      };
      await intended(tx, set(true), set(false), () => groupadd(group));
      tx.progress(`created group ${group}`);
    },
  };
}

function membershipStep(s: Setup, group: string, user: string): Step {
  const { tx } = s;
  return {
    id: "membership",
    describe: `add ${user} to group ${group} (usermod -aG ${group} ${user})`,
    needed: async () => !((await getentGroup(group))?.members ?? []).includes(user),
    apply: async () => {
      const added = tx.state.group?.members_added.includes(user) ?? false;
      await intended(
        tx,
        (st) => {
          if (st.group && !added) st.group.members_added.push(user);
        },
        (st) => {
          if (st.group && !added) st.group.members_added = st.group.members_added.filter((m) => m !== user);
        },
        () => addMember(user, group),
      );
      tx.progress(`added ${user} to group ${group} (log in again for it to take effect)`);
    },
  };
}

function stagedJobUserStep(s: Setup, user: string): Step {
  return {
    id: "job-user",
    describe: `system user ${user} for root's jobs: not created in a staging root; the package must create it when installed (${useraddLine(user)})`,
    apply: () => {
      s.tx.record((st) => {
        st.job_user ??= {
          name: user,
          existed_before: null,
          created_by_installer: false,
          create_at_package_install: true,
        };
      });
      s.tx.progress(
        `staging root: system user ${user} is not created here; the package must create it: ${useraddLine(user)}`,
      );
    },
  };
}

function jobUserStep(s: Setup, user: string): Step {
  const { tx } = s;
  return {
    id: "job-user",
    describe: `create system user ${user} for root's jobs unless it exists (${useraddLine(user)})`,
    needed: async () => {
      const existing = await getentPasswd(user);
      if (!tx.state.job_user)
        tx.record((st) => {
          st.job_user = {
            name: user,
            existed_before: existing !== null,
            created_by_installer: false,
            create_at_package_install: false,
          };
        });
      if (existing?.uid === 0)
        tx.progress(
          `warning: user ${user} is uid 0, so planterd runs root's jobs as nobody; see \`planter doctor jobs.user\``,
        );
      return existing === null;
    },
    apply: async () => {
      const set = (v: boolean) => (st: InstallState) => {
        if (st.job_user) st.job_user.created_by_installer = v;
      };
      await intended(tx, set(true), set(false), () => useraddJobUser(user, nologinShell()));
      tx.progress(`created system user ${user} (a root peer's jobs run as it)`);
    },
  };
}

function serviceSteps(s: Setup): Step[] {
  if (s.mac) return agentSteps(s);
  if (s.units) return unitSteps(s, s.units);
  return s.tx.staged ? [] : [directStep(s)];
}

/** macOS: the launchd agent's plist, and (on this host) loading it. */
function agentSteps(s: Setup): Step[] {
  const { tx, t } = s;
  const lines = new Map(plannedAgent({ uid: s.uid, plist: s.plist, upgrade: s.previous !== null, staged: tx.staged }));
  const text = renderPlist({
    label: LABEL,
    binary: s.bin,
    configPath: t.configPath,
    socketPath: t.socketPath,
    stateDir: t.stateDir,
    logPath: join(t.stateDir, "planterd.log"),
  });
  const steps: Step[] = [
    {
      id: "plist",
      describe: lines.get("plist") ?? "",
      apply: () => {
        tx.mkdirs(dirname(s.plist));
        tx.putFile(s.plist, "plist", { text, mode: 0o644 }, s.backupDir);
        tx.progress(`wrote ${s.plist}`);
      },
    },
  ];
  const load = lines.get("launchctl");
  if (load)
    steps.push({
      id: "launchctl",
      describe: load,
      apply: async () => {
        tx.record((st) => {
          st.daemon = { managed_by: "launchd", pid: null };
        });
        await loadAgent(s.uid, s.plist, s.opts.waitMs, s.opts.env ?? {});
        tx.progress(`launchd agent ${LABEL} loaded into gui/${s.uid}`);
      },
    });
  return steps;
}

function unitSteps(s: Setup, units: "live" | "offline"): Step[] {
  const { tx, t, opts } = s;
  const params: UnitParams = {
    mode: opts.mode,
    binary: s.bin,
    socketPath: t.socketPath,
    configPath: t.configPath,
    stateDir: t.stateDir,
    group: s.group,
  };
  const steps: Step[] = [];
  const group = s.group;
  if (group)
    steps.push({
      id: "tmpfiles",
      describe: `write ${t.tmpfiles} (socket dir ${socketDir(t.socketPath)} root:${group} 0750)`,
      apply: async () => {
        tx.mkdirs(dirname(t.tmpfiles));
        const text = renderTmpfiles(socketDir(t.socketPath), group);
        tx.putFile(t.tmpfiles, "tmpfiles", { text, mode: 0o644 }, s.backupDir);
        if (units === "live") await tmpfilesCreate(t.tmpfiles);
      },
    });
  steps.push({
    id: "units",
    describe: `write ${t.unitDir}/planterd.socket and planterd.service`,
    apply: () => {
      tx.mkdirs(t.unitDir);
      for (const [name, text] of [
        ["planterd.socket", renderSocketUnit(params)],
        ["planterd.service", renderServiceUnit(params)],
      ] as const)
        tx.putFile(join(t.unitDir, name), "unit", { text, mode: 0o644 }, s.backupDir);
      tx.progress(`wrote units in ${t.unitDir}`);
    },
  });
  steps.push(units === "live" ? liveUnitsStep(s) : offlineUnitsStep(s));
  return steps;
}

/** What install records for its units (before enabling them: a run stopped half-way is still disabled by uninstall). */
const recordUnits = (mode: InstallMode) => (st: InstallState) => {
  st.units = [
    { name: "planterd.socket", scope: mode, enabled: true },
    { name: "planterd.service", scope: mode, enabled: false },
  ];
  st.daemon = { managed_by: "systemd", pid: null };
};

function liveUnitsStep(s: Setup): Step {
  const mode = s.opts.mode;
  return {
    id: "systemctl",
    describe: s.previous ? "reload systemd and restart planterd" : "reload systemd, enable and start planterd.socket",
    apply: async () => {
      s.tx.record(recordUnits(mode));
      await mustSystemctl(mode, "daemon-reload");
      if (s.previous) await mustSystemctl(mode, "try-restart", "planterd.service");
      await mustSystemctl(mode, "enable", "--now", "planterd.socket");
      s.tx.progress("planterd.socket enabled and started");
    },
  };
}

/** What `systemctl enable` does for WantedBy=sockets.target, without asking a manager that is not there. */
function offlineUnitsStep(s: Setup): Step {
  const { tx } = s;
  const wants = wantsLink(s.t.unitDir);
  return {
    id: "enable",
    describe: `enable planterd.socket offline: link ${wants.path} → ${wants.target} (${tx.staged ? "staging root" : "no service manager answers"}; nothing is started)`,
    apply: () => {
      tx.mkdirs(dirname(wants.path));
      tx.putFile(wants.path, "link", { link: wants.target }, s.backupDir);
      tx.record(recordUnits(s.opts.mode));
      tx.progress(
        tx.staged
          ? `planterd.socket enabled offline in the staging root (${wants.path})`
          : `no service manager answers: planterd.socket enabled offline (${wants.path}); it starts with systemd, or run planterd now: ${s.bin} daemon`,
      );
    },
  };
}

/** No systemd: planterd started directly; an upgrade replaces whichever planterd serves this state dir, also one restarted by hand. */
function directStep(s: Setup): Step {
  const { tx, t } = s;
  return {
    id: "daemon",
    describe: `no running systemd: start planterd directly (log ${t.stateDir}/planterd.log)`,
    apply: async () => {
      const recorded = tx.state.daemon.managed_by === "direct" ? tx.state.daemon.pid : null;
      const { stopped } = await stopDaemons(t.stateDir, recorded);
      if (stopped.length) tx.progress(`stopped planterd (pid ${stopped.join(", ")})`);
      tx.record((st) => {
        st.daemon = { managed_by: "direct", pid: null };
      });
      const pid = startDirect(s.bin, t, s.opts.mode);
      tx.record((st) => {
        st.daemon = { managed_by: "direct", pid };
      });
      tx.progress(`no running systemd: started planterd directly (pid ${pid}); start it again with: ${s.bin} daemon &`);
    },
  };
}

/** On this host, with a daemon started now (live units, launchd, direct): a real API call through the socket. */
function readySteps(s: Setup): Step[] {
  const { tx, t, opts } = s;
  if (tx.staged || s.units === "offline") return [];
  return [
    {
      id: "ready",
      describe: `wait for planterd to answer on ${t.socketPath}`,
      apply: async () => {
        tx.progress(`waiting for planterd on ${t.socketPath}`);
        s.result.ready = await waitReady(t.socketPath, opts.waitMs);
        if (!s.result.ready)
          throw new PlanterError(
            "E_UNAVAILABLE",
            `planter is installed, but planterd did not answer on ${t.socketPath} within ${opts.waitMs} ms`,
            {
              hint:
                tx.state.daemon.managed_by === "systemd"
                  ? `see: journalctl ${opts.mode === "user" ? "--user " : ""}-u planterd.service`
                  : `see the log: ${t.stateDir}/planterd.log`,
            },
          );
        tx.progress("planterd is ready");
      },
    },
  ];
}

export { daemonOf, isPlanterd, stopDaemons, stopDirect, waitReady } from "./planterd.ts";
