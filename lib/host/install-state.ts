/**
 * install-state.json: the cleanup-state metadata. Install records every file, unit, group,
 * membership, user and daemon it created and what existed before; uninstall reverses exactly that.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import * as v from "valibot";
import { summarizeIssues } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";

export const INSTALL_STATE_VERSION = 1;

const FileRecord = v.object({
  /** Absolute path on the target (without the staging root). */
  path: v.string(),
  kind: v.picklist(["binary", "link", "unit", "config", "tmpfiles", "plist", "completion", "manpage"]),
  /** sha256 of what install wrote (links: of the target string). */
  sha256: v.string(),
  /** For links: what the link points to. */
  target: v.optional(v.string()),
  /** Whether a file was there before install wrote this one. */
  existed_before: v.boolean(),
  /** Where the previous content was saved, to be put back by uninstall. */
  backup: v.optional(v.string()),
  /** sha256 of the previous content as saved (absent in older files): a backup that differs is never put back. */
  backup_sha256: v.optional(v.string()),
  /**
   * Uninstall removed what install wrote here, and kept the entry only for its backup (which had
   * changed since install saved it): whatever is at the path now is not planter's.
   */
  removed: v.optional(v.boolean()),
});
export type FileRecord = v.InferOutput<typeof FileRecord>;

export const InstallState = v.object({
  schema_version: v.literal(INSTALL_STATE_VERSION),
  version: v.string(),
  commit: v.string(),
  mode: v.picklist(["user", "system"]),
  root: v.string(),
  prefix: v.string(),
  installed_at: v.string(),
  updated_at: v.string(),
  platform: v.object({
    os: v.string(),
    arch: v.string(),
    os_release: v.nullable(v.record(v.string(), v.string())),
    package_manager: v.nullable(v.string()),
    systemd: v.boolean(),
  }),
  paths: v.object({ state_dir: v.string(), socket: v.string(), config: v.string(), bin_dir: v.string() }),
  files: v.array(FileRecord),
  dirs_created: v.array(v.string()),
  units: v.array(v.object({ name: v.string(), scope: v.picklist(["user", "system"]), enabled: v.boolean() })),
  /**
   * Group `planter` (system mode). A staged install (--root) creates nothing on this host:
   * create_at_package_install says the package must create it (existed_before null: not looked up).
   */
  group: v.nullable(
    v.object({
      name: v.string(),
      existed_before: v.nullable(v.boolean()),
      created_by_installer: v.boolean(),
      members_added: v.array(v.string()),
      /** Absent in older files (false). */
      create_at_package_install: v.optional(v.boolean(), false),
    }),
  ),
  /**
   * The system user a root peer's jobs run as (system mode; absent in older files): deleted by
   * uninstall only when created_by_installer. A staged install (--root) creates nothing on this
   * host: create_at_package_install says the package must create it when it is installed.
   */
  job_user: v.optional(
    v.nullable(
      v.object({
        name: v.string(),
        /** null: not looked up (staged install). */
        existed_before: v.nullable(v.boolean()),
        created_by_installer: v.boolean(),
        create_at_package_install: v.boolean(),
      }),
    ),
  ),
  daemon: v.object({
    managed_by: v.picklist(["systemd", "direct", "launchd", "none"]),
    pid: v.nullable(v.number()),
  }),
  /**
   * The id of the step that was running when this was written (absent or null: none). Each step
   * records what it is about to do before it does it, so a run killed half-way leaves this set and
   * the next uninstall checks the host for that step's change before taking it back.
   */
  pending: v.optional(v.nullable(v.string())),
  /** The Lima VM `install --lima` set up (absent in older files): deleted by uninstall --purge only when created_by_installer. */
  vm: v.optional(
    v.nullable(
      v.object({
        name: v.string(),
        created_by_installer: v.boolean(),
        arch: v.string(),
        /** The host end of the forwarded socket. */
        host_socket: v.string(),
        /** sha256 of the binary copied into the VM (null until copied). */
        binary_sha256: v.nullable(v.string()),
      }),
    ),
  ),
});
export type InstallState = v.InferOutput<typeof InstallState>;

/** sha256 of a file's bytes (hex). */
export function sha256File(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

export const sha256Text = (text: string) => createHash("sha256").update(text).digest("hex");

/** Read and validate install-state.json; null when absent. */
export function readInstallState(path: string): InstallState | null {
  if (!existsSync(path)) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new PlanterError("E_STATE", `cannot parse ${path}: ${(e as Error).message}`, {
      hint: 'restore it from a backup, or remove planter\'s files by hand (see docs/install.md "Install and uninstall")',
    });
  }
  const r = v.safeParse(InstallState, raw);
  if (!r.success) throw new PlanterError("E_STATE", `invalid ${path}: ${summarizeIssues(r.issues)}`);
  return r.output;
}

/** Where install writes its metadata: in the state dir (under the staging root, if any). */
export const installStatePath = (stateDir: string) => `${stateDir}/install-state.json`;
