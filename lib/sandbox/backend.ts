/** The isolation-backend interface: a backend turns a job request into a spawn plan. */
import type { SandboxMode } from "../api/contract.ts";
import type { EffectivePolicy } from "./policy.ts";

/** What a backend needs to know to isolate one job. */
export interface PlanRequest {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  cellDir: string;
  policy: EffectivePolicy;
  /** Paths a job must never reach: planter's state dir and socket dir. */
  protect: string[];
  /** The home directory whose shell rc files stay read-only. */
  home: string;
  /** The job's directory in the state dir, for files planter itself reads (a profile). */
  jobDir: string;
  /** A private temp directory for the job, outside the protected paths. */
  scratch: string;
}

/** A file the supervisor writes before spawning (a Seatbelt profile, say). */
export interface PlanFile {
  path: string;
  content: string;
}

/** What the supervisor runs: the program and arguments, environment and working dir. */
export interface SpawnPlan {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  files?: PlanFile[];
  dirs?: string[];
}

/** Result of probing whether a backend can run here. */
export interface Probe {
  ok: boolean;
  version?: string;
  message?: string;
  hint?: string;
  /** User namespaces: "enabled", "disabled", "restricted (AppArmor)", "not needed (root)", "n/a". */
  userns?: string;
}

export interface Backend {
  readonly name: string;
  /** Is the backend usable on this host right now? */
  probe(): Promise<Probe>;
  /** Render the spawn plan; throws PlanterError E_SANDBOX_UNAVAILABLE when it cannot. */
  plan(req: PlanRequest): SpawnPlan;
}

/** The effective mode given the job's, the cell's and the daemon's setting. */
export function effectiveMode(
  job: SandboxMode | undefined,
  cell: SandboxMode | undefined,
  daemon: SandboxMode,
): SandboxMode {
  return job ?? cell ?? daemon;
}
