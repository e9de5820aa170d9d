/**
 * A job's stdin without a terminal (#14): `planter run -i` (pipes, files, several MiB, every byte
 * value), `stdin: true` and `POST /v1/jobs/{id}/stdin` (writes, the end of input, a job that never
 * reads while planterd answers others, refusals), a planterd SIGKILLed and restarted while the
 * job's input is open, and a `planter run -i` that goes away. Real planterd, real bwrap (enforced)
 * and unsandboxed (disabled).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Job } from "../../lib/api/contract.ts";
import { PlanterError } from "../../lib/api/errors.ts";
import {
  baseEnv,
  cleanup,
  cli,
  type DaemonHandle,
  exitWithin,
  PLANTER,
  raw,
  startDaemon,
  waitFor,
} from "../harness.ts";

/** Bytes with every value, NULs and invalid UTF-8 included. */
function blob(n: number, seed = 7919): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * seed + (i >> 8) + (i >> 16)) & 0xff;
  return b;
}
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const b64 = (s: string | Uint8Array) => Buffer.from(s).toString("base64");

for (const mode of ["enforced", "disabled"] as const) {
  const backend = mode === "enforced" ? "bwrap" : "none";

  describe(`sandbox ${mode}`, () => {
    let d: DaemonHandle;
    const clis = new Set<Subprocess>();
    beforeAll(async () => {
      d = await startDaemon({ config: `[sandbox]\nmode = "${mode}"\n` });
    });
    afterAll(async () => {
      for (const p of clis) p.kill("SIGKILL");
      for (const j of (await d.client.listJobs({ state: "running" })).jobs)
        await d.client.killJob(j.id, { force: true }).catch(() => undefined);
      await d.stop();
      cleanup(d.home);
    });

    const stdout = async (id: string) =>
      Buffer.from((await d.client.logs(id, { stream: "stdout" })).data, "base64").toString();
    const finished = async (id: string) => (await d.client.waitJob(id, 60_000)).job;
    /** A job reading its own stdin pipe. */
    async function reader(script: string): Promise<Job> {
      const j = await d.client.createJob({ argv: ["sh", "-c", script], stdin: true });
      expect([j.sandbox.backend, j.state, j.stdin]).toEqual([backend, "running", { open: true }]);
      return j;
    }
    /** `planter ARGS` with `stdin` (bytes, or a file), its stdout as bytes. */
    async function run(args: string[], stdin: Uint8Array | string) {
      const proc = Bun.spawn([process.execPath, PLANTER, ...args], {
        env: baseEnv(d.home),
        stdin: typeof stdin === "string" ? Bun.file(stdin) : stdin,
        stdout: "pipe",
        stderr: "pipe",
      });
      clis.add(proc);
      const [out, err] = await Promise.all([new Response(proc.stdout).arrayBuffer(), new Response(proc.stderr).text()]);
      return { code: await exitWithin(proc, 60_000, `planter ${args.join(" ")}`), out: new Uint8Array(out), err };
    }

    test("run -i: a pipe's bytes reach the job, its input ends with the pipe, the exit code is the job's", async () => {
      const r = await run(
        ["run", "-i", "--", "sh", "-c", "cat; echo '<end>'; exit 3"],
        new TextEncoder().encode("x\n"),
      );
      expect([r.code, new TextDecoder().decode(r.out), r.err]).toEqual([3, "x\n<end>\n", ""]);
    });

    // The recorder opens fds 7-9 for a job's stdin; a plan of bwrap's with inputs up there (binds
    // of read_only paths, of a repository's .git parts) lost them under bwrap ("Can't find source
    // path /proc/self/fd/7"): they move to 10 and up.
    test("a job with stdin and many binds (inputs past fd 6) reads its input and sees its view", async () => {
      const ro = ["/etc/hostname", "/etc/passwd", "/etc/group", "/etc/hosts", "/etc/fstab"];
      const j = await d.client.createJob({
        argv: ["sh", "-c", "cat; ls /proc/self/fd | wc -l; cat /etc/hostname >/dev/null && echo ro-bound"],
        stdin: true,
        sandbox: { policy: { read_only: ro } },
      });
      await d.client.writeStdin(j.id, { data: b64("piped\n"), eof: true });
      const done = await finished(j.id);
      // 0-2 and ls's own fd of the directory: nothing of planter's is left open in the job.
      expect([done.exit_code, await stdout(j.id)]).toEqual([0, "piped\n4\nro-bound\n"]);
    });

    test("run -i: several MiB from a file are counted exactly, and every byte value arrives as it was", async () => {
      const data = blob(6 * 1024 * 1024 + 3);
      const file = join(d.home, "input.bin");
      writeFileSync(file, data);
      const count = await run(["run", "-i", "--", "wc", "-c"], file);
      expect([count.code, new TextDecoder().decode(count.out).trim()]).toEqual([0, String(data.length)]);
      const same = await run(["run", "-i", "--", "cat"], data);
      expect([same.code, same.out.length, sha(same.out)]).toEqual([0, data.length, sha(data)]);
    });

    test("run -i: a job that exits before reading everything ends the run at once, with its code", async () => {
      const r = await run(["run", "-i", "--", "sh", "-c", "head -c 5; exit 4"], blob(8 * 1024 * 1024));
      expect([r.code, r.out.length, r.err]).toEqual([4, 5, ""]);
    });

    test("stdin: true, then POST …/stdin writes it and ends it; later writes are refused as closed", async () => {
      const j = await reader("cat; echo '<eof>'; exec sleep 600");
      expect(await d.client.writeStdin(j.id, { data: b64("one\n") })).toEqual({ written: 4, eof: false });
      expect(await d.client.writeStdin(j.id, { data: b64("two\n"), eof: true })).toEqual({ written: 4, eof: true });
      await waitFor(async () => (await stdout(j.id)) === "one\ntwo\n<eof>\n", "the job's echo of its input");
      expect((await d.client.getJob(j.id)).stdin).toEqual({ open: false });
      const status = await cli(d.home, ["job", "status", j.id]);
      expect(status.stdout).toContain("stdin:     closed");
      const late = await d.client.writeStdin(j.id, { data: b64("three\n") }).catch((e) => e);
      expect(late).toBeInstanceOf(PlanterError);
      expect([late.code, late.details, late.message]).toEqual([
        "E_CONFLICT",
        { stdin: "closed", written: 0 },
        `the stdin of job ${j.id} is closed: its input was ended (eof)`,
      ]);
      // Ending it again changes nothing and is no error (a client that retries).
      expect(await d.client.writeStdin(j.id, { eof: true })).toEqual({ written: 0, eof: true });
      const events = [];
      for await (const e of d.client.events({})) if (e.subject === `job/${j.id}`) events.push(e);
      expect(events.filter((e) => e.kind === "job.stdin_closed").map((e) => e.data.by)).toEqual(["request"]);
      await d.client.killJob(j.id, { force: true });
      await finished(j.id);
    });

    test("POST …/stdin with the bytes as they are (application/octet-stream), eof=1 in the query", async () => {
      const j = await reader("od -An -tx1 | tr -s ' \\n' ' '");
      const bytes = new Uint8Array([0, 1, 0x7f, 0x80, 0xff, 0x0a, 0x0d]);
      const r = await raw(d.socket, "POST", `/v1/jobs/${j.id}/stdin?eof=1`, bytes, {
        "content-type": "application/octet-stream",
      });
      expect([r.status, r.json]).toEqual([202, { written: 7, eof: true }]);
      await finished(j.id);
      expect((await stdout(j.id)).trim()).toBe("00 01 7f 80 ff 0a 0d");
    });

    test("the job holds its input read-only and nothing else of planter's; as another user it cannot reopen it", async () => {
      const script =
        // What the job's program passes on to its children: ls's own fds (3: the dir it reads). Not
        // the shell's own (a pipeline's ends, or dash's saved copy of a redirected fd, come and go).
        'echo $(ls /proc/self/fd); sed -n "s/^flags:[[:space:]]*//p" /proc/$$/fdinfo/0; ' +
        "{ echo x >/proc/$$/fd/0; } 2>/dev/null && echo reopened || echo refused; cat";
      const j = await reader(script);
      await d.client.writeStdin(j.id, { data: b64("in\n"), eof: true });
      const end = await finished(j.id);
      const [fds, flags, reopen, ...rest] = (await stdout(j.id)).split("\n");
      expect(fds?.trim()).toBe("0 1 2 3");
      // The access mode (the low two bits): O_RDONLY.
      expect(Number.parseInt(flags as string, 8) & 3).toBe(0);
      // Under a root planterd the job runs as nobody: the FIFO (root's, 0600) does not open for it.
      // Run as the same user it reopens, and can only write into its own input.
      expect(reopen).toBe(end.run_as?.uid === process.getuid?.() ? "reopened" : "refused");
      expect(rest.join("\n")).toContain("in\n");
      expect(end.exit_code).toBe(0);
    });

    test("a job that never reads: a write waits at most wait_ms and says how much went in; planterd answers others meanwhile", async () => {
      const j = await reader("exec sleep 600");
      const data = blob(3 * 1024 * 1024);
      // Fill the pipe: the first write stops with what fit.
      let written = 0;
      for (let at = 0; at < data.length; at += 512 * 1024) {
        const e = await d.client
          .writeStdin(j.id, { data: b64(data.subarray(at, at + 512 * 1024)) }, { wait_ms: 200 })
          .catch((e) => e);
        if (e instanceof PlanterError) {
          expect([e.code, e.details?.stdin]).toEqual(["E_CONFLICT", "full"]);
          expect(e.message).toContain(`job ${j.id} did not read its stdin for 200 ms`);
          written += e.details?.written as number;
          break;
        }
        written += e.written;
      }
      expect(written).toBeGreaterThan(0);
      expect(written).toBeLessThan(data.length);
      // A long wait: other requests are answered while it waits, and the job's end answers it.
      let settled = false;
      const waiting = d.client
        .writeStdin(j.id, { data: b64("more") }, { wait_ms: 60_000 })
        .catch((e) => e)
        .finally(() => {
          settled = true;
        });
      const t0 = Date.now();
      expect((await d.client.health()).ok).toBe(true);
      expect((await d.client.getJob(j.id)).state).toBe("running");
      expect(settled).toBe(false);
      await d.client.killJob(j.id, { force: true });
      const end = await waiting;
      expect(Date.now() - t0).toBeLessThan(30_000);
      expect([end.code, end.details]).toEqual(["E_CONFLICT", { stdin: "gone", written: 0 }]);
      expect((await finished(j.id)).state).toBe("killed");
    });

    test("planterd SIGKILLed while a job's input is open: the job is re-adopted and writes work again", async () => {
      const j = await reader("cat; echo '<eof>'");
      await d.client.writeStdin(j.id, { data: b64("before\n") });
      await waitFor(async () => (await stdout(j.id)) === "before\n", "the first line");
      await d.kill9();
      d = await startDaemon({ home: d.home });
      const again = await d.client.getJob(j.id);
      expect([again.state, again.stdin]).toEqual(["running", { open: true }]);
      await d.client.writeStdin(j.id, { data: b64("after\n"), eof: true });
      const end = await finished(j.id);
      expect([end.state, end.exit_code]).toEqual(["exited", 0]);
      expect(await stdout(j.id)).toBe("before\nafter\n<eof>\n");
    });

    test("a planter run -i that loses planterd says the input stays open; after a restart planter job stdin ends it", async () => {
      const proc = Bun.spawn([process.execPath, PLANTER, "run", "-i", "--", "sh", "-c", "cat; echo '<end>'"], {
        env: baseEnv(d.home),
        stdin: "pipe",
        stdout: "pipe",
        stderr: "pipe",
      });
      clis.add(proc);
      proc.stdin.write("first\n");
      await proc.stdin.flush();
      const job = await waitFor(async () => {
        for (const j of (await d.client.listJobs({ state: "running" })).jobs)
          if (j.argv[2] === "cat; echo '<end>'" && (await stdout(j.id)) === "first\n") return j;
        return null;
      }, "the job and its first line");
      await d.kill9();
      const err = new Response(proc.stderr).text();
      expect(await exitWithin(proc, 20_000, "planter run -i without its planterd")).toBe(3);
      expect(await err).toContain(`its input stays open: planter job stdin ${job.id} (--eof ends it)`);
      d = await startDaemon({ home: d.home });
      const more = await cli(d.home, ["job", "stdin", "--eof", job.id], { stdin: "second\n" });
      expect([more.code, more.stderr]).toEqual([0, ""]);
      const end = await finished(job.id);
      expect([end.state, end.exit_code, await stdout(job.id)]).toEqual(["exited", 0, "first\nsecond\n<end>\n"]);
    });

    test("a planter run -i that goes away (SIGKILL) ends the job's input, as docker run -i does", async () => {
      const proc = Bun.spawn([process.execPath, PLANTER, "run", "-i", "--", "sh", "-c", "cat; echo '<eof>'"], {
        env: baseEnv(d.home),
        stdin: "pipe",
        stdout: "pipe",
        stderr: "pipe",
      });
      clis.add(proc);
      proc.stdin.write("typed\n");
      await proc.stdin.flush();
      const job = await waitFor(async () => {
        for (const j of (await d.client.listJobs({ state: "running" })).jobs)
          if (j.argv[2] === "cat; echo '<eof>'" && (await stdout(j.id)) === "typed\n") return j;
        return null;
      }, "the job and its first line");
      proc.kill("SIGKILL");
      const end = await finished(job.id);
      expect([end.state, end.exit_code, await stdout(job.id)]).toEqual(["exited", 0, "typed\n<eof>\n"]);
    });

    test("refusals: a job without stdin, bad bytes, a bad wait_ms, a job that has ended", async () => {
      const plain = await d.client.createJob({ argv: ["sleep", "600"] });
      expect(plain.stdin).toBeNull();
      const none = await raw(d.socket, "POST", `/v1/jobs/${plain.id}/stdin`, JSON.stringify({ data: b64("x") }));
      expect([none.status, none.json.error?.code, none.json.error?.message]).toEqual([
        400,
        "E_BAD_REQUEST",
        `job ${plain.id} has no stdin: it reads /dev/null`,
      ]);
      expect(none.json.error?.hint).toContain("planter run -i");
      await d.client.killJob(plain.id, { force: true });
      const j = await reader("exec sleep 600");
      const bad = await raw(d.socket, "POST", `/v1/jobs/${j.id}/stdin`, JSON.stringify({ data: "not base64!" }));
      expect([bad.status, bad.json.error?.message]).toEqual([
        400,
        "invalid stdin write: × data must be base64 → at data",
      ]);
      const wait = await raw(d.socket, "POST", `/v1/jobs/${j.id}/stdin?wait_ms=soon`, JSON.stringify({ eof: true }));
      expect([wait.status, wait.json.error?.message]).toEqual([400, 'wait_ms must be an integer, not "soon"']);
      // Neither refusal touched the job's input.
      expect((await d.client.getJob(j.id)).stdin).toEqual({ open: true });
      await d.client.killJob(j.id, { force: true });
      await finished(j.id);
      const ended = await d.client.writeStdin(j.id, { data: b64("x") }).catch((e) => e);
      expect([ended.code, ended.details, ended.message]).toEqual([
        "E_CONFLICT",
        { stdin: "gone", written: 0 },
        `job ${j.id} no longer reads its stdin: it has ended`,
      ]);
      expect((await d.client.getJob(j.id)).stdin).toEqual({ open: false });
    });
  });
}

