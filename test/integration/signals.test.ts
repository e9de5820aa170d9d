/**
 * Signals reach the job's own processes, in bubblewrap's pid namespace too: `job kill` and
 * `planter run`'s Ctrl-C, SIGTERM and SIGHUP run the job's handler, the grace applies, SIGKILL
 * comes only after it. Every case runs with the sandbox enforced (real bwrap) and disabled.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Job } from "../../lib/api/contract.ts";
import { baseEnv, cleanup, cli, type DaemonHandle, PLANTER, startDaemon, waitFor } from "../harness.ts";

/** Traps TERM, INT, HUP and QUIT: prints which one and exits 5. `wait` returns at once when one comes. */
const TRAPS = `for s in TERM INT HUP QUIT; do trap "echo cleanup $s; exit 5" $s; done; echo ready; while :; do sleep 300 & wait $!; done`;

// Long enough that a job killed at once could never pass for one whose handler ran.
const GRACE_MS = 4000;

let cells = 0;
const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

for (const mode of ["enforced", "disabled"] as const) {
  const backend = mode === "enforced" ? "bwrap" : "none";

  describe(`sandbox ${mode}`, () => {
    let d: DaemonHandle;
    beforeAll(async () => {
      d = await startDaemon({ config: `[sandbox]\nmode = "${mode}"\n[jobs]\nkill_grace_ms = ${GRACE_MS}\n` });
    });
    const clis = new Set<Subprocess>();
    afterAll(async () => {
      // Whatever failed, nothing of this suite runs on: jobs outlive their daemon by design.
      for (const p of clis) {
        try {
          process.kill(-p.pid, "SIGKILL"); // a pipeline's whole group
        } catch {
          p.kill("SIGKILL");
        }
      }
      for (const j of (await d.client.listJobs({ state: "running" })).jobs)
        await d.client.killJob(j.id, { force: true }).catch(() => undefined);
      await d.stop();
      cleanup(d.home);
    });

    const stdout = async (id: string) =>
      Buffer.from((await d.client.logs(id, { stream: "stdout" })).data, "base64").toString();
    const ready = (id: string) => waitFor(async () => (await stdout(id)).includes("ready"), "the job's traps", 30_000);
    const finished = async (id: string) => (await d.client.waitJob(id, 60_000)).job;

    async function start(script: string): Promise<Job> {
      const j = await d.client.createJob({ argv: ["sh", "-c", script] });
      expect([j.sandbox.backend, j.state]).toEqual([backend, "running"]);
      await ready(j.id);
      return j;
    }

    for (const signal of ["TERM", "INT", "HUP"] as const) {
      test(`job kill with SIG${signal} runs the job's handler; its own exit is recorded with the kill request`, async () => {
        const j = await start(TRAPS);
        await d.client.killJob(j.id, signal === "TERM" ? {} : { signal });
        const f = await finished(j.id);
        expect(await stdout(j.id)).toBe(`ready\ncleanup ${signal}\n`);
        // endOf's rule for a user's kill: a job that exits from its handler keeps its own code.
        expect([f.state, f.reason, f.exit_code, f.signal]).toEqual(["failed", "exited", 5, null]);
        expect(f.kill).toMatchObject({ signal, force: false });
        const status = await cli(d.home, ["job", "status", j.id]);
        expect(status.stdout).toContain("state:     failed 5");
        expect(status.stdout).toContain(`kill:      SIG${signal} at`);
      });
    }

    test("a job with no handler dies of the signal: killed, terminated_by_user, 128+N", async () => {
      const j = await start("echo ready; exec sleep 300");
      await d.client.killJob(j.id, {});
      const f = await finished(j.id);
      expect([f.state, f.reason, f.exit_code, f.signal]).toEqual(["killed", "terminated_by_user", 143, "TERM"]);
      const r = await attached("echo ready; exec sleep 300");
      r.proc.kill("SIGINT");
      expect((await r.done()).code).toBe(130);
      const g = await finished(r.job.id);
      expect([g.state, g.reason, g.exit_code, g.signal]).toEqual(["killed", "terminated_by_user", 130, "INT"]);
    });

    test("a kill in the first milliseconds of a job reaches it, and nothing of it is left running", async () => {
      // Sent right after the spawn, the signal used to be consumed by the recorder's fork (then
      // the job ran until the grace's SIGKILL: about one time in three), or to kill bwrap before
      // its init had PDEATHSIG (then the namespace ran on, orphaned; SIGKILL too, one time in 40).
      const marker = mode === "enforced" ? "4241" : "4242";
      for (let i = 0; i < 10; i++) {
        const j = await d.client.createJob({ argv: ["sleep", marker] });
        await d.client.killJob(j.id, { signal: "INT" });
        const f = await finished(j.id);
        expect([f.state, f.signal]).toEqual(["killed", "INT"]);
      }
      // A signal that is no kill request, as early: the job's program gets it, never the recorder
      // (one without its traps yet died of it: "killed by SIGUSR1 from outside planter", 8 in 200).
      for (let i = 0; i < 30; i++) {
        const j = await d.client.createJob({ argv: ["sleep", marker] });
        await d.client.killJob(j.id, { signal: "USR1" });
        const f = await finished(j.id);
        expect([f.state, f.exit_code, f.message]).toEqual(["failed", 138, null]);
      }
      for (let i = 0; i < 20; i++) {
        const j = await d.client.createJob({ argv: ["sleep", marker] });
        await d.client.killJob(j.id, { force: true });
        expect((await finished(j.id)).state).toBe("killed");
      }
      await waitFor(
        () =>
          !Bun.spawnSync(["pgrep", "-f", `sleep ${marker}`])
            .stdout.toString()
            .trim(),
        "no process of those jobs to be left",
      );
    });

    test("SIGUSR1 reaches the job's handler and the job runs on (no kill record)", async () => {
      const j = await start(`trap "echo usr1" USR1; ${TRAPS}`);
      await d.client.killJob(j.id, { signal: "USR1" });
      await waitFor(async () => (await stdout(j.id)).includes("usr1"), "the job's USR1 handler", 30_000);
      expect((await d.client.getJob(j.id)).kill).toBeNull();
      // Still alive: a later TERM runs its handler too (with bwrap signalled, the job was gone).
      await d.client.killJob(j.id, {});
      const f = await finished(j.id);
      expect(await stdout(j.id)).toBe("ready\nusr1\ncleanup TERM\n");
      expect([f.state, f.exit_code]).toEqual(["failed", 5]);
    });

    test("a job adopted after a daemon restart gets the signal inside too", async () => {
      const j = await start(TRAPS);
      const config = `[sandbox]\nmode = "${mode}"\n[jobs]\nkill_grace_ms = ${GRACE_MS}\n`;
      await d.kill9();
      d = await startDaemon({ home: d.home, config });
      expect((await d.client.getJob(j.id)).state).toBe("running");
      await d.client.killJob(j.id, {});
      const f = await finished(j.id);
      expect(await stdout(j.id)).toBe("ready\ncleanup TERM\n");
      expect([f.state, f.exit_code]).toEqual(["failed", 5]);
    });

    test("a job that ignores SIGTERM is SIGKILLed after the grace, not before", async () => {
      const j = await start(`trap '' TERM; echo ready; while :; do sleep 1; done`);
      await d.client.killJob(j.id, {});
      const f = await finished(j.id);
      // Killed at once, bwrap would have died of the SIGTERM (signal TERM): KILL is the escalation's.
      expect([f.state, f.signal]).toEqual(["killed", "KILL"]);
      expect(f.kill?.force).toBe(true);
      const kinds: string[] = [];
      for await (const e of d.client.events({ limit: 1000 })) if (e.subject === `job/${j.id}`) kinds.push(e.kind);
      expect(kinds).toContain("job.kill_escalated");
      expect(await stdout(j.id)).toBe("ready\n");
    });

    /** `planter run` as a child with pipes, in a cell of its own; resolves once the job is ready. */
    async function attached(script: string) {
      const cell = `sig${++cells}`;
      await d.client.createCell({ name: cell });
      const proc = Bun.spawn([process.execPath, PLANTER, "run", "--cell", cell, "--", "sh", "-c", script], {
        env: baseEnv(d.home),
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      clis.add(proc);
      let out = "";
      const reading = (async () => {
        const decoder = new TextDecoder();
        for await (const chunk of proc.stdout) out += decoder.decode(chunk, { stream: true });
      })();
      const stderr = new Response(proc.stderr).text();
      await waitFor(() => out.includes("ready"), "planter run to show the job ready", 30_000);
      const [job] = (await d.client.listJobs({ cell })).jobs as [Job];
      expect(job.sandbox.backend).toBe(backend);
      return {
        proc,
        job,
        done: async () => {
          const code = await proc.exited;
          await reading;
          return { code, out, stderr: await stderr };
        },
      };
    }

    test("Ctrl-C (SIGINT to planter run) reaches the job's handler; planter exits with the job's code", async () => {
      const r = await attached(TRAPS);
      r.proc.kill("SIGINT");
      const done = await r.done();
      expect([done.code, done.out]).toEqual([5, "ready\ncleanup INT\n"]);
      expect(done.stderr).toContain(`sending SIGINT to job ${r.job.id}`);
      expect((await d.client.getJob(r.job.id)).kill?.signal).toBe("INT");
    });

    for (const signal of ["SIGTERM", "SIGHUP", "SIGQUIT"] as const) {
      test(`planter run sent ${signal} passes it on to the job instead of leaving it running`, async () => {
        const r = await attached(TRAPS);
        r.proc.kill(signal);
        const done = await r.done();
        expect([done.code, done.out]).toEqual([5, `ready\ncleanup ${signal.slice(3)}\n`]);
        const f = await finished(r.job.id);
        expect([f.state, f.exit_code, f.kill?.signal]).toEqual(["failed", 5, signal.slice(3)]);
      });
    }

    test("planter run passes SIGTERM on once, however often it comes", async () => {
      const r = await attached(
        `trap "echo term" TERM; trap "echo cleanup INT; exit 5" INT; echo ready; while :; do sleep 300 & wait $!; done`,
      );
      r.proc.kill("SIGTERM");
      await waitFor(
        async () => (await stdout(r.job.id)).includes("term"),
        "the first SIGTERM to reach the job",
        30_000,
      );
      r.proc.kill("SIGTERM");
      r.proc.kill("SIGINT");
      const done = await r.done();
      expect([done.code, done.out]).toEqual([5, "ready\nterm\ncleanup INT\n"]);
      expect(done.stderr.split("received SIGTERM").length).toBe(2);
    });

    test("a closed terminal: planter run in an interactive bash in tmux, the server killed; the job gets SIGHUP", async () => {
      const tmux = Bun.which("tmux");
      if (!tmux) throw new Error("tmux is not installed (apt-get install tmux); this test needs a real terminal");
      const cell = `sig${++cells}`;
      await d.client.createCell({ name: cell });
      const dir = mkdtempSync(join(d.home, "tmux-"));
      const server = (...a: string[]) =>
        Bun.spawnSync([tmux, "-L", `planter-sig-${process.pid}-${cells}`, ...a], {
          env: baseEnv(d.home, { TMUX_TMPDIR: dir }),
        });
      const line = [process.execPath, PLANTER, "run", "--cell", cell, "--", "sh", "-c", TRAPS].map(quote).join(" ");
      try {
        expect(server("new-session", "-d", "-s", "t", "bash --norc --noprofile -i").exitCode).toBe(0);
        expect(server("send-keys", "-t", "t", line, "Enter").exitCode).toBe(0);
        const job = await waitFor(async () => (await d.client.listJobs({ cell })).jobs[0], "the job", 30_000);
        await ready(job.id);
      } finally {
        // The terminal closes: bash gets SIGHUP and sends it on to planter run, its foreground job.
        server("kill-server");
      }
      const [job] = (await d.client.listJobs({ cell })).jobs as [Job];
      const f = await finished(job.id);
      expect(await stdout(job.id)).toBe("ready\ncleanup HUP\n");
      expect([f.state, f.exit_code, f.kill?.signal]).toEqual(["failed", 5, "HUP"]);
      await waitFor(
        () =>
          !Bun.spawnSync(["pgrep", "-f", `run --cell ${cell} --`])
            .stdout.toString()
            .trim(),
        "planter run to exit",
      );
    });

    test("a reader that leaves (planter run | head -1): the job gets SIGHUP, planter run exits with its code", async () => {
      const cell = `sig${++cells}`;
      await d.client.createCell({ name: cell });
      const script = `trap "echo cleanup HUP >&2; exit 5" HUP; i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done`;
      const line = [process.execPath, PLANTER, "run", "--cell", cell, "--", "sh", "-c", script].map(quote).join(" ");
      const p = Bun.spawn(["bash", "-c", `${line} | head -1; echo "\${PIPESTATUS[0]}"`], {
        env: baseEnv(d.home),
        detached: true,
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      clis.add(p);
      // bash prints planter's exit code only once planter has exited.
      expect(await new Response(p.stdout).text()).toBe("line 1\n5\n");
      const [job] = (await d.client.listJobs({ cell })).jobs as [Job];
      const f = await finished(job.id);
      expect([f.state, f.exit_code, f.kill?.signal]).toEqual(["failed", 5, "HUP"]);
      const err = Buffer.from((await d.client.logs(job.id, { stream: "stderr" })).data, "base64").toString();
      expect(err).toContain("cleanup HUP");
    });

    test("planter run sent SIGTERM ends a job that ignores it, after the grace", async () => {
      const r = await attached(`trap '' TERM; echo ready; while :; do sleep 1; done`);
      r.proc.kill("SIGTERM");
      const done = await r.done();
      expect(done.code).toBe(137);
      expect(done.stderr).toContain("(SIGKILL)");
      const f = await finished(r.job.id);
      expect([f.state, f.signal]).toEqual(["killed", "KILL"]);
    });

    test("exit 137 by itself and death by SIGKILL are told apart by state and signal, not by planter run's code", async () => {
      const own = await cli(d.home, ["run", "--", "sh", "-c", "exit 137"]);
      expect(own.code).toBe(137);
      const r = await attached(`echo ready; while :; do sleep 1; done`);
      await d.client.killJob(r.job.id, { force: true });
      const killed = await r.done();
      expect(killed.code).toBe(137);
      expect(killed.stderr).toContain("killed: forced_kill (SIGKILL)");
      expect(own.stderr).not.toContain("killed");
      const ownJob = (await d.client.listJobs({ cell: "default" })).jobs.find(
        (j) => j.argv.join(" ") === "sh -c exit 137",
      ) as Job;
      const views = [ownJob, await d.client.getJob(r.job.id)].map((j) => [j.state, j.reason, j.exit_code, j.signal]);
      expect(views[0]).toEqual(["failed", "exited", 137, null]);
      expect(views[1]?.slice(0, 2)).toEqual(["killed", "forced_kill"]);
      expect(views[1]?.[3]).toBe("KILL");
      const status = await cli(d.home, ["job", "status", "--json", ownJob.id]);
      expect(JSON.parse(status.stdout)).toMatchObject({ state: "failed", exit_code: 137, signal: null });
      expect((await cli(d.home, ["job", "status", ownJob.id])).stdout).toContain("exit code: 137\n");
      expect((await cli(d.home, ["job", "status", r.job.id])).stdout).toMatch(/exit code: (137|-) \(signal KILL\)/);
    });
  });
}
