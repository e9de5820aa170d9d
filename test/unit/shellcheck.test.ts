/** The repository's shell scripts (.ci, the test shims, the fake agents) are shellcheck-clean. */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { ROOT } from "../harness.ts";

/** Files under `dir` whose first line runs sh or bash. */
function shellScripts(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return shellScripts(p);
    const first = readFileSync(p, "utf8").split("\n", 1)[0] ?? "";
    return /^#!.*\b(ba)?sh$/.test(first) ? [p] : [];
  });
}

// Required in CI (.ci/run installs shellcheck); skipped on a machine without it.
test.skipIf(!Bun.which("shellcheck") && !process.env.CI)(
  ".ci, the test shims and the fake agents are shellcheck-clean",
  () => {
    const agents = join(ROOT, "test", "fixtures", "agents");
    const scripts = [
      ...shellScripts(join(ROOT, ".ci")),
      ...shellScripts(join(ROOT, "test", "shims")),
      ...shellScripts(agents).filter((p) => !p.includes("/screens/")),
      join(agents, "fake-agent.bash"),
    ];
    expect(scripts.map((s) => relative(ROOT, s))).toContain(".ci/test");
    const r = Bun.spawnSync(["shellcheck", "-f", "gcc", ...scripts], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    expect([r.exitCode, r.stdout.toString(), r.stderr.toString()]).toEqual([0, "", ""]);
  },
);
