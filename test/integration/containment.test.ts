/**
 * Unsafe paths and modes are refused at the API with the path and the reason, and every refusal
 * changes nothing: the cell list, the job list and the event stream stay as they were.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type { EventRecord, Job } from "../../lib/api/contract.ts";
import type { PlanterError } from "../../lib/api/errors.ts";
import type { Policy } from "../../lib/sandbox/policy.ts";
import { cleanup, type DaemonHandle, startDaemon, tempHome, waitFor } from "../harness.ts";

let d: DaemonHandle;
let work: string;
const root = process.getuid?.() === 0;

beforeAll(async () => {
  d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\n' });
  // planterd records its start just after it answers: let that land before counting events.
  await waitFor(async () => {
    for await (const e of d.client.events({})) if (e.kind === "daemon.started") return true;
    return false;
  }, "daemon.started");
  work = tempHome("pt-cont");
  // A directory anyone may write, like /tmp (tempHome makes one only for root): a symlink there is never followed.
  chmodSync(work, 0o1777);
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
  cleanup(work);
});

/** What a refusal must leave as it was. */
async function state() {
  const cells = (await d.client.listCells()).cells.map((c) => c.name);
  const jobs = (await d.client.listJobs({})).jobs.length;
  let events = 0;
  for await (const _ of d.client.events({})) events++;
  return { cells, jobs, events };
}

async function refused(call: () => Promise<unknown>): Promise<PlanterError> {
  const before = await state();
  const e = (await call().catch((x) => x)) as PlanterError;
  expect(e.code).toBe("E_BAD_REQUEST");
  expect(await state()).toEqual(before);
  return e;
}

describe("cell dirs", () => {
  const state_ = () => join(d.home, "state");
  test.each([
    ["/", "it is the root directory"],
    ["/etc", "it is a system directory"],
    ["/usr/", "it is a system directory"],
    ["/var/../usr", "it is a system directory"],
  ])("%p is refused: %s", async (dir, why) => {
    const e = await refused(() => d.client.createCell({ name: "bad", dir }));
    expect(e.message).toContain(why);
  });

  test("planter's own state, with a trailing slash, through .., or through a symlink, is refused", async () => {
    const link = join(work, "to-state");
    symlinkSync(state_(), link);
    for (const dir of [`${state_()}/`, `${state_()}/cells/..`, join(state_(), "jobs")]) {
      const e = await refused(() => d.client.createCell({ name: "bad", dir }));
      expect(e.message).toContain("overlaps planter's own state, socket or config");
    }
    // The link itself lies where anyone may write (/tmp): never followed.
    const viaLink = await refused(() => d.client.createCell({ name: "bad", dir: link }));
    expect(viaLink.message).toContain(`${link} is a symlink (to ${state_()}) in a directory anyone may write`);
    // A dir that contains the state dir is refused as well.
    const e = await refused(() => d.client.createCell({ name: "bad", dir: d.home }));
    expect(e.message).toContain("overlaps planter's own");
  });

  test("a home dir itself is refused", async () => {
    const e = await refused(() => d.client.createCell({ name: "bad", dir: homedir() }));
    // /root is a system directory too; another user's home is refused as a home.
    expect(e.message).toMatch(homedir() === "/root" ? /it is a system directory/ : /it is a home directory itself/);
  });

  test("overlapping cells are refused, inner and outer", async () => {
    const outer = join(work, "outer");
    mkdirSync(join(outer, "inner"), { recursive: true });
    await d.client.createCell({ name: "outer", dir: outer });
    const inner = await refused(() => d.client.createCell({ name: "inner", dir: join(outer, "inner") }));
    expect(inner.message).toContain(`it overlaps another cell's dir (${outer})`);
    const wider = await refused(() => d.client.createCell({ name: "wider", dir: work }));
    expect(wider.message).toContain("overlaps another cell's dir");
  });

  test("a dir reached through a symlink planted in a cell is refused", async () => {
    const proj = join(work, "proj");
    const elsewhere = join(work, "elsewhere");
    mkdirSync(proj);
    mkdirSync(elsewhere);
    await d.client.createCell({ name: "proj", dir: proj });
    symlinkSync(elsewhere, join(proj, "planted"));
    const e = await refused(() => d.client.createCell({ name: "via", dir: join(proj, "planted") }));
    expect(e.message).toContain(`${join(proj, "planted")} is a symlink (to ${elsewhere}) in a tree jobs can write`);
  });
});

