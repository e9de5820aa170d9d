/** Test harness: a real planterd on a real socket in a temp PLANTER_HOME; waits on conditions, never on time. */
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../lib/api/client.ts";

export const ROOT = join(import.meta.dir, "..");
export const PLANTER = join(ROOT, "scripts", "planter.ts");

/**
 * Fixed environment for every spawned planter process. PLANTER_GROUP is empty: a system-mode
 * (root) test daemon has no group and a root-only socket, whether or not this host has a group
 * `planter` (a test that wants a group names one).
 */
export function baseEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/root",
    NO_COLOR: "1",
    TZ: "UTC",
    PLANTER_HOME: home,
    PLANTER_GROUP: "",
    ...extra,
  };
}

/** Poll `cond` until it is truthy; fail after `ms` with `what`. */
export async function waitFor<T>(cond: () => T | Promise<T>, what: string, ms = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** A short temp dir (socket paths are limited to ~107 bytes). */
export function tempHome(prefix = "pt"): string {
  const home = mkdtempSync(`/tmp/${prefix}-`);
  // A root planterd's jobs run as an unprivileged user (nobody), who must pass through to its
  // cell and may leave files here for a test to read (sticky, like /tmp). A user's planterd runs
  // jobs as that user, and refuses a socket below a directory others may write that is not
  // root's: there it stays the user's own (0700, as mkdtemp made it).
  if (process.getuid?.() === 0) chmodSync(home, 0o1777);
  return home;
}

/** Every daemon a test started: killed when the test process exits or is interrupted, even after a failed test. */
const started = new Set<Subprocess>();
const killStarted = () => {
  for (const p of started) if (p.exitCode === null) p.kill("SIGKILL");
};
process.on("exit", killStarted);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
  process.once(sig, () => {
    killStarted();
    process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
  });

const bundles = new Map<string, string>();
let bundleDir: string | null = null;
/**
 * `script` bundled into one file in a world-readable temp dir, for a process that runs as another
 * uid: that uid may not reach this checkout (a clone inside a 0700 `mktemp -d` dir). Built once per
 * script and test process (with this checkout's commit, as the source would report it), removed at exit.
 */
export function bundled(script: string): string {
  const known = bundles.get(script);
  if (known) return known;
  if (!bundleDir) {
    const dir = mkdtempSync("/tmp/pt-bundle-");
    chmodSync(dir, 0o755);
    bundleDir = dir;
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  const out = join(bundleDir, `${bundles.size}-${script.split("/").pop()?.replace(/\.ts$/, "")}.js`);
  const git = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], { cwd: ROOT, stderr: "ignore" });
  const commit = git.exitCode === 0 ? git.stdout.toString().trim() : "unknown";
  const define = ["--define", `PLANTER_COMMIT=${JSON.stringify(commit)}`];
  const r = Bun.spawnSync([process.execPath, "build", "--target=bun", ...define, script, "--outfile", out], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  if (r.exitCode !== 0 || !existsSync(out)) throw new Error(`cannot bundle ${script}: ${r.stderr.toString()}`);
  chmodSync(out, 0o644);
  bundles.set(script, out);
  return out;
}

export interface DaemonHandle {
  home: string;
  socket: string;
  client: Client;
  proc: Subprocess;
  stderr: () => string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number>;
  /** SIGKILL and wait for exit. */
  kill9(): Promise<void>;
  /** `await using`: at the end of the scope, stopped as stop() does if still running (SIGKILL after 20 s). */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Start planterd in `home` (a new temp dir by default) and wait until it answers. */
export async function startDaemon(
  opts: {
    home?: string;
    env?: Record<string, string>;
    args?: string[];
    config?: string;
    prefix?: string[];
    /** Run planterd as this uid (and gid), from a bundle it can read; its home should be its own. */
    uid?: number;
  } = {},
): Promise<DaemonHandle> {
  const home = opts.home ?? tempHome();
  // Lifecycle tests run jobs unsandboxed (they hand jobs files under /tmp, which a sandbox
  // makes private); sandbox tests say [sandbox] themselves.
  const configFile = join(home, "config.toml");
  if (opts.config !== undefined || !(await Bun.file(configFile).exists())) {
    const config = opts.config ?? "";
    let text = config.includes("[sandbox]") ? config : `${config}\n[sandbox]\nmode = "disabled"\n`;
    // The agent observer reads no tmux server of the host's (a test names its own private sockets).
    if (!text.includes("[agents]")) text = `${text}\n[agents]\ntmux_dirs = []\n`;
    // A root planterd's root-peer jobs run as nobody, whatever users this host has.
    if (!text.includes("root_peer_user")) {
      text = text.includes("[jobs]")
        ? text.replace("[jobs]", '[jobs]\nroot_peer_user = "nobody"')
        : `${text}\n[jobs]\nroot_peer_user = "nobody"\n`;
    }
    await Bun.write(configFile, text);
  }
  const socket = join(home, "run", "planterd.sock");
  let err = "";
  // `prefix` runs planterd through a wrapper that execs it (into a cgroup, say).
  const as = opts.uid === undefined ? [] : ["setpriv", `--reuid=${opts.uid}`, `--regid=${opts.uid}`, "--clear-groups"];
  const script = opts.uid === undefined ? PLANTER : bundled(PLANTER);
  const argv = [...as, ...(opts.prefix ?? []), process.execPath, script, "daemon", ...(opts.args ?? [])];
  const proc = Bun.spawn(argv, {
    env: baseEnv(home, opts.env),
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  started.add(proc);
  (async () => {
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) err += new TextDecoder().decode(chunk);
  })();
  // A daemon of another uid is trusted by name (the CLI's rule: the caller's own and root's only).
  const client = new Client(socket, undefined, opts.uid === undefined ? [] : [opts.uid]);
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`planterd exited ${proc.exitCode}: ${err}`);
      return client.health().then(
        (h) => h.ok,
        () => false,
      );
    },
    "planterd to answer",
    20_000,
  );
  return {
    home,
    socket,
    client,
    proc,
    stderr: () => err,
    async stop() {
      proc.kill("SIGTERM");
      return await proc.exited;
    },
    async kill9() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
    async [Symbol.asyncDispose]() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      await exitWithin(proc, 20_000, "planterd after SIGTERM").catch(() => undefined);
    },
  };
}

