/**
 * A job's stdin pipe without planterd (lib/jobs/stdin.ts, the recorder's keeper in
 * lib/jobs/recorder.ts): the real recorder runs a real job on a real FIFO, as the supervisor
 * starts it. And the CLI's sender (lib/cli/stdin.ts) against a fake planterd that answers as the
 * real one does.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { PlanterError } from "../../lib/api/errors.ts";
import { sendStdin } from "../../lib/cli/stdin.ts";
import { jobFiles, makePipes, prepareStatus, readStatus, recorderArgv } from "../../lib/jobs/recorder.ts";
import { closeStdin, prepareStdin, StdinStopped, stdinClosed, stdinFiles, writeStdin } from "../../lib/jobs/stdin.ts";
import { pidAlive, waitFor } from "../harness.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync("/tmp/pt-stdin-");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** The recorder running `argv` with a stdin pipe, as Supervisor.launch spawns it (no sandbox). */
function start(argv: string[], pipes = false) {
  const files = jobFiles(dir);
  prepareStatus(files.status);
  if (pipes) makePipes(files.status);
  const out = openSync(files.stdout, "a", 0o600);
  const fd = prepareStdin(dir);
  const proc = Bun.spawn(recorderArgv(files.status, argv, pipes, [], true), {
    stdio: [fd, out, "inherit"],
    detached: true,
  });
  closeSync(fd);
  closeSync(out);
  return { proc, output: () => readFileSync(files.stdout, "utf8"), status: () => readStatus(files.status) };
}
const never = () => Date.now() + 10_000;

