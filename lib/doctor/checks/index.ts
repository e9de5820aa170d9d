/** Every check, in report order: the host, the service, the socket, the daemon, access, who jobs run as, sandbox, limits, state; then macOS, the Lima VM and the registered targets. */
import type { Check } from "../check.ts";
import type { DoctorContext } from "../context.ts";
import { authzStrict, config, mcp } from "./config.ts";
import { daemonChecks } from "./daemon.ts";
import { binaryVersion, installState, platform } from "./install.ts";
import { jobsChecks } from "./jobs.ts";
import { limaChecks } from "./lima.ts";
import { limitsChecks } from "./limits.ts";
import { macosChecks } from "./macos.ts";
import { sandboxChecks } from "./sandbox.ts";
import { serviceChecks } from "./service.ts";
import { socketChecks } from "./socket.ts";
import { stateChecks } from "./state.ts";
import { targetsReachable } from "./targets.ts";
import { vmChecks } from "./vm.ts";

export const CHECKS: Check<DoctorContext>[] = [
  platform,
  binaryVersion,
  config,
  installState,
  ...serviceChecks,
  ...socketChecks,
  ...daemonChecks,
  authzStrict,
  mcp,
  ...jobsChecks,
  ...sandboxChecks,
  ...vmChecks,
  ...limitsChecks,
  ...stateChecks,
  ...macosChecks,
  ...limaChecks,
  targetsReachable,
];
