/**
 * install: put planter on a host so that it starts on demand, recording everything it changes in
 * install-state.json (see install-state.ts) so that uninstall can take back exactly that.
 */
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { arch, homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import { Client } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import { DEFAULT_ROOT_PEER_USER } from "../config.ts";
import { type InstallMode, resolvePaths, socketDir, stateFiles } from "../paths.ts";
import { lockHolder } from "../state/lock.ts";
import { BUILD } from "../version.ts";
import { describe, run } from "./exec.ts";
import {
  addMember,
  getentGroup,
  getentPasswd,
  groupadd,
  jobUseraddArgs,
  nologinShell,
  useraddJobUser,
} from "./groups.ts";
import {
  type FileRecord,
  INSTALL_STATE_VERSION,
  type InstallState,
  installStatePath,
  readInstallState,
  sha256File,
  sha256Text,
} from "./install-state.ts";
import { renderPlist } from "./launchd.ts";
import { agentPlistPath, LABEL, loadAgent, macPlatform, plannedAgent, refuseOnMac } from "./macos.ts";
import {
  managerRunning,
  renderServiceUnit,
  renderSocketUnit,
  renderTmpfiles,
  systemctl,
  type UnitParams,
  unitSetup,
  wantsLink,
} from "./systemd.ts";

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
}

export interface Step {
  id: string;
  description: string;
}

