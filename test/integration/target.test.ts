/**
 * `--target lima|local`: client commands reach the agent in the Lima VM (the fake limactl's guest
 * root with a real planterd) or this host's planterd started beside it; directories given to the
 * VM must lie on its mounts. Nothing here has run against a real Lima VM.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { hostLimaArch, renderLimaTemplate } from "../../lib/host/lima.ts";
import { cleanup, type DaemonHandle, PLANTER, startDaemon } from "../harness.ts";
import { fakeLimactl, haveLimaTools, type LimaHost, limaHost, planterBinary, runWith } from "../lima-fixture.ts";

const work = mkdtempSync("/tmp/pt-target-");
let h: LimaHost;
let local: DaemonHandle;
/** A second mounted directory the guest sees at another path. */
let other: string;
/** The client's environment: PLANTER_HOME is the local daemon's, LIMA_HOME the VM's. */
let env: Record<string, string>;

const planter = (extra: Record<string, string>, ...args: string[]) =>
  runWith({ ...env, ...extra }, [process.execPath, PLANTER, ...args]);
type JobRow = { id: string; argv: string[]; cwd: string; cell: string };
const vmJobs = async () =>
  JSON.parse((await planter({}, "--target", "lima", "job", "ls", "--json")).stdout) as JobRow[];
const localJobs = async () => (await local.client.listJobs({})).jobs as JobRow[];

beforeAll(async () => {
  if (!haveLimaTools) return;
  const bin = await planterBinary();
  h = limaHost(work, "host");
  other = join(h.base, "other");
  mkdirSync(join(other, "sub"), { recursive: true });
  // The VM: the installer's template plus a mount the guest sees elsewhere (mountPoint).
  const tpl = renderLimaTemplate({
    name: "planter",
    cpus: 1,
    memory: "1GiB",
    disk: "10GiB",
    vmType: "qemu",
    mounts: [h.mount],
    arch: hostLimaArch(),
  }).replace(
    "  writable: true\n",
    `  writable: true\n- location: ${JSON.stringify(other)}\n  mountPoint: "/mnt/other"\n  writable: true\n`,
  );
  await Bun.write(join(work, "planter.yaml"), tpl);
  expect((await fakeLimactl(h.env, "create", "--name", "planter", join(work, "planter.yaml"))).code).toBe(0);
  const i = await runWith(h.env, [process.execPath, PLANTER, "install", "--user", "--lima", "--lima-binary", bin]);
  if (i.code !== 0) throw new Error(`install --lima failed: ${i.stderr}`);
  // A host daemon beside the VM: what target local reaches. Its config has a [client] section.
  const home = join(work, "local");
  mkdirSync(home);
  local = await startDaemon({ home, config: '[client]\ntarget = "local"\n' });
  env = { ...h.env, PLANTER_HOME: home };
}, 120_000);

afterAll(async () => {
  if (haveLimaTools) {
    await local?.stop();
    await fakeLimactl(h.env, "delete", "--force", "planter");
  }
  cleanup(work);
}, 60_000);

