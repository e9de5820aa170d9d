/**
 * A real probe of the sandbox: a sandboxed process must succeed writing inside its cell and
 * fail to write outside it and to connect to a listener on host loopback; and containment
 * holds: it does not run as uid 0, /proc/sys is read-only, a host Unix socket cannot be
 * reached, the real home (and so its credentials) is hidden.
 */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import type { Backend, Probe } from "./backend.ts";
import { DEFAULT_POLICY } from "./policy.ts";
import { hostRequest, spawnPlan } from "./run.ts";

/** A regular file directly in the real home (the probe must not read it), or null. */
function homeFile(): string | null {
  try {
    const f = readdirSync(homedir(), { withFileTypes: true }).find((e) => e.isFile());
    return f ? join(homedir(), f.name) : null;
  } catch {
    return null;
  }
}

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
r="$r uid=$(id -u)"
if echo x > /proc/sys/kernel/core_pattern 2>/dev/null; then r="$r procsys=written"; else r="$r procsys=denied"; fi
if command -v perl >/dev/null 2>&1; then
  if perl -e 'use Socket; socket(my $s, PF_UNIX, SOCK_STREAM, 0) or exit 1; connect($s, pack_sockaddr_un($ARGV[0])) or exit 1; exit 0' "$4" 2>/dev/null; then r="$r unix=connected"; else r="$r unix=denied"; fi
else r="$r unix=unknown"; fi
if [ -n "$5" ] && cat "$5" >/dev/null 2>&1; then r="$r home=visible"; else r="$r home=hidden"; fi
echo "$r"`;

/** Run the probe through `backend` (already probed as `probe`). */
export async function checkSandbox(backend: Backend | null, probe: Probe): Promise<CheckResult> {
  const base = { backend: backend?.name ?? null, version: probe.version ?? null, userns: probe.userns ?? null };
  if (!backend || !probe.ok) return { ...base, ok: false, checks: [], message: probe.message, hint: probe.hint };
  const cell = mkdtempSync(join(tmpdir(), "planter-check-"));
  const home = join(cell, ".home");
  mkdirSync(home, { mode: 0o700 });
  // Outside = somewhere the host keeps out of reach: /var/tmp (the real home is hidden whole).
  const outside = join("/var/tmp", `.planter-sandbox-probe-${process.pid}`);
  const server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  // A host Unix socket the probe can see (it is in its cell) but must not reach.
  const unixPath = join(cell, "host.sock");
  const unix: Server = createServer((s) => s.end("reached\n"));
  await new Promise<void>((r) => unix.listen(unixPath, r));
  try {
    const req = hostRequest({
      argv: ["/bin/sh", "-c", PROBE, "probe", cell, outside, String(port), unixPath, homeFile() ?? ""],
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: home },
      cellDir: cell,
      policy: { ...DEFAULT_POLICY, fs_mode: "writable", network: "none" },
      jobDir: cell,
      scratch: join(cell, ".tmp"),
      home,
    });
    if (req.identity) for (const d of [cell, home]) chownSync(d, req.identity.uid, req.identity.gid);
    const plan = backend.plan(req);
    for (const f of plan.files ?? []) await Bun.write(f.path, f.content);
    const p = spawnPlan(plan, req.identity, cell, ["ignore", "pipe", "pipe"]);
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
      { id: "not-root", ok: got.uid !== undefined && got.uid !== "0", detail: `the job runs as uid ${got.uid}` },
      { id: "proc-sys", ok: got.procsys === "denied", detail: `writing /proc/sys/kernel/core_pattern: ${got.procsys}` },
      { id: "host-socket", ok: got.unix !== "connected", detail: `connecting to a host Unix socket: ${got.unix}` },
      {
        id: "credentials",
        ok: got.home === "hidden",
        detail: `a file in the real home ${homedir()}: ${homeFile() ? got.home : "hidden (the home has no file to try)"}`,
      },
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
    unix.close();
    rmSync(cell, { recursive: true, force: true });
    rmSync(outside, { force: true });
  }
}
