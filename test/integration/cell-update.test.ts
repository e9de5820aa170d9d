/**
 * Changing a cell's sandbox (`planter cell update`, PATCH /v1/cells/{name}), reading it (`cell
 * show`), and the network short forms of `run`, `cell create` and `cell update`, against a real
 * planterd: what changes is recorded, running jobs keep the policy they started with, bad input
 * changes nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Cell, EventRecord } from "../../lib/api/contract.ts";
import type { PlanterError } from "../../lib/api/errors.ts";
import type { WalkStatus } from "../../lib/daemon/walks.ts";
import { DEFAULT_POLICY } from "../../lib/sandbox/policy.ts";
import { bwrapReady, cleanup, cli, type DaemonHandle, raw, startDaemon } from "../harness.ts";

const root = process.getuid?.() === 0;
const files = mkdtempSync("/tmp/pt-cu-");
chmodSync(files, 0o755);
let d: DaemonHandle;
let server: ReturnType<typeof Bun.serve>;
beforeAll(async () => {
  d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\nallowed_modes = ["permissive", "enforced"]\n' });
  server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("hello from the host\n") });
});
afterAll(async () => {
  await server.stop(true);
  // Jobs outlive planterd by design: end any a failed test left running.
  const running = await d.client.listJobs({ state: "running", limit: 100 });
  for (const j of running.jobs) await d.client.killJob(j.id, { force: true }).catch(() => undefined);
  await d.stop();
  cleanup(d.home);
  rmSync(files, { recursive: true, force: true });
});

/** A policy file with `text` in it. */
function policyFile(name: string, text: string): string {
  const f = join(files, name);
  writeFileSync(f, text);
  return f;
}
const run = (args: string[]) => cli(d.home, args);
const code = async (p: Promise<unknown>) => ((await p.catch((e) => e)) as PlanterError).code;
async function kinds(kind: string): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const e of d.client.events({ kind: [kind], limit: 10_000 })) out.push(e);
  return out;
}
/** The audit fields of a request made by this process's CLI or client. */
const audit = { peer_uid: process.getuid?.() ?? 0, peer_pid: expect.any(Number) };
/** A cell's `cell.updated` summary of a sandbox with these fields over planter's default policy. */
const summary = (over: Record<string, unknown> = {}) => ({
  mode: null,
  own_policy: true,
  fs_mode: "writable",
  network: "none",
  read_write: [],
  read_only: [],
  deny: [],
  unix_sockets: [],
  workspace_config: "protect",
  env_pass: [],
  env_set: [],
  ...over,
});

describe("cell show", () => {
  test("the effective sandbox in words: mode, whose policy, network, paths; --json is the API's cell", async () => {
    await d.client.createCell({ name: "shown", sandbox: { policy: { network: "host", read_only: ["/usr/share"] } } });
    const r = await run(["cell", "show", "shown"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n").slice(6)).toEqual([
      "sandbox:  enforced (the daemon's default)",
      "policy:   the cell's own, over the config's default",
      "  network:      host",
      "  cell dir:     writable",
      "  read-write:   -",
      "  read-only:    /usr/share",
      "  deny:         -",
      "",
    ]);
    const json = JSON.parse((await run(["cell", "show", "shown", "--json"])).stdout) as Cell;
    expect(json).toEqual(await d.client.getCell("shown"));
    expect(json.effective_sandbox).toEqual({
      mode: "enforced",
      policy: { ...DEFAULT_POLICY, network: "host", read_only: ["/usr/share"] },
      refused: null,
    });
    expect(json.sandbox).toEqual({ policy: { network: "host", read_only: ["/usr/share"] } });
  });

  test("a cell without a policy shows the config's default; the env it sets, sockets and workspace when set", async () => {
    await d.client.createCell({
      name: "plain",
      sandbox: { mode: "permissive", policy: { workspace_config: "allow", env: { set: { CI: "1" } } } },
    });
    expect((await run(["cell", "show", "plain"])).stdout.split("\n").slice(6)).toEqual([
      "sandbox:  permissive",
      "policy:   the cell's own, over the config's default",
      "  network:      none",
      "  cell dir:     writable",
      "  read-write:   -",
      "  read-only:    -",
      "  deny:         -",
      "  workspace:    not protected (workspace_config allow)",
      "  env set:      CI=1",
      "",
    ]);
    expect((await run(["cell", "show", "default"])).stdout).toContain(
      "sandbox:  enforced (the daemon's default)\npolicy:   the config's default\n  network:      none\n",
    );
  });
});

