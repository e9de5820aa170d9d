/** The `none` backend: a plain process, no isolation (it still runs as the job's identity). */
import type { Backend } from "./backend.ts";
import { envLoaderArgv, envScript, HOST_ENV } from "./env.ts";

export const noneBackend: Backend = {
  name: "none",
  probe: async () => ({ ok: true, message: "no isolation" }),
  plan: (req) => ({
    argv: envLoaderArgv(req.argv, 3),
    env: HOST_ENV,
    cwd: req.cwd,
    inputs: [{ data: new TextEncoder().encode(envScript(req.env)) }],
  }),
};
