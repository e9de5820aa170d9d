/**
 * A socket whose listener reads nothing (lib/api/accepted.ts): the CLI says so within its bound
 * (E_UNAVAILABLE, exit 3, a hint) for plain requests and for `run`'s stream, instead of waiting
 * for ever; a stopped planterd answers again once continued.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { cli, type DaemonHandle, startDaemon, tempHome, waitFor } from "../harness.ts";

const dirs: string[] = [];
const procs: Subprocess[] = [];
const daemons: DaemonHandle[] = [];
afterAll(async () => {
  for (const p of procs) p.kill("SIGKILL");
  for (const d of daemons) {
    d.proc.kill("SIGCONT");
    if (d.proc.exitCode === null) await d.stop();
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const ENV = { PLANTER_ACCEPT_TIMEOUT_MS: "500" };
const COMMANDS = [
  ["job", "ls"],
  ["cell", "ls", "--json"],
  ["run", "--", "true"],
  ["job", "status", "j-0000000000000"],
  ["logs", "j-0000000000000"],
];

/** A Unix socket that is bound and listening but never accepted from (perl: no helper of ours in between). */
async function deafListener(backlog: number): Promise<string> {
  const dir = mkdtempSync("/tmp/pt-deaf-");
  dirs.push(dir);
  chmodSync(dir, 0o700);
  const socket = join(dir, "planterd.sock");
  const proc = Bun.spawn(
    [
      "perl",
      "-MSocket",
      "-e",
      '$|=1; socket(S, PF_UNIX, SOCK_STREAM, 0) or die; bind(S, pack_sockaddr_un($ARGV[0])) or die "bind: $!"; listen(S, $ARGV[1]) or die; print "listening\\n"; sleep 600',
      socket,
      String(backlog),
    ],
    { stdout: "pipe", stderr: "inherit" },
  );
  procs.push(proc);
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toBe("listening\n");
  return socket;
}

function expectUnavailable(r: { code: number; stdout: string; stderr: string }, socket: string, json: boolean): void {
  expect(r.code).toBe(3);
  const text = json ? r.stdout || r.stderr : r.stderr;
  if (json) expect(JSON.parse(text).error.code).toBe("E_UNAVAILABLE");
  expect(text).toContain(`planterd at ${socket} took the connection but read nothing in 0.5 s`);
  expect(text).toContain("planter doctor");
}

describe("a listener that reads nothing", () => {
  test("one that never accepts: every command ends with E_UNAVAILABLE, exit 3 and a hint", async () => {
    const socket = await deafListener(64);
    const home = tempHome();
    dirs.push(home);
    for (const args of COMMANDS) {
      const r = await cli(home, ["--socket", socket, ...args], { env: ENV });
      expectUnavailable(r, socket, args.includes("--json"));
    }
  });

  test("one whose queue is full: refused at connect, unreachable (exit 3)", async () => {
    const socket = await deafListener(0);
    const home = tempHome();
    dirs.push(home);
    // Fill the queue (a backlog of 0 still takes one) with connections nobody accepts.
    const held = await Promise.all(
      [0, 1, 2].map(() => Bun.connect({ unix: socket, socket: { data() {} } }).catch(() => null)),
    );
    const r = await cli(home, ["--socket", socket, "job", "ls"], { env: ENV });
    for (const h of held) h?.end();
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/cannot reach planterd|read nothing/);
  });

  test("a stopped planterd (SIGSTOP): E_UNAVAILABLE; continued, it answers and the job runs", async () => {
    const d = await startDaemon();
    daemons.push(d);
    dirs.push(d.home);
    d.proc.kill("SIGSTOP");
    try {
      for (const args of [
        ["job", "ls"],
        ["run", "--", "echo", "hi"],
      ]) {
        const r = await cli(d.home, args, { env: ENV });
        expectUnavailable(r, d.socket, false);
      }
    } finally {
      d.proc.kill("SIGCONT");
    }
    await waitFor(async () => (await d.client.health()).ok, "planterd to answer after SIGCONT");
    const r = await cli(d.home, ["run", "--", "echo", "hi"], { env: ENV });
    expect([r.code, r.stdout]).toEqual([0, "hi\n"]);
    // Nothing the stopped daemon was sent ran: the refused run made no job.
    const ls = await cli(d.home, ["job", "ls", "--json"], { env: ENV });
    expect(JSON.parse(ls.stdout).map((j: { argv: string[] }) => j.argv)).toEqual([["echo", "hi"]]);
  });
});
