/**
 * uninstall: reverse exactly what install-state.json records — units, files (a file changed since
 * install is kept unless forced), backups put back (only when still what install saved),
 * memberships, a group and a job user install created, the directories it made (when empty).
 * `purge` also removes state and logs. The plan is built from the record alone, one step per
 * recorded change, newest first; each step takes its entry off the record once done, so an
 * uninstall stopped half-way is finished by the next. Running it twice is harmless.
 */
import { existsSync, readdirSync, rmdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { InstallMode } from "../paths.ts";
import { getentGroup, getentPasswd, groupdel, removeMember, userdel } from "./groups.ts";
import { targetPaths } from "./install.ts";
import { type FileRecord, type InstallState, installStatePath, readInstallState } from "./install-state.ts";
import { serviceTarget } from "./launchd.ts";
import { uninstallLimaVm } from "./lima-install.ts";
import { unloadAgent } from "./macos.ts";
import { daemonOf, isPlanterd, stopDaemons } from "./planterd.ts";
import { managerRunning, systemctl } from "./systemd.ts";
import {
  type FileUndo,
  fileUndoPlan,
  fileVerdict,
  KEPT_CHANGED,
  KEPT_NOT_FILE,
  type Step,
  type StepEvent,
  type StepReport,
  Transaction,
  undoFile,
} from "./transaction.ts";

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
  /** Called at every point of the step engine (tests stop a run there). */
  observe?: (e: StepEvent) => void;
}

export interface UninstallResult {
  installed: boolean;
  dry_run: boolean;
  removed: string[];
  kept: { path: string; why: string }[];
  restored: string[];
  warnings: string[];
  purged: string | null;
  /** The plan (dry run), or each step with what the run did. */
  steps: StepReport[];
}

/** What the steps share: the transaction, the options, the result they fill in. */
interface Ctx {
  tx: Transaction;
  opts: UninstallOptions;
  out: UninstallResult;
  warn: (w: string) => void;
}

export async function uninstall(opts: UninstallOptions): Promise<UninstallResult> {
  const tx = new Transaction({ root: opts.root, dryRun: opts.dryRun, progress: opts.progress, observe: opts.observe });
  const t = targetPaths(opts);
  const stateFile = installStatePath(t.stateDir);
  const state = readInstallState(tx.R(stateFile));
  const out: UninstallResult = {
    installed: state !== null,
    dry_run: opts.dryRun,
    removed: [],
    kept: [],
    restored: [],
    warnings: [],
    purged: null,
    steps: [],
  };
  const warn = (w: string) => {
    out.warnings.push(w);
    tx.progress(`warning: ${w}`);
  };
  const ctx: Ctx = { tx, opts, out, warn };
  if (!state) {
    out.steps = await tx.run(notInstalledSteps(ctx, t.stateDir, stateFile));
    return out;
  }
  tx.keep(state, stateFile);
  out.steps = await tx.run(await uninstallSteps(ctx, state, stateFile));
  return out;
}

/** Nothing recorded to take back; --purge still deletes the state a former install left. */
function notInstalledSteps(c: Ctx, stateDir: string, stateFile: string): Step[] {
  const { tx, opts, out } = c;
  const purge = opts.purge && existsSync(tx.R(stateDir));
  tx.progress(
    `planter is not installed here (no ${tx.R(stateFile)})${purge ? "" : ": nothing to do"}${purge ? `; ${opts.dryRun ? "would purge" : "purging"} its state dir ${tx.R(stateDir)}` : ""}`,
  );
  if (!purge) return [];
  // A planterd started by hand may still serve that state dir: it goes first.
  const steps: Step[] = tx.staged ? [] : [daemonStep(c, stateDir, null)];
  steps.push({
    id: "purge",
    describe: `purge ${stateDir}: planter's database, every job's logs, managed cells`,
    apply: () => {
      rmSync(tx.R(stateDir), { recursive: true, force: true });
      out.purged = stateDir;
      tx.progress(`purged ${stateDir}`);
    },
  });
  return steps;
}