export interface InstallResult {
  upgrade: boolean;
  dry_run: boolean;
  mode: InstallMode;
  root: string;
  steps: Step[];
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
export const DEFAULT_CONFIG = `# planterd configuration — every key is optional; see README "Configuration".
[sandbox]
mode = "enforced"   # enforced (fail closed) | permissive | disabled

[authz]
strict = true
`;

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
    const r = await run("make", "-C", repo, "build");
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

/** Install (or upgrade) planter; returns what was done. */
export async function install(opts: InstallOptions): Promise<InstallResult> {
  const progress = opts.progress ?? (() => undefined);
  const root = opts.root;
  const R = (p: string) => (root === "/" ? p : join(root, p));
  const t = targetPaths(opts);
  const mac = (opts.platform ?? process.platform) === "darwin";
  const uid = opts.uid ?? process.getuid?.() ?? 1000;
  if (mac) refuseOnMac({ mode: opts.mode, uid, systemd: opts.systemd });
  const plist = agentPlistPath({ ...process.env, ...opts.env }.HOME || homedir());
  const stateFile = installStatePath(t.stateDir);
  const previous = readInstallState(R(stateFile));
  if (previous && previous.mode !== opts.mode) {
    throw new PlanterError("E_CONFLICT", `planter is installed here in ${previous.mode} mode`, {
      hint: `uninstall it first, or run install --${previous.mode}`,
    });
  }
  const staged = root !== "/";
  const systemdOpt = opts.systemd ?? "auto";
  // Only a live host is asked whether its service manager runs; a staging root is another host's.
  const running = !mac && !staged && systemdOpt !== "no" && (await managerRunning(opts.mode));
  const units = mac ? null : unitSetup({ systemd: systemdOpt, staged, running });
  const systemd = units !== null;
  const wants = wantsLink(t.unitDir);
  const steps: Step[] = [];
  const plan = (id: string, description: string) => steps.push({ id, description });
  const binary = opts.dryRun ? (opts.binary ?? "(this planter binary)") : await sourceBinary(opts.binary, progress);
  const group = opts.mode === "system" ? "planter" : null;
  const invoking = opts.mode === "system" ? (opts.env?.SUDO_USER ?? process.env.SUDO_USER ?? null) : null;
  // A root peer's jobs run as this user when planterd is root (lib/sandbox/identity.ts).
  const jobUser = opts.mode === "system" && !mac ? DEFAULT_ROOT_PEER_USER : null;
  const useradd = jobUser ? `useradd ${jobUseraddArgs(jobUser, nologinShell()).join(" ")}` : "";
  const groupaddLine = group ? `groupadd --system ${group}` : "";

  plan("binary", `${previous ? "replace" : "install"} ${t.binDir}/planter (from ${binary})`);
  for (const l of BIN_LINKS) plan(`link.${l}`, `link ${t.binDir}/${l} → planter`);
  if (!existsSync(R(t.configPath))) plan("config", `write a default config ${t.configPath}`);
  if (group && staged) {
    plan(
      "group",
      `group ${group}: not created in a staging root; the package must create it when installed (${groupaddLine})`,
    );
  } else if (group) {
    plan("group", `create group ${group} unless it exists (${groupaddLine})`);
    if (invoking && invoking !== "root")
      plan("membership", `add ${invoking} to group ${group} (usermod -aG ${group} ${invoking})`);
  }
  if (jobUser) {
    plan(
      "job-user",
      root === "/"
        ? `create system user ${jobUser} for root's jobs unless it exists (${useradd})`
        : `system user ${jobUser} for root's jobs: not created in a staging root; the package must create it when installed (${useradd})`,
    );
  }
  if (mac) {
    for (const [id, d] of plannedAgent({ uid, plist, upgrade: previous !== null, staged: root !== "/" })) plan(id, d);
  } else if (systemd) {
    if (group) plan("tmpfiles", `write ${t.tmpfiles} (socket dir ${socketDir(t.socketPath)} root:${group} 0750)`);
    plan("units", `write ${t.unitDir}/planterd.socket and planterd.service`);
    if (units === "live")
      plan(
        "systemctl",
        previous ? "reload systemd and restart planterd" : "reload systemd, enable and start planterd.socket",
      );
    else
      plan(
        "enable",
        `enable planterd.socket offline: link ${wants.path} → ${wants.target} (${staged ? "staging root" : "no service manager answers"}; nothing is started)`,
      );
  } else if (root === "/") {
    plan("daemon", `no running systemd: start planterd directly (log ${t.stateDir}/planterd.log)`);
  }
  if (root === "/" && units !== "offline") plan("ready", `wait for planterd to answer on ${t.socketPath}`);
  const result: InstallResult = {
    upgrade: previous !== null,
    dry_run: opts.dryRun,
    mode: opts.mode,
    root,
    steps,
    state_file: R(stateFile),
    daemon: previous?.daemon ?? { managed_by: "none", pid: null },
    ready: null,
    socket: t.socketPath,
    job_user: null,
  };
  if (opts.dryRun) return result;

  const macInfo = mac && !previous ? await macPlatform(opts.env ?? {}, arch()) : null;
  const now = new Date().toISOString();
  const state: InstallState =
    previous ??
    newInstallState(
      opts.mode,
      root,
      t,
      macInfo ?? {
        os: process.platform,
        arch: arch(),
        os_release: osRelease(root),
        package_manager: packageManager(),
        systemd,
      },
      now,
    );
  state.version = BUILD.version;
  state.commit = BUILD.commit;
  state.updated_at = now;
  // Written after every step: an install that stops half-way can still be undone.
  const save = () => {
    writeFileSync(R(stateFile), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  };
  const mkdirs = (dir: string, mode = 0o755) => {
    const missing: string[] = [];
    for (let d = dir; d !== "/" && !existsSync(R(d)); d = dirname(d)) missing.unshift(d);
    for (const d of missing) {
      mkdirSync(R(d), { mode });
      if (!state.dirs_created.includes(d)) state.dirs_created.push(d);
    }
  };
  const backupDir = join(t.stateDir, "install-backup");
  /** Record a file, saving what was there before the first install. */
  const recordFile = (
    path: string,
    kind: FileRecord["kind"],
    write: () => void,
    sha: () => string,
    target?: string,
  ) => {
    const known = state.files.find((f) => f.path === path);
    let existed = known?.existed_before ?? false;
    let backup = known?.backup;
    if (!known && (existsSync(R(path)) || isLink(R(path)))) {
      existed = true;
      mkdirs(backupDir, 0o700);
      backup = join(backupDir, path.replaceAll("/", "%"));
      renameSync(R(path), R(backup));
    }
    write();
    const rec: FileRecord = {
      path,
      kind,
      sha256: sha(),
      existed_before: existed,
      ...(backup ? { backup } : {}),
      ...(target ? { target } : {}),
    };
    state.files = [...state.files.filter((f) => f.path !== path), rec];
    save();
  };

  // A staging root (a packager's DESTDIR) is made when missing.
  if (staged) mkdirSync(root, { recursive: true, mode: 0o755 });
  mkdirs(t.stateDir, 0o700);
  save();
  progress(
    `${previous ? "upgrading" : "installing"} planter ${BUILD.version} (${opts.mode} mode${root === "/" ? "" : `, staging root ${root}`})`,
  );

  // Binary: copied beside the target, then renamed over it (atomic for running processes).
  mkdirs(t.binDir);
  const bin = join(t.binDir, "planter");
  recordFile(
    bin,
    "binary",
    () => {
      const tmp = R(`${bin}.new-${process.pid}`);
      copyFileSync(binary, tmp);
      chmodSync(tmp, 0o755);
      renameSync(tmp, R(bin));
    },
    () => sha256File(R(bin)),
  );
  progress(`installed ${bin}`);
  for (const l of BIN_LINKS) {
    const link = join(t.binDir, l);
    recordFile(
      link,
      "link",
      () => {
        if (isLink(R(link))) unlinkSync(R(link));
        symlinkSync("planter", R(link));
      },
      () => sha256Text("planter"),
      "planter",
    );
  }
  if (!existsSync(R(t.configPath))) {
    mkdirs(dirname(t.configPath));
    recordFile(
      t.configPath,
      "config",
      () => writeFileSync(R(t.configPath), DEFAULT_CONFIG, { mode: 0o644 }),
      () => sha256Text(DEFAULT_CONFIG),
    );
    progress(`wrote ${t.configPath}`);
  }

  if (group && staged) {
    // A staging root is packaged for another host: this host's accounts are not the target's.
    state.group ??= {
      name: group,
      existed_before: null,
      created_by_installer: false,
      members_added: [],
      create_at_package_install: true,
    };
    save();
    progress(`staging root: group ${group} is not created here; the package must create it: ${groupaddLine}`);
  } else if (group) {
    const existing = await getentGroup(group);
    if (!state.group)
      state.group = {
        name: group,
        existed_before: existing !== null,
        created_by_installer: false,
        members_added: [],
        create_at_package_install: false,
      };
    if (!existing) {
      await groupadd(group);
      state.group.created_by_installer = true;
      save();
      progress(`created group ${group}`);
    }
    if (invoking && invoking !== "root") {
      const members = (await getentGroup(group))?.members ?? [];
      if (!members.includes(invoking)) {
        await addMember(invoking, group);
        if (!state.group.members_added.includes(invoking)) state.group.members_added.push(invoking);
        save();
        progress(`added ${invoking} to group ${group} (log in again for it to take effect)`);
      }
    }
  }

  if (jobUser) {
    if (root !== "/") {
      // A staging root is packaged for another host: this host's accounts are not the target's.
      state.job_user ??= {
        name: jobUser,
        existed_before: null,
        created_by_installer: false,
        create_at_package_install: true,
      };
      save();
      progress(`staging root: system user ${jobUser} is not created here; the package must create it: ${useradd}`);
    } else {
      const existing = await getentPasswd(jobUser);
      state.job_user ??= {
        name: jobUser,
        existed_before: existing !== null,
        created_by_installer: false,
        create_at_package_install: false,
      };
      if (!existing) {
        await useraddJobUser(jobUser, nologinShell());
        state.job_user.created_by_installer = true;
        save();
        progress(`created system user ${jobUser} (a root peer's jobs run as it)`);
      } else if (existing.uid === 0) {
        progress(
          `warning: user ${jobUser} is uid 0, so planterd runs root's jobs as nobody; see \`planter doctor jobs.user\``,
        );
      }
    }
    result.job_user = state.job_user;
  }

  if (mac) {
    const text = renderPlist({
      label: LABEL,
      binary: bin,
      configPath: t.configPath,
      socketPath: t.socketPath,
      stateDir: t.stateDir,
      logPath: join(t.stateDir, "planterd.log"),
    });
    mkdirs(dirname(plist));
    recordFile(
      plist,
      "plist",
      () => writeFileSync(R(plist), text, { mode: 0o644 }),
      () => sha256Text(text),
    );
    progress(`wrote ${plist}`);
    if (root === "/") {
      await loadAgent(uid, plist, opts.waitMs, opts.env ?? {});
      state.daemon = { managed_by: "launchd", pid: null };
      save();
      progress(`launchd agent ${LABEL} loaded into gui/${uid}`);
    }
  } else if (systemd) {
    const params: UnitParams = {
      mode: opts.mode,
      binary: bin,
      socketPath: t.socketPath,
      configPath: t.configPath,
      stateDir: t.stateDir,
      group,
    };
    if (group) {
      mkdirs(dirname(t.tmpfiles));
      const text = renderTmpfiles(socketDir(t.socketPath), group);
      recordFile(
        t.tmpfiles,
        "tmpfiles",
        () => writeFileSync(R(t.tmpfiles), text),
        () => sha256Text(text),
      );
      if (units === "live") await must("systemd-tmpfiles", "--create", t.tmpfiles);
    }
    mkdirs(t.unitDir);
    for (const [name, text] of [
      ["planterd.socket", renderSocketUnit(params)],
      ["planterd.service", renderServiceUnit(params)],
    ] as const) {
      const path = join(t.unitDir, name);
      recordFile(
        path,
        "unit",
        () => writeFileSync(R(path), text),
        () => sha256Text(text),
      );
    }
    progress(`wrote units in ${t.unitDir}`);
    if (units === "live") {
      await mustCtl(opts.mode, "daemon-reload");
      if (previous) await mustCtl(opts.mode, "try-restart", "planterd.service");
      await mustCtl(opts.mode, "enable", "--now", "planterd.socket");
    } else {
      // What `systemctl enable` does for WantedBy=sockets.target, without asking a manager that is not there.
      mkdirs(dirname(wants.path));
      recordFile(
        wants.path,
        "link",
        () => {
          if (isLink(R(wants.path))) unlinkSync(R(wants.path));
          symlinkSync(wants.target, R(wants.path));
        },
        () => sha256Text(wants.target),
        wants.target,
      );
    }
    state.units = [
      { name: "planterd.socket", scope: opts.mode, enabled: true },
      { name: "planterd.service", scope: opts.mode, enabled: false },
    ];
    state.daemon = { managed_by: "systemd", pid: null };
    save();
    progress(
      units === "live"
        ? "planterd.socket enabled and started"
        : staged
          ? `planterd.socket enabled offline in the staging root (${wants.path})`
          : `no service manager answers: planterd.socket enabled offline (${wants.path}); it starts with systemd, or run planterd now: ${bin} daemon`,
    );
  } else if (root === "/") {
    // An upgrade replaces whichever planterd serves this state dir, also one restarted by hand.
    const { stopped } = await stopDaemons(t.stateDir, state.daemon.managed_by === "direct" ? state.daemon.pid : null);
    if (stopped.length) progress(`stopped planterd (pid ${stopped.join(", ")})`);
    const pid = startDirect(bin, t, opts.mode);
    state.daemon = { managed_by: "direct", pid };
    save();
    progress(`no running systemd: started planterd directly (pid ${pid}); start it again with: ${bin} daemon &`);
  }
  result.daemon = state.daemon;

  if (root === "/" && units !== "offline") {
    progress(`waiting for planterd on ${t.socketPath}`);
    result.ready = await waitReady(t.socketPath, opts.waitMs);
    if (!result.ready) {
      throw new PlanterError(
        "E_UNAVAILABLE",
        `planter is installed, but planterd did not answer on ${t.socketPath} within ${opts.waitMs} ms`,
        {
          hint:
            state.daemon.managed_by === "systemd"
              ? `see: journalctl ${opts.mode === "user" ? "--user " : ""}-u planterd.service`
              : `see the log: ${t.stateDir}/planterd.log`,
        },
      );
    }
    progress("planterd is ready");
  }
  return result;
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

async function must(program: string, ...args: string[]): Promise<void> {
  const r = await run(program, ...args);
  if (r.code !== 0) throw new PlanterError("E_UNAVAILABLE", describe(program, args, r));
}

async function mustCtl(mode: InstallMode, ...args: string[]): Promise<void> {
  const r = await systemctl(mode, ...args);
  if (r.code !== 0)
    throw new PlanterError("E_UNAVAILABLE", describe(`systemctl${mode === "user" ? " --user" : ""}`, args, r));
}

/** Start planterd detached from this process (hosts without systemd). */
function startDirect(bin: string, t: ReturnType<typeof targetPaths>, mode: InstallMode): number {
  const log = openSync(join(t.stateDir, "planterd.log"), "a", 0o600);
  const p = Bun.spawn([bin, "daemon", "--config", t.configPath], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/",
      PLANTER_MODE: mode,
      PLANTER_SOCKET: t.socketPath,
      PLANTER_STATE: t.stateDir,
    },
    stdin: "ignore",
    stdout: log,
    stderr: log,
    detached: true,
  });
  p.unref();
  return p.pid;
}

/** Stop a planterd (SIGTERM; jobs keep running) and wait for it to go; false when `pid` was no running planterd. */
export async function stopDirect(pid: number, ms = 10_000): Promise<boolean> {
  if (!isPlanterd(pid)) return false;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return false;
  }
  const deadline = Date.now() + ms;
  while (isPlanterd(pid) && Date.now() < deadline) await Bun.sleep(20);
  if (isPlanterd(pid))
    throw new PlanterError("E_UNAVAILABLE", `planterd (pid ${pid}) did not stop within ${ms} ms of SIGTERM`, {
      hint: `stop it by hand: kill -KILL ${pid} (its jobs keep running), then run this again`,
    });
  return true;
}