describe("the stdin pipe and its keeper", () => {
  for (const pipes of [false, true]) {
    test(`bytes in, the end of input after them, the job's status recorded (${pipes ? "log pipes" : "direct"})`, async () => {
      const job = start(["/usr/bin/wc", "-c"], pipes);
      const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => i % 251);
      expect(await writeStdin(dir, data, never())).toBe(data.length);
      expect(closeStdin(dir)).toBe(true);
      expect(await job.proc.exited).toBe(0);
      expect(job.output().trim()).toBe(String(data.length));
      expect(job.status()).toBe(0);
    });
  }

  test("an end sent before the recorder reached its keeper still ends the input (the mark)", async () => {
    const job = start(["/bin/cat"]);
    // At once: the recorder has most likely not opened stdin.ctl yet.
    expect(closeStdin(dir)).toBe(true);
    expect(closeStdin(dir)).toBe(false);
    expect(await job.proc.exited).toBe(0);
    expect(job.output()).toBe("");
  });

  test("a write before the job has opened its end waits in the pipe (the recorder's fd 0 holds it)", async () => {
    const job = start(["/bin/cat"]);
    await writeStdin(dir, new TextEncoder().encode("early\n"), never());
    closeStdin(dir);
    expect(await job.proc.exited).toBe(0);
    expect(job.output()).toBe("early\n");
  });

  test("a job that never reads: the write stops at its deadline with what went in, and never blocks", async () => {
    const job = start(["/bin/sleep", "600"]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const data = new Uint8Array(4 * 1024 * 1024);
    const err = await writeStdin(dir, data, Date.now() + 300).catch((e) => e);
    clearInterval(timer);
    expect(err).toBeInstanceOf(StdinStopped);
    expect((err as StdinStopped).why).toBe("full");
    const written = (err as StdinStopped).written;
    expect(written).toBeGreaterThan(0);
    expect(written).toBeLessThan(data.length);
    // The event loop ran while the pipe was full.
    expect(ticks).toBeGreaterThan(10);
    process.kill(-job.proc.pid, "SIGKILL");
    await job.proc.exited;
  });

  test("a job that exits before reading all: the write stops with what went in (its end), later ones find nobody", async () => {
    const job = start(["/usr/bin/head", "-c", "10"]);
    const data = new Uint8Array(8 * 1024 * 1024).fill(65);
    const err = await writeStdin(dir, data, never()).catch((e) => e);
    expect((err as StdinStopped).why).toBe("gone");
    expect(await job.proc.exited).toBe(0);
    expect(job.output()).toBe("A".repeat(10));
    const again = await writeStdin(dir, data, never()).catch((e) => e);
    expect([(again as StdinStopped).why, (again as StdinStopped).written]).toEqual(["gone", 0]);
  });

  test("after the end, writes are refused as closed; the keeper is gone and the job got only fds 0-2", async () => {
    const job = start(["/bin/sh", "-c", 'ls /proc/$$/fd; cat; echo "end"; exec sleep 600']);
    await waitFor(() => job.output().includes("\n2\n"), "the job's fd list");
    expect(job.output().trim().split("\n")).toEqual(["0", "1", "2"]);
    await writeStdin(dir, new TextEncoder().encode("x\n"), never());
    closeStdin(dir);
    await waitFor(() => job.output().endsWith("x\nend\n"), "the end of the job's input");
    const err = await writeStdin(dir, new Uint8Array(1), never()).catch((e) => e);
    expect((err as StdinStopped).why).toBe("closed");
    expect(existsSync(stdinFiles(dir).closed)).toBe(true);
    process.kill(-job.proc.pid, "SIGKILL");
    await job.proc.exited;
  });

  // A state disk with no inode left (a tmpfs with 64): not even the empty mark can be made.
  test.skipIf(process.getuid?.() !== 0)(
    "no room for the mark: the keeper's line ends the input and planterd remembers it; with no keeper yet, the disk's error",
    async () => {
      expect(
        Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64,mode=0700", "tmpfs", dir]).exitCode,
      ).toBe(0);
      let job: ReturnType<typeof start> | null = null;
      try {
        job = start(["/bin/sh", "-c", 'cat; echo "end"; exec sleep 600']);
        await writeStdin(dir, new TextEncoder().encode("x\n"), never());
        await waitFor(() => (job as ReturnType<typeof start>).output() === "x\n", "the job's copy");
        for (let i = 0; ; i++) {
          try {
            writeFileSync(join(dir, `fill-${i}`), "");
          } catch (e) {
            expect((e as NodeJS.ErrnoException).code).toBe("ENOSPC");
            break;
          }
        }
        await waitFor(() => {
          try {
            return closeStdin(dir);
          } catch {
            return false; // the keeper has not opened its line yet
          }
        }, "the end of input through the keeper");
        await waitFor(() => (job as ReturnType<typeof start>).output().endsWith("x\nend\n"), "the job's end of input");
        expect(existsSync(stdinFiles(dir).closed)).toBe(false);
        expect(stdinClosed(dir)).toBe(true);
        expect(closeStdin(dir)).toBe(false);
        const err = await writeStdin(dir, new Uint8Array(1), never()).catch((e) => e);
        expect((err as StdinStopped).why).toBe("closed");
        // Another job's input whose keeper is not there: nothing changes, the error says the disk is full.
        const other = join(dir, "other");
        for (const i of [0, 1, 2]) rmSync(join(dir, `fill-${i}`));
        mkdirSync(other);
        closeSync(prepareStdin(other));
        expect(() => closeStdin(other)).toThrow(expect.objectContaining({ code: "ENOSPC" }));
        expect(stdinClosed(other)).toBe(false);
      } finally {
        if (job) {
          process.kill(-job.proc.pid, "SIGKILL");
          await job.proc.exited;
        }
        // The group's other processes (the keeper, the job's sleep) may hold the mount a moment longer.
        await waitFor(
          () => Bun.spawnSync(["umount", dir], { stderr: "ignore" }).exitCode === 0,
          "the tmpfs to unmount",
        );
      }
    },
  );

  test("a recorder killed from outside takes its keeper with it: nothing of it is left holding the pipe", async () => {
    const job = start(["/bin/sleep", "600"]);
    const rec = job.proc.pid;
    // The keeper: the recorder's child that holds the pipe's write side on fd 9.
    const keeper = await waitFor(() => {
      const kids = readFileSync(`/proc/${rec}/task/${rec}/children`, "utf8").trim().split(/\s+/).map(Number);
      return kids.find((k) => {
        try {
          return readlinkSync(`/proc/${k}/fd/9`) === stdinFiles(dir).pipe;
        } catch {
          return false;
        }
      });
    }, "the keeper");
    process.kill(rec, "SIGKILL");
    await job.proc.exited;
    await waitFor(() => !pidAlive(keeper), "the keeper to go with its recorder");
    // Clean-up of what may be left of the group (it may be gone already).
    try {
      process.kill(-rec, "SIGKILL");
    } catch {
      // ESRCH: nothing left
    }
  });

  test("a signal to the job's process group (Ctrl-C, a kill) does not end its input", async () => {
    const job = start(["/bin/sh", "-c", "trap 'echo int' INT; while :; do cat && break; done; echo done"]);
    await writeStdin(dir, new TextEncoder().encode("a\n"), never());
    await waitFor(() => job.output() === "a\n", "the first line");
    process.kill(-job.proc.pid, "SIGINT");
    await waitFor(() => job.output().includes("int"), "the job's trap");
    await writeStdin(dir, new TextEncoder().encode("b\n"), never());
    closeStdin(dir);
    expect(await job.proc.exited).toBe(0);
    expect(job.output()).toMatch(/^a\nint\nb\ndone\n$|^a\nb\nint\ndone\n$/);
  });
});

