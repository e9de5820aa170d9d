/**
 * The one way planter runs a host program (systemctl, launchctl, limactl, getent, groupadd, useradd,
 * usermod, gpasswd, groupdel, userdel, systemd-tmpfiles, sw_vers, uname, make, bun): an argv, never
 * a shell line; the program found on the PATH of the caller's environment (so tests put recording
 * shims first); a time limit; output captured (quiet: a host program never writes to planter's
 * terminal, and what it said goes into the error when it fails); a failure thrown with a zx-style
 * summary unless the caller asks for `nothrow`. Each program has its own wrapper module
 * (systemd.ts, launchd.ts, limactl.ts, groups.ts, macos.ts) that calls this and nothing else.
 *
 * Built on Bun.spawn rather than zx (plans/design.md "install / uninstall"): zx ran every call
 * through bash and cost ~117 ms to import; nothing here needs a shell.
 */
import { constants } from "node:os";
import { PlanterError } from "../api/errors.ts";

export type Env = Record<string, string | undefined>;

/** Result of one external program call. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Over this process's environment; its PATH decides which program answers. */
  env?: Env;
  /** Past this the program is SIGKILLed and the call answers 124 (default 60 s). */
  timeoutMs?: number;
  /** Return a failed call (exit code ≠ 0, 124 timed out, 127 not found) instead of throwing it. */
  nothrow?: boolean;
  /** The hint of the error thrown for a failed call. */
  hint?: string;
  /**
   * Past this many bytes of output (stdout and stderr together) the program is SIGKILLed and the
   * call answers TOO_MUCH (default: no bound). For programs whose output another user controls.
   */
  maxOutputBytes?: number;
}

export const DEFAULT_TIMEOUT_MS = 60_000;
/** The code of a call stopped at its time limit (as timeout(1) answers). */
export const TIMED_OUT = 124;
/** The code of a program that is not on PATH (as a shell answers). */
export const NOT_FOUND = 127;
/** The code of a call stopped because its output passed `maxOutputBytes`. */
export const TOO_MUCH = 125;
/** How long the output of a killed program is still read (a grandchild may hold its pipes open). */
const DRAIN_MS = 1000;

/** zx's `exit code: 127 (Command not found)`-style summary of a failed call, with its stderr. */
export function describe(program: string, args: readonly string[], r: Run): string {
  const what = r.code === NOT_FOUND ? "command not found" : `exit code ${r.code}`;
  return `${[program, ...args].join(" ")}: ${what}${r.stderr.trim() ? `: ${r.stderr.trim()}` : ""}`;
}

/**
 * The environment a program runs with: this process's (none with `clean`), with `env` over it
 * (undefined removes a name).
 */
export function mergedEnv(env: Env = {}, clean = false): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(clean ? env : { ...process.env, ...env })) if (v !== undefined) out[k] = v;
  return out;
}

/**
 * Read a stream to its end, or until `stop` resolves (then what was read so far); `count` is told
 * of every chunk and answers false to stop reading.
 */