/** True when `pid` is a running planterd (its command line says `daemon`, or it runs as `planterd`). */
export function isPlanterd(pid: number): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return (cmd.includes("daemon") || basename(cmd[0] ?? "") === "planterd") && !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

/**
 * The planterd serving a state dir, found by the lock it holds there (planterd.pid with its start
 * time, so a reused pid never counts) rather than by what install recorded: a daemon restarted by
 * hand has another pid. Null when none holds it.
 */
export function daemonOf(stateDir: string): number | null {
  const pid = lockHolder(stateFiles(stateDir).pidFile);
  return pid !== null && isPlanterd(pid) ? pid : null;
}

/**
 * Stop the planterd of a state dir: the one holding its lock, and the recorded pid of a direct
 * start if that still runs. Says what it found, so nothing is reported stopped that was not running.
 */
export async function stopDaemons(
  stateDir: string,
  recorded: number | null,
): Promise<{ stopped: number[]; notRunning: number | null }> {
  const stopped: number[] = [];
  const locked = daemonOf(stateDir);
  if (recorded !== null && recorded !== locked && (await stopDirect(recorded))) stopped.push(recorded);
  if (locked !== null && (await stopDirect(locked))) stopped.push(locked);
  return { stopped, notRunning: recorded !== null && !stopped.includes(recorded) ? recorded : null };
}

/** Wait until a real API call through the socket succeeds. */
export async function waitReady(socket: string, ms: number): Promise<boolean> {
  const c = new Client(socket);
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await c.version();
      return true;
    } catch {
      if (Date.now() > deadline) return false;
      await Bun.sleep(25);
    }
  }
}