/** The steps that take back what `state` records, in order. */
async function uninstallSteps(c: Ctx, state: InstallState, stateFile: string): Promise<Step[]> {
  const { tx } = c;
  // A staging root is another host's: nothing runs there, and this host's systemctl is not asked.
  const managed = !tx.staged && state.units.length > 0 && (await managerRunning(state.mode));
  // The step a killed install was in: its change may be half made, so the host is asked first.
  const interrupted = state.pending ?? null;
  const steps: Step[] = [...serviceStopSteps(c, state, managed)];
  // Whatever install recorded, the planterd to stop is the one holding the state dir's lock (a
  // daemon restarted by hand has another pid than the recorded one).
  if (!tx.staged && state.daemon.managed_by !== "launchd")
    steps.push(daemonStep(c, state.paths.state_dir, state.daemon.managed_by === "direct" ? state.daemon.pid : null));
  steps.push(socketDirStep(c, state.paths.socket));
  steps.push(...fileSteps(c, state));
  if (managed)
    steps.push({
      id: "reload",
      describe: "reload systemd (systemctl daemon-reload)",
      apply: async () => {
        const r = await systemctl(state.mode, "daemon-reload");
        if (r.code !== 0) c.warn(`systemctl daemon-reload failed: ${r.stderr.trim() || `exit ${r.code}`}`);
      },
    });
  steps.push(...accountSteps(c, state, interrupted));
  if (state.vm) steps.push(vmStep(c, state.vm));
  steps.push(recordStep(c, state, stateFile));
  return steps;
}

