/**
 * planterd's side of starting a terminal job: spawn the holder (lib/tty/holder.ts) detached,
 * hand it its orders, and wait for the line that says the recorder runs.
 */
import { join } from "node:path";
import * as v from "valibot";
import { type HolderOrders, type Ready, ReadySchema } from "./holder.ts";

/** The holder's socket in a job's directory. */
export const holderSocket = (jobDir: string) => join(jobDir, "tty.sock");

/** argv that runs the holder: this compiled binary's hidden entry, or the source entry under bun. */
export function holderArgv(): string[] {
  if (Bun.main.startsWith("/$bunfs")) return [process.execPath, "tty-holder"];
  return [process.execPath, join(import.meta.dir, "..", "..", "scripts", "planter.ts"), "tty-holder"];
}

/** A started holder: its process, and what it said. */
export interface StartedHolder extends Ready {
  proc: ReturnType<typeof Bun.spawn>;
}

/**
 * Spawn a holder with `orders`; `fds` go to it at 3, 4, … (and on to the recorder). `stderr` is
 * where its diagnostics go (the job's stderr log). Resolves once the recorder runs; rejects with
 * the holder's own words when it could not start it.
 */
export async function startHolder(
  orders: Omit<HolderOrders, "fds" | "term"> & { term?: string },
  fds: number[],
  stderr: number | "inherit" | "ignore" = "inherit",
  env: Record<string, string> = { PATH: "/usr/bin:/bin" },
): Promise<StartedHolder> {
  const proc = Bun.spawn(holderArgv(), {
    env,
    stdio: ["pipe", "pipe", stderr, ...fds],
    detached: true,
  });
  proc.stdin.write(JSON.stringify({ ...orders, fds: fds.length }));
  await proc.stdin.end();
  const text = await new Response(proc.stdout).text();
  const line = text.split("\n")[0] ?? "";
  let ready: Ready;
  try {
    ready = v.parse(ReadySchema, JSON.parse(line));
  } catch {
    await proc.exited;
    throw new Error(`the terminal holder did not start the job (exit ${proc.exitCode ?? proc.signalCode})`);
  }
  return { ...ready, proc };
}

/**
 * What runs the job's program inside its sandbox (or under the recorder, unsandboxed): util-linux
 * `setsid --ctty --wait`: a session of the job's own, with the PTY as its controlling terminal
 * (job control, ^C as SIGINT to the job's foreground group, /dev/tty). It execs the program
 * (forking only when it leads a process group, and then waiting to pass the exit status on).
 */
export const CTTY_ARGV = ["/usr/bin/setsid", "--wait", "--ctty"];
