/**
 * The Seatbelt backend (macOS): an SBPL profile rendered from the request, run with
 * `/usr/bin/sandbox-exec -f PROFILE -- /bin/sh (env loader) ARGV`. Deny by default; the host is
 * readable except homes, other cells, planter's own paths and credentials; writes only where the
 * policy says; workspace config read-only; no Unix socket but those named. Never run on macOS
 * from this repository's CI: the profile is tested as literal text and the invocation through a
 * recording shim (plans/seatbelt-containment.md says what that leaves unverified).
 *
 * In SBPL the last matching rule wins: libsandbox's compiler puts each new rule ahead of the
 * earlier ones for its operation and evaluation stops at the first match, and Apple's own
 * profiles rely on it (application.sb allows network-outbound under /private/var/run, then denies
 * one socket in it). Every "later rule" below is an exception to the rules above it.
 */
import { join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { execSync } from "../host/exec.ts";
import { proxyEnv } from "../net/env.ts";
import type { Backend, PlanRequest, Probe, SpawnPlan } from "./backend.ts";
import { credentialPaths } from "./credentials.ts";
import { envLoaderArgv, envScript, HOST_ENV } from "./env.ts";
import { within } from "./paths.ts";
import { RC_FILES } from "./view.ts";

export const SANDBOX_EXEC = "/usr/bin/sandbox-exec";

/** Tool config that runs code when a person opens the workspace: read-only at any depth of the cell. */
export const TOOL_CONFIG: readonly string[] = [
  ".vscode",
  ".idea",
  ".claude",
  ".mcp.json",
  ".envrc",
  ".gitmodules",
  ".devcontainer",
  ".cursor",
  ".gemini",
  ".codex",
  ".pre-commit-config.yaml",
  ".husky",
];

/** Entries of a git dir (or of a submodule's or worktree's git dir) that decide what git runs. */
export const GIT_CONTROL: readonly string[] = ["hooks", "info", "config", "config.worktree", "commondir"];

/** The Unix socket of the system resolver: every name lookup on macOS goes through it. */
const RESOLVER = "/private/var/run/mDNSResponder";

/** SBPL string literal. */
const lit = (s: string) => `"${s.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;

/** `s` as an SBPL regex that matches exactly `s`: every POSIX extended-regex metacharacter escaped. */
export function regexQuote(s: string): string {
  return s.replace(/[\\^$.|?*+()[\]{}]/g, "\\$&");
}

/** A path and its symlink-resolved variant: /tmp, /var and /etc live under /private on macOS. */
export function variants(path: string): string[] {
  const m = /^\/(tmp|var|etc)(\/.*)?$/.exec(path);
  return m ? [path, `/private${path}`] : [path];
}

const filters = (kind: "subpath" | "literal", path: string) => variants(path).map((p) => `(${kind} ${lit(p)})`);
const depth = (p: string) => (p === "/" ? 0 : p.split("/").length - 1);

/**
 * One path rule: allow (true) or deny (false) reads and writes below `path`, or leave them as
 * the rules above say (undefined). `network` adds network* to a deny (planter's socket dir).
 */
interface PathRule {
  path: string;
  read?: boolean;
  write?: boolean;
  network?: boolean;
  /** Also match `path` literally: subpath alone is reported to miss the first creation of the path itself. */
  literal?: boolean;
  why: string;
}

/** Shallow to deep; at one depth allows before read-only before denies (a deny of the same path wins). */
function order(rules: PathRule[]): PathRule[] {
  const rank = (r: PathRule) => (r.read === false ? 2 : r.write === false ? 1 : 0);
  return rules
    .map((r, i) => ({ r, i }))
    .sort((a, b) => depth(a.r.path) - depth(b.r.path) || rank(a.r) - rank(b.r) || a.i - b.i)
    .map((x) => x.r);
}

/** What the rules decide for `path` (the last rule containing it that says), else the default. */
function decides(rules: PathRule[], path: string, key: "read" | "write"): boolean {
  let found = key === "read";
  for (const r of rules) if (r[key] !== undefined && variants(r.path).some((v) => within(path, v))) found = r[key];
  return found;
}

function renderRule(r: PathRule): string[] {
  const f = [...(r.literal ? filters("literal", r.path) : []), ...filters("subpath", r.path)].join(" ");
  const tag = ` ; ${r.why}`;
  if (r.read === false) return [`(deny file-read* file-write*${r.network ? " network*" : ""} ${f})${tag}`];
  if (r.write === true) return [`(allow file-read* file-write* ${f})${tag}`];
  return [`(allow file-read* ${f})${tag}`, ...(r.write === false ? [`(deny file-write* ${f})${tag}`] : [])];
}

/** The path rules of a request, in the order they are written. */
function pathRules(req: PlanRequest): PathRule[] {
  const p = req.policy;
  const base: PathRule[] = [
    ...req.protect.map((x) => ({ path: x, read: false, write: false, network: true, why: "planter" })),
    ...[...new Set(["/Users", ...req.hiddenHomes])].map((x) => ({ path: x, read: false, write: false, why: "home" })),
    ...req.otherCells.map((x) => ({ path: x, read: false, write: false, why: "other cell" })),
    { path: req.cellDir, read: true, write: p.fs_mode === "writable", why: "cell" },
    { path: req.home, read: true, write: true, why: "cell home" },
    { path: req.scratch, read: true, write: true, why: "TMPDIR" },
    ...p.read_write.map((x) => ({ path: x, read: true, write: true, why: "read_write" })),
    ...p.read_only.map((x) => ({ path: x, read: true, write: false, why: "read_only" })),
    ...p.deny.map((x) => ({ path: x.replace(/(.)\/+$/, "$1"), read: false, write: false, network: true, why: "deny" })),
  ];
  // A credential stays hidden wherever the rules above show it, unless a policy path names it
  // exactly; a policy path inside it is deeper, so its allow comes later and wins.
  const named = [...p.read_write, ...p.read_only];
  const shown = order(base);
  const credentials: PathRule[] = req.credentialHomes
    .flatMap((h) => credentialPaths(h))
    .filter((c) => !named.includes(c) && decides(shown, c, "read"))
    .map((c) => ({ path: c, read: false, write: false, literal: true, why: "credential" }));
  return order([...base, ...credentials]);
}

/** Ancestors of the paths a job is given that the rules hide: stat-able, not listable. */
function ancestors(req: PlanRequest, rules: PathRule[]): string[] {
  const p = req.policy;
  const given = [req.cellDir, req.home, req.scratch, ...p.read_write, ...p.read_only];
  const out = new Set<string>();
  for (const g of given) {
    const parts = g.split("/").slice(1, -1);
    for (let i = 1; i <= parts.length; i++) {
      const a = `/${parts.slice(0, i).join("/")}`;
      if (!decides(rules, a, "read")) out.add(a);
    }
  }
  return [...out];
}

/** The workspace-config rules of the cell: git control files and tool config at any depth. */
function workspaceRegexes(cellDir: string): string[] {
  const names = (xs: readonly string[]) => xs.map(regexQuote).join("|");
  const at = (tail: string) =>
    variants(cellDir)
      .map((c) => `(regex ${lit(`^${regexQuote(c)}/(.*/)?${tail}`)})`)
      .join(" ");
  // The .git entry itself: a .git file or symlink (or a .git dir renamed into place) would point
  // git at hooks and config written elsewhere. Inside an existing .git, objects, refs and the
  // index stay writable so commits work; submodules and worktrees keep their own hooks and config
  // under .git/modules/<name> and .git/worktrees/<name>.
  return [
    `(deny file-write* ${at("\\.git$")})`,
    `(deny file-write* ${at(`\\.git/((modules|worktrees)/.+/)?(${names(GIT_CONTROL)})(/|$)`)})`,
    `(deny file-write* ${at(`(${names(TOOL_CONFIG)})(/|$)`)})`,
  ];
}

/** Render the SBPL profile for a request (pure). */
export function seatbeltProfile(req: PlanRequest): string {
  const p = req.policy;
  const rules = pathRules(req);
  const lines = [
    "(version 1)",
    "(deny default)",
    "",
    "; Processes: run and fork; signal and inspect only processes of this sandbox.",
    "(allow process-exec)",
    "(allow process-fork)",
    "(allow signal (target same-sandbox))",
    "(deny process-info*)",
    "(allow process-info* (target same-sandbox))",
    "",
    "; System: sysctl reads but other processes' arguments and environment (kern.procargs2.<pid>",
    "; shows any same-user process's environment); Mach services; POSIX shared memory and semaphores.",
    "(allow sysctl-read)",
    '(deny sysctl-read (sysctl-name-prefix "kern.procargs"))',
    "(allow mach-lookup)",
    "(allow ipc-posix-shm)",
    "(allow ipc-posix-sem)",
    "",
  ];
  const proxy = typeof p.network === "object" ? req.proxyPort : undefined;
  if (p.network === "host") {
    lines.push("; Network: the host's.", "(allow system-socket)", "(allow network*)");
  } else if (proxy !== undefined) {
    lines.push(
      "; Network: an allow list, enforced by the job's egress proxy, which planterd serves on this",
      "; loopback port: the one TCP destination; Unix sockets only for the rules below.",
      "(allow system-socket (socket-domain AF_UNIX) (socket-domain AF_INET) (socket-domain AF_INET6))",
      `(allow network-outbound (remote ip "localhost:${proxy}")) ; egress proxy`,
    );
  } else {
    lines.push(
      "; Network: none; Unix sockets only, for the rules below.",
      "(allow system-socket (socket-domain AF_UNIX))",
    );
  }
  lines.push(
    "",
    "; Unix sockets: no host service (docker, ssh-agent, planterd…) but those the policy names, even",
    "; with the host's network; DNS through the resolver only with it. The job's own TMPDIR is",
    "; private, so a socket there is one of its own servers (multiprocessing, test servers).",
    "(deny network-outbound (remote unix-socket))",
  );
  if (p.network === "host") {
    lines.push(`(allow network-outbound (remote unix-socket (path-literal ${lit(RESOLVER)}))) ; name lookups`);
  }
  lines.push(`(allow network-bind network-inbound network-outbound ${filters("subpath", req.scratch).join(" ")})`);
  for (const s of p.unix_sockets) {
    const f = variants(s).map((v) => `(remote unix-socket (path-literal ${lit(v)}))`);
    lines.push(`(allow network-outbound ${f.join(" ")}) ; unix_sockets`);
  }
  lines.push(
    "",
    "; Files: the host is readable; devices the job writes; then one rule per path, shallow to deep,",
    "; so a deeper path is an exception to the shallower one that contains it.",
    "(allow file-read*)",
    '(allow file-write* (literal "/dev/null") (literal "/dev/tty") (literal "/dev/zero") (literal "/dev/dtracehelper") (subpath "/dev/fd"))',
    '(allow file-ioctl (literal "/dev/tty"))',
    // No terminal device of the host (the user's own shells', readable by the user, would give
    // their keystrokes to whoever reads them) but a terminal job's own PTY, whose path the holder
    // puts in place of TTY_MARKER once it has made it (plans/seatbelt-containment.md).
    req.tty
      ? `(deny file-read* file-write* file-ioctl (require-all (regex ${lit(HOST_TERMINALS)}) (require-not (literal ${lit(TTY_MARKER)})))) ; host terminals but the job's own`
      : `(deny file-read* file-write* file-ioctl (regex ${lit(HOST_TERMINALS)})) ; host terminals`,
    ...rules.flatMap(renderRule),
  );
  const up = ancestors(req, rules);
  if (up.length) {
    lines.push(
      "",
      "; Hidden directories on the way to what the job is given: stat-able (realpath needs it), not listable.",
      ...up.map((a) => `(allow file-read-metadata ${filters("literal", a).join(" ")})`),
    );
  }
  const rc = req.credentialHomes
    .flatMap((h) => RC_FILES.map((f) => join(h, f)))
    .filter((f) => decides(rules, f, "write"));
  if (rc.length) {
    lines.push(
      "",
      "; Shell rc files in a writable home stay read-only: the next shell would run them.",
      `(deny file-write* ${rc.flatMap((f) => filters("literal", f)).join(" ")})`,
    );
  }
  const pinned = req.workspaceReadOnly.map((x) => `(deny file-write* ${filters("subpath", x).join(" ")})`);
  const regexes = p.workspace_config === "allow" ? [] : workspaceRegexes(req.cellDir);
  if (pinned.length || regexes.length) {
    lines.push(
      "",
      "; Workspace config stays read-only: the paths the daemon found, and at any depth of the cell a",
      "; .git entry itself, git hooks and config (also of submodules and worktrees), and tool config.",
      ...pinned,
      ...regexes,
    );
  }
  return `${lines.join("\n")}\n`;
}