describe("policies", () => {
  test("a read_write path through a symlink a job planted in its cell is refused, for cells and jobs", async () => {
    const cell = join(work, "sym");
    mkdirSync(cell);
    if (root) chownSync(cell, 65534, 65534);
    await d.client.createCell({ name: "sym", dir: cell });
    // What an earlier job could leave: a link to somewhere the user never meant to expose.
    symlinkSync("/root", join(cell, "data"));
    const e = await refused(() =>
      d.client.createJob({ cell: "sym", argv: ["true"], sandbox: { policy: { read_only: [join(cell, "data")] } } }),
    );
    expect(e.message).toContain(`${join(cell, "data")} is a symlink (to /root) in a tree jobs can write`);
    const c = await refused(() =>
      d.client.createCell({ name: "sym2", sandbox: { policy: { read_write: [join(cell, "data")] } } }),
    );
    expect(c.message).toContain("is a symlink (to /root)");
  });

  test.each([
    [{ read_write: ["/"] }, "the root directory cannot be writable"],
    [{ read_write: ["/usr"] }, "a system directory cannot be writable"],
    [{ read_write: ["/var/.."] }, "the root directory cannot be writable"],
  ])("%p is refused: %s", async (policy, why) => {
    const e = await refused(() => d.client.createCell({ name: "p", sandbox: { policy } }));
    expect(e.message).toContain(why);
  });

  test.each([["/proc"], ["/proc/1"], ["/dev"], ["/dev/shm"], ["/sys"], ["/"]])(
    "the host's kernel interfaces are never bound: read_only %p is refused",
    async (path) => {
      const e = await refused(() => d.client.createJob({ argv: ["true"], sandbox: { policy: { read_only: [path] } } }));
      expect(e.message).toMatch(/it overlaps \/(proc|dev|sys), which the sandbox provides itself/);
    },
  );

  test.each([["/dev/shm"], ["/dev"], ["/proc/1"], ["/sys/kernel"], ["/"]])(
    "a deny path in (or over) the sandbox's own kernel dirs is refused: %p (it would cover the sandbox's own)",
    async (path) => {
      const e = await refused(() => d.client.createJob({ argv: ["true"], sandbox: { policy: { deny: [path] } } }));
      expect(e.message).toMatch(
        /^sandbox deny path \S+: it overlaps \/(proc|dev|sys), which the sandbox provides itself/,
      );
    },
  );

  test("planter's state, socket dir or config dir in any bind is refused; a writable bind may not contain them", async () => {
    for (const path of [join(d.home, "state"), join(d.home, "run"), join(d.home, "state", "jobs")]) {
      const e = await refused(() => d.client.createJob({ argv: ["true"], sandbox: { policy: { read_only: [path] } } }));
      expect(e.message).toContain("overlaps planter's own state, socket or config");
    }
    const around = await refused(() =>
      d.client.createCell({ name: "around", sandbox: { policy: { read_write: [d.home] } } }),
    );
    expect(around.message).toContain("overlaps planter's own state, socket or config");
  });

  test("a unix_sockets path that is no socket, and a denied file with another hard link, are refused", async () => {
    const file = join(work, "plain");
    writeFileSync(file, "x");
    const s = await refused(() => d.client.createCell({ name: "s", sandbox: { policy: { unix_sockets: [file] } } }));
    expect(s.message).toBe(`sandbox unix_sockets path ${file} is not a Unix socket`);
    const secret = join(work, "secret");
    writeFileSync(secret, "k");
    linkSync(secret, join(work, "secret-alias"));
    const h = await refused(() => d.client.createCell({ name: "h", sandbox: { policy: { deny: [secret] } } }));
    expect(h.message).toContain(`sandbox deny path ${secret}: it has 1 other hard link(s)`);
    // A denied dir holding a file linked from elsewhere is refused too.
    mkdirSync(join(work, "keys"));
    writeFileSync(join(work, "keys", "id"), "k");
    linkSync(join(work, "keys", "id"), join(work, "id-alias"));
    const dir = await refused(() =>
      d.client.createCell({ name: "h2", sandbox: { policy: { deny: [join(work, "keys")] } } }),
    );
    expect(dir.message).toContain(`${join(work, "keys", "id")} has other hard link(s)`);
  });

  test("a job may raise its cell's mode, never lower it", async () => {
    const e = await refused(() => d.client.createJob({ argv: ["true"], sandbox: { mode: "disabled" } }));
    expect(e.message).toBe("sandbox mode disabled would lower the default mode enforced");
    expect(e.hint).toContain("never lower it");
    await d.client.createCell({ name: "loose", sandbox: { mode: "permissive" } });
    const raised = await d.client.createJob({ cell: "loose", argv: ["true"], sandbox: { mode: "enforced" } });
    expect(raised.sandbox.mode).toBe("enforced");
    // Its end is an event: let it land before the next refusal counts events.
    expect((await d.client.waitJob(raised.id, 10_000)).job.state).toBe("exited");
  });

  test("a policy that widens its cell's is refused: workspace allow, unix sockets, hidden read_only", async () => {
    const cases: [Policy, string][] = [
      [{ workspace_config: "allow" }, "workspace_config allow on a protecting cell"],
      [{ read_only: [homedir()] }, `read_only ${homedir()} is hidden in the cell`],
    ];
    for (const [policy, what] of cases) {
      const e = await refused(() => d.client.createJob({ argv: ["true"], sandbox: { policy } }));
      expect(e.message).toContain(what);
    }
  });
});