describe.skipIf(!haveLimaTools)("targets (fake limactl: guest root under bubblewrap; needs root)", () => {
  test("--target lima runs the job in the VM's agent, not on the host daemon beside it", async () => {
    const r = await planter({}, "--target", "lima", "run", "--", "echo", "hi");
    expect(r).toEqual({ code: 0, stdout: "hi\n", stderr: "" });
    const jobs = await vmJobs();
    expect(jobs.map((j) => j.argv)).toEqual([["echo", "hi"]]);
    const id = (jobs[0] as JobRow).id;
    // The VM's own state holds the job's logs; its events name it; the host daemon saw nothing.
    expect(readFileSync(join(h.guest, "var/lib/planter/jobs", id, "stdout"), "utf8")).toBe("hi\n");
    const events = (await planter({}, "events", "--target", "lima", "--json")).stdout;
    expect(events).toContain(`"subject":"job/${id}"`);
    expect(await localJobs()).toEqual([]);
    // Only the guest has the layout sentinel: the job saw the guest's /etc.
    expect(await planter({}, "run", "--target=lima", "--", "cat", "/etc/planter/lima-layout")).toMatchObject({
      code: 0,
      stdout: "socket-activated-v1\n",
    });
  }, 30_000);

  test("PLANTER_TARGET and the config default pick the VM; --target local and PLANTER_TARGET=local override; --socket wins", async () => {
    const before = (await vmJobs()).length;
    expect((await planter({ PLANTER_TARGET: "lima" }, "run", "--", "true")).code).toBe(0);
    const config = join(work, "client-lima.toml");
    await Bun.write(config, '[client]\ntarget = "lima"\n\n[sandbox]\nmode = "disabled"\n');
    expect((await planter({ PLANTER_CONFIG: config }, "run", "--", "true")).code).toBe(0);
    expect((await vmJobs()).length).toBe(before + 2);
    expect(await localJobs()).toEqual([]);

    expect((await planter({ PLANTER_CONFIG: config }, "--target", "local", "run", "--", "echo", "a")).code).toBe(0);
    expect((await planter({ PLANTER_CONFIG: config, PLANTER_TARGET: "local" }, "run", "--", "echo", "b")).code).toBe(0);
    expect((await planter({ PLANTER_TARGET: "lima" }, "run", "--socket", local.socket, "--", "echo", "c")).code).toBe(
      0,
    );
    expect((await localJobs()).map((j) => j.argv)).toEqual([
      ["echo", "a"],
      ["echo", "b"],
      ["echo", "c"],
    ]);
    expect((await vmJobs()).length).toBe(before + 2);

    // A bad value is refused, naming where it came from.
    const bad = await planter({ PLANTER_TARGET: "vm" }, "job", "ls");
    expect([bad.code, bad.stderr]).toEqual([
      2,
      'planter: PLANTER_TARGET must be one of local, lima, not "vm"\nhint: local: this host\'s planterd; lima: the agent in the Lima VM; others are added with `planter target add NAME URL` (docs/usage.md "Targets")\n',
    ]);
    await Bun.write(config, '[client]\ntarget = "vm"\n');
    const badConfig = await planter({ PLANTER_CONFIG: config }, "job", "ls");
    expect(badConfig.code).toBe(1);
    expect(badConfig.stderr).toContain(`invalid config ${config}`);
    expect(badConfig.stderr).toContain("client.target");
  }, 30_000);

  test("a directory on a mount works (at the guest's path); one outside is refused with a hint naming the mounts", async () => {
    // (The guest's jobs are sandboxed: a --cwd must lie in the cell's directory, so each test dir is a cell.)
    const proj = join(h.mount, "proj");
    mkdirSync(join(proj, "sub"), { recursive: true });
    // Root's cell runs its jobs as nobody in the guest: the project must be theirs to write.
    chownSync(proj, 65534, 65534);
    const created = await planter({}, "cell", "--target", "lima", "create", "proj", "--dir", proj);
    expect(created).toEqual({ code: 0, stdout: `created cell proj at ${proj}\n`, stderr: "" });
    const inCell = await planter({}, "--target", "lima", "run", "--cell", "proj", "--", "sh", "-c", "pwd; echo x > f");
    expect(inCell).toEqual({ code: 0, stdout: `${proj}\n`, stderr: "" });
    expect(readFileSync(join(proj, "f"), "utf8")).toBe("x\n");
    const sub = await planter({}, "--target", "lima", "run", "--cell", "proj", "--cwd", join(proj, "sub"), "--", "pwd");
    expect(sub).toEqual({ code: 0, stdout: `${join(proj, "sub")}\n`, stderr: "" });

    // A mount the guest sees at another path: the directory and the cwd are sent as the guest's paths.
    const moved = await planter({}, "--target", "lima", "cell", "create", "other", "--dir", other);
    expect(moved).toEqual({ code: 0, stdout: "created cell other at /mnt/other\n", stderr: "" });
    const cwd = await planter(
      {},
      "--target",
      "lima",
      "run",
      "--cell",
      "other",
      "--cwd",
      join(other, "sub"),
      "--",
      "pwd",
    );
    expect(cwd).toEqual({ code: 0, stdout: "/mnt/other/sub\n", stderr: "" });

    const outside = join(work, "outside");
    mkdirSync(outside);
    const mounts = `the VM mounts: ${h.mount}, ${other} → /mnt/other.`;
    const before = (await vmJobs()).length;
    const refused = await planter({}, "--target", "lima", "run", "--cwd", outside, "--", "pwd");
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`planter: --cwd ${outside} is not on a directory the Lima VM planter mounts`);
    expect(refused.stderr).toContain(`hint: ${mounts}`);
    const cell = await planter({ PLANTER_TARGET: "lima" }, "cell", "create", "out", "--dir", outside);
    expect(cell.code).toBe(2);
    expect(cell.stderr).toContain(`planter: --dir ${outside} is not on a directory the Lima VM planter mounts`);
    expect(cell.stderr).toContain(mounts);
    expect((await vmJobs()).length).toBe(before);
    expect((await planter({}, "--target", "lima", "cell", "ls", "--json")).stdout).not.toContain('"out"');
    // The same directory is fine for the host daemon.
    expect((await planter({}, "run", "--cwd", outside, "--", "pwd")).stdout).toBe(`${outside}\n`);
  }, 30_000);

  test("no VM: exit 3 with the hints; --version and doctor do not care about the target", async () => {
    const none = { LIMA_HOME: join(work, "no-lima"), PLANTER_TARGET: "lima" };
    const r = await planter(none, "run", "--", "true");
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(
      `planter: the Lima VM planter is not running or not installed: no forwarded planterd socket at ${join(work, "no-lima", "planter", "sock", "planterd.sock")} (target lima, from PLANTER_TARGET)`,
    );
    expect(r.stderr).toContain("`limactl start planter`");
    expect(r.stderr).toContain("`planter install --lima`");
    expect((await planter(none, "logs", "J1")).code).toBe(3);
    expect((await planter(none, "--version")).code).toBe(0);
    const doctor = await planter(none, "doctor", "daemon", "--json");
    expect(JSON.parse(doctor.stdout).checks.length).toBeGreaterThan(0);
    expect(existsSync(join(work, "no-lima"))).toBe(false);
  }, 30_000);
});
