/**
 * Terminal holders on real PTYs (lib/tty): a full-screen program draws through one, the size
 * follows resizes, input echoes, the holder outlives its parent and a new controller redraws,
 * and a sandboxed job cannot reach the holder's socket.
 */
import { afterEach, describe, expect, test } from "bun:test";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import * as v from "valibot";
import { jobFiles, prepareStatus, readStatus, recorderArgv } from "../../lib/jobs/recorder.ts";
import type { PipeEnds } from "../../lib/sandbox/backend.ts";
import { BwrapBackend } from "../../lib/sandbox/bwrap.ts";
import { openGate } from "../../lib/sandbox/gate.ts";
import { dropArgv } from "../../lib/sandbox/identity.ts";
import { openInputs } from "../../lib/sandbox/inputs.ts";
import { complete } from "../../lib/sandbox/policy.ts";
import { hostRequest } from "../../lib/sandbox/run.ts";
import { HolderConnection } from "../../lib/tty/controller.ts";
import { ReadySchema } from "../../lib/tty/holder.ts";
import { type End, FrameReader, frame, KIND } from "../../lib/tty/protocol.ts";
import { sessionArgv } from "../../lib/tty/session.ts";
import { CTTY_ARGV, holderArgv, holderSocket, type StartedHolder, startHolder } from "../../lib/tty/start.ts";
import { cleanup, pidAlive, ROOT, startDaemon, tempHome, waitFor } from "../harness.ts";

const ENV = { PATH: "/usr/bin:/bin", TERM: "xterm-256color", HOME: "/tmp", LANG: "C.UTF-8" };
const homes: string[] = [];
const holders: number[] = [];

afterEach(() => {
  for (const pid of holders.splice(0)) if (pidAlive(pid)) process.kill(pid, "SIGKILL");
  for (const h of homes.splice(0)) cleanup(h);
});

/** A job dir in a fresh state dir, its status placeholder made. */
function jobDir(): { home: string; dir: string; files: ReturnType<typeof jobFiles> } {
  const home = tempHome("tty");
  homes.push(home);
  const dir = join(home, "state", "jobs", "j-test");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = jobFiles(dir);
  prepareStatus(files.status);
  return { home, dir, files };
}

/**
 * Start a holder running `cmd` as a terminal job (no sandbox), in a session of its own through
 * util-linux setsid, or through planter's own entry (`builtin`: macOS's way, which runs here too).
 */
async function start(
  cmd: string[],
  size = { cols: 80, rows: 24 },
  logLimit: number | null = null,
  session: "setsid" | "builtin" = "setsid",
) {
  const j = jobDir();
  const h = await startHolder({
    argv:
      session === "setsid"
        ? recorderArgv(j.files.status, [...CTTY_ARGV, ...cmd])
        : recorderArgv(j.files.status, [...sessionArgv(), ...cmd]),
    cwd: j.dir,
    env: ENV,
    ...size,
    log: j.files.stdout,
    socket: holderSocket(j.dir),
    log_limit: logLimit,
  });
  holders.push(h.holder, h.pid);
  return { ...j, h };
}

const logText = (files: { stdout: string }) => (existsSync(files.stdout) ? readFileSync(files.stdout, "utf8") : "");
/** The log's text once it matches `re`. */
const logWhen = (files: { stdout: string }, re: RegExp, what: string) =>
  waitFor(() => {
    const t = logText(files);
    return re.test(t) ? t : null;
  }, what);

/** A controller that collects output and the end. */
async function control(dir: string) {
  const got = { text: "", tail: "", end: null as End | null, closed: false };
  const c = await HolderConnection.connect(holderSocket(dir), {
    output: (d) => {
      const t = new TextDecoder().decode(d);
      got.text += t;
      got.tail = (got.tail + t).slice(-4096);
    },
    // A controller that itself fell behind (a busy box) is skipped ahead and redrawn: what the
    // redraw shows is what it has seen.
    snapshot: (s) => {
      got.tail = `${got.tail}\n${s.lines.join("\n")}`.slice(-4096);
    },
    end: (e) => {
      got.end = e;
    },
    close: () => {
      got.closed = true;
    },
  });
  return { c, got };
}

