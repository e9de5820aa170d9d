/**
 * `planter --all CMD`, `--targets` / `--all-targets`: `job ls`, `agents ls` and `events` over several planterds at once,
 * each row with its target; a target that is gone or hangs gives a partial answer (its error, exit
 * 5) within the fan-out deadline; a followed target that stops is said degraded and, back, ok.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { baseEnv, cli, type DaemonHandle, PLANTER, startDaemon, tempHome, waitFor } from "../harness.ts";

let local: DaemonHandle;
let two: DaemonHandle;
let home: string;
let hangDir: string;
let hang: ReturnType<typeof Bun.listen>;
const DEADLINE = 1500;
const env = { PLANTER_TARGET_TIMEOUT_MS: String(DEADLINE), PLANTER_RETRY: "initial=50,max=200" };
const planter = (...args: string[]) => cli(home, args, { env });

beforeAll(async () => {
  local = await startDaemon();
  two = await startDaemon();
  home = local.home;
  // A socket that takes connections and reads them, and never answers.
  hangDir = tempHome("pt-hang");
  hang = Bun.listen({ unix: join(hangDir, "hang.sock"), socket: { data() {} } });
  for (const [name, url] of [
    ["two", `unix://${two.socket}`],
    ["gone", `unix://${join(hangDir, "none.sock")}`],
    ["hang", `unix://${join(hangDir, "hang.sock")}`],
  ] as const)
    expect((await planter("target", "add", name, url)).code).toBe(0);
  await local.client.createJob({ cell: "default", argv: ["true"] });
  await two.client.createJob({ cell: "default", argv: ["echo", "two"] });
}, 60_000);

afterAll(async () => {
  hang.stop(true);
  await local.stop();
  await two.stop();
  for (const h of [two.home, local.home, hangDir]) rmSync(h, { recursive: true, force: true });
});

describe("several targets at once", () => {
  test("job ls: rows of every target that answered, labelled; the gone and the hanging ones as errors; exit 5 in time", async () => {
    const t0 = performance.now();
    const r = await planter("--all-targets", "job", "ls", "--json");
    const ms = performance.now() - t0;
    expect(r.code).toBe(5);
    const out = JSON.parse(r.stdout) as {
      jobs: { target: string; argv: string[] }[];
      errors: { target: string; error: { code: string; message: string } }[];
    };
    expect(out.jobs.map((j) => [j.target, j.argv.join(" ")]).sort()).toEqual([
      ["local", "true"],
      ["two", "echo two"],
    ]);
    expect(out.errors.map((e) => [e.target, e.error.code])).toEqual([
      ["gone", "E_DAEMON_UNREACHABLE"],
      ["hang", "E_UNAVAILABLE"],
    ]);
    expect(out.errors[1]?.error.message).toBe(`target hang did not answer within ${DEADLINE} ms`);
    expect(ms).toBeLessThan(DEADLINE + 3000);
    // For people: a TARGET column, the failures on stderr.
    const human = await planter("job", "ls", "--targets", "local,two,gone");
    expect(human.code).toBe(5);
    expect(human.stdout.split("\n")[0]).toStartWith("TARGET  ID");
    expect(human.stdout).toContain("two     ");
    expect(human.stderr).toContain("planter: target gone: cannot reach planterd");
    // Every target answering: exit 0.
    expect((await planter("job", "ls", "--targets", "local,two")).code).toBe(0);
  }, 30_000);

  test("planter --all CMD: --all before the command reads every target (job ls, events, agents ls); after it, job ls's own", async () => {
    const all = await planter("--all", "job", "ls", "--json");
    expect(all.code).toBe(5);
    const out = JSON.parse(all.stdout) as { jobs: { target: string }[]; errors: { target: string }[] };
    expect(out.jobs.map((j) => j.target).sort()).toEqual(["local", "two"]);
    expect(out.errors.map((e) => e.target)).toEqual(["gone", "hang"]);
    // The same answer as --all-targets (written before the command or after it).
    const spelled = JSON.parse((await planter("job", "ls", "--all-targets", "--json")).stdout) as typeof out;
    expect(spelled.jobs.map((j) => j.target).sort()).toEqual(["local", "two"]);
    // Before the command every target, after it every job: both at once.
    const both = await planter("--all", "job", "ls", "--all", "--json");
    expect(both.code).toBe(5);
    expect((JSON.parse(both.stdout) as typeof out).jobs.map((j) => j.target).sort()).toEqual(["local", "two"]);
    // job ls --all alone is still one target's every job: a plain list, no target labels.
    const every = await planter("job", "ls", "--all", "--json");
    expect(every.code).toBe(0);
    expect((JSON.parse(every.stdout) as { target?: string }[]).every((j) => j.target === undefined)).toBe(true);
    const ev = await planter("--all", "events", "--kind", "job.created", "--json");
    expect(ev.code).toBe(5);
    const targets = ev.stdout
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { target: string }).target);
    expect([...new Set(targets)].sort()).toEqual(["local", "two"]);
    const agents = await planter("--all", "agents", "ls", "--json");
    expect(agents.code).toBe(5);
    expect((JSON.parse(agents.stdout) as { errors: { target: string }[] }).errors.map((e) => e.target)).toEqual([
      "gone",
      "hang",
    ]);
    // --targets before the command, as after it.
    const some = await planter("--targets", "local,two", "job", "ls", "--json");
    expect(some.code).toBe(0);
  }, 30_000);

  test("--all or --targets before a command that reads one target: a usage error that says which commands read several", async () => {
    const cases: [string[], string][] = [
      [
        ["--all", "run", "--", "true"],
        "--all before the command reads several targets at once, and planter run reads one target",
      ],
      [["--all", "job", "kill", "x"], "and planter job kill reads one target"],
      [
        ["--targets", "local,two", "logs", "x"],
        "--targets before the command reads several targets at once, and planter logs",
      ],
      [["--all-targets", "cell", "ls"], "--all-targets before the command reads several targets at once"],
      [
        ["--all", "--targets", "local", "job", "ls"],
        "--all (--all-targets) and --targets both name the targets to read",
      ],
    ];
    for (const [args, text] of cases) {
      const r = await planter(...args);
      expect([r.code, r.stdout]).toEqual([2, ""]);
      expect(r.stderr).toContain(text);
    }
    const r = await planter("--all", "run", "--", "true");
    expect(r.stderr).toContain("hint: the commands that read several: job ls, events, agents ls");
    // Nothing ran.
    expect((JSON.parse((await planter("job", "ls", "--all", "--json")).stdout) as unknown[]).length).toBe(1);
  });

  test("agents ls over targets: an object with agents and errors", async () => {
    const r = await planter("agents", "ls", "--targets", "local,two,gone", "--json");
    expect(r.code).toBe(5);
    expect(JSON.parse(r.stdout)).toEqual({
      agents: [],
      errors: [
        {
          target: "gone",
          error: expect.objectContaining({ code: "E_DAEMON_UNREACHABLE" }),
        },
      ],
    });
  });

  test("events without -f: both targets' events merged by time, each labelled", async () => {
    const r = await planter("events", "--targets", "local,two", "--kind", "job.created", "--json");
    expect(r.code).toBe(0);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { target: string; kind: string; at: string });
    expect(lines.map((l) => l.target).sort()).toEqual(["local", "two"]);
    expect(lines.map((l) => l.at)).toEqual(lines.map((l) => l.at).sort());
  });

  test("events -f: lines as they come from each target; a stopped target is degraded, then ok when it is back", async () => {
    const proc = Bun.spawn(
      [
        process.execPath,
        PLANTER,
        "events",
        "-f",
        "--json",
        "--targets",
        "local,two",
        "--kind",
        "job.created,target.health",
      ],
      { env: baseEnv(home, env), stdout: "pipe", stderr: "pipe" },
    );
    let out = "";
    (async () => {
      for await (const c of proc.stdout as ReadableStream<Uint8Array>) out += new TextDecoder().decode(c);
    })();
    const lines = () =>
      out
        .split("\n")
        .filter(Boolean)
        .map(
          (l) =>
            JSON.parse(l) as {
              target: string;
              kind: string;
              cursor: string;
              data: { health?: string; target?: string; from?: string; to?: string };
            },
        );
    // The follower's own health lines have no cursor; local's stream also carries the stored changes.
    const said = () => lines().filter((l) => l.kind === "target.health" && l.cursor === "");
    try {
      await waitFor(() => lines().length >= 2, "the two targets' job.created events");
      await two.client.createJob({ cell: "default", argv: ["echo", "later"] });
      await waitFor(() => lines().filter((l) => l.target === "two").length >= 2, "two's new job.created, live");
      const twoHome = two.home;
      await two.stop();
      await waitFor(() => said().find((l) => l.data.health === "degraded"), "two said degraded");
      two = await startDaemon({ home: twoHome });
      await two.client.createJob({ cell: "default", argv: ["echo", "back"] });
      await waitFor(() => said().find((l) => l.data.health === "ok"), "two ok again");
      await waitFor(
        () => lines().filter((l) => l.target === "two" && l.kind === "job.created").length >= 3,
        "two's job after",
      );
      // Resumed from its cursor: no event of two is printed twice.
      const twos = lines().filter((l) => l.target === "two" && l.kind === "job.created");
      expect(twos).toHaveLength(3);
      // degraded at the first failure, down after three more (the restart may take that long), ok once back.
      const changes = said().map((l) => `${l.target} ${l.data.health}`);
      expect(changes[0]).toBe("two degraded");
      expect(changes.at(-1)).toBe("two ok");
      expect(changes.slice(1, -1).every((c) => c === "two down")).toBe(true);
      expect(changes.length).toBeLessThanOrEqual(3);
      // Each change was reported to local, which stored it: local's own stream says them too, in order.
      const stored = () =>
        lines()
          .filter((l) => l.target === "local" && l.kind === "target.health" && l.data.target === "two")
          .map((l) => `${l.data.from}→${l.data.to}`);
      await waitFor(() => stored().at(-1)?.endsWith("→ok"), "local's stored two ok");
      expect(stored()[0]).toBe("ok→degraded");
      expect(stored().length).toBe(changes.length);
    } finally {
      proc.kill("SIGINT");
      await proc.exited;
    }
  }, 60_000);

  test("doctor checks every registered target: down ones fail the check, naming them", async () => {
    const r = await planter("doctor", "targets.reachable", "--json");
    const check = (JSON.parse(r.stdout) as { checks: { id: string; status: string; message: string }[] }).checks[0];
    expect(check?.id).toBe("targets.reachable");
    expect(check?.status).toBe("fail");
    expect(check?.message).toBe("targets: gone down, hang down, two ok");
    expect(r.code).not.toBe(0);
  }, 30_000);

  test("refused: --cursor with several targets, --targets with --target, an unknown name", async () => {
    const cases: [string[], string][] = [
      [["events", "--targets", "local,two", "--cursor", "x:1"], "--cursor names a place in one target's stream"],
      [["job", "ls", "--targets", "local", "--target", "two"], "--target and --socket name one"],
      [["job", "ls", "--targets", "local,nope"], '--targets: there is no target "nope"'],
    ];
    for (const [args, text] of cases) {
      const r = await planter(...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(text);
    }
  });
});