/** A fake planterd's stdin route: a pipe of `room` bytes per write, a body limit, a job that stops reading. */
function fakeApi(opts: { room?: number; stopAfter?: number; maxBody?: number } = {}) {
  const got: Uint8Array[] = [];
  const calls: { size: number; eof: boolean }[] = [];
  let taken = 0;
  return {
    got,
    calls,
    text: () => Buffer.concat(got).toString(),
    api: {
      writeStdinBytes: async (_id: string, data: Uint8Array, query: { eof?: boolean } = {}) => {
        calls.push({ size: data.length, eof: query.eof ?? false });
        if (opts.maxBody !== undefined && data.length > opts.maxBody)
          throw new PlanterError("E_PAYLOAD_TOO_LARGE", "too large");
        if (opts.stopAfter !== undefined && taken >= opts.stopAfter)
          throw new PlanterError("E_CONFLICT", "gone", { details: { stdin: "gone", written: 0 } });
        const fits = Math.min(data.length, opts.room ?? data.length);
        got.push(data.slice(0, fits));
        taken += fits;
        if (fits < data.length)
          throw new PlanterError("E_CONFLICT", "full", { details: { stdin: "full", written: fits } });
        return { written: fits, eof: query.eof ?? false };
      },
    },
  };
}

async function* chunks(...parts: string[]) {
  for (const p of parts) yield new TextEncoder().encode(p);
}

describe("the CLI's sender", () => {
  test("everything read, in order, then the end", async () => {
    const f = fakeApi();
    expect(await sendStdin(f.api as never, "j", chunks("a", "bc", "", "def"))).toEqual({ end: "eof", written: 6 });
    expect(f.text()).toBe("abcdef");
    expect(f.calls.at(-1)).toEqual({ size: 0, eof: true });
  });

  test("a full pipe: the rest again, from where it stopped", async () => {
    const f = fakeApi({ room: 3 });
    expect(await sendStdin(f.api as never, "j", chunks("0123456789"))).toEqual({ end: "eof", written: 10 });
    expect(f.text()).toBe("0123456789");
    expect(f.calls.map((c) => c.size)).toEqual([10, 7, 4, 1, 0]);
  });

  test("writes of at most a chunk; what was read meanwhile goes together", async () => {
    const f = fakeApi();
    expect((await sendStdin(f.api as never, "j", chunks("x".repeat(25)), 10)).end).toBe("eof");
    expect(f.calls.map((c) => c.size)).toEqual([10, 10, 5, 0]);
    const g = fakeApi();
    await sendStdin(g.api as never, "j", chunks("ab", "cd", "ef"), 10);
    expect(g.text()).toBe("abcdef");
    expect(g.calls.length).toBeLessThanOrEqual(4);
  });

  test("a planterd with a lower body limit: the writes get smaller until they pass, and stay so", async () => {
    const f = fakeApi({ maxBody: 3000 });
    const data = "y".repeat(10_000);
    expect(await sendStdin(f.api as never, "j", chunks(data), 8192)).toEqual({ end: "eof", written: 10_000 });
    expect(f.text()).toBe(data);
    expect(f.calls.filter((c) => c.size > 3000).map((c) => c.size)).toEqual([8192, 4096]);
  });

  test("a job that stops taking input stops the sending, without an end", async () => {
    const f = fakeApi({ stopAfter: 2 });
    expect(await sendStdin(f.api as never, "j", chunks("ab", "cd", "ef"), 2)).toEqual({ end: "stopped", written: 2 });
    expect(f.calls.some((c) => c.eof)).toBe(false);
  });

  test("an input that cannot be read, at once or midway, ends as one that ended, and says why", async () => {
    const f = fakeApi();
    const broken: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]() {
        throw new Error("EISDIR");
      },
    };
    const r = await sendStdin(f.api as never, "j", broken);
    expect([r.end, r.written, r.readError?.message]).toEqual(["eof", 0, "EISDIR"]);
    async function* midway() {
      yield new TextEncoder().encode("ab");
      throw new Error("EIO");
    }
    const g = fakeApi();
    const m = await sendStdin(g.api as never, "j", midway());
    expect([m.end, m.written, m.readError?.message, g.text()]).toEqual(["eof", 2, "EIO", "ab"]);
    expect(g.calls.at(-1)).toEqual({ size: 0, eof: true });
  });

  test("without the end (planter job stdin without --eof): the bytes only", async () => {
    const f = fakeApi();
    expect(await sendStdin(f.api as never, "j", chunks("more\n"), 10, false)).toEqual({ end: "sent", written: 5 });
    expect(f.calls).toEqual([{ size: 5, eof: false }]);
  });
});
