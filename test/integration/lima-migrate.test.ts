/**
 * migrate lima against the fake limactl (test/shims/limactl): a guest root in the older layout
 * (plans/design.md "## Lima (#7)": planter-agent.service binding its own socket, no sentinel, no
 * group planter) is moved to the socket-activated layout, then a job runs through the forwarded
 * host socket. Nothing here has run against a real Lima VM.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join, relative } from "node:path";
import { sha256File } from "../../lib/host/install-state.ts";
import { GUEST_UNITS, hostLimaArch } from "../../lib/host/lima.ts";
import { renderServiceUnit, renderSocketUnit } from "../../lib/host/systemd.ts";
import { cleanup, waitFor } from "../harness.ts";
import { OTHER_COMMIT, planterWith as planter, runWith as run, TEST_COMMIT } from "../host-fixture.ts";
import { alive, fakeVms, haveLimaTools, fakeLimactl as limactl, limaHosts, planterBinary } from "../lima-fixture.ts";

const work = mkdtempSync("/tmp/pt-lima-migrate-");
let current = "";
let older = "";

beforeAll(async () => {
  if (!haveLimaTools) return;
  // Two builds that differ only in their commit: the older one runs in the older layout.
  [current, older] = await Promise.all([planterBinary(), planterBinary(OTHER_COMMIT)]);
});

const hosts = limaHosts(work);
afterAll(async () => {
  await hosts.deleteVms();
  cleanup(work);
}, 60_000);

/** A fresh host (test/lima-fixture.ts, nothing to mount) whose VM afterAll deletes. */
const host = (name: string) => hosts.host(name, { mount: false });

const migrate = (env: Record<string, string>, ...args: string[]) =>
  planter(env, "migrate", "lima", "--lima-binary", current, ...args);
const status = async (env: Record<string, string>) => (await fakeVms(env)).map((v) => v.status);

/** The older agent's unit: it binds its own socket (no socket unit), as root with the daemon's own 0600. */
const OLD_AGENT = `[Unit]
Description=planter agent (older layout)

[Service]
ExecStart=/usr/local/bin/planter daemon
Environment=PLANTER_MODE=system
Environment=PLANTER_SOCKET=/run/planter-agent/agent.sock
Environment=PLANTER_STATE=/var/lib/planter
Restart=always

[Install]
WantedBy=multi-user.target
`;

/**
 * A VM `planter` in the older layout, running: a template that forwards the guest socket but
 * provisions nothing, then the older agent written into the guest root and started at boot.
 */
async function olderVm(h: ReturnType<typeof host>, forward = "/run/planter/planterd.sock") {
  const tpl = join(h.base, "older.yaml");
  writeFileSync(
    tpl,
    [
      "vmType: vz",
      `arch: ${hostLimaArch()}`,
      "mounts: []",
      "portForwards:",
      `- guestSocket: "${forward}"`,
      '  hostSocket: "{{.Dir}}/sock/planterd.sock"',
      "",
    ].join("\n"),
  );
  expect((await limactl(h.env, "create", "--name", "planter", tpl)).code).toBe(0);
  const units = join(h.guest, "etc/systemd/system");
  mkdirSync(join(units, "multi-user.target.wants"), { recursive: true });
  writeFileSync(join(units, "planter-agent.service"), OLD_AGENT);
  symlinkSync("../planter-agent.service", join(units, "multi-user.target.wants/planter-agent.service"));
  copyFileSync(older, join(h.guest, "usr/local/bin/planter"));
  expect((await limactl(h.env, "start", "planter")).code).toBe(0);
  // The older agent answers on its own socket.
  const oldSocket = join(h.guest, "run/planter-agent/agent.sock");
  // The socket file appears at bind, a moment before the agent accepts: wait for an answer.
  const v = (await waitFor(
    () =>
      existsSync(oldSocket) &&
      fetch("http://planterd/v1/version", { unix: oldSocket }).then(
        (r) => r.json(),
        () => null,
      ),
    "the older agent to answer on its socket",
  )) as { commit: string };
  expect(v.commit).toBe(OTHER_COMMIT);
}

