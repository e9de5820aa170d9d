import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startHint } from "../../lib/api/client.ts";
import { systemdRunning } from "../../lib/host/systemd.ts";
import { installMode } from "../../lib/paths.ts";
import { baseEnv, cleanup, cli, type DaemonHandle, PLANTER, startDaemon, tempHome, waitFor } from "../harness.ts";

let d: DaemonHandle;
beforeAll(async () => {
  d = await startDaemon();
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

describe("planter run", () => {
  test("streams stdout and stderr and passes the exit code through", async () => {
    const r = await cli(d.home, ["run", "--", "sh", "-c", "echo out; echo err >&2; exit 5"]);
    expect(r).toEqual({ code: 5, stdout: "out\n", stderr: "err\n" });
  });

  test("a job killed by signal N exits 128+N", async () => {
    const r = await cli(d.home, ["run", "--", "sh", "-c", "kill -TERM $$"]);
    expect(r.code).toBe(143);
  });

  test("options after -- belong to the command, --help included", async () => {
    const r = await cli(d.home, ["run", "--", "echo", "--help", "-x"]);
    expect(r).toEqual({ code: 0, stdout: "--help -x\n", stderr: "" });
  });

  test("--env, --cwd and --cell reach the job", async () => {
    await cli(d.home, ["cell", "create", "clicell", "--env", "A=1", "-e", "B=2"]);
    const r = await cli(d.home, [
      "run",
      "--cell",
      "clicell",
      "--env",
      "C=3",
      "--cwd",
      "/tmp",
      "--",
      "sh",
      "-c",
      'echo "$A$B$C $(pwd)"',
    ]);
    expect(r).toEqual({ code: 0, stdout: "123 /tmp\n", stderr: "" });
  });

  test("--detach prints the id; job wait passes the code through", async () => {
    const r = await cli(d.home, ["run", "--detach", "--", "sh", "-c", "exit 9"]);
    expect(r.code).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(/^j-[0-9a-z]+$/);
    const w = await cli(d.home, ["job", "wait", id]);
    expect(w.code).toBe(9);
    expect(w.stdout).toContain(`job ${id} failed 9`);
  });

  test("job wait --timeout exits 124 while the job runs", async () => {
    const id = (await cli(d.home, ["run", "-d", "--", "sleep", "300"])).stdout.trim();
    const w = await cli(d.home, ["job", "wait", id, "--timeout", "50ms"]);
    expect(w.code).toBe(124);
    expect(w.stderr).toContain("still running");
    const k = await cli(d.home, ["job", "kill", "--force", id]);
    expect(k).toEqual({ code: 0, stdout: `sent SIGKILL to job ${id}\n`, stderr: "" });
    expect((await cli(d.home, ["job", "wait", id])).code).toBe(137);
  });

  test("Ctrl-C is forwarded to the job as SIGINT", async () => {
    const p = Bun.spawn([process.execPath, PLANTER, "run", "--cell", "default", "--", "sleep", "300"], {
      env: baseEnv(d.home),
      stdout: "pipe",
      stderr: "pipe",
    });
    const job = await waitFor(
      async () =>
        (await d.client.listJobs({ state: "running" })).jobs.find((j) => j.argv[0] === "sleep" && j.argv[1] === "300"),
      "the job to run",
    );
    p.kill("SIGINT");
    expect(await p.exited).toBe(130);
    const f = await d.client.waitJob(job.id, 10_000);
    expect([f.job.state, f.job.reason, f.job.signal]).toEqual(["killed", "terminated_by_user", "INT"]);
  });

  test("a command that cannot start exits 127 with the reason", async () => {
    const r = await cli(d.home, ["run", "--", "no-such-program-xyz"]);
    expect(r.code).toBe(127);
    expect(r.stderr).toContain("no-such-program-xyz: command not found");
  });
});

describe("usage and errors", () => {
  test("nothing to run is a usage error (exit 2)", async () => {
    const r = await cli(d.home, ["run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("nothing to run");
  });

  test("an unknown option is a usage error naming it", async () => {
    const r = await cli(d.home, ["job", "ls", "--bogus"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown option --bogus for planter job ls");
  });

  test("an unknown command is a usage error listing the commands", async () => {
    const r = await cli(d.home, ["frobnicate"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
    expect(r.stderr).toContain("run");
  });

  test("extra arguments are refused", async () => {
    const r = await cli(d.home, ["job", "status", "a", "b"]);
    expect(r.code).toBe(2);
  });

  test("--help prints usage and exits 0", async () => {
    const r = await cli(d.home, ["job", "kill", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--force");
    expect(r.stdout).toContain("grace");
  });

  test("a missing daemon exits 3 and says where it looked and how to start one", async () => {
    const h = tempHome();
    const r = await cli(h, ["job", "ls"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`cannot reach planterd at ${h}/run/planterd.sock`);
    // The hint fits this host (its mode, systemd or not: test/unit/systemd.test.ts has every case).
    const hint = startHint({ mode: installMode({}), uid: process.getuid?.() ?? 1000, systemd: systemdRunning() });
    expect(r.stderr).toContain(`hint: ${hint}\n`);
    expect(hint).toContain("planter daemon");
    cleanup(h);
  });

  test("API errors print message and hint, no stack; --json prints the envelope", async () => {
    const r = await cli(d.home, ["job", "status", "j-nope"]);
    expect(r).toEqual({
      code: 1,
      stdout: "",
      stderr: 'planter: no job "j-nope"\nhint: list jobs with `planter job ls`\n',
    });
    const j = await cli(d.home, ["job", "status", "j-nope", "--json"]);
    expect(JSON.parse(j.stderr)).toEqual({
      error: { code: "E_NOT_FOUND", message: 'no job "j-nope"', hint: "list jobs with `planter job ls`" },
    });
  });

  test("bad durations and counts are usage errors", async () => {
    expect((await cli(d.home, ["job", "wait", "x", "--timeout", "soon"])).code).toBe(2);
    expect((await cli(d.home, ["job", "ls", "--limit", "-1"])).code).toBe(2);
  });
});

describe("read commands", () => {
  test("job ls and status have tables for people and --json for scripts", async () => {
    const id = (await cli(d.home, ["run", "-d", "--", "echo", "listed"])).stdout.trim();
    await d.client.waitJob(id, 10_000);
    const t = await cli(d.home, ["job", "ls"]);
    expect(t.stdout.split("\n")[0]).toMatch(/^ID\s+CELL\s+STATE\s+AGE\s+COMMAND$/);
    expect(t.stdout).toContain(`${id}  default`);
    const js = JSON.parse((await cli(d.home, ["job", "ls", "--json"])).stdout) as { id: string }[];
    expect(js.map((j) => j.id)).toContain(id);
    const st = JSON.parse((await cli(d.home, ["job", "status", id, "--json"])).stdout);
    expect(st).toEqual(await d.client.getJob(id));
    const text = (await cli(d.home, ["job", "status", id])).stdout;
    expect(text).toContain("state:     exited 0");
  });

  test("cell ls/show --json match the API", async () => {
    const ls = JSON.parse((await cli(d.home, ["cell", "ls", "--json"])).stdout);
    expect(ls).toEqual((await d.client.listCells()).cells);
    const show = JSON.parse((await cli(d.home, ["cell", "show", "default", "--json"])).stdout);
    expect(show).toEqual(await d.client.getCell("default"));
  });

  test("job rm removes a finished job", async () => {
    const id = (await cli(d.home, ["run", "-d", "--", "true"])).stdout.trim();
    await d.client.waitJob(id, 10_000);
    expect(await cli(d.home, ["job", "rm", id])).toEqual({ code: 0, stdout: `removed job ${id}\n`, stderr: "" });
  });
});
