/**
 * Interactive jobs through planterd (#14): `planter run -it`, detach and `planter attach`, input
 * from the API (`POST …/stdin`), the screen (`logs --screen`), read-only watchers, a planterd
 * SIGKILLed and restarted under an attached terminal. The caller's terminal is a real one: each
 * client runs in a tmux server of the test's own (a socket in its temp dir), and the test reads
 * that terminal's screen. Sandboxed (bwrap, enforced) and not.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { readStatus } from "../../lib/jobs/recorder.ts";
import { baseEnv, cleanup, cli, type DaemonHandle, PLANTER, startDaemon, tempHome, waitFor } from "../harness.ts";

/**
 * Claude Code, installed for these tests only (never shipped) by .ci/run into a world-readable dir
 * the sandbox shows: the job's user (nobody, for a root planterd) must reach it, which a checkout
 * in a 0700 dir does not allow, and a job's /tmp is its own. PLANTER_TEST_AGENTS moves it.
 */
const AGENTS = process.env.PLANTER_TEST_AGENTS ?? "/var/tmp/planter-test-agents";
const CLAUDE = join(AGENTS, "node_modules", "@anthropic-ai", "claude-code", "bin", "claude.exe");
const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

for (const mode of ["enforced", "disabled"] as const) {
  describe(`sandbox ${mode}`, () => {
    let home: string;
    let d: DaemonHandle;
    let tmuxSock: string;
    let n = 0;
    const tmux = (...args: string[]) => {
      const r = Bun.spawnSync(["tmux", "-S", tmuxSock, ...args], { stdout: "pipe", stderr: "pipe" });
      return r.stdout.toString();
    };
    /** A caller's terminal (a tmux window of `cols`×`rows`) running `planter ARGS`; its exit code is printed at the end. */
    const terminal = (args: string[], cols = 100, rows = 30) => {
      const name = `t${++n}`;
      const env = Object.entries(baseEnv(home))
        .map(([k, v]) => `${k}=${quote(v)}`)
        .join(" ");
      const cmd = `env ${env} ${quote(process.execPath)} ${quote(PLANTER)} ${args.map(quote).join(" ")}; echo "EXIT=$?"; sleep 600`;
      tmux("new-session", "-d", "-s", name, "-x", String(cols), "-y", String(rows), cmd);
      const screen = () => tmux("capture-pane", "-p", "-t", name);
      return {
        name,
        screen,
        keys: (...k: string[]) => tmux("send-keys", "-t", name, ...k),
        see: (what: string | RegExp, why = `${JSON.stringify(String(what))} on ${name}`) =>
          waitFor(() => (typeof what === "string" ? screen().includes(what) : what.test(screen())), why, 20_000),
        exit: async () => Number((await waitFor(() => /EXIT=(\d+)/.exec(screen()), `${name} to exit`, 20_000))[1]),
      };
    };
    const running = async (): Promise<Job> =>
      waitFor(async () => (await d.client.listJobs({ state: "running" })).jobs.at(-1), "the terminal job to run");

    beforeAll(async () => {
      home = tempHome();
      // A root planterd runs root's jobs as nobody: the state dir must be searchable by it.
      chmodSync(home, 0o711);
      tmuxSock = join(home, "tmux.sock");
      d = await startDaemon({ home, config: `[sandbox]\nmode = "${mode}"\n` });
    });
    afterAll(async () => {
      tmux("kill-server");
      // A holder lives as long as its job: whatever a failed test left running ends here.
      for (const j of (await d.client.listJobs({ state: "running" })).jobs) {
        await d.client.killJob(j.id, { force: true }).catch(() => undefined);
        await d.client.waitJob(j.id, 10_000).catch(() => undefined);
      }
      await d.stop();
      cleanup(home);
    });

    test("run -it: keys reach the job, stty sees the window's size, a detach leaves it running", async () => {
      const t = terminal(["run", "-it", "--", "bash", "--norc"], 100, 30);
      await t.see("$");
      t.keys("echo hi-$((6*7)); stty size; tty", "Enter");
      await t.see("hi-42");
      await t.see("30 100");
      const job = await running();
      expect([job.tty?.cols, job.tty?.rows, job.tty?.clients]).toEqual([100, 30, 1]);
      t.keys("C-p", "C-q");
      expect(await t.exit()).toBe(0);
      // The terminal wraps the line: read it whole.
      expect(t.screen().replaceAll("\n", "")).toContain(
        `detached from job ${job.id}; it runs on. Attach again: planter attach ${job.id}`,
      );
      const after = await d.client.getJob(job.id);
      expect([after.state, after.tty?.clients]).toEqual(["running", 0]);
    });

    test("input through the API, the screen as text, and attach again: redrawn, resized, the job's exit code", async () => {
      const job = await running();
      expect(
        await d.client.writeStdin(job.id, { data: Buffer.from("echo via-$((1+1))-api\r").toString("base64") }),
      ).toEqual({
        written: 22,
        eof: false,
      });
      await waitFor(async () => (await d.client.screen(job.id)).lines.some((l) => l === "via-2-api"), "the screen");
      const screen = await cli(home, ["logs", "--screen", job.id]);
      expect([screen.code, screen.stdout.split("\n").includes("via-2-api")]).toEqual([0, true]);
      // Another terminal, of another size: the screen comes back, the job takes the new size.
      const t = terminal(["attach", job.id], 90, 20);
      await t.see("via-2-api");
      t.keys("stty size; exit 7", "Enter");
      await t.see("20 90");
      expect(await t.exit()).toBe(7);
      const ended = (await d.client.waitJob(job.id, 10_000)).job;
      expect([ended.state, ended.exit_code]).toEqual(["failed", 7]);
      // The terminal's stream is the job's log, raw; its screen stays readable after the end.
      const log = Buffer.from((await d.client.logs(job.id, {})).data, "base64").toString();
      expect(log).toContain("hi-42");
      expect((await d.client.screen(job.id)).source).toBe("log");
    });

    test("the log is whole when the end is recorded: a large last burst, then the exit at once", async () => {
      // The holder writes the log; the recorder's exit is seen at once. The end waits for the
      // holder to have read the terminal to its end, whatever the load.
      const whole = Array.from({ length: 30_000 }, (_, i) => `${i + 1}\r\n`).join("");
      for (let i = 0; i < 25; i++) {
        const job = await d.client.createJob({
          argv: ["sh", "-c", "seq 1 30000; printf 'END-%s' \"$0\"", String(i)],
          tty: { cols: 80, rows: 24 },
        } as never);
        const ended = (await d.client.waitJob(job.id, 30_000)).job as Job;
        const log = Buffer.from((await d.client.logs(job.id, {})).data, "base64").toString();
        expect([ended.exit_code, log.length, log.slice(-20)]).toEqual([
          0,
          whole.length + `END-${i}`.length,
          `${whole}END-${i}`.slice(-20),
        ]);
      }
    });

    test("a read-only watcher sees the screen but types nothing; the writer is one client", async () => {
      const w = terminal(["run", "-it", "--", "bash", "--norc"]);
      await w.see("$");
      const job = await running();
      const ro = terminal(["attach", "--read-only", job.id]);
      const second = terminal(["attach", job.id]);
      // Both redrawn: attached (the writer keeps the input).
      await ro.see("$");
      await second.see("$");
      await waitFor(async () => (await d.client.getJob(job.id)).tty?.clients === 3, "three clients");
      ro.keys("echo from-watcher", "Enter");
      second.keys("echo from-second", "Enter");
      w.keys("echo from-$((2*3))-writer", "Enter");
      await ro.see("from-6-writer");
      await second.see("from-6-writer");
      expect(w.screen()).not.toContain("from-watcher");
      expect(w.screen()).not.toContain("from-second");
      w.keys("exit 3", "Enter");
      expect(await w.exit()).toBe(3);
      expect(await ro.exit()).toBe(3);
      expect(await second.exit()).toBe(3);
    });

    test("planterd SIGKILLed under an attached terminal: the job runs on, and attaches again after a restart", async () => {
      const t = terminal(["run", "-it", "--", "bash", "--norc"]);
      await t.see("$");
      const job = await running();
      t.keys("echo before-$((40+2))", "Enter");
      await t.see("before-42");
      await d.kill9();
      // The client lost planterd (exit 3, unreachable); the job and its terminal did not.
      expect(await t.exit()).toBe(3);
      d = await startDaemon({ home });
      expect((await d.client.getJob(job.id)).state).toBe("running");
      const again = terminal(["attach", job.id]);
      await again.see("before-42");
      again.keys("echo after; exit 0", "Enter");
      expect(await again.exit()).toBe(0);
      expect((await d.client.waitJob(job.id, 10_000)).job.state).toBe("exited");
    });

    test("a full-screen program (vim) draws its screen, and logs --screen shows it", async () => {
      const t = terminal(["run", "-it", "--", "vim", "-u", "NONE", "-N", "-n"], 80, 24);
      const job = await running();
      await waitFor(
        async () => (await d.client.screen(job.id)).lines.filter((l) => l === "~").length > 10,
        "vim's screen",
      );
      t.keys("i", "planter-in-vim", "Escape");
      await t.see("planter-in-vim");
      await waitFor(async () => (await d.client.screen(job.id)).lines[0] === "planter-in-vim", "the typed line");
      t.keys(":q!", "Enter");
      expect(await t.exit()).toBe(0);
    });

    // A real agent CLI from npm, installed for the tests only (AGENTS above), never shipped. No
    // network: it draws its welcome screen, then says it cannot reach its service.
    test.skipIf(!existsSync(CLAUDE))(
      `an agent CLI (Claude Code) starts in a sandboxed terminal job; its first screen shows in logs --screen (needs ${AGENTS})`,
      async () => {
        const job = await d.client.createJob({
          argv: [CLAUDE],
          tty: { cols: 100, rows: 30 },
          env: { ANTHROPIC_API_KEY: "sk-test-not-a-key", TERM: "xterm-256color" },
        });
        expect([job.state, job.sandbox.backend]).toEqual(["running", mode === "enforced" ? "bwrap" : "none"]);
        const shown = await waitFor(
          async () => {
            const r = await cli(home, ["logs", "--screen", job.id]);
            if (r.stdout.includes("Welcome to Claude Code")) return r.stdout;
            const now = await d.client.getJob(job.id);
            if (now.state !== "running") throw new Error(`the agent's job ended: ${JSON.stringify(now)}`);
            return null;
          },
          "Claude Code's welcome screen",
          30_000,
        );
        expect(shown).toContain("Welcome to Claude Code");
        await d.client.killJob(job.id, { force: true }).catch(() => undefined);
        await d.client.waitJob(job.id, 10_000);
      },
    );

    test("refusals: no terminal, an ended job, a bad stdin body, -t without a terminal", async () => {
      const plain = await d.client.createJob({ argv: ["sleep", "30"] });
      const refused = await cli(home, ["attach", plain.id]);
      expect([refused.code, refused.stderr]).toEqual([
        1,
        `planter: job ${plain.id} has no terminal\nhint: only a job started with a terminal (planter run -t) can be attached to\n`,
      ]);
      // Input without a terminal is for a job started with it (planter run -i, stdin: true).
      const e = await d.client.writeStdin(plain.id, { data: "" }).catch((x) => x);
      expect([e.code, e.message]).toEqual(["E_BAD_REQUEST", `job ${plain.id} has no stdin: it reads /dev/null`]);
      await d.client.killJob(plain.id, { force: true });
      const tty = await d.client.createJob({ argv: ["true"], tty: { cols: 80, rows: 24 } });
      await d.client.waitJob(tty.id, 10_000);
      const gone = await d.client.writeStdin(tty.id, { data: "eA==" }).catch((x) => x);
      expect(gone.code).toBe("E_CONFLICT");
      const bad = await d.client.writeStdin(tty.id, { data: "not base64!" } as never).catch((x) => x);
      expect([bad.code, bad.message]).toEqual([
        "E_BAD_REQUEST",
        "invalid stdin write: × data must be base64 → at data",
      ]);
      const big = await d.client.createJob({ argv: ["true"], tty: { cols: 0, rows: 24 } }).catch((x) => x);
      expect(big.message).toBe("invalid job: × cols is at least 1 → at tty.cols");
      // -i without -t: the caller's stdin (here /dev/null) is the job's (test/integration/stdin.test.ts).
      const i = await cli(home, ["run", "-i", "--", "cat"]);
      expect([i.code, i.stdout, i.stderr]).toEqual([0, "", ""]);
      // -t needs a terminal on stdin and stdout.
      const t = await cli(home, ["run", "-it", "--", "cat"]);
      expect([t.code, t.stderr.split("\n")[0]]).toEqual([
        2,
        "planter: -t needs a terminal on stdin and stdout (or --detach, then planter attach)",
      ]);
    });
  });
}

