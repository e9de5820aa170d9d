/** The `none` backend: a plain process, no isolation. */
import type { Backend } from "./backend.ts";

export const noneBackend: Backend = {
  name: "none",
  probe: async () => ({ ok: true, message: "no isolation" }),
  plan: (req) => ({ argv: req.argv, env: req.env, cwd: req.cwd }),
};
