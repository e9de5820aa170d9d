/** The isolation-backend interface: a backend turns a job request into a spawn plan. */
import type { SandboxMode } from "../api/contract.ts";

/** What a backend needs to know to isolate one job. */
export interface PlanRequest {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  cellDir: string;
  /** Paths a job must never reach: planter's state dir and socket. */
  protect: string[];
}

/** What the supervisor runs: the program and arguments, environment and working dir. */
export interface SpawnPlan {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
}

/** Result of probing whether a backend can run here. */
export interface Probe {
  ok: boolean;
  version?: string;
  message?: string;
  hint?: string;
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