async function ended(h: StartedHolder, got: { end: End | null }): Promise<End> {
  await h.proc.exited;
  return waitFor(() => got.end, "the holder's end frame");
}

describe("terminal holder", () => {
  test("vim draws its screen through the holder, takes keys, and quits", async () => {
    const j = jobDir();
    const file = join(j.home, "note.txt");
    writeFileSync(file, "hello planter\nsecond line\n");
    const h = await startHolder({
      argv: recorderArgv(j.files.status, [...CTTY_ARGV, "vim", "-u", "NONE", "-i", "NONE", "-N", "-n", file]),
      cwd: j.home,
      env: ENV,
      cols: 60,
      rows: 12,
      log: j.files.stdout,
      socket: holderSocket(j.dir),
      log_limit: null,
    });
    holders.push(h.holder, h.pid);
    const { c, got } = await control(j.dir);
    // vim's screen: the file, tildes below it, the file name in the last line.
    const first = await waitFor(async () => {
      const s = await c.snapshot();
      return s.lines[0] === "hello planter" && s.lines[2]?.startsWith("~") && s.lines[11]?.includes("note.txt")
        ? s
        : null;
    }, "vim's first screen");
    expect(first.lines[1]).toBe("second line");
    expect({ cols: first.cols, rows: first.rows }).toEqual({ cols: 60, rows: 12 });
    // The alternate screen (vim's) is part of the redraw.
    expect(first.ansi).toContain("hello planter");
    c.input("iyes, \x1b");
    await waitFor(async () => (await c.snapshot()).lines[0] === "yes, hello planter", "the edit on screen");
    c.input(":q!\r");
    expect(await ended(h, got)).toEqual({ code: 0, signal: null });
    expect(readStatus(j.files.status)).toBe(0);
    // The log holds the raw stream: vim's escape sequences and the text it drew.
    const log = readFileSync(j.files.stdout, "utf8");
    expect(log).toContain("hello planter");
    expect(log).toContain("\x1b[");
  });

  test("stty size follows a resize", async () => {
    const { dir, h } = await start(["sh", "-c", "stty size; read x; stty size; read y"], { cols: 80, rows: 24 });
    const { c, got } = await control(dir);
    await waitFor(async () => (await c.snapshot()).lines.includes("24 80"), "the first size");
    c.resize(132, 43);
    c.input("\r");
    await waitFor(() => got.text.includes("43 132"), "the size after the resize");
    c.input("\r");
    expect(await ended(h, got)).toEqual({ code: 0, signal: null });
  });

  test("input echoes, ^C reaches the job as SIGINT, end of input ends cat", async () => {
    const { dir, h, files } = await start(["sh", "-c", "trap 'echo got INT' INT; cat; echo cat ended $?"]);
    const { c, got } = await control(dir);
    // The job leads its own session: the PTY is its controlling terminal.
    c.input("abc\r");
    await waitFor(() => got.text.includes("abc\r\nabc\r\n"), "the echo and cat's copy");
    c.input("\x03");
    await waitFor(() => got.text.includes("got INT"), "^C as SIGINT to the job's foreground group");
    await waitFor(() => got.text.includes("cat ended 130"), "cat killed by ^C");
    expect(await ended(h, got)).toEqual({ code: 0, signal: null });
    expect(readFileSync(files.stdout, "utf8")).toContain("abc\r\nabc\r\n");
  });

  test("the holder answers the job's terminal queries (cursor position, device attributes)", async () => {
    // The job waits for the controller's line: answered by the holder alone, it could end first.
    const { dir, h, files } = await start([
      "sh",
      "-c",
      "read go; clear; stty -echo -icanon min 1; printf 'ab\\033[6n'; dd bs=1 count=6 2>/dev/null | od -An -c; printf '\\033[c'; dd bs=1 count=7 2>/dev/null | od -An -c",
    ]);
    const { c, got } = await control(dir);
    c.input("go\r");
    await ended(h, got);
    const log = logText(files);
    // The cursor after "ab" is at row 1, column 3; the device attributes are xterm's.
    expect(log).toContain("033   [   1   ;   3   R");
    expect(log).toContain("033   [   ?   1   ;   2   c");
  });

  test("a snapshot asked of a holder that has gone rejects", async () => {
    const { dir, h } = await start(["sh", "-c", "read x"]);
    const { c, got } = await control(dir);
    c.input("\r");
    await ended(h, got);
    await waitFor(() => c.closed, "the connection's close");
    await expect(c.snapshot()).rejects.toThrow("the holder closed the connection");
  });

  test("end of input closes the job's stdin", async () => {
    const { dir, h } = await start(["sh", "-c", "cat; echo cat ended $?"]);
    const { c, got } = await control(dir);
    c.input("x\r");
    await waitFor(() => got.text.includes("x\r\nx\r\n"), "cat's copy");
    c.eof();
    expect(await ended(h, got)).toEqual({ code: 0, signal: null });
    expect(got.text).toContain("cat ended 0");
  });

  test("the job's exit code and the log limit", async () => {
    // Every job here that a controller must see end waits for its line: one that ends on its own
    // may be gone, socket and all, before the controller connects.
    const { dir, h, files } = await start(
      ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; read go; exit 7"],
      undefined,
      1000,
    );
    const { c, got } = await control(dir);
    c.input("\r");
    expect(await ended(h, got)).toEqual({ code: 7, signal: null });
    expect(readFileSync(files.stdout).length).toBe(1000);
    expect(readStatus(files.status)).toBe(7);
  });

  test("after a flood the screen shows its last lines", async () => {
    const { dir, h } = await start(["sh", "-c", "seq 1 400000 | cat; echo END MARK; read x"]);
    const { c, got } = await control(dir);
    const snap = await waitFor(async () => {
      const s = await c.snapshot();
      return s.lines.includes("END MARK") ? s : null;
    }, "the end of the flood on screen");
    // The 24 rows: the last 22 numbers, the mark, the cursor's empty line.
    expect(snap.lines.slice(0, 3)).toEqual(["399979", "399980", "399981"]);
    expect(snap.lines[22]).toBe("END MARK");
    expect(snap.cursor).toEqual({ x: 0, y: 23 });
    c.input("\r");
    await ended(h, got);
  }, 30_000);

  test("a controller that stops reading is skipped ahead and redrawn, and still gets the end", async () => {
    const { dir, h } = await start(["sh", "-c", "read x; seq 1 3000000 | cat; echo FLOOD DONE; read y"]);
    const { c, got } = await control(dir);
    const frames: { kind: number; payload: Uint8Array }[] = [];
    const reader = new FrameReader();
    let closed = false;
    const slow = createConnection(holderSocket(dir));
    slow.on("data", (d: Buffer) => frames.push(...reader.push(d)));
    slow.on("close", () => {
      closed = true;
    });
    await waitFor(() => frames.some((f) => f.kind === KIND.hello), "the slow controller's hello");
    slow.pause();
    c.input("\r");
    // 22 MB through the PTY: seconds when the box is busy (4 test workers on 2 cores).
    await waitFor(() => got.tail.includes("FLOOD DONE"), "the flood's end at the reading controller", 60_000);
    slow.resume();
    await waitFor(() => frames.some((f) => f.kind === KIND.snapshot), "the redraw once it reads again");
    c.input("\r");
    await ended(h, got);
    await waitFor(() => closed, "the slow controller's end");
    const kinds = frames.map((f) => String.fromCharCode(f.kind));
    const outputBytes = frames.filter((f) => f.kind === KIND.output).reduce((n, f) => n + f.payload.length, 0);
    // Skipped ahead: it got less than the 21.9 MB of the flood (the holder keeps at most 4 MiB for
    // it, the kernel and its own socket a little more), then a redraw, then the end.
    expect(outputBytes).toBeLessThan(16_000_000);
    expect(kinds).toContain("S");
    expect(kinds.at(-1)).toBe("x");
    const redraw = frames.filter((f) => f.kind === KIND.snapshot).at(-1) as { payload: Uint8Array };
    expect(new TextDecoder().decode(redraw.payload)).toContain("FLOOD DONE");
  }, 120_000);

  test("the recorder and the job hold only the terminal: no master, no socket, no log", async () => {
    const { dir, h, files } = await start(["sh", "-c", "echo up; read x"]);
    const { c, got } = await control(dir);
    await logWhen(files, /up/, "the job's start");
    const children = readFileSync(`/proc/${h.pid}/task/${h.pid}/children`, "utf8").trim().split(/\s+/);
    expect(children.length).toBe(1);
    for (const pid of [h.pid, Number(children[0])]) {
      const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => `${fd} ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`);
      expect(fds).toEqual(["0", "1", "2"].map((fd) => `${fd} ${h.tty}`));
    }
    c.input("\r");
    await ended(h, got);
  });

  test("a holder whose Ready line finds no reader (planterd gone) keeps the job", async () => {
    const j = jobDir();
    const orders = {
      argv: recorderArgv(j.files.status, [...CTTY_ARGV, "sh", "-c", "echo up; read x; echo got $x"]),
      cwd: j.dir,
      env: ENV,
      cols: 80,
      rows: 24,
      fds: 0,
      log: j.files.stdout,
      socket: holderSocket(j.dir),
      log_limit: null,
    };
    // stdout closed: the holder's write of its Ready line fails.
    const p = Bun.spawn(["sh", "-c", 'exec "$@" >&-', "sh", ...holderArgv()], {
      stdin: new TextEncoder().encode(JSON.stringify(orders)),
      stderr: "pipe",
    });
    holders.push(p.pid);
    await logWhen(j.files, /up/, "the job's start");
    const { c, got } = await control(j.dir);
    holders.push(c.hello.pid);
    c.input("yes\r");
    await waitFor(() => got.text.includes("got yes"), "the job's answer");
    await waitFor(() => got.end, "the end");
    expect(await p.exited).toBe(0);
  });

  test("a recorder that cannot start: startHolder rejects, the reason in the holder's stderr", async () => {
    const j = jobDir();
    const err = openSync(j.files.stderr, "a");
    try {
      await expect(
        startHolder(
          {
            argv: ["/nonexistent/recorder"],
            cwd: j.dir,
            env: ENV,
            cols: 80,
            rows: 24,
            log: j.files.stdout,
            socket: holderSocket(j.dir),
            log_limit: null,
          },
          { stderr: err },
        ),
      ).rejects.toThrow("the terminal holder did not start the job");
    } finally {
      closeSync(err);
    }
    expect(readFileSync(j.files.stderr, "utf8")).toContain("planter tty-holder:");
    expect(existsSync(holderSocket(j.dir))).toBe(false);
  });

  test("a controller that speaks another protocol is dropped; others carry on", async () => {
    const { dir, h } = await start(["sh", "-c", "read x; echo got $x"]);
    const { c, got } = await control(dir);
    for (const garbage of [frame(0x7a, "?"), new Uint8Array([0x69, 0xff, 0xff, 0xff, 0xff])]) {
      let closed = false;
      const s = await Bun.connect({
        unix: holderSocket(dir),
        socket: {
          data() {},
          close() {
            closed = true;
          },
        },
      });
      s.write(garbage);
      await waitFor(() => closed, "the holder dropping the connection");
    }
    c.input("still here\r");
    await waitFor(() => got.text.includes("got still here"), "the job's answer to the good controller");
    expect(await ended(h, got)).toEqual({ code: 0, signal: null });
  });

  test("another user cannot control the holder even with the socket's path open to all", async () => {
    if (process.getuid?.() !== 0) throw new Error("connecting as another uid needs root (CI runs as root)");
    const { dir, h, home } = await start(["sh", "-c", "read x; echo got $x"]);
    const sock = holderSocket(dir);
    // Only the holder's peer check stands: every directory on the way and the socket opened up.
    for (const d of [join(home, "state"), join(home, "state", "jobs"), dir]) chmodSync(d, 0o755);
    chmodSync(sock, 0o777);
    const r = Bun.spawnSync(
      [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "perl",
        "-MIO::Socket::UNIX",
        "-e",
        '$| = 1; $SIG{PIPE} = "IGNORE"; $s = IO::Socket::UNIX->new(Peer => shift) or die "no connection: $!\\n"; print "connected\\n"; syswrite($s, "i\\0\\0\\0\\6owned\\r"); $n = sysread($s, $b, 100); print "read ", ($n // "error"), "\\n"',
        sock,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    // The kernel accepts the connection and the holder closes it at once (EOF, or a reset since
    // the peer's bytes went unread): no hello is ever read.
    expect(r.stderr.toString()).toBe("");
    expect(r.stdout.toString()).toMatch(/^connected\nread (0|error)\n$/);
    const { c, got } = await control(dir);
    c.input("mine\r");
    await waitFor(() => got.text.includes("got"), "the job's answer");
    expect(got.text).toContain("got mine");
    expect(got.text).not.toContain("owned");
    await ended(h, got);
  });

  test("the holder survives its parent's SIGKILL; a new controller redraws and drives the job", async () => {
    const j = jobDir();
    const orders = {
      argv: recorderArgv(j.files.status, [
        ...CTTY_ARGV,
        "sh",
        "-c",
        "echo first screen; read x; echo second $x; read y",
      ]),
      cwd: j.dir,
      env: ENV,
      cols: 80,
      rows: 24,
      log: j.files.stdout,
      socket: holderSocket(j.dir),
      log_limit: null,
    };
    const parent = Bun.spawn([process.execPath, join(ROOT, "test", "tty-parent-fixture.ts"), JSON.stringify(orders)], {
      stdout: "pipe",
      stderr: "inherit",
    });
    const line = (await parent.stdout.getReader().read()).value;
    const ready = v.parse(ReadySchema, JSON.parse(new TextDecoder().decode(line)));
    holders.push(ready.holder, ready.pid);
    // A first controller sees the job, then its parent (planterd's stand-in) dies.
    const first = await control(j.dir);
    await waitFor(async () => (await first.c.snapshot()).lines[0] === "first screen", "the first screen");
    first.c.close();
    parent.kill("SIGKILL");
    await parent.exited;
    expect(pidAlive(ready.holder)).toBe(true);
    expect(pidAlive(ready.pid)).toBe(true);
    const { c, got } = await control(j.dir);
    expect(c.hello.pid).toBe(ready.pid);
    expect((await c.snapshot()).lines[0]).toBe("first screen");
    c.input("again\r");
    await waitFor(() => got.text.includes("second again"), "the job's answer to the new controller");
    c.input("\r");
    await waitFor(() => got.end, "the end");
    expect(got.end).toEqual({ code: 0, signal: null });
    await waitFor(() => !pidAlive(ready.holder), "the holder's exit");
  });

  test("a sandboxed job has its terminal, and cannot reach the holder's socket", async () => {
    if (!Bun.which("bwrap")) throw new Error("bubblewrap is needed: apt-get install -y bubblewrap");
    const j = jobDir();
    const cell = join(j.home, "cell");
    mkdirSync(cell, { mode: 0o777 });
    const sock = holderSocket(j.dir);
    const saved = process.env.PLANTER_HOME;
    process.env.PLANTER_HOME = j.home;
    const scratch = join(j.home, "scratch");
    mkdirSync(scratch, { mode: 0o777 });
    const probe = `stty size </dev/tty; test -e ${sock} && echo SOCKET VISIBLE || echo socket hidden
perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Peer => shift) and print "CONNECTED\\n" or print "no connection: $!\\n"' ${sock}
read x`;
    try {
      const req = hostRequest({
        argv: [...CTTY_ARGV, "/bin/sh", "-c", probe],
        cellDir: cell,
        policy: complete(undefined),
        env: ENV,
        jobDir: j.dir,
        scratch,
      });
      const plan = new BwrapBackend().plan(req);
      const ends: PipeEnds = {};
      const fds = openInputs(plan.inputs ?? [], j.dir, req.identity, ends);
      const argv = req.identity ? [...dropArgv(req.identity), ...plan.argv] : plan.argv;
      let h: StartedHolder;
      try {
        h = await startHolder(
          {
            argv: recorderArgv(j.files.status, argv),
            cwd: plan.cwd,
            env: plan.env,
            cols: 70,
            rows: 20,
            log: j.files.stdout,
            socket: sock,
            log_limit: null,
          },
          { fds },
        );
      } finally {
        for (const fd of fds) closeSync(fd);
      }
      holders.push(h.holder, h.pid);
      // Its sandbox runs once its gate has compared its mounts with the plan, as planterd does.
      expect(await openGate(ends, plan.planned)).toBe("released");
      const { c, got } = await control(j.dir);
      const said = await logWhen(j.files, /connection|CONNECTED/, "the probe");
      expect(said).toContain("20 70");
      expect(said).toContain("socket hidden");
      expect(said).not.toContain("CONNECTED");
      c.input("\r");
      expect(await ended(h, got)).toEqual({ code: 0, signal: null });
    } finally {
      if (saved === undefined) delete process.env.PLANTER_HOME;
      else process.env.PLANTER_HOME = saved;
    }
  });
});

/** The session fixture on a PTY of its own (the caller's terminal), and everything it wrote there. */
function caller(sock: string, args: string[] = [], size = { cols: 100, rows: 30 }) {
  const seen = { bytes: [] as Uint8Array[], text: "" };
  const p = Bun.spawn([process.execPath, join(ROOT, "test", "attach-fixture.ts"), sock, ...args], {
    env: ENV,
    terminal: {
      ...size,
      data: (_t, d) => {
        seen.bytes.push(d.slice());
        seen.text += new TextDecoder().decode(d);
      },
    },
  });
  return { p, seen, type: (s: string) => p.terminal?.write(s) };
}

describe("planter tty-session: the job's session where there is no setsid(1) (macOS), run here", () => {
  test("the job leads its session with the PTY as its terminal; ^C is its SIGINT; its exit code passes", async () => {
    const { dir, h } = await start(
      ["sh", "-c", "ps -o pid=,sid=,tpgid=,tty= -p $$; trap 'echo got INT' INT; cat; echo cat ended $?; exit 7"],
      undefined,
      null,
      "builtin",
    );
    const { c, got } = await control(dir);
    // pid = sid (it leads the session), tpgid = its group (the foreground), a pts as its terminal.
    const m = await waitFor(() => /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(pts\/\d+)/m.exec(got.text), "ps of the job");
    expect([m[2], m[3]]).toEqual([m[1], m[1]]);
    c.input("abc\r");
    await waitFor(() => got.text.includes("abc\r\nabc\r\n"), "the echo and cat's copy");
    c.input("\x03");
    await waitFor(() => got.text.includes("cat ended 130"), "cat killed by ^C");
    expect(got.text).toContain("got INT");
    expect(await ended(h, got)).toEqual({ code: 7, signal: null });
  });

  test("through planterd: an unsandboxed terminal job takes its session this way where setsid(1) is not used", async () => {
    const home = tempHome("tty-d");
    homes.push(home);
    await using d = await startDaemon({ home, env: { PLANTER_TTY_SESSION: "builtin" } });
    const job = await d.client.createJob({
      argv: ["sh", "-c", "ps -o pid=,sid=,tpgid=,tty=,args= -p $$ -p $PPID; exit 3"],
      tty: { cols: 100, rows: 10 },
    });
    const end = (await d.client.waitJob(job.id, 30_000)).job;
    expect(end?.exit_code).toBe(3);
    const log = readFileSync(join(home, "state", "jobs", job.id, "stdout"), "utf8");
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(pts\/\d+)\s+sh -c/m.exec(log);
    expect(m && [m[2], m[3]]).toEqual(m && [m[1], m[1]]);
    // Nothing of planter is left between the recorder and the job: the entry became the job.
    expect(log).not.toContain("tty-session");
  });

  test("the holder names the job's PTY in a file of its plan before the job starts (Seatbelt's profile)", async () => {
    const j = jobDir();
    const profile = join(j.dir, "sandbox.sb");
    writeFileSync(profile, '(deny file-read* (require-not (literal "/dev/planter-job-tty")))\n');
    const h = await startHolder({
      argv: recorderArgv(j.files.status, [...CTTY_ARGV, "sh", "-c", `cat ${profile}; tty; read go`]),
      cwd: j.dir,
      env: ENV,
      cols: 80,
      rows: 24,
      log: j.files.stdout,
      socket: holderSocket(j.dir),
      log_limit: null,
      tty_name: { file: profile, marker: "/dev/planter-job-tty" },
    });
    holders.push(h.holder, h.pid);
    const { c, got } = await control(j.dir);
    // What the job printed before the controller came is in the log (and the screen), not in its output.
    await logWhen(j.files, /\/dev\/pts\/\d+\r\n$/, "the job's tty");
    c.input("\r");
    expect(await ended(h, got)).toEqual({ code: 0, signal: null });
    const log = await logWhen(j.files, /\/dev\/pts\/\d+\r\n\r\n$/, "the job's tty and the echoed line");
    expect(log).toBe(`(deny file-read* (require-not (literal "${h.tty}")))\r\n${h.tty}\r\n\r\n`);
    // A file without the marker: the holder refuses to start the job at all.
    const k = jobDir();
    writeFileSync(join(k.dir, "other"), "nothing to name\n");
    const refused = startHolder({
      argv: recorderArgv(k.files.status, [...CTTY_ARGV, "true"]),
      cwd: k.dir,
      env: ENV,
      cols: 80,
      rows: 24,
      log: k.files.stdout,
      socket: holderSocket(k.dir),
      log_limit: null,
      tty_name: { file: join(k.dir, "other"), marker: "/dev/planter-job-tty" },
    });
    await expect(refused).rejects.toThrow();
  });

  test("stty size follows a resize; a program that is not there is 127", async () => {
    const { dir, h } = await start(
      ["sh", "-c", "stty size; read x; stty size"],
      { cols: 80, rows: 24 },
      null,
      "builtin",
    );
    const { c, got } = await control(dir);
    await waitFor(async () => (await c.snapshot()).lines.includes("24 80"), "the first size");
    c.resize(132, 43);
    c.input("\r");
    await waitFor(() => got.text.includes("43 132"), "the size after the resize");
    expect(await ended(h, got)).toEqual({ code: 0, signal: null });
    // Nothing to wait for here (the program is not there): its end is read from the status the
    // recorder writes, not from a controller, which may come after the holder is gone.
    const gone = await start(["/no/such/program"], undefined, null, "builtin");
    expect(await gone.h.proc.exited).toBe(0);
    expect(readStatus(gone.files.status)).toBe(127);
  });
});

describe("attached session (lib/cli/session.ts)", () => {
  test("draws the screen, sends keys, filters what the job prints, ends with the job, restores the terminal", async () => {
    const hostile = "printf 'text ok\\033]52;c;aGFja2Vk\\007\\033]0;title\\007\\033[6n\\033[?1000h\\n'";
    const { dir, h, files } = await start([
      "sh",
      "-c",
      `echo before attach; read x; echo typed $x; ${hostile}; read y`,
    ]);
    await logWhen(files, /before attach/, "the job's first line");
    const sock = holderSocket(dir);
    const { p, seen, type } = caller(sock);
    // The redraw shows what the job printed before the caller attached.
    await waitFor(() => seen.text.includes("before attach"), "the redraw");
    type("hello\r");
    await waitFor(() => seen.text.includes("typed hello"), "the job's answer");
    await waitFor(() => seen.text.includes("text ok"), "the hostile line's text");
    type("\r");
    await p.exited;
    await waitFor(() => seen.text.includes("BYE"), "the fixture's report");
    expect(seen.text).toContain('SESSION {"how":"ended","code":0,"signal":null}');
    // Clipboard, title and the cursor query never reached the caller's terminal; mouse reporting
    // (input the job may ask for) did, and the session turned it off again.
    const all = seen.text;
    expect(all).not.toContain("\x1b]52");
    expect(all).not.toContain("\x1b]0;");
    expect(all).not.toContain("\x1b[6n");
    expect(all).toContain("\x1b[?1000h");
    expect(all.lastIndexOf("\x1b[?1000l")).toBeGreaterThan(all.lastIndexOf("\x1b[?1000h"));
    // Raw mode is gone: canonical input and echo are back.
    const stty = /STTY ([^\r\n]*)/.exec(all)?.[1] ?? "";
    expect(stty).toMatch(/(^| )icanon( |$)/);
    expect(stty).toMatch(/(^| )echo( |$)/);
    await h.proc.exited;
  });

  test("Ctrl-P Ctrl-Q detaches and leaves the job running; a lone Ctrl-P reaches the job", async () => {
    const { dir, h } = await start(["sh", "-c", "stty raw -echo; echo ready; head -c 3 | od -An -c"]);
    const { p, seen, type } = caller(holderSocket(dir));
    await waitFor(() => seen.text.includes("ready"), "the redraw");
    // A lone ^P followed by another key is not the sequence: both go to the job.
    type("\x10x");
    type("\x10\x11");
    await p.exited;
    await waitFor(() => seen.text.includes("BYE"), "the fixture's report");
    expect(seen.text).toContain('SESSION {"how":"detached"}');
    expect(pidAlive(h.holder)).toBe(true);
    expect(pidAlive(h.pid)).toBe(true);
    // The job got ^P and x, and nothing of the detach sequence: the next byte it reads is z.
    const { c, got } = await control(dir);
    c.input("z");
    await waitFor(() => got.end, "the job's end");
    expect(readFileSync(jobFiles(dir).stdout, "utf8")).toContain("020   x   z");
  });

  test("configured detach keys, read-only watching, and resizes that follow the caller's window", async () => {
    const { dir, h } = await start(["sh", "-c", "while read x; do stty size; done"]);
    const { p, seen, type } = caller(holderSocket(dir), ["ctrl-a,d", "ro"], { cols: 100, rows: 30 });
    await waitFor(async () => {
      const c = await HolderConnection.connect(holderSocket(dir));
      const size = `${c.hello.cols}x${c.hello.rows}`;
      c.close();
      return size === "100x30";
    }, "the caller's size at the holder");
    p.terminal?.resize(120, 40);
    await waitFor(async () => {
      const c = await HolderConnection.connect(holderSocket(dir));
      const size = `${c.hello.cols}x${c.hello.rows}`;
      c.close();
      return size === "120x40";
    }, "the new size after SIGWINCH");
    // Read-only: what the watcher types never reaches the job.
    type("typed by a watcher\r");
    type("\x01d");
    await p.exited;
    await waitFor(() => seen.text.includes("BYE"), "the fixture's report");
    expect(seen.text).toContain('SESSION {"how":"detached"}');
    const { c, got } = await control(dir);
    c.input("\r");
    await waitFor(() => got.text.includes("40 120"), "stty size in the job");
    expect(readFileSync(jobFiles(dir).stdout, "utf8")).not.toContain("typed by a watcher");
    c.eof();
    await h.proc.exited;
  });
});
