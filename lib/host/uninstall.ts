/**
 * uninstall: reverse exactly what install-state.json records — units, files (a file changed since
 * install is kept unless forced), backups put back, memberships, a group and a job user install
 * created, the directories it made (when empty). `purge` also removes state and logs. Running it
 * twice is harmless.
 */
import {
  existsSync,
  lstatSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { InstallMode } from "../paths.ts";
import { groupdel, removeMember, userdel } from "./groups.ts";
import { daemonOf, isPlanterd, stopDaemons, targetPaths } from "./install.ts";
import { type InstallState, installStatePath, readInstallState, sha256File, sha256Text } from "./install-state.ts";
import { uninstallLimaVm } from "./lima-install.ts";
import { unloadAgent } from "./macos.ts";
import { managerRunning, systemctl } from "./systemd.ts";

export interface UninstallOptions {
  mode: InstallMode;
  root: string;
  prefix?: string;
  force: boolean;
  purge: boolean;
  dryRun: boolean;
  env?: Record<string, string | undefined>;
  progress?: (line: string) => void;
  /** The host's platform (default process.platform): where the recorded paths resolve. */
  platform?: NodeJS.Platform;
  /** The user's uid (default process.getuid()): a launchd agent is booted out of gui/<uid>. */
  uid?: number;
}

export interface UninstallResult {
  installed: boolean;
  dry_run: boolean;
  removed: string[];
  kept: { path: string; why: string }[];
  restored: string[];
  warnings: string[];
  purged: string | null;
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Whether a recorded file is still what install wrote. */
function unchanged(R: (p: string) => string, f: InstallState["files"][number]): boolean | null {
  const p = R(f.path);
  if (f.kind === "link") {
    if (!isLink(p)) return existsSync(p) ? false : null;
    return sha256Text(readlinkSync(p)) === f.sha256;
  }
  if (!existsSync(p)) return null;
  return sha256File(p) === f.sha256;
}

export async function uninstall(opts: UninstallOptions): Promise<UninstallResult> {
  const progress = opts.progress ?? (() => undefined);
  const R = (p: string) => (opts.root === "/" ? p : join(opts.root, p));
  const t = targetPaths(opts);
  const stateFile = installStatePath(t.stateDir);
  const state = readInstallState(R(stateFile));
  const out: UninstallResult = {
    installed: state !== null,
    dry_run: opts.dryRun,
    removed: [],
    kept: [],
    restored: [],
    warnings: [],
    purged: null,
  };
  if (!state) {
    // Nothing recorded to take back; --purge still deletes the state a former install left.
    const purge = opts.purge && existsSync(R(t.stateDir));
    progress(
      `planter is not installed here (no ${R(stateFile)})${purge ? "" : ": nothing to do"}${purge ? `; ${opts.dryRun ? "would purge" : "purging"} its state dir ${R(t.stateDir)}` : ""}`,
    );
    if (purge && !opts.dryRun) {
      // A planterd started by hand may still serve that state dir: it goes first.
      if (opts.root === "/") {
        const { stopped } = await stopDaemons(t.stateDir, null);
        if (stopped.length) progress(`stopped planterd (pid ${stopped.join(", ")})`);
      }
      rmSync(R(t.stateDir), { recursive: true, force: true });
      out.purged = t.stateDir;
      progress(`purged ${t.stateDir}`);
    }
    return out;
  }
  const warn = (w: string) => {
    out.warnings.push(w);
    progress(`warning: ${w}`);
  };

  // 1. stop what runs: units (their daemon leaves jobs running; purge kills nothing either).
  // A staging root is another host's: nothing runs there, and this host's systemctl is not asked.
  const staged = opts.root !== "/";
  const managed = !staged && state.units.length > 0 && (await managerRunning(state.mode));
  if (state.daemon.managed_by === "systemd" && state.units.length) {
    if (managed && !opts.dryRun) {
      const names = state.units.map((u) => u.name);
      const r = await systemctl(state.mode, "disable", "--now", ...names);
      if (r.code !== 0)
        warn(`systemctl disable --now ${names.join(" ")} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
    progress(
      managed
        ? "stopped and disabled planterd.socket and planterd.service"
        : `no service manager ${staged ? "asked (staging root)" : "answers"}: removing the unit files and their links only`,
    );
  } else if (state.daemon.managed_by === "launchd") {
    const uid = opts.uid ?? process.getuid?.() ?? 1000;
    const failed = opts.dryRun ? null : await unloadAgent(uid, 10_000, opts.env ?? {});
    if (failed) warn(failed);
    else progress(`booted out the launchd agent (gui/${uid})`);
  }
  // Whatever install recorded, the planterd to stop is the one holding the state dir's lock (a
  // daemon restarted by hand has another pid than the recorded one).
  if (!staged && state.daemon.managed_by !== "launchd") {
    const recorded = state.daemon.managed_by === "direct" ? state.daemon.pid : null;
    if (opts.dryRun) {
      const running = [daemonOf(R(state.paths.state_dir)), recorded].filter((p) => p !== null && isPlanterd(p));
      if (running.length) progress(`would stop planterd (pid ${[...new Set(running)].join(", ")})`);
    } else {
      const { stopped, notRunning } = await stopDaemons(R(state.paths.state_dir), recorded);
      if (stopped.length) progress(`stopped planterd (pid ${stopped.join(", ")})`);
      if (notRunning !== null) progress(`planterd (pid ${notRunning}, as recorded by install) was not running`);
    }
  }

  // The socket dir is planterd's own runtime dir: gone with it when empty.
  const sockDir = R(state.paths.socket.slice(0, state.paths.socket.lastIndexOf("/")));
  if (!opts.dryRun && existsSync(sockDir) && readdirSync(sockDir).length === 0) rmdirSync(sockDir);

  // 2. files, newest records last: remove what is unchanged, put back what was there before.
  for (const f of [...state.files].reverse()) {
    const same = unchanged(R, f);
    if (same === false && !opts.force) {
      out.kept.push({ path: f.path, why: "changed since install (use --force to remove it)" });
      warn(`kept ${f.path}: changed since install (--force removes it)`);
      continue;
    }
    if (!opts.dryRun && same !== null) rmSync(R(f.path), { force: true });
    if (same !== null) out.removed.push(f.path);
    if ((f.backup && existsSync(R(f.backup))) || (f.backup && isLink(R(f.backup)))) {
      if (!opts.dryRun) renameSync(R(f.backup as string), R(f.path));
      out.restored.push(f.path);
    }
  }
  if (!opts.dryRun && managed) {
    const r = await systemctl(state.mode, "daemon-reload");
    if (r.code !== 0) warn(`systemctl daemon-reload failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
  progress(`removed ${out.removed.length} file(s)${out.restored.length ? `, put back ${out.restored.length}` : ""}`);

  // 3. memberships and the group, only as install changed them — never on this host for a staging
  // root (an older planter did create the group on the running host even with --root: say so).
  if (state.group && staged) {
    const g = state.group;
    if (g.created_by_installer || g.members_added.length)
      warn(
        `the record says install changed group ${g.name} on this host (an earlier planter did so even with --root); ` +
          `with --root nothing here is changed: undo it by hand if it is unwanted: ` +
          [
            ...g.members_added.map((u) => `gpasswd -d ${u} ${g.name}`),
            ...(g.created_by_installer ? [`groupdel ${g.name}`] : []),
          ].join(" && "),
      );
  } else if (state.group) {
    for (const user of state.group.members_added) {
      if (!opts.dryRun)
        await removeMember(user, state.group.name).catch((e) =>
          warn(`could not remove ${user} from ${state.group?.name}: ${(e as Error).message}`),
        );
      progress(`removed ${user} from group ${state.group.name}`);
    }
    if (state.group.created_by_installer) {
      if (!opts.dryRun)
        await groupdel(state.group.name).catch((e) =>
          warn(`could not delete group ${state.group?.name}: ${(e as Error).message}`),
        );
      progress(`deleted group ${state.group.name}`);
    }
  }

  // A job user install created goes; one that was there before, or one left to a package (staging root), stays.
  const jobUser = state.job_user;
  if (jobUser?.created_by_installer) {
    if (!opts.dryRun)
      await userdel(jobUser.name).catch((e) => warn(`could not delete user ${jobUser.name}: ${(e as Error).message}`));
    progress(`deleted user ${jobUser.name}`);
  }

  // 3b. the Lima VM (install --lima): deleted only when install created it and --purge is given.
  const vmKept = state.vm ? await uninstallLimaVm(state.vm, opts, progress, warn) : null;

  // 4. purge, or just the metadata; then the directories install made, when empty.
  if (!opts.dryRun) {
    if (opts.purge) {
      rmSync(R(state.paths.state_dir), { recursive: true, force: true });
      out.purged = state.paths.state_dir;
      progress(`purged ${state.paths.state_dir}`);
    } else if (out.kept.length || vmKept) {
      // What was kept stays on record, so that `uninstall --force` (or `--purge`, for a VM) can still finish the job.
      const keptPaths = new Set(out.kept.map((k) => k.path));
      const rest: InstallState = {
        ...state,
        files: state.files.filter((f) => keptPaths.has(f.path)),
        units: [],
        group: null,
        job_user: null,
        daemon: { managed_by: "none", pid: null },
        vm: vmKept,
      };
      writeFileSync(R(stateFile), `${JSON.stringify(rest, null, 2)}\n`, { mode: 0o600 });
    } else {
      rmSync(R(stateFile), { force: true });
      const backups = R(join(state.paths.state_dir, "install-backup"));
      if (existsSync(backups) && readdirSync(backups).length === 0) rmdirSync(backups);
    }
    for (const d of [...state.dirs_created].sort((a, b) => b.length - a.length)) {
      try {
        if (existsSync(R(d)) && readdirSync(R(d)).length === 0) rmdirSync(R(d));
      } catch {
        // not empty, or gone
      }
    }
  }
  return out;
}
