/**
 * A real probe of the sandbox: a sandboxed process must succeed writing inside its cell and
 * fail to write outside it and to connect to a listener on host loopback.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { resolvePaths, socketDir } from "../paths.ts";
import type { Backend, Probe } from "./backend.ts";
import { DEFAULT_POLICY } from "./policy.ts";

export interface CheckResult {
  ok: boolean;
  backend: string | null;
  version: string | null;
  userns: string | null;
  checks: { id: string; ok: boolean; detail: string }[];
  message?: string;
  hint?: string;
}

const PROBE = `cell=$1; outside=$2; port=$3; r=""
if echo ok > "$cell/.planter-probe" 2>/dev/null; then r="$r inside=written"; else r="$r inside=denied"; fi
if echo x > "$outside" 2>/dev/null; then r="$r outside=written"; else r="$r outside=denied"; fi
if command -v bash >/dev/null 2>&1; then
  if bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then r="$r net=connected"; else r="$r net=denied"; fi
else r="$r net=unknown"; fi
echo "$r"`;

/** Run the probe through `backend` (already probed as `probe`). */
export async function checkSandbox(backend: Backend | null, probe: Probe): Promise<CheckResult> {
  const base = { backend: backend?.name ?? null, version: probe.version ?? null, userns: probe.userns ?? null };
  if (!backend || !probe.ok) return { ...base, ok: false, checks: [], message: probe.message, hint: probe.hint };
  const cell = mkdtempSync(join(tmpdir(), "planter-check-"));
  // Outside = somewhere the host shows read-only: $HOME, unless it lies in /tmp (private inside).
  const home = homedir();
  const outsideDir = home === "/tmp" || home.startsWith("/tmp/") ? "/var/tmp" : home;
  const outside = join(outsideDir, `.planter-sandbox-probe-${process.pid}`);
  const server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  try {
    const paths = resolvePaths();
    const plan = backend.plan({
      argv: ["/bin/sh", "-c", PROBE, "probe", cell, outside, String(port)],
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: homedir() },
      cwd: cell,
      cellDir: cell,
      policy: { ...DEFAULT_POLICY, fs_mode: "writable", network: "none" },
      protect: [paths.stateDir, socketDir(paths.socketPath)],
      home: homedir(),
      jobDir: cell,
      scratch: join(cell, ".tmp"),
    });
    for (const f of plan.files ?? []) await Bun.write(f.path, f.content);
    const p = Bun.spawn(plan.argv, { cwd: plan.cwd, env: plan.env, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const [out, err, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    const leaked = existsSync(outside);
    const got = Object.fromEntries(
      out
        .trim()
        .split(/\s+/)
        .filter((x) => x.includes("="))
        .map((x) => x.split("=") as [string, string]),
    );
    if (code !== 0 || !got.inside) {
      return {
        ...base,
        ok: false,
        checks: [],
        message: `the sandboxed probe did not run (exit ${code}): ${err.trim() || out.trim()}`,
        hint: probe.hint,
      };
    }
    const checks = [
      {
        id: "write-inside",
        ok: got.inside === "written" && existsSync(join(cell, ".planter-probe")),
        detail: `writing the cell dir: ${got.inside}`,
      },
      {
        id: "write-outside",
        ok: got.outside === "denied" && !leaked,
        detail: `writing ${outside}: ${got.outside}${leaked ? " (the file reached the host)" : ""}`,
      },
      { id: "network", ok: got.net === "denied", detail: `connecting to host 127.0.0.1:${port}: ${got.net}` },
    ];
    const ok = checks.every((c) => c.ok);
    return {
      ...base,
      ok,
      checks,
      ...(ok
        ? {}
        : {
            message: "the sandbox let the probe do what it must not",
            hint: "report this with `planter sandbox check --json`",
          }),
    };
  } finally {
    server.close();
    rmSync(cell, { recursive: true, force: true });
    rmSync(outside, { force: true });
  }
}