async function collect(
  stream: ReadableStream<Uint8Array>,
  stop: Promise<void>,
  count: (bytes: number) => boolean = () => true,
): Promise<string> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let stopped = false;
  void stop.then(() => {
    stopped = true;
    void reader.cancel().catch(() => undefined);
  });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || stopped) break;
      if (!count(value.length)) {
        void reader.cancel().catch(() => undefined);
        break;
      }
      chunks.push(value);
    }
  } catch {
    // cancelled
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Run `program args…`. Throws a PlanterError (E_UNAVAILABLE, the summary of describe()) when the
 * program is missing, fails or runs past its limit, unless `nothrow`.
 */
export async function exec(program: string, args: readonly string[], o: ExecOptions = {}): Promise<Run> {
  const env = mergedEnv(o.env);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const bin = Bun.which(program, { PATH: env.PATH ?? "/usr/bin:/bin" });
  const r = bin
    ? await spawn(program, bin, args, env, timeoutMs, o.maxOutputBytes ?? Number.POSITIVE_INFINITY)
    : notFound(program);
  if (r.code !== 0 && !o.nothrow) throw new PlanterError("E_UNAVAILABLE", describe(program, args, r), { hint: o.hint });
  return r;
}

async function spawn(
  program: string,
  bin: string,
  args: readonly string[],
  env: Record<string, string>,
  timeoutMs: number,
  maxBytes: number,
) {
  const p = Bun.spawn([bin, ...args], { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let timedOut = false;
  let read = 0;
  let tooMuch = false;
  const count = (bytes: number) => {
    read += bytes;
    if (read <= maxBytes) return true;
    if (!tooMuch) p.kill("SIGKILL");
    tooMuch = true;
    return false;
  };
  let drained: () => void = () => undefined;
  const drain = new Promise<void>((resolve) => {
    drained = resolve;
  });
  const timer = setTimeout(() => {
    timedOut = true;
    p.kill("SIGKILL");
  }, timeoutMs);
  // Once the program has exited, its output is read for a moment more: what a grandchild keeps open is not waited for.
  void p.exited.then(() => setTimeout(drained, DRAIN_MS).unref());
  const [stdout, stderr, code] = await Promise.all([
    collect(p.stdout, drain, count),
    collect(p.stderr, drain, count),
    p.exited,
  ]);
  clearTimeout(timer);
  if (tooMuch) {
    return { code: TOO_MUCH, stdout: "", stderr: `${program}: stopped after more than ${maxBytes} bytes of output` };
  }
  if (timedOut)
    return {
      code: TIMED_OUT,
      stdout,
      stderr: `${stderr}${stderr && !stderr.endsWith("\n") ? "\n" : ""}${[program, ...args.slice(0, 1)].join(" ")}: timed out after ${timeoutMs} ms`,
    };
  return { code, stdout, stderr };
}

/** What a synchronous call may also say. */
export interface SyncOptions extends ExecOptions {
  /** Start from an empty environment: the program gets `env` and nothing of this process's. */
  clean?: boolean;
  cwd?: string;
}

/**
 * Run `program args…` to its end before going on: for the few callers that must have the answer in
 * hand (a job's user at launch, a peer's groups, a probe, an asset build). The same rules as
 * exec(): an argv, the program found on the environment's PATH, a time limit (124), a bound on
 * output (125), not found (127), thrown unless `nothrow`. The limit matters most here: a hung
 * program (an NSS lookup over the network) would stop the whole process.
 */
export function execSync(program: string, args: readonly string[], o: SyncOptions = {}): Run {
  const env = mergedEnv(o.env, o.clean);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const bin = Bun.which(program, { PATH: env.PATH ?? "/usr/bin:/bin" });
  const r = bin ? spawnSync(program, bin, args, env, timeoutMs, o) : notFound(program);
  if (r.code !== 0 && !o.nothrow) throw new PlanterError("E_UNAVAILABLE", describe(program, args, r), { hint: o.hint });
  return r;
}

const notFound = (program: string): Run => ({ code: NOT_FOUND, stdout: "", stderr: `${program}: not found` });

function spawnSync(
  program: string,
  bin: string,
  args: readonly string[],
  env: Record<string, string>,
  timeoutMs: number,
  o: SyncOptions,
): Run {
  let p: ReturnType<typeof Bun.spawnSync>;
  try {
    p = Bun.spawnSync([bin, ...args], {
      env,
      cwd: o.cwd,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      timeout: timeoutMs,
      killSignal: "SIGKILL",
      ...(o.maxOutputBytes === undefined ? {} : { maxBuffer: o.maxOutputBytes }),
    });
  } catch (e) {
    // The program could not be started (EAGAIN, ENOMEM, EACCES): a failed call, never a crash.
    return { code: 126, stdout: "", stderr: `${program}: ${(e as Error).message}` };
  }
  const stdout = p.stdout?.toString() ?? "";
  const stderr = p.stderr?.toString() ?? "";
  if (p.exitedDueToTimeout)
    return { code: TIMED_OUT, stdout, stderr: `${stderr}${program}: timed out after ${timeoutMs} ms` };
  if ((p as { exitedDueToMaxBuffer?: boolean }).exitedDueToMaxBuffer)
    return {
      code: TOO_MUCH,
      stdout: "",
      stderr: `${program}: stopped after more than ${o.maxOutputBytes} bytes of output`,
    };
  const signal = p.signalCode ? (constants.signals as Record<string, number>)[p.signalCode] : undefined;
  return { code: p.exitCode ?? 128 + (signal ?? 0), stdout, stderr };
}
