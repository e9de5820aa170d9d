/** The isolation-backend interface: a backend turns a job request into a spawn plan. */
import type { SandboxMode } from "../api/contract.ts";
import type { Identity } from "./identity.ts";
import type { EffectivePolicy } from "./policy.ts";

/** What a backend needs to know to isolate one job. Every path is canonical. */
export interface PlanRequest {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  cellDir: string;
  policy: EffectivePolicy;
  /** Paths a job must never reach: planter's state dir, socket dir and config dir. */
  protect: string[];
  /** The job's HOME: the cell's own home (writable, kept per cell). */
  home: string;
  /** Real home directories hidden from the job (besides /home and /root). */
  hiddenHomes: string[];
  /** Homes whose credential paths stay hidden wherever a bind shows them. */
  credentialHomes: string[];
  /** Dirs of other cells, hidden. */
  otherCells: string[];
  /** Workspace config in the cell that stays read-only (git metadata, tool config). */
  workspaceReadOnly: string[];
  /** Size of the private /tmp, bytes. */
  tmpBytes: number;
  /** The job's directory in the state dir, for files planter itself reads (a profile). */
  jobDir: string;
  /** A private temp directory for the job, outside the protected paths. */
  scratch: string;
  /** Who the job runs as; null: as planterd itself (user mode). */
  identity: Identity | null;
  /** Empty entries planterd made where a deny path is missing (covered like the deny path). */
  placeholders?: string[];
  /** The job has a terminal (its own PTY, on its stdio): Seatbelt then lets it use terminal devices. */
  tty?: boolean;
  /**
   * Where the host's Unix sockets the job could connect to are (bwrap, a policy with unix_sockets):
   * the directories holding them, or the socket itself directly under a root such as /run; each is
   * covered, a listed socket shown again inside (`socketCovers` in bwrap.ts).
   */
  socketCovers?: { path: string; kind: "dir" | "file" }[];
  /**
   * The job's RLIMIT_NPROC, set on the sandbox's first process once bwrap made its user namespace
   * (where the kernel counts only the job's own tasks), by the gate from outside: the process limit
   * where no cgroup enforces one. Undefined: none set.
   */
  nproc?: number;
  /**
   * The job has a network allow list: its sandbox reports its pid and waits until planterd has
   * made the egress proxy's listeners in its network namespace (lib/net/listen.ts).
   */
  egress?: boolean;
  /**
   * Seatbelt with a network allow list: the host loopback port where planterd serves this job's
   * egress proxy, the one destination its profile allows. Without it a list has no network.
   */
  proxyPort?: number;
  /**
   * An agent job: its report FIFO (in the job's dir), shown inside the sandbox at
   * REPORT_IN_SANDBOX (lib/agents/hooks.ts).
   */
  agentReport?: string;
  /** A vm job: its VM's memory (the job's max_rss_bytes; undefined: the default). */
  vmMemoryBytes?: number;
}

/** A file the supervisor writes before spawning (a Seatbelt profile, say). */
export interface PlanFile {
  path: string;
  content: string;
  /** Owned by the job's user (a file the sandbox writes: the vm backend's status). */
  forJob?: boolean;
}

/**
 * An fd the supervisor opens and hands to the plan's program as fd 3 + its index: bytes
 * (bwrap's arguments, a seccomp program, the job's environment), or a path opened without
 * following a final symlink and checked to still be `path` itself (a bind source).
 */
export type PlanInput = { data: Uint8Array } | { path: string } | { pipe: PipeKind };

/**
 * A pipe between planterd and the plan's program: `info`, the program writes (bwrap's
 * `--info-fd`: the sandbox's pid); `block`, the program reads (bwrap's `--block-fd`: it waits
 * until planterd writes, or the pipe ends). planterd keeps the other end (`PipeEnds`).
 */
export type PipeKind = "info" | "block" | "hold";

/** planterd's ends of a plan's pipes, filled in by `openInputs`. */
export type PipeEnds = Partial<Record<"info" | "block", number>>;

/** What the supervisor runs: the program and arguments, environment and working dir. */
export interface SpawnPlan {
  argv: string[];
  /**
   * The mounts the sandbox must have (plannedMounts, lib/sandbox/bwrap.ts): planterd compares the
   * sandbox's mountinfo with them while bwrap waits at its block pipe (lib/sandbox/gate.ts).
   */
  planned?: string[];
  /** The sandbox has a network allow list: its proxy is made at the gate (lib/net/listen.ts). */
  egress?: boolean;
  /** RLIMIT_NPROC the gate sets on the sandbox's first process before it lets it go (gate.ts). */
  nproc?: number;
  env: Record<string, string>;
  cwd: string;
  files?: PlanFile[];
  dirs?: string[];
  /** Fds 3, 4, … of the program, in order. */
  inputs?: PlanInput[];
  /** The job's stdout and stderr reach the logs through pipes (true) rather than as the log files. */
  pipes?: boolean;
  /**
   * The pipes are owned by the job's user: a program of the job reopens its stdout/stderr as
   * `/proc/self/fd/N` (the vm backend's QEMU, whose chardevs take paths), which checks the FIFO's
   * owner and mode. The job dir stays root's and hidden: see plans/design.md "VM jobs".
   */
  pipesForJob?: boolean;
  /** Host entries the job's covers depend on, watched while it runs (lib/sandbox/guard.ts). */
  guard?: [string, string][];
  /**
   * A terminal job's file (of `files`) that must name the job's own PTY: the holder replaces
   * `marker` in it with the PTY's path before the recorder starts (Seatbelt: every terminal
   * device of the host but the job's own is refused). Left unreplaced it names no device.
   */
  ttyName?: { file: string; marker: string };
}

/** Result of probing whether a backend can run here. */
export interface Probe {
  ok: boolean;
  version?: string;
  message?: string;
  hint?: string;
  /** User namespaces: "enabled", "disabled", "restricted (AppArmor)", "unknown", "n/a". */
  userns?: string;
}

export interface Backend {
  readonly name: string;
  /** Is the backend usable on this host right now? */
  probe(): Promise<Probe>;
  /** Render the spawn plan; throws PlanterError E_SANDBOX_UNAVAILABLE when it cannot. */
  plan(req: PlanRequest): SpawnPlan;
}

const RANK: Record<SandboxMode, number> = { disabled: 0, permissive: 1, enforced: 2 };

/**
 * The effective mode given the job's, the cell's and the daemon's setting. A job may raise its
 * cell's mode, never lower it (like policies: narrow, never widen); a lower one is refused by
 * `lowersMode` before this is asked.
 */
export function effectiveMode(
  job: SandboxMode | undefined,
  cell: SandboxMode | undefined,
  daemon: SandboxMode,
): SandboxMode {
  return job ?? cell ?? daemon;
}

/** Whether `job` would lower `base` (enforced → permissive → disabled). */
export function lowersMode(job: SandboxMode | undefined, base: SandboxMode): boolean {
  return job !== undefined && RANK[job] < RANK[base];
}