/** Files under the guest's /etc, /usr/local and /run with hashes and modes. */
function guestTree(guest: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const st = statSync(p, { throwIfNoEntry: false });
      const mode = st ? (st.mode & 0o7777).toString(8) : "dangling";
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(`${relative(guest, p)} ${Bun.hash(readFileSync(p)).toString(16)} ${mode}`);
      else out.push(`${relative(guest, p)} ${e.isSymbolicLink() ? "link" : "other"} ${mode} ${st?.uid}:${st?.gid}`);
    }
  };
  for (const d of ["etc", "usr/local", "run"]) walk(join(guest, d));
  return out.sort();
}
const pidOf = (guest: string, unit: string) =>
  Number(readFileSync(join(guest, "run/fake-systemd", `${unit}.pid`), "utf8"));

describe.skipIf(!haveLimaTools)("migrate lima (fake limactl: guest root under bubblewrap; needs root)", () => {
  test("older layout: --dry-run changes nothing; migrate; a job runs through the host socket; again: nothing to do", async () => {
    const h = host("older");
    await olderVm(h);
    const g = h.guest;
    const agentPid = pidOf(g, "planter-agent.service");

    // --dry-run: the plan, and not one byte changed in the guest.
    const before = guestTree(g);
    const dry = await migrate(h.env, "--dry-run", "--json");
    expect(dry.code).toBe(0);
    const plan = JSON.parse(dry.stdout) as { outcome: string; steps: { id: string; description: string }[] };
    expect(plan.outcome).toBe("planned");
    // The guest user is root here (the fake runs as the test's user): no separate group step.
    expect(plan.steps.map((s) => s.id)).toEqual(["stop-old", "copy", "units", "ready", "sentinel"]);
    expect(plan.steps[0]?.description).toContain("/run/planter-agent/agent.sock");
    const text = await migrate(h.env, "--dry-run");
    expect(text.stdout.split("\n")[0]).toBe("planter Lima migration plan (VM planter); nothing was changed:");
    expect(guestTree(g)).toEqual(before);
    expect(alive(agentPid)).toBe(true);

    const m = await migrate(h.env);
    expect(m.stderr).not.toContain("planter: ");
    expect(m.code).toBe(0);
    expect(m.stdout.split("\n")[0]).toBe("migrated VM planter to the socket-activated layout:");

    // The older agent is gone: stopped, disabled, its unit and socket removed.
    expect(alive(agentPid)).toBe(false);
    expect(existsSync(join(g, "etc/systemd/system/planter-agent.service"))).toBe(false);
    expect(existsSync(join(g, "etc/systemd/system/multi-user.target.wants/planter-agent.service"))).toBe(false);
    expect(existsSync(join(g, "run/planter-agent/agent.sock"))).toBe(false);
    // The socket-activated layout: units, this binary, group with the guest user, socket root:planter 0660, sentinel.
    expect(readFileSync(join(g, "etc/systemd/system/planterd.socket"), "utf8")).toBe(renderSocketUnit(GUEST_UNITS));
    expect(readFileSync(join(g, "etc/systemd/system/planterd.service"), "utf8")).toBe(renderServiceUnit(GUEST_UNITS));
    expect(existsSync(join(g, "etc/systemd/system/sockets.target.wants/planterd.socket"))).toBe(true);
    expect(sha256File(join(g, "usr/local/bin/planter"))).toBe(sha256File(current));
    const groupLine = readFileSync(join(g, "etc/group"), "utf8")
      .split("\n")
      .find((l) => l.startsWith("planter:")) as string;
    expect(groupLine.split(":")[3]?.split(",")).toContain("root");
    const sock = statSync(join(g, "run/planter/planterd.sock"));
    expect([sock.isSocket(), sock.uid, sock.gid, sock.mode & 0o777]).toEqual([
      true,
      0,
      Number(groupLine.split(":")[2]),
      0o660,
    ]);
    expect(readFileSync(join(g, "etc/planter/lima-layout"), "utf8")).toBe("socket-activated-v1\n");
    expect(existsSync(join(g, "tmp/planter.new"))).toBe(false);
    expect(existsSync(join(g, "tmp/planter-lima-layout"))).toBe(false);

    // A job through the forwarded host socket runs in the guest, served by the current binary.
    const job = await planter({ ...h.env, PLANTER_SOCKET: h.socket }, "run", "--", "cat", "/etc/planter/lima-layout");
    expect(job).toEqual({ code: 0, stdout: "socket-activated-v1\n", stderr: "" });
    const v = (await fetch("http://planterd/v1/version", { unix: h.socket }).then((r) => r.json())) as {
      commit: string;
    };
    expect(v.commit).toBe(TEST_COMMIT);

    // Second run: nothing to do, nothing changes, the same planterd serves.
    const pid = pidOf(g, "planterd.socket");
    const after = guestTree(g);
    const again = await migrate(h.env);
    expect(again).toEqual({
      code: 0,
      stdout: "VM planter is in the socket-activated layout with this planter; nothing to do\n",
      stderr: "",
    });
    expect(guestTree(g)).toEqual(after);
    expect(pidOf(g, "planterd.socket")).toBe(pid);

    // doctor agrees (the current binary is the one in the VM).
    const doctor = JSON.parse((await run(h.env, [current, "doctor", "lima", "--json", "--timeout", "30s"])).stdout) as {
      checks: { id: string; status: string }[];
    };
    expect(doctor.checks.filter((c) => c.status !== "ok")).toEqual([]);
  }, 90_000);

  test("the dry run's plan is the list of steps the migration then runs", async () => {
    const h = host("same-plan");
    await olderVm(h);
    type Steps = { steps: { id: string; description: string; outcome?: string }[] };
    const listed = (r: Steps) => r.steps.map(({ id, description }) => ({ id, description }));
    const dry = JSON.parse((await migrate(h.env, "--dry-run", "--json")).stdout) as Steps;
    const m = await migrate(h.env, "--json");
    expect(m.code).toBe(0);
    const ran = JSON.parse(m.stdout) as Steps;
    expect(listed(ran)).toEqual(listed(dry));
    expect(ran.steps.map((s) => s.outcome)).toEqual(dry.steps.map(() => "applied"));
  }, 90_000);

  test("a stopped VM is refused with a hint; --dry-run --start plans the start only; --start migrates it", async () => {
    const h = host("stopped");
    await olderVm(h);
    expect((await limactl(h.env, "stop", "planter")).code).toBe(0);
    const before = guestTree(h.guest);

    const refused = await migrate(h.env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("VM planter is Stopped: migrate lima needs it running");
    expect(refused.stderr).toContain("planter migrate lima --start");
    expect(await status(h.env)).toEqual(["Stopped"]);

    const dry = await migrate(h.env, "--start", "--dry-run", "--json");
    expect(dry.code).toBe(0);
    expect((JSON.parse(dry.stdout) as { steps: { id: string }[] }).steps.map((s) => s.id)).toEqual(["start"]);
    expect(await status(h.env)).toEqual(["Stopped"]);
    expect(guestTree(h.guest)).toEqual(before);

    const m = await migrate(h.env, "--start", "--json");
    expect(m.code).toBe(0);
    const r = JSON.parse(m.stdout) as { outcome: string; started: boolean; steps: { id: string }[] };
    expect([r.outcome, r.started, r.steps.map((s) => s.id)]).toEqual([
      "migrated",
      true,
      ["start", "stop-old", "copy", "units", "ready", "sentinel"],
    ]);
    expect(await status(h.env)).toEqual(["Running"]);
    const job = await planter({ ...h.env, PLANTER_SOCKET: h.socket }, "run", "--", "true");
    expect(job.code).toBe(0);
  }, 90_000);

  test("no VM: an error naming install --lima; a VM that forwards another socket is refused before any change", async () => {
    const none = host("none");
    const r = await migrate(none.env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("there is no Lima VM planter to migrate");
    expect(r.stderr).toContain("planter install --lima");

    const h = host("forward");
    await olderVm(h, "/run/planter-agent/agent.sock");
    const before = guestTree(h.guest);
    const f = await migrate(h.env);
    expect(f.code).toBe(1);
    expect(f.stderr).toContain("VM planter does not forward /run/planter/planterd.sock to the host");
    expect(f.stderr).toContain("limactl edit planter --set");
    expect(guestTree(h.guest)).toEqual(before);
  }, 90_000);
});