/** Run the planter CLI (from source) and collect its output. */
export async function cli(
  home: string,
  args: string[],
  opts: { env?: Record<string, string>; stdin?: string; script?: string; uid?: number } = {},
) {
  // As another uid (the user a daemon runs as: the CLI trusts only its own uid's and root's).
  const as = opts.uid === undefined ? [] : ["setpriv", `--reuid=${opts.uid}`, `--regid=${opts.uid}`, "--clear-groups"];
  // Another uid may not reach this checkout (a clone in a 0700 dir): it runs a bundle.
  const script = opts.script ?? PLANTER;
  const proc = Bun.spawn([...as, process.execPath, opts.uid === undefined ? script : bundled(script), ...args], {
    env: baseEnv(home, opts.env),
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

/** Whether the daemon's sandbox backend is a working bwrap (`GET /v1/ready`); says so when not. */
export async function bwrapReady(d: DaemonHandle): Promise<boolean> {
  const probe = (await raw(d.socket, "GET", "/v1/ready")).json as { sandbox: { backend: string; ok: boolean } };
  if (probe.sandbox.backend === "bwrap" && probe.sandbox.ok) return true;
  console.warn("skipped: no working bwrap here");
  return false;
}

/** Start the CLI and read its stdout as it comes (for -f commands); `done()` waits for its exit. */
export function cliStream(home: string, args: string[]) {
  const proc = Bun.spawn([process.execPath, PLANTER, ...args], {
    env: baseEnv(home),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const s = { proc, out: "", done: async () => ({ code: 0, stderr: "" }) };
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stdout) s.out += decoder.decode(chunk, { stream: true });
  })();
  const stderr = new Response(proc.stderr).text();
  s.done = async () => {
    const code = await proc.exited;
    await reading;
    return { code, stderr: await stderr };
  };
  return s;
}

/** Raw HTTP over the socket, for bad-input tests. */
export async function raw(
  socket: string,
  method: string,
  path: string,
  body?: string | Uint8Array,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`http://planterd${path}`, {
    unix: socket,
    method,
    body,
    headers: { "content-type": "application/json", ...headers },
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return {
    status: res.status,
    json: json as {
      error?: { code: string; message: string; hint?: string; details?: Record<string, unknown> };
    } & Record<string, unknown>,
    text,
  };
}

/** True while a pid exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    const stat = require("node:fs").readFileSync(`/proc/${pid}/stat`, "utf8") as string;
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** What a process is doing now, for a failure message: its command line, state and where it waits. */
export function procState(pid: number): string {
  const read = (f: string) => {
    try {
      return require("node:fs").readFileSync(`/proc/${pid}/${f}`, "utf8") as string;
    } catch {
      return null;
    }
  };
  const stat = read("stat");
  if (stat === null) return `pid ${pid} is gone`;
  const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  const argv = (read("cmdline") ?? "").split("\0").filter(Boolean).join(" ");
  return `pid ${pid} is \`${argv}\` (state ${state}, waiting in ${read("wchan") || "-"})`;
}

/**
 * `proc`'s exit code once it exits; if it has not within `ms`, a failure that says what `proc` is
 * doing then (it is killed): a test fails in time, with a reason, instead of hanging to the
 * runner's timeout.
 */
export async function exitWithin(proc: Subprocess, ms: number, what: string): Promise<number> {
  let timer: Timer | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  const code = await Promise.race([proc.exited, late]);
  clearTimeout(timer);
  if (code !== null) return code;
  const state = procState(proc.pid);
  proc.kill("SIGKILL");
  throw new Error(`${what} did not exit within ${ms} ms: ${state}`);
}

export function cleanup(home: string): void {
  rmSync(home, { recursive: true, force: true });
}

/** Settle-tracking wrapper: whether a promise has resolved or rejected yet. */
export function track<T>(p: Promise<T>) {
  const t = { settled: false, promise: p };
  p.then(
    () => {
      t.settled = true;
    },
    () => {
      t.settled = true;
    },
  );
  return t;
}

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Send raw bytes and collect whatever comes back until the server closes or `idleMs` passes quietly. */
export function rawExchange(socket: string, bytes: Uint8Array, endAfter: boolean): Promise<string> {
  return new Promise((resolve) => {
    const s = createConnection({ path: socket });
    let out = "";
    s.on("data", (b) => {
      out += b.toString("latin1");
      // one response is enough: a status line and a complete body or a chunk
      if (/\r\n\r\n/.test(out)) s.end();
    });
    s.on("error", () => resolve(out));
    s.on("close", () => resolve(out));
    s.on("connect", () => {
      s.write(bytes);
      if (endAfter) s.end();
    });
  });
}

/**
 * Another local user (`uid`, 12345 by default: no account, no token, no rights) opening `n` plain
 * TCP connections to 127.0.0.1:`port` and holding them, sending nothing. `open` is how many were
 * still open once `n - cap` had been closed by the server (or 10 s passed); `allClosed()` waits
 * until the server has closed every one (false after `ms`). Root only (setpriv).
 */
export async function hogTcp(
  port: number,
  n: number,
  cap: number,
  uid = 12345,
): Promise<{ open: number; allClosed: (ms?: number) => Promise<boolean>; release: () => Promise<void> }> {
  const perl = `use IO::Socket::INET; use IO::Select; my ($port, $n, $cap) = @ARGV; $| = 1; my @s;
    for (1 .. $n) { push @s, (IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port) or die "connect: $!\\n") }
    my %closed;
    my $watch = sub { my ($until, $deadline) = @_;
      while (keys(%closed) < $until && time < $deadline) {
        for my $r (IO::Select->new(grep { !$closed{fileno $_} } @s)->can_read(0.2)) { my $b; my $k = sysread($r, $b, 1); $closed{fileno $r} = 1 if !$k }
      } };
    $watch->($n - $cap, time + 10); print "open ", $n - keys(%closed), "\\n";
    my $ms = <STDIN>; exit 0 unless defined $ms; $watch->($n, time + $ms / 1000); print "left ", $n - keys(%closed), "\\n"; <STDIN>;`;
  const p = Bun.spawn(
    [
      "setpriv",
      `--reuid=${uid}`,
      `--regid=${uid}`,
      "--clear-groups",
      "perl",
      "-e",
      perl,
      String(port),
      String(n),
      String(cap),
    ],
    { stdin: "pipe", stdout: "pipe", stderr: "inherit" },
  );
  const reader = p.stdout.getReader();
  let out = "";
  const line = async () => {
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    const [first = "", ...rest] = out.split("\n");
    out = rest.join("\n");
    return first;
  };
  const open = Number(/^open (\d+)$/.exec(await line())?.[1] ?? Number.NaN);
  return {
    open,
    allClosed: async (ms = 10_000) => {
      p.stdin.write(`${ms}\n`);
      await p.stdin.flush();
      return (await line()) === "left 0";
    },
    release: async () => {
      p.stdin.end();
      p.kill();
      await p.exited;
    },
  };
}
