/** The host and this binary: platform, binary.version, install.state. */
import { lstatSync, readFileSync, readlinkSync, realpathSync } from "node:fs";
import { arch, release } from "node:os";
import { dirname, join } from "node:path";
import type { FileRecord, InstallState } from "../../host/install-state.ts";
import { type Check, fail, ok, type Result, skip, warn } from "../check.ts";
import { compiledBinary, type DoctorContext } from "../context.ts";

/** PRETTY_NAME of an os-release text, or null. */
export function osName(osRelease: string): string | null {
  const m = /^PRETTY_NAME=(?:"([^"]*)"|(.*))$/m.exec(osRelease);
  return m ? (m[1] ?? m[2] ?? "").trim() || null : null;
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

export const platform: Check<DoctorContext> = {
  id: "platform",
  description: "the OS and architecture are ones planter supports; the install mode",
  async run(ctx) {
    const os = ctx.platform === "linux" ? (osName(readText("/etc/os-release")) ?? "Linux") : ctx.platform;
    const what = `${ctx.platform} ${arch()} · ${os} · kernel ${release()} · ${ctx.paths.mode} mode`;
    if (ctx.platform !== "linux" && ctx.platform !== "darwin") {
      return fail(
        `${what}: planter runs on Linux and macOS only`,
        "run planter inside a Linux VM or container on this host",
        "limactl start template://debian  # then install planter inside",
      );
    }
    return ok(what);
  },
};

export const binaryVersion: Check<DoctorContext> = {
  id: "binary.version",
  description: "this binary's version and commit, and that `planter` on PATH is this binary",
  async run(ctx) {
    const compiled = compiledBinary();
    const base = `planter ${ctx.expected.version} (${ctx.expected.commit}) · bun ${Bun.version}`;
    if (!compiled) return ok(`${base} · from source (${dirname(dirname(Bun.main))})`);
    const onPath = Bun.which("planter", { PATH: ctx.env.PATH ?? "" });
    const self = real(process.execPath);
    if (onPath && real(onPath) !== self) {
      return warn(
        `${base} · ${process.execPath}, but \`planter\` on PATH is ${onPath}`,
        "another planter on PATH shadows this one: commands you type run that one",
        `export PATH=${dirname(process.execPath)}:$PATH; hash -r`,
      );
    }
    return ok(`${base} · ${process.execPath}`);
  },
};

function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** Where a recorded file is on this host (install may have written into a staging root). */
const onHost = (state: InstallState, f: FileRecord) =>
  state.root && state.root !== "/" ? join(state.root, f.path) : f.path;

/** How a recorded file stands now: as written, changed, or missing. Config files may be edited. */
export async function fileDrift(state: InstallState, f: FileRecord): Promise<"same" | "changed" | "missing"> {
  const path = onHost(state, f);
  try {
    const st = lstatSync(path);
    if (f.kind === "link") return st.isSymbolicLink() && readlinkSync(path) === f.target ? "same" : "changed";
    if (f.kind === "config") return "same";
    const h = new Bun.CryptoHasher("sha256");
    h.update(await Bun.file(path).arrayBuffer());
    return h.digest("hex") === f.sha256 ? "same" : "changed";
  } catch {
    return "missing";
  }
}

const list = (xs: string[]) =>
  xs.length > 3 ? `${xs.slice(0, 3).join(", ")} and ${xs.length - 3} more` : xs.join(", ");

export const installState: Check<DoctorContext> = {
  id: "install.state",
  description: "install-state.json is readable and every file install recorded is still there, unchanged",
  async run(ctx): Promise<Result> {
    const info = ctx.install;
    const reinstall = `${ctx.commands.sudo}${ctx.commands.planter} install${ctx.paths.mode === "user" ? " --user" : ""}`;
    if (!info.found && info.denied) {
      return skip(
        `cannot read ${info.path} as uid ${ctx.uid}: the state dir is planterd's`,
        `run doctor with sudo to check the install: sudo ${ctx.commands.planter} doctor`,
      );
    }
    if (!info.found) {
      return skip(
        `planter was not installed with \`install\` here (no ${info.path}): a source checkout or a manual setup`,
      );
    }
    if ("error" in info) {
      return fail(
        info.error.message,
        "uninstall reads this file to undo exactly what install did; restore it from a backup, or re-run install to record the current layout",
        reinstall,
      );
    }
    const s = info.state;
    const drift = await Promise.all(s.files.map((f) => fileDrift(s, f)));
    const missing = s.files.filter((_, i) => drift[i] === "missing").map((f) => f.path);
    const changed = s.files.filter((_, i) => drift[i] === "changed").map((f) => f.path);
    const what = `${s.mode} install of ${s.version} (${s.commit}) on ${s.updated_at.slice(0, 10)}, ${s.files.length} files`;
    if (missing.length) {
      return fail(
        `${what}: ${missing.length} missing: ${list(missing)}`,
        "files install wrote are gone; re-running install puts them back (state and config are kept)",
        reinstall,
      );
    }
    if (changed.length) {
      return warn(
        `${what}: ${changed.length} changed since install: ${list(changed)}`,
        "uninstall keeps changed files unless --force; re-running install writes them again",
        reinstall,
      );
    }
    return ok(`${what}, all as installed`);
  },
};