describe("planter run -i and planter job stdin, the CLI", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await startDaemon();
  });
  afterAll(async () => {
    for (const j of (await d.client.listJobs({ state: "running" })).jobs)
      await d.client.killJob(j.id, { force: true }).catch(() => undefined);
    await d.stop();
    cleanup(d.home);
  });

  test("--help teaches -i; -i with --detach leaves the input open, for planter job stdin and the API", async () => {
    const help = await cli(d.home, ["run", "--help"]);
    expect(help.stdout).toContain("git diff | planter run -i -- wc -l");
    expect(help.stdout).toMatch(/-i, --interactive\s+send your stdin to the job/);
    const r = await cli(d.home, ["run", "-d", "-i", "--json", "--", "cat"]);
    const job = JSON.parse(r.stdout) as Job;
    expect([r.code, job.state, job.stdin]).toEqual([0, "running", { open: true }]);
    expect((await cli(d.home, ["job", "status", job.id])).stdout).toContain("stdin:     open");
    const more = await cli(d.home, ["job", "stdin", job.id], { stdin: "later\n" });
    expect([more.code, more.stdout, more.stderr]).toEqual([0, "", ""]);
    const end = await cli(d.home, ["job", "stdin", "--eof", "--json", job.id], { stdin: "last\n" });
    expect([end.code, JSON.parse(end.stdout)]).toEqual([0, { job: job.id, written: 5, eof: true }]);
    expect((await d.client.waitJob(job.id, 30_000)).job.exit_code).toBe(0);
    expect((await cli(d.home, ["logs", job.id])).stdout).toBe("later\nlast\n");
    // A job that has ended, and one that never had input, are said as such.
    const late = await cli(d.home, ["job", "stdin", job.id], { stdin: "x" });
    expect([late.code, late.stderr]).toEqual([
      1,
      `planter: job ${job.id} took 0 bytes, then no more: it is exited 0\nhint: see planter job status ${job.id}\n`,
    ]);
    const plain = await d.client.createJob({ argv: ["true"] });
    const none = await cli(d.home, ["job", "stdin", plain.id]);
    expect([none.code, none.stderr.split("\n")[0]]).toEqual([
      1,
      `planter: job ${plain.id} has no stdin: it reads /dev/null`,
    ]);
  });

  test("planter job stdin types into a terminal job; --eof is its ^D", async () => {
    const tty = await d.client.createJob({ argv: ["cat"], tty: { cols: 80, rows: 24 } });
    const typed = await cli(d.home, ["job", "stdin", tty.id], { stdin: "typed\n" });
    expect([typed.code, typed.stderr]).toEqual([0, ""]);
    await waitFor(
      async () => (await d.client.screen(tty.id)).lines.filter((l) => l === "typed").length === 2,
      "the terminal's echo and cat's copy",
    );
    const eof = await cli(d.home, ["job", "stdin", "--eof", tty.id]);
    expect([eof.code, eof.stderr]).toEqual([0, ""]);
    expect((await d.client.waitJob(tty.id, 30_000)).job.exit_code).toBe(0);
  });

  test("a stdin that cannot be read ends the job's input (it must not wait for good), and says so", async () => {
    const argv = [process.execPath, PLANTER, "run", "-i", "--", "sh", "-c", "cat; echo '<eof>'"];
    const dir = Bun.spawn(["bash", "-c", '"$@" <"$DIR"', "bash", ...argv], {
      env: baseEnv(d.home, { DIR: d.home }),
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err] = [new Response(dir.stdout).text(), new Response(dir.stderr).text()];
    expect(await exitWithin(dir, 30_000, "planter run -i < a directory")).toBe(0);
    expect(await out).toBe("<eof>\n");
    expect(await err).toStartWith("planter: cannot read your stdin (EISDIR");
  });
});
