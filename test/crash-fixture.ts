/** What the crash tests share: finding a test's leftover processes, and one request that may meet a dead planterd. */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

export const FINAL = new Set(["exited", "failed", "killed", "lost"]);

/**
 * Live processes of `dir`'s jobs: recorders (their command line names it), jobs (their cwd is in
 * it) and sandboxes (their stdout or stderr is a log file or pipe in it).
 */
export function strays(dir: string): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      if (/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2))) continue;
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ").trim();
      const links = ["cwd", "fd/1", "fd/2"].map((l) => {
        try {
          return readlinkSync(`/proc/${name}/${l}`);
        } catch {
          return "";
        }
      });
      if (cmd.includes(dir) || links.some((l) => l.startsWith(dir))) found.push({ pid: Number(name), cmd });
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

export interface Reply {
  status: number;
  json: Record<string, unknown>;
}

/** One request; null when planterd is not there (down, or killed mid-request). */
export async function call(socket: string, method: string, path: string, body?: unknown): Promise<Reply | null> {
  try {
    const res = await fetch(`http://planterd${path}`, {
      unix: socket,
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: { "content-type": "application/json" },
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  } catch {
    return null;
  }
}

export interface JobJson {
  id: string;
  state: string;
  reason: string | null;
  message: string | null;
  argv: string[];
  pid: number | null;
  kill: unknown;
}