describe("a terminal job whose holder has not finished its log", () => {
  test("its end waits for the log a bounded time, across a planterd restart too", async () => {
    const home = tempHome();
    chmodSync(home, 0o711);
    let d = await startDaemon({ home });
    let holder = 0;
    try {
      const job = await d.client.createJob({
        argv: ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; printf LAST; exit 3"],
        tty: { cols: 80, rows: 24 },
      } as never);
      const dir = join(home, "state", "jobs", job.id);
      holder = Number(readFileSync(join(dir, "tty.holder"), "utf8").split(" ")[0]);
      // A holder that does not run (stopped, or starved) has not read the job's last bytes.
      process.kill(holder, "SIGSTOP");
      writeFileSync(join(job.cwd, "go"), "");
      await waitFor(() => readStatus(join(dir, "exit")) !== null, "the recorder's end");
      await d.kill9();
      d = await startDaemon({ home });
      const ended = (await d.client.waitJob(job.id, 20_000)).job as Job;
      expect([ended.state, ended.exit_code]).toEqual(["failed", 3]);
      expect(d.stderr()).toContain(`planterd: job ${job.id}: its terminal holder has not finished the log`);
      process.kill(holder, "SIGCONT");
      await waitFor(() => existsSync(join(dir, "tty.done")), "the holder to finish the log");
      expect(Buffer.from((await d.client.logs(job.id, {})).data, "base64").toString()).toEndWith("LAST");
    } finally {
      // A test that failed midway leaves the holder stopped: let it go (it may have exited since).
      if (holder) {
        try {
          process.kill(holder, "SIGCONT");
        } catch {
          // gone already
        }
      }
      await d.stop();
      cleanup(home);
    }
  });
});