describe("cell update", () => {
  test("--policy FILE replaces the whole policy; recorded as cell.updated with what changed", async () => {
    await d.client.createCell({ name: "repl", sandbox: { policy: { network: "host", read_only: ["/usr/share"] } } });
    const f = policyFile("repl.json", JSON.stringify({ fs_mode: "read_only", deny: ["/usr/share/doc"] }));
    const r = await run(["cell", "update", "repl", "--policy", f]);
    expect(r).toEqual({
      code: 0,
      stdout: [
        "updated cell repl; its jobs from now on get:",
        "sandbox:  enforced (the daemon's default)",
        "policy:   the cell's own, over the config's default",
        "  network:      none",
        "  cell dir:     read-only",
        "  read-write:   -",
        "  read-only:    -",
        "  deny:         /usr/share/doc",
        "",
      ].join("\n"),
      stderr: "",
    });
    expect((await d.client.getCell("repl")).sandbox).toEqual({
      policy: { fs_mode: "read_only", deny: ["/usr/share/doc"] },
    });
    const ev = (await kinds("cell.updated")).filter((e) => e.subject === "cell/repl");
    expect(ev.map((e) => e.data)).toEqual([
      {
        changed: ["fs_mode", "network", "read_only", "deny"],
        before: summary({ network: "host", read_only: ["/usr/share"] }),
        after: summary({ fs_mode: "read_only", deny: ["/usr/share/doc"] }),
        ...audit,
      },
    ]);
  });

  test("--net alone replaces only the network; the rest of the policy stays; --sandbox sets the mode", async () => {
    await d.client.createCell({ name: "netonly", sandbox: { policy: { fs_mode: "read_only", network: "none" } } });
    expect((await run(["cell", "update", "netonly", "--net", "host", "--sandbox", "permissive"])).code).toBe(0);
    const c = await d.client.getCell("netonly");
    expect(c.sandbox).toEqual({ mode: "permissive", policy: { fs_mode: "read_only", network: "host" } });
    expect(c.effective_sandbox.mode).toBe("permissive");
    const [e] = (await kinds("cell.updated")).filter((x) => x.subject === "cell/netonly");
    expect(e?.data.changed).toEqual(["mode", "network"]);
    expect([e?.data.before, e?.data.after]).toEqual([
      summary({ fs_mode: "read_only" }),
      summary({ mode: "permissive", fs_mode: "read_only", network: "host" }),
    ]);
    // The same again changes nothing and records nothing.
    expect((await run(["cell", "update", "netonly", "--net", "host"])).code).toBe(0);
    expect((await kinds("cell.updated")).filter((x) => x.subject === "cell/netonly").length).toBe(1);
  });

  test("the API: PATCH with mode, policy or network; the variables a policy sets are named, never valued, in the event", async () => {
    await d.client.createCell({ name: "api" });
    const c = await d.client.updateCell("api", { sandbox: { policy: { env: { set: { TOKEN: "s3cret" } } } } });
    expect(c.sandbox).toEqual({ policy: { env: { set: { TOKEN: "s3cret" } } } });
    expect(c.effective_sandbox.policy.env).toEqual({ pass: [], set: { TOKEN: "s3cret" } });
    const [e] = (await kinds("cell.updated")).filter((x) => x.subject === "cell/api");
    expect(e?.data).toEqual({
      changed: ["own_policy", "env_set"],
      before: summary({ own_policy: false }),
      after: summary({ env_set: ["TOKEN"] }),
      ...audit,
    });
    expect(JSON.stringify(await kinds("cell"))).not.toContain("s3cret");
    // network beside a policy without one: that policy, with that network.
    const both = await d.client.updateCell("api", { sandbox: { policy: { fs_mode: "read_only" }, network: "host" } });
    expect(both.sandbox.policy).toEqual({ fs_mode: "read_only", network: "host" });
  });

  test("running jobs keep the policy they started with; jobs started after get the new one", async () => {
    if (!(await bwrapReady(d))) return;
    const url = `http://127.0.0.1:${server.port}/`;
    await d.client.createCell({ name: "keep", sandbox: { policy: { network: "host" } } });
    const cellDir = (await d.client.getCell("keep")).dir;
    // Waits in its sandbox (made with the host's network) until the test says go, then connects.
    const before = await d.client.createJob({
      cell: "keep",
      argv: ["sh", "-c", `while [ ! -e go ]; do sleep 0.02; done; curl -sS --max-time 10 ${url}`],
    });
    expect(before.state).toBe("running");
    const r = await run(["cell", "update", "keep", "--net", "none"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("  network:      none\n");
    expect(r.stderr).toBe("planter: 1 job(s) running in keep keep the policy they started with\n");
    writeFileSync(join(cellDir, "go"), "");
    const done = (await d.client.waitJob(before.id, 20_000)).job;
    const out = Buffer.from((await d.client.logs(before.id, {})).data, "base64").toString();
    expect([done.exit_code, out]).toEqual([0, "hello from the host\n"]);
    expect(done.sandbox.policy?.network).toBe("host");

    const after = await d.client.createJob({ cell: "keep", argv: ["curl", "-sS", "--max-time", "10", url] });
    const ended = (await d.client.waitJob(after.id, 20_000)).job;
    expect(ended.sandbox.policy?.network).toBe("none");
    expect(ended.exit_code).not.toBe(0);
    const err = Buffer.from((await d.client.logs(after.id, { stream: "stderr" })).data, "base64").toString();
    expect(err).toContain("curl: (7)");
  }, 60_000);

  test("a job being prepared while its cell's sandbox changes is refused, never started with the old one", async () => {
    if (!(await bwrapReady(d))) return;
    await d.client.createCell({ name: "prep", sandbox: { policy: { network: "host" } } });
    const cellDir = (await d.client.getCell("prep")).dir;
    // A tree whose snapshot takes a while (hard links: made fast, each name read by the walk).
    const dir = join(cellDir, ".vscode");
    mkdirSync(dir);
    writeFileSync(join(dir, "settings.json"), "{}\n");
    for (let i = 0; i < 15_000; i++) linkSync(join(dir, "settings.json"), join(dir, `s${i}.json`));
    let settled: unknown = null;
    const post = d.client.createJob({ cell: "prep", argv: ["true"] }).then(
      (j) => {
        settled = j;
      },
      (e) => {
        settled = e;
      },
    );
    const walking = async () => {
      const r = await raw(d.socket, "GET", "/v1/ready");
      return (r.json.workspace_walks as WalkStatus[]).some((w) => w.tree === cellDir && w.state === "walking");
    };
    while (settled === null && !(await walking())) await Promise.race([post, Bun.sleep(2)]);
    expect(settled).toBeNull(); // the walk was seen under way, the job not yet answered
    expect((await run(["cell", "update", "prep", "--net", "none"])).code).toBe(0);
    await post;
    const err = settled as unknown as PlanterError;
    expect([err.code, err.message, err.hint]).toEqual([
      "E_CONFLICT",
      "cell prep's sandbox was changed while the job was being prepared",
      "run the job again: it gets the cell's new sandbox",
    ]);
    expect((await d.client.listJobs({ cell: "prep", limit: 10 })).jobs).toEqual([]);
    rmSync(dir, { recursive: true });
  }, 60_000);

  test("bad input changes nothing and records nothing", async () => {
    await d.client.createCell({ name: "steady", sandbox: { policy: { network: "host" } } });
    const was = await d.client.getCell("steady");
    const events = (await kinds("cell.updated")).length;
    const refusals: [string[], number, string][] = [
      [
        ["cell", "update", "steady"],
        2,
        "planter: nothing to change: give --policy FILE, a --net option or --sandbox MODE",
      ],
      [
        ["cell", "update", "steady", "--net-allow", "a.example,"],
        2,
        'planter: --net-allow "a.example," has an empty entry',
      ],
      [
        ["cell", "update", "steady", "--net-deny", "10.0.0.1/8"],
        2,
        'planter: --net-deny: "10.0.0.1/8" is not a network entry: 10.0.0.1/8 has bits set past its prefix; did you mean 10.0.0.0/8?',
      ],
      [
        ["cell", "update", "steady", "--net", "host", "--net-local"],
        2,
        "planter: --net host cannot go with --net-local",
      ],
      [
        ["cell", "update", "steady", "--policy", policyFile("none.json", '{"network": "none"}'), "--net", "host"],
        2,
        `planter: the policy ${join(files, "none.json")} sets network "none", but --net host sets network "host"`,
      ],
      [
        ["cell", "update", "steady", "--policy", policyFile("broken.json", "{network")],
        1,
        `planter: cannot read policy ${join(files, "broken.json")}:`,
      ],
      [
        ["cell", "update", "steady", "--policy", policyFile("typo.json", '{"netwrok": "none"}')],
        1,
        `planter: invalid policy ${join(files, "typo.json")}:`,
      ],
      [
        ["cell", "update", "steady", "--policy", policyFile("etc.json", '{"read_write": ["/etc"]}')],
        1,
        "planter: sandbox path /etc: ",
      ],
      [
        ["cell", "update", "steady", "--sandbox", "disabled"],
        1,
        "planter: sandbox mode disabled (of cell steady) is not allowed by planterd's config",
      ],
      [["cell", "update", "nosuch", "--net", "none"], 1, 'planter: no cell named "nosuch"'],
    ];
    for (const [args, exit, message] of refusals) {
      const r = await run(args);
      expect([args, r.code]).toEqual([args, exit]);
      expect(r.stderr).toContain(message);
    }
    // Through the API: the network twice; an empty change; a network that is none of the three.
    const twice = await d.client
      .updateCell("steady", { sandbox: { policy: { network: "none" }, network: "host" } })
      .catch((e) => e as PlanterError);
    expect((twice as PlanterError).message).toBe(
      "invalid cell update: × give the network once: in policy or in network, not both → at sandbox",
    );
    expect(await code(d.client.updateCell("steady", { sandbox: {} }))).toBe("E_BAD_REQUEST");
    expect(await code(d.client.updateCell("steady", { sandbox: { network: "everything" as "host" } }))).toBe(
      "E_BAD_REQUEST",
    );
    expect(await d.client.getCell("steady")).toEqual(was);
    expect((await kinds("cell.updated")).length).toBe(events);
  });

  test("--help teaches: what changes, who may, what running jobs keep, examples", async () => {
    const r = await run(["cell", "update", "--help"]);
    expect(r.code).toBe(0);
    for (const line of [
      "Usage: planter cell update [options] NAME",
      "Jobs running now keep the policy they started with",
      "--net-allow ENTRIES",
      "--net none|host",
      "planter cell update web --net-allow registry.npmjs.org,'*.npmjs.org'",
    ])
      expect(r.stdout.replace(/\s+/g, " ")).toContain(line.replace(/\s+/g, " "));
  });
});

describe("the short forms on run and cell create", () => {
  test("cell create --net host; run --net none narrows it for one job; --net host on a none cell is refused", async () => {
    const made = await run(["cell", "create", "short", "--net", "host"]);
    expect(made.code).toBe(0);
    expect((await d.client.getCell("short")).sandbox).toEqual({ policy: { network: "host" } });
    const narrowed = await run(["run", "--cell", "short", "--net", "none", "-d", "--json", "--", "true"]);
    expect(narrowed.code).toBe(0);
    expect(JSON.parse(narrowed.stdout).sandbox.policy.network).toBe("none");
    const wider = await run(["run", "--net", "host", "--", "true"]);
    expect(wider.code).toBe(1);
    expect(wider.stderr).toContain(
      "planter: the job's sandbox policy widens its cell's: network host on a cell without network",
    );
    const merged = await run([
      "run",
      "--cell",
      "short",
      "--policy",
      policyFile("ro.json", '{"fs_mode": "read_only"}'),
      "--net",
      "none",
      "-d",
      "--json",
      "--",
      "true",
    ]);
    expect(JSON.parse(merged.stdout).sandbox.policy).toMatchObject({ fs_mode: "read_only", network: "none" });
  });
});

/** Allow lists: they run once job launch starts the egress proxy (plans/design.md "Egress (#15)"). */
describe("allow lists", () => {
  test("cell create and update with lists; show describes them in canonical spelling", async () => {
    const made = await run([
      "cell",
      "create",
      "lists",
      "--net-allow",
      "Registry.NPMjs.org.,*.GitHub.com",
      "--net-local",
    ]);
    expect(made.code).toBe(0);
    expect((await run(["cell", "show", "lists"])).stdout).toContain(
      "  network:      allow registry.npmjs.org,*.github.com; local allowed\n",
    );
    const r = await run(["cell", "update", "lists", "--net-allow", "*.github.com", "--net-deny", "gist.github.com"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("  network:      allow *.github.com; deny gist.github.com\n");
    const [e] = (await kinds("cell.updated")).filter((x) => x.subject === "cell/lists");
    expect(e?.data.changed).toEqual(["network"]);
    expect(e?.data.after).toMatchObject({ network: "allow *.github.com; deny gist.github.com" });
  });

  test("a job narrows its cell's list with --net-allow and --net-deny; wider is refused", async () => {
    await run(["cell", "create", "narrow", "--net-allow", "*.github.com,registry.npmjs.org"]);
    const ok = await run([
      "run",
      "--cell",
      "narrow",
      "--net-allow",
      "api.github.com",
      "--net-deny",
      "x.github.com",
      "-d",
      "--json",
      "--",
      "true",
    ]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).sandbox.policy.network).toEqual({
      allow: ["api.github.com"],
      deny: ["x.github.com"],
      allow_local: false,
    });
    const wider = await run(["run", "--cell", "narrow", "--net-allow", "example.com", "--", "true"]);
    expect(wider.code).toBe(1);
    expect(wider.stderr).toContain("network allow example.com is not allowed by the cell");
  });

  test("the config's [network] ceiling bounds what an update may widen to; a refusal changes nothing", async () => {
    const c = await startDaemon({
      config:
        '[sandbox]\nmode = "enforced"\n[network]\nallow_host = false\nallow = ["*.example.com"]\ndeny = ["bad.example.com"]\nallow_local = false\n',
    });
    try {
      await c.client.createCell({ name: "capped", sandbox: { policy: { network: { allow: ["a.example.com"] } } } });
      const was = await c.client.getCell("capped");
      expect(was.effective_sandbox.policy.network).toEqual({
        allow: ["a.example.com"],
        deny: ["bad.example.com"],
        allow_local: false,
      });
      for (const [args, message] of [
        [["--net", "host"], "cell capped's network host is beyond the config's [network] ceiling (allow_host = false)"],
        [
          ["--net-allow", "registry.npmjs.org"],
          "cell capped's network allow registry.npmjs.org is beyond the config's [network] ceiling",
        ],
        [
          ["--net-allow", "b.example.com", "--net-local"],
          "cell capped's network allow_local is beyond the config's [network] ceiling",
        ],
      ] as [string[], string][]) {
        const r = await cli(c.home, ["cell", "update", "capped", ...args]);
        expect(r.code).toBe(1);
        expect(r.stderr).toContain(message);
      }
      expect(await c.client.getCell("capped")).toEqual(was);
      expect((await cli(c.home, ["cell", "update", "capped", "--net-allow", "*.example.com"])).code).toBe(0);
    } finally {
      await c.stop();
    }
    // A ceiling lowered since: the cell says its jobs are refused, and why.
    const lowered = await startDaemon({
      home: c.home,
      config: '[sandbox]\nmode = "enforced"\n[network]\nallow = ["*.example.org"]\n',
    });
    try {
      const shown = await lowered.client.getCell("capped");
      expect(shown.effective_sandbox.refused).toBe(
        "network allow *.example.com is beyond the config's [network] ceiling",
      );
      expect((await cli(lowered.home, ["cell", "show", "capped"])).stdout).toContain(
        "  network:      allow *.example.com\n  REFUSED:      network allow *.example.com is beyond the config's [network] ceiling: its jobs are refused until the policy changes\n",
      );
    } finally {
      await lowered.stop();
      cleanup(c.home);
    }
  });
});

describe("the ceiling at job launch", () => {
  test("a job's network is capped: the ceiling's deny added, host refused where the ceiling forbids it", async () => {
    const c = await startDaemon({
      config:
        '[sandbox]\nmode = "enforced"\npolicy = { network = "host" }\n[network]\nallow_host = false\ndeny = ["bad.example.com"]\n',
    });
    try {
      // The config's own default policy says host, which its ceiling forbids: refused, and why.
      const host = await cli(c.home, ["run", "--", "true"]);
      expect(host.code).toBe(1);
      expect(host.stderr).toContain(
        "planter: the job's network host is beyond the config's [network] ceiling (allow_host = false)",
      );
      await c.client.createCell({ name: "listed", sandbox: { policy: { network: { allow: ["*.example.com"] } } } });
      const j = await c.client.createJob({ cell: "listed", argv: ["true"] });
      expect(j.sandbox.policy?.network).toEqual({
        allow: ["*.example.com"],
        deny: ["bad.example.com"],
        allow_local: false,
      });
      await c.client.waitJob(j.id, 20_000);
    } finally {
      await c.stop();
      cleanup(c.home);
    }
  });
});

/** As root, planterd serves other uids: each changes only its own cells. */
describe.skipIf(!root)("another uid", () => {
  let r: DaemonHandle;
  const OTHER = 65533;
  beforeAll(async () => {
    r = await startDaemon({ config: `[authz]\nallowed_uids = [65534, ${OTHER}]\n` });
    chmodSync(r.home, 0o755);
    chmodSync(join(r.home, "run"), 0o755);
    chmodSync(r.socket, 0o666);
  });
  afterAll(async () => {
    await r.stop();
    cleanup(r.home);
  });
  const as = (uid: number, args: string[]) =>
    cli(r.home, args, { uid, env: { PLANTER_SOCKET: r.socket, HOME: "/tmp" } });

  test("the owner changes its cell; another user is refused and nothing changes; root may", async () => {
    expect((await as(65534, ["cell", "create", "mine", "--net", "none"])).code).toBe(0);
    const was = await r.client.getCell("mine");
    expect(was.owner_uid).toBe(65534);
    const other = await as(OTHER, ["cell", "update", "mine", "--net", "host"]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`planter: cell mine belongs to uid 65534, not to you (uid ${OTHER})`);
    expect(await r.client.getCell("mine")).toEqual(was);
    expect((await as(65534, ["cell", "update", "mine", "--net", "host"])).code).toBe(0);
    expect((await r.client.getCell("mine")).sandbox.policy?.network).toBe("host");
    expect((await cli(r.home, ["cell", "update", "mine", "--net", "none"])).code).toBe(0);
    expect((await r.client.getCell("mine")).sandbox.policy?.network).toBe("none");
  });

  test("an owner may keep the env.pass names root gave its cell, never add one", async () => {
    // A cell 65534 owns, to which root gives an env.pass name.
    expect((await as(65534, ["cell", "create", "owned"])).code).toBe(0);
    await r.client.updateCell("owned", { sandbox: { policy: { env: { pass: ["LANG"] } } } });
    const kept = await as(65534, ["cell", "update", "owned", "--net", "host"]);
    expect(kept.code).toBe(0);
    expect((await r.client.getCell("owned")).sandbox.policy).toEqual({ env: { pass: ["LANG"] }, network: "host" });
    const f = join(files, "pass.json");
    writeFileSync(f, JSON.stringify({ env: { pass: ["LANG", "PATH"] } }));
    chmodSync(f, 0o644);
    const added = await as(65534, ["cell", "update", "owned", "--policy", f]);
    expect(added.code).toBe(1);
    expect(added.stderr).toContain("only root may name them (PATH)");
    expect((await r.client.getCell("owned")).sandbox.policy).toEqual({ env: { pass: ["LANG"] }, network: "host" });
  });
});