/** 1. Stop what runs: units (their daemon leaves jobs running; purge kills nothing either), or the launchd agent. */
function serviceStopSteps(c: Ctx, state: InstallState, managed: boolean): Step[] {
  const { tx, opts } = c;
  if (state.daemon.managed_by === "systemd" && state.units.length) {
    const names = state.units.map((u) => u.name);
    return [
      {
        id: "units",
        describe: managed
          ? `stop and disable ${names.join(" and ")} (systemctl disable --now)`
          : `no service manager ${tx.staged ? "asked (staging root)" : "answers"}: the unit files and their links are removed below`,
        apply: async () => {
          if (managed) {
            const r = await systemctl(state.mode, "disable", "--now", ...names);
            if (r.code !== 0)
              c.warn(`systemctl disable --now ${names.join(" ")} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
          }
          tx.progress(
            managed
              ? "stopped and disabled planterd.socket and planterd.service"
              : `no service manager ${tx.staged ? "asked (staging root)" : "answers"}: removing the unit files and their links only`,
          );
          tx.record((st) => {
            st.units = [];
          });
        },
      },
    ];
  }
  if (state.daemon.managed_by !== "launchd") return [];
  const uid = opts.uid ?? process.getuid?.() ?? 1000;
  return [
    {
      id: "launchctl",
      describe: `boot out the launchd agent (launchctl bootout ${serviceTarget(uid)})`,
      apply: async () => {
        const failed = await unloadAgent(uid, 10_000, opts.env ?? {});
        if (failed) c.warn(failed);
        else tx.progress(`booted out the launchd agent (gui/${uid})`);
        tx.record((st) => {
          st.daemon = { managed_by: "none", pid: null };
        });
      },
    },
  ];
}

/** Stop the planterd of a state dir: the one holding its lock, and the recorded pid of a direct start if that still runs. */
function daemonStep(c: Ctx, stateDir: string, recorded: number | null): Step {
  const { tx } = c;
  const running = [...new Set([daemonOf(tx.R(stateDir)), recorded].filter((p) => p !== null && isPlanterd(p)))];
  return {
    id: "daemon",
    describe: running.length
      ? `stop planterd (pid ${running.join(", ")}); its jobs keep running`
      : "stop planterd if one serves the state dir (none does now)",
    apply: async () => {
      const { stopped, notRunning } = await stopDaemons(tx.R(stateDir), recorded);
      if (stopped.length) tx.progress(`stopped planterd (pid ${stopped.join(", ")})`);
      if (notRunning !== null) tx.progress(`planterd (pid ${notRunning}, as recorded by install) was not running`);
      if (tx.kept)
        tx.record((st) => {
          if (st.daemon.managed_by === "direct") st.daemon = { managed_by: "none", pid: null };
        });
    },
  };
}

/** The socket dir is planterd's own runtime dir: gone with it when empty. */
function socketDirStep(c: Ctx, socket: string): Step {
  const dir = c.tx.R(socket.slice(0, socket.lastIndexOf("/")));
  const empty = () => existsSync(dir) && readdirSync(dir).length === 0;
  return {
    id: "socket-dir",
    describe: `remove the socket dir ${dir} when empty`,
    needed: empty,
    apply: () => rmdirSync(dir),
  };
}

/** How the plan says what undoing a file does. */
function fileLine(f: FileRecord, u: FileUndo, backup: string): string {
  if (u.kept === KEPT_CHANGED) return `keep ${f.path}: ${u.kept}`;
  if (u.kept)
    return `${u.removed ? `remove ${f.path}; ` : ""}keep ${backup}, the saved original of ${f.path}: ${u.kept}`;
  if (u.removed) return `remove ${f.path}${u.restored ? ", and put back the file it replaced" : ""}`;
  if (u.restored) return `put back ${f.path} (the file install replaced)`;
  return `forget ${f.path} (it is gone already)`;
}

/** 2. Files, newest records last: remove what is unchanged, put back what was there before. */
function fileSteps(c: Ctx, state: InstallState): Step[] {
  const { tx, opts, out } = c;
  const files = [...state.files].reverse();
  return files.map((f, i): Step => {
    const backup = f.backup ? tx.R(f.backup) : "";
    const planned = fileUndoPlan(fileVerdict(tx, f), opts.force);
    if (opts.dryRun) noteFile(c, f, planned, backup);
    return {
      id: `file:${f.path}`,
      describe: fileLine(f, planned, backup),
      apply: () => {
        const u = undoFile(tx, f, opts.force);
        noteFile(c, f, u, backup);
        // Done with, or kept on record: for its backup only once planter's file is gone.
        tx.record((st) => {
          st.files = st.files.flatMap((x) =>
            x.path !== f.path ? [x] : !u.kept ? [] : [u.removed ? { ...x, removed: true } : x],
          );
        });
        if (i === files.length - 1)
          tx.progress(
            `removed ${out.removed.length} file(s)${out.restored.length ? `, put back ${out.restored.length}` : ""}`,
          );
      },
    };
  });
}

/** Put what undoing a file did (would do) into the result, with a warning for what stays. */
function noteFile(c: Ctx, f: FileRecord, u: FileUndo, backup: string): void {
  if (u.removed) c.out.removed.push(f.path);
  if (u.restored) c.out.restored.push(f.path);
  if (!u.kept) return;
  if (u.kept === KEPT_CHANGED || u.kept === KEPT_NOT_FILE) {
    c.out.kept.push({ path: f.path, why: u.kept });
    c.warn(`kept ${f.path}: ${u.kept === KEPT_CHANGED ? "changed since install (--force removes it)" : u.kept}`);
    return;
  }
  // What stays is the saved original: where it is, why, and how to put it back by hand.
  c.out.kept.push({ path: backup, why: `the saved original of ${f.path}: ${u.kept}` });
  c.warn(
    `kept ${backup}, the saved original of ${f.path}: ${u.kept}; if it is what you want there: mv ${backup} ${c.tx.R(f.path)}`,
  );
}

/**
 * 3. Memberships and the group, only as install changed them — never on this host for a staging
 * root (an older planter did create the group on the running host even with --root: say so).
 */
function accountSteps(c: Ctx, state: InstallState, interrupted: string | null): Step[] {
  const { tx } = c;
  const steps: Step[] = [];
  const g = state.group;
  if (g && tx.staged && (g.created_by_installer || g.members_added.length))
    steps.push({
      id: "group",
      describe: `leave group ${g.name} on this host as it is (staging root)`,
      apply: () => {
        c.warn(
          `the record says install changed group ${g.name} on this host (an earlier planter did so even with --root); ` +
            `with --root nothing here is changed: undo it by hand if it is unwanted: ` +
            [
              ...g.members_added.map((u) => `gpasswd -d ${u} ${g.name}`),
              ...(g.created_by_installer ? [`groupdel ${g.name}`] : []),
            ].join(" && "),
        );
        tx.record((st) => {
          st.group = null;
        });
      },
    });
  else if (g) steps.push(...groupSteps(c, g, interrupted));
  // A job user install created goes; one that was there before, or one left to a package (staging root), stays.
  const jobUser = state.job_user;
  if (jobUser?.created_by_installer)
    steps.push({
      id: "job-user",
      describe: `delete user ${jobUser.name} (userdel ${jobUser.name})`,
      needed: async () => interrupted !== "job-user" || (await getentPasswd(jobUser.name)) !== null,
      apply: async () => {
        await userdel(jobUser.name).catch((e) =>
          c.warn(`could not delete user ${jobUser.name}: ${(e as Error).message}`),
        );
        tx.progress(`deleted user ${jobUser.name}`);
        tx.record((st) => {
          st.job_user = null;
        });
      },
    });
  return steps;
}

function groupSteps(c: Ctx, g: NonNullable<InstallState["group"]>, interrupted: string | null): Step[] {
  const { tx } = c;
  const steps: Step[] = g.members_added.map((user) => ({
    id: `membership:${user}`,
    describe: `remove ${user} from group ${g.name} (gpasswd -d ${user} ${g.name})`,
    needed: async () => interrupted !== "membership" || ((await getentGroup(g.name))?.members ?? []).includes(user),
    apply: async () => {
      await removeMember(user, g.name).catch((e) =>
        c.warn(`could not remove ${user} from ${g.name}: ${(e as Error).message}`),
      );
      tx.progress(`removed ${user} from group ${g.name}`);
      tx.record((st) => {
        if (st.group) st.group.members_added = st.group.members_added.filter((m) => m !== user);
      });
    },
  }));
  if (g.created_by_installer)
    steps.push({
      id: "group",
      describe: `delete group ${g.name} (groupdel ${g.name})`,
      needed: async () => interrupted !== "group" || (await getentGroup(g.name)) !== null,
      apply: async () => {
        await groupdel(g.name).catch((e) => c.warn(`could not delete group ${g.name}: ${(e as Error).message}`));
        tx.progress(`deleted group ${g.name}`);
        tx.record((st) => {
          st.group = null;
        });
      },
    });
  return steps;
}

/** 3b. The Lima VM (install --lima): deleted only when install created it and --purge is given. */
function vmStep(c: Ctx, vm: NonNullable<InstallState["vm"]>): Step {
  const { tx, opts } = c;
  const del = opts.purge && vm.created_by_installer;
  return {
    id: "vm",
    describe: del
      ? `delete VM ${vm.name} (limactl delete --force ${vm.name})`
      : `keep VM ${vm.name}${vm.created_by_installer ? " (uninstall --purge deletes it)" : ": install did not create it"}`,
    apply: async () => {
      const kept = await uninstallLimaVm(vm, opts, tx.progress, c.warn);
      tx.record((st) => {
        st.vm = kept;
      });
    },
  };
}

/** 4. Purge, or just the metadata (what is kept stays on record); then the directories install made, when empty. */
function recordStep(c: Ctx, state: InstallState, stateFile: string): Step {
  const { tx, opts, out } = c;
  const dirs = [...state.dirs_created].sort((a, b) => b.length - a.length);
  return {
    id: "record",
    describe: opts.purge
      ? `purge ${state.paths.state_dir}: planter's database, every job's logs, managed cells; then the directories install made, when empty`
      : `remove ${stateFile} (what is kept stays on record), then the directories install made, when empty`,
    apply: () => {
      if (opts.purge) {
        tx.drop();
        rmSync(tx.R(state.paths.state_dir), { recursive: true, force: true });
        out.purged = state.paths.state_dir;
        tx.progress(`purged ${state.paths.state_dir}`);
      } else if (tx.state.files.length || tx.state.vm) {
        // What was kept stays on record, so that `uninstall --force` (or `--purge`, for a VM) can still finish the job.
        tx.record((st) => {
          Object.assign(st, {
            units: [],
            group: null,
            job_user: null,
            daemon: { managed_by: "none", pid: null },
          } satisfies Partial<InstallState>);
        });
      } else {
        tx.drop();
        rmSync(tx.R(stateFile), { force: true });
        const backups = tx.R(join(state.paths.state_dir, "install-backup"));
        if (existsSync(backups) && readdirSync(backups).length === 0) rmdirSync(backups);
      }
      for (const d of dirs) {
        try {
          if (existsSync(tx.R(d)) && readdirSync(tx.R(d)).length === 0) rmdirSync(tx.R(d));
        } catch {
          // not empty, or gone
        }
      }
    },
  };
}
