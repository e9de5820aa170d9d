/**
 * A job's output on a real terminal: `planter run` and `planter logs` inside a tmux pane (a
 * private tmux server per test), where tmux stores an OSC 52 clipboard write in a paste buffer
 * (`set-clipboard on`) and answers queries into the pane's input as a terminal does. Piped
 * output keeps every byte.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { baseEnv, cleanup, cli, type DaemonHandle, PLANTER, startDaemon, waitFor } from "../harness.ts";

/** Colours, a clipboard write and a query on each stream: DA on stdout, CPR (cursor position) on stderr. */
const JOB = [
  String.raw`printf '\033[31mred\033[0m \033]52;c;SGVsbG8=\a \033[c'`,
  String.raw`printf '\033[32mgreen\033[0m \033]52;c;V29ybGQ=\a \033[6n' >&2`,
].join("\n");
const STDOUT = "\x1b[31mred\x1b[0m \x1b]52;c;SGVsbG8=\x07 \x1b[c";
const STDERR = "\x1b[32mgreen\x1b[0m \x1b]52;c;V29ybGQ=\x07 \x1b[6n";

let d: DaemonHandle;
let servers = 0;

beforeAll(async () => {
  d = await startDaemon();
  writeFileSync(join(d.home, "job.sh"), `${JOB}\n`);
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * Run `planter ARGS` in a tmux pane and return its exit code, what the terminal showed (with attributes),
 * what it answered into the pane's input (ESC shown as ^[), and the paste buffers OSC 52 made.
 */
async function inTmux(
  args: string[],
  opts: { stdoutTo?: string } = {},
): Promise<{ code: number; screen: string; input: string; buffers: string[] }> {
  const tmux = Bun.which("tmux");
  if (!tmux) throw new Error("tmux is not installed (apt-get install tmux); this test needs a real terminal");
  const dir = mkdtempSync(join(d.home, "tmux-"));
  const socket = `planter-test-${process.pid}-${++servers}`;
  // The server's socket lives in the test's dir, removed with it.
  const env = baseEnv(d.home, { TMUX_TMPDIR: dir });
  const run = (...a: string[]) => Bun.spawnSync([tmux, "-L", socket, ...a], { env });
  writeFileSync(join(dir, "tmux.conf"), "set -g set-clipboard on\n");
  // Input is read unbuffered and not echoed. After planter exits, the pane asks for a status
  // report (DSR 5): its answer ends what the terminal put in the input, so everything read
  // before it is what the job's output made the terminal answer.
  writeFileSync(
    join(dir, "pane.sh"),
    [
      "stty -icanon -echo",
      [process.execPath, PLANTER, ...args].map(quote).join(" ") + (opts.stdoutTo ? ` > ${quote(opts.stdoutTo)}` : ""),
      "code=$?",
      String.raw`printf '\033[5n'`,
      "IFS= read -r -d n input",
      `printf '%s %s' "$code" "$input" > ${quote(join(dir, "input.tmp"))}`,
      `mv ${quote(join(dir, "input.tmp"))} ${quote(join(dir, "input"))}`,
      // A pane that ends loses its screen; this one stays until the server is killed.
      "exec sleep infinity",
    ].join("\n"),
  );
  try {
    const started = run(
      "-f",
      join(dir, "tmux.conf"),
      "new-session",
      "-d",
      "-s",
      "t",
      "-x",
      "120",
      "-y",
      "20",
      `bash ${quote(join(dir, "pane.sh"))}`,
    );
    if (started.exitCode !== 0) throw new Error(`tmux new-session failed: ${started.stderr}`);
    const inputFile = join(dir, "input");
    await waitFor(() => existsSync(inputFile), "the pane to read the terminal's answers", 30_000);
    const screen = run("capture-pane", "-p", "-e", "-t", "t").stdout.toString();
    const names = run("list-buffers", "-F", "#{buffer_name}").stdout.toString().split("\n").filter(Boolean);
    const buffers = names.map((b) => run("show-buffer", "-b", b).stdout.toString()).sort();
    const [code, input] = readFileSync(inputFile, "latin1").split(/ (.*)/s) as [string, string];
    return { code: Number(code), screen, input: input.replaceAll("\x1b", "^["), buffers };
  } finally {
    run("kill-server");
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("on a terminal", () => {
  test("planter run keeps the colours; the clipboard and the queries never reach the terminal", async () => {
    const t = await inTmux(["run", "--", "sh", join(d.home, "job.sh")]);
    expect(t.code).toBe(0);
    expect(t.screen).toContain("\x1b[31mred");
    expect(t.screen).toContain("\x1b[32mgreen");
    expect(t.buffers).toEqual([]);
    // Only the pane's own status report: no answer to the job's DA or CPR.
    expect(t.input).toBe("^[[0");
  });

  test("planter run --raw passes them on: the terminal writes the clipboard and answers (the check above can fail)", async () => {
    const t = await inTmux(["run", "--raw", "--", "sh", join(d.home, "job.sh")]);
    expect(t.code).toBe(0);
    expect(t.screen).toContain("\x1b[31mred");
    expect(t.buffers).toEqual(["Hello", "World"]);
    // DA and CPR answers in whichever order the streams reached the terminal, then the pane's own.
    expect(t.input).toMatch(/^(\^\[\[\?[\d;]+c\^\[\[\d+;\d+R|\^\[\[\d+;\d+R\^\[\[\?[\d;]+c)\^\[\[0$/);
  });

  test("each stream is filtered only when it is the terminal: stdout to a file keeps its bytes", async () => {
    const file = join(d.home, "stdout.out");
    const t = await inTmux(["run", "--", "sh", join(d.home, "job.sh")], { stdoutTo: file });
    expect(t.code).toBe(0);
    expect(readFileSync(file, "latin1")).toBe(STDOUT);
    expect(t.screen).toContain("\x1b[32mgreen");
    expect([t.buffers, t.input]).toEqual([[], "^[[0"]);
  });

  test("planter logs filters the same way, and --raw does not", async () => {
    const id = (await cli(d.home, ["run", "--detach", "--", "sh", join(d.home, "job.sh")])).stdout.trim();
    expect((await d.client.waitJob(id, 20_000)).job.state).toBe("exited");
    const filtered = await inTmux(["logs", id]);
    expect(filtered.code).toBe(0);
    expect(filtered.screen).toContain("\x1b[31mred");
    expect([filtered.buffers, filtered.input]).toEqual([[], "^[[0"]);
    const raw = await inTmux(["logs", "--stderr", "--raw", id]);
    expect(raw.screen).toContain("\x1b[32mgreen");
    expect(raw.buffers).toEqual(["World"]);
    expect(raw.input).toMatch(/^\^\[\[\d+;\d+R\^\[\[0$/);
  });
});

describe("not on a terminal", () => {
  test("planter run and planter logs into files keep every byte", async () => {
    const extra = String.raw`printf '\233c \302\233c \303\251\n'`;
    writeFileSync(join(d.home, "bytes.sh"), `${JOB}\n${extra}\n`);
    const expected = Buffer.concat([
      Buffer.from(STDOUT, "latin1"),
      Buffer.from([0x9b, 0x63, 0x20, 0xc2, 0x9b, 0x63, 0x20, 0xc3, 0xa9, 0x0a]),
    ]);
    const out = join(d.home, "run.out");
    const err = join(d.home, "run.err");
    const p = Bun.spawn([process.execPath, PLANTER, "run", "--", "sh", join(d.home, "bytes.sh")], {
      env: baseEnv(d.home),
      stdin: "ignore",
      stdout: Bun.file(out),
      stderr: Bun.file(err),
    });
    expect(await p.exited).toBe(0);
    expect(readFileSync(out)).toEqual(expected);
    expect(readFileSync(err)).toEqual(Buffer.from(STDERR, "latin1"));

    const job = (await d.client.listJobs({})).jobs.find((j) => j.argv[1] === join(d.home, "bytes.sh"));
    const logs = join(d.home, "logs.out");
    const l = Bun.spawn([process.execPath, PLANTER, "logs", job?.id ?? "none"], {
      env: baseEnv(d.home),
      stdin: "ignore",
      stdout: Bun.file(logs),
      stderr: "inherit",
    });
    expect(await l.exited).toBe(0);
    expect(readFileSync(logs)).toEqual(expected);
  });
});