/** The terminal devices of a macOS host: ttys (the PTY slaves), the old BSD pty pairs. */
const HOST_TERMINALS = "^/dev/(ttys[0-9]+|pty[p-w][0-9a-f]|tty[p-w][0-9a-f])$";
/** What a terminal job's profile holds in place of its own PTY's path until the holder names it. */
export const TTY_MARKER = "/dev/planter-job-tty";

export class SeatbeltBackend implements Backend {
  readonly name = "seatbelt";
  constructor(private readonly path: string = SANDBOX_EXEC) {}

  async probe(): Promise<Probe> {
    if (!Bun.which(this.path))
      return { ok: false, message: `${this.path} not found`, hint: "Seatbelt needs macOS", userns: "n/a" };
    const t = execSync(this.path, ["-p", "(version 1)(allow default)", "--", "/usr/bin/true"], {
      timeoutMs: 10_000,
      nothrow: true,
    });
    if (t.code === 0) return { ok: true, version: "macOS sandbox-exec", userns: "n/a" };
    return {
      ok: false,
      message: `sandbox-exec failed: ${t.stderr.trim()}`,
      hint: "check that sandbox-exec works: sandbox-exec -p '(version 1)(allow default)' true",
      userns: "n/a",
    };
  }

  plan(req: PlanRequest): SpawnPlan {
    if (!Bun.which(this.path))
      throw new PlanterError("E_SANDBOX_UNAVAILABLE", `${this.path} not found`, { hint: "Seatbelt needs macOS" });
    const profile = join(req.jobDir, "sandbox.sb");
    // sandbox-exec runs with planter's fixed environment; the job's (with its private TMPDIR)
    // arrives as fd 3 and is set by the loader inside the sandbox, just before the job's exec.
    // A list job's tools find its proxy on the port planterd serves it on (lib/jobs/egress.ts).
    const proxy = typeof req.policy.network === "object" && req.proxyPort !== undefined ? proxyEnv(req.proxyPort) : {};
    const env = envScript({ ...req.env, ...proxy, TMPDIR: `${req.scratch}/` });
    return {
      argv: [this.path, "-f", profile, "--", ...envLoaderArgv(req.argv, 3)],
      env: HOST_ENV,
      cwd: req.cwd,
      files: [{ path: profile, content: seatbeltProfile(req) }],
      ...(req.tty ? { ttyName: { file: profile, marker: TTY_MARKER } } : {}),
      dirs: [req.scratch],
      inputs: [{ data: new TextEncoder().encode(env) }],
    };
  }
}
