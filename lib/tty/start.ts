/**
 * planterd's side of starting a terminal job: spawn the holder (lib/tty/holder.ts) detached,
 * hand it its orders, and wait for the line that says the recorder runs.
 */
import { join } from "node:path";
import * as v from "valibot";
import { selfArgv } from "../self.ts";
import { type HolderOrders, type Ready, ReadySchema } from "./holder.ts";

/** The holder's socket in a job's directory. */
export const holderSocket = (jobDir: string) => join(jobDir, "tty.sock");

/** argv that runs the holder: `binary`'s or this compiled binary's hidden entry, or the source entry under bun. */
export function holderArgv(binary?: string): string[] {
  return selfArgv("tty-holder", binary);
}

/** A started holder: its process, and what it said. */
export interface StartedHolder extends Ready {
  proc: ReturnType<typeof Bun.spawn>;
}

/** How to start a holder: beside its orders. */
export interface HolderSpawn {
  /** Descriptors handed to the holder at 3, 4, … and on to the recorder (bwrap's inputs). */
  fds?: number[];
  /** Where the holder's diagnostics go (planterd: the job's stderr log). */
  stderr?: number | "inherit" | "ignore";
  /** The holder's own environment (the job's is in the orders). */
  env?: Record<string, string>;
  /** A planter binary to run the holder from (default: this one, or the source entry). */
  binary?: string;
}

/**
 * Spawn a holder with `orders`. Resolves once the recorder runs; rejects when the holder could
 * not start it (its reason is on its stderr).
 */
export async function startHolder(
  orders: Omit<HolderOrders, "fds" | "term" | "hold" | "tty_name"> & {
    term?: string;
    hold?: string | null;
    tty_name?: HolderOrders["tty_name"];
  },
  { fds = [], stderr = "inherit", env = { PATH: "/usr/bin:/bin" }, binary }: HolderSpawn = {},
): Promise<StartedHolder> {
  const proc = Bun.spawn(holderArgv(binary), {
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
