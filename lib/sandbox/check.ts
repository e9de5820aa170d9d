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

/** The names the egress probe asks for: one the list allows, one it denies (answered by the check itself). */
const PROBE_ALLOWED = "allowed.planter-check.test";
const PROBE_DENIED = "denied.planter-check.test";

/** A request through the job's proxy (bash's /dev/tcp: no curl needed), printing the status line. */
const EGRESS_PROBE = `for h in "$1" "$2"; do
  if exec 3<>/dev/tcp/127.0.0.1/3128; then
    printf 'GET http://%s:%s/ HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$h" "$3" "$h" "$3" >&3
    IFS= read -r line <&3; echo "$h $line"; exec 3>&-
  else echo "$h no-proxy"; fi
done`;

/**
 * Network allow lists, probed for real where bwrap runs them: a sandbox whose list allows one
 * name reaches an origin this check serves on loopback through its proxy, and is refused another.
 */
async function egressChecks(
  backend: Backend,
  cell: string,
  home: string,
): Promise<{ id: string; ok: boolean; detail: string }[]> {
  if (backend.name !== "bwrap") return [];
  if (!Bun.which("bash")) return [{ id: "egress", ok: true, detail: "not probed: no bash for the probe" }];
  const origin = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("planter-check\n") });
  try {
    const network = { allow: [PROBE_ALLOWED], deny: [], allow_local: true };
    const req = hostRequest({
      argv: ["bash", "-c", EGRESS_PROBE, "probe", PROBE_ALLOWED, PROBE_DENIED, String(origin.port)],
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: home },
      cellDir: cell,
      policy: { ...DEFAULT_POLICY, fs_mode: "writable", network },
      jobDir: cell,
      scratch: join(cell, ".tmp"),
      home,
    });
    const plan = backend.plan(req);
    const hosts = { [PROBE_ALLOWED]: ["127.0.0.1"], [PROBE_DENIED]: ["127.0.0.1"] };
    const p = spawnPlan(plan, req.identity, cell, ["ignore", "pipe", "pipe"], { rules: network, hosts });
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    const said = (h: string) =>
      out
        .split("\n")
        .find((l) => l.startsWith(`${h} `))
        ?.slice(h.length + 1)
        .trim();
    const allowed = said(PROBE_ALLOWED) ?? `no answer (${err.trim().split("\n").pop() ?? ""})`;
    const denied = said(PROBE_DENIED) ?? `no answer (${err.trim().split("\n").pop() ?? ""})`;
    return [
      {
        id: "egress-allowed",
        ok: /^HTTP\/1\.1 200/.test(allowed),
        detail: `a listed name through the job's proxy: ${allowed}`,
      },
      {
        id: "egress-denied",
        ok: /^HTTP\/1\.1 403/.test(denied),
        detail: `an unlisted name through the job's proxy: ${denied}`,
      },
    ];
  } finally {
    origin.stop(true);
  }
}

/** Run the probe through `backend` (already probed as `probe`). */
export async function checkSandbox(backend: Backend | null, probe: Probe): Promise<CheckResult> {
  const base = { backend: backend?.name ?? null, version: probe.version ?? null, userns: probe.userns ?? null };
  if (!backend || !probe.ok) return { ...base, ok: false, checks: [], message: probe.message, hint: probe.hint };
  const cell = mkdtempSync(join(tmpdir(), "planter-check-"));
  const home = join(cell, ".home");
  mkdirSync(home, { mode: 0o700 });
  // Outside = somewhere the host keeps out of reach: /var/tmp (the real home is hidden whole), in a
  // dir of its own made here (a fixed name in a shared dir is anyone's to plant first), which the
  // job's user may write on the host: only the sandbox stands in the way.
  const outsideDir = mkdtempSync("/var/tmp/.planter-sandbox-probe-");
  const outside = join(outsideDir, "probe");
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
    if (req.identity) for (const d of [cell, home, outsideDir]) chownSync(d, req.identity.uid, req.identity.gid);
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
    checks.push(...(await egressChecks(backend, cell, home)));
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
    rmSync(outsideDir, { recursive: true, force: true });
  }
}