describe("missing deny paths", () => {
  test("a placeholder of a job that ended while planterd was down is removed by the restarted planterd", async () => {
    const home = tempHome("pt-ph");
    const dir = join(tempHome("pt-phc"), "proj");
    mkdirSync(dir, { mode: 0o755 });
    if (root) chownSync(dir, 65534, 65534);
    const config = '[sandbox]\nmode = "enforced"\n';
    let p = await startDaemon({ home, config });
    try {
      await p.client.createCell({ name: "held", dir, sandbox: { policy: { deny: [join(dir, ".env")] } } });
      const j = await p.client.createJob({
        cell: "held",
        argv: ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; cat .env; echo done"],
      });
      await waitFor(async () => (await p.client.getJob(j.id)).state === "running", "the job to run");
      expect(existsSync(join(dir, ".env"))).toBe(true);
      await p.stop();
      writeFileSync(join(dir, "go"), "");
      await waitFor(
        () => existsSync(join(home, "state", "jobs", j.id, "exit")),
        "the job to end while planterd is down",
      );
      p = await startDaemon({ home, config });
      const done = (await p.client.waitJob(j.id, 20_000)).job;
      expect([done.state, done.exit_code]).toEqual(["exited", 0]);
      expect(existsSync(join(dir, ".env"))).toBe(false);
      expect(existsSync(join(home, "state", "jobs", j.id, "placeholders.json"))).toBe(false);
    } finally {
      await p.stop();
      cleanup(home);
      cleanup(dirname(dir));
    }
  });
});

describe("the gate after a restart", () => {
  test("a job whose gate a previous planterd never answered is ended by the next one (it never ran), one it let go is adopted", async () => {
    const home = tempHome("pt-gate");
    const config = '[sandbox]\nmode = "enforced"\nwarm_ms = 0\n';
    let p = await startDaemon({ home, config });
    try {
      const jobs = [];
      for (let i = 0; i < 2; i++)
        jobs.push(await p.client.createJob({ argv: ["sh", "-c", "echo up; exec sleep 300"] }));
      const [cut, kept] = jobs as [Job, Job];
      const out = (id: string) => join(home, "state", "jobs", id, "stdout");
      for (const j of jobs)
        await waitFor(() => existsSync(out(j.id)) && readFileSync(out(j.id), "utf8") === "up\n", "the job");
      await p.stop();
      // The moment a planterd killed at its gate leaves behind: the mark of the spawn, none of the release.
      rmSync(join(home, "state", "jobs", cut.id, "view.ok"));
      p = await startDaemon({ home, config });
      const done = (await p.client.waitJob(cut.id, 20_000)).job;
      expect([done.state, done.reason]).toEqual(["killed", "sandbox_changed"]);
      const events: EventRecord[] = [];
      for await (const e of p.client.events({ limit: 10_000 })) events.push(e);
      const why = events.find((e) => e.kind === "job.sandbox_changed" && e.subject === `job/${cut.id}`);
      expect(why?.data.message).toBe("planterd stopped before it had checked the job's sandbox: the job never ran");
      expect((await p.client.getJob(kept.id)).state).toBe("running");
      await p.client.killJob(kept.id, {});
    } finally {
      await p.stop();
      cleanup(home);
    }
  });
});

describe("the view guard", () => {
  test("a job adopted by a restarted planterd is still stopped when the host replaces a denied path", async () => {
    const home = tempHome("pt-vg");
    const dir = join(tempHome("pt-vgc"), "proj");
    mkdirSync(dir, { mode: 0o755 });
    writeFileSync(join(dir, ".env"), "TOKEN=old\n");
    if (root) chownSync(dir, 65534, 65534);
    const config = '[sandbox]\nmode = "enforced"\n';
    let p = await startDaemon({ home, config });
    try {
      await p.client.createCell({ name: "g", dir, sandbox: { policy: { deny: [join(dir, ".env")] } } });
      const j = await p.client.createJob({
        cell: "g",
        argv: ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; cat .env; echo done"],
      });
      await waitFor(async () => (await p.client.getJob(j.id)).state === "running", "the job to run");
      expect(existsSync(join(home, "state", "jobs", j.id, "guard.json"))).toBe(true);
      await p.stop();
      p = await startDaemon({ home, config });
      await waitFor(async () => (await p.client.getJob(j.id)).state === "running", "the job to be adopted");
      writeFileSync(join(dir, ".env.new"), "TOKEN=new\n");
      renameSync(join(dir, ".env.new"), join(dir, ".env"));
      const done = (await p.client.waitJob(j.id, 20_000)).job;
      expect([done.state, done.reason]).toEqual(["killed", "sandbox_changed"]);
      writeFileSync(join(dir, "go"), "");
    } finally {
      await p.stop();
      cleanup(home);
      cleanup(dirname(dir));
    }
  });
});
