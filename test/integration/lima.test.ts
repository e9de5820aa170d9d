/**
 * install --lima against the fake limactl (test/shims/limactl): a "VM" is a guest root run under
 * bubblewrap, so provisioning, the guest's socket-activated planterd and the forwarded socket are
 * real; only the virtual machine is not. Nothing here has run against a real Lima VM.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { sha256File } from "../../lib/host/install-state.ts";
import { GUEST_UNITS, hostLimaArch, limaVmType, renderLimaTemplate } from "../../lib/host/lima.ts";
import { renderServiceUnit, renderSocketUnit } from "../../lib/host/systemd.ts";
import { cleanup } from "../harness.ts";
import { OTHER_COMMIT, planterWith as planter, runWith as run } from "../host-fixture.ts";
import {
  alive,
  haveLimaTools,
  fakeLimactl as limactl,
  limaHosts,
  planterBinary,
  fakeVms as vms,
} from "../lima-fixture.ts";

const work = mkdtempSync("/tmp/pt-lima-");
let binA = "";
let binB = "";

beforeAll(async () => {
  if (!haveLimaTools) return;
  // Two builds that differ only in their commit: the second is the "upgrade".
  [binA, binB] = await Promise.all([planterBinary(), planterBinary(OTHER_COMMIT)]);
});

/** Every fake VM of every test is deleted (which stops its guest planterd) even after a failed test. */
const hosts = limaHosts(work);
afterAll(async () => {
  await hosts.deleteVms();
  cleanup(work);
}, 60_000);

/** A fresh host (test/lima-fixture.ts) whose VM afterAll deletes, and where install keeps its state. */
function host(name: string) {
  const h = hosts.host(name);
  return { ...h, stateFile: join(h.home, ".local", "state", "planter", "install-state.json") };
}

/** Files under the guest's /etc and /usr/local with their hashes and modes: what provisioning changed. */
function guestTree(guest: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile())
        out.push(
          `${relative(guest, p)} ${Bun.hash(readFileSync(p)).toString(16)} ${(statSync(p).mode & 0o777).toString(8)}`,
        );
      else out.push(`${relative(guest, p)} ${e.isSymbolicLink() ? "link" : "other"}`);
    }
  };
  for (const d of ["etc", "usr/local"]) walk(join(guest, d));
  return out.sort();
}
const guestPid = (guest: string) => Number(readFileSync(join(guest, "run/fake-systemd/planterd.socket.pid"), "utf8"));

describe.skipIf(!haveLimaTools)("install --lima (fake limactl: guest root under bubblewrap; needs root)", () => {
  test("create → copy → units → a job through the forwarded socket; again: no change; --upgrade; uninstall --purge deletes the VM", async () => {
    const h = host("full");
    const i = await planter(
      h.env,
      "install",
      "--user",
      "--lima",
      "--lima-binary",
      binA,
      "--mount",
      h.mount,
      "--cpus",
      "2",
    );
    expect(i.stderr).not.toContain("planter: ");
    expect(i.code).toBe(0);
    expect(i.stdout).toContain("planter agent in VM planter: create, start, copy, units done");

    // The VM was created from the rendered template.
    expect(readFileSync(join(h.lima, "planter", "lima.yaml"), "utf8")).toBe(
      renderLimaTemplate({
        name: "planter",
        cpus: 2,
        memory: "4GiB",
        disk: "50GiB",
        mounts: [h.mount],
        arch: hostLimaArch(),
        vmType: limaVmType(process.platform, hostLimaArch(), hostLimaArch()),
      }),
    );
    expect(await vms(h.env)).toEqual([
      expect.objectContaining({ name: "planter", status: "Running", arch: hostLimaArch() }),
    ]);

    // In the guest: the binary copied (same bytes), units, tmpfiles, sentinel, group with the guest user, socket root:planter 0660.
    const g = h.guest;
    expect(sha256File(join(g, "usr/local/bin/planter"))).toBe(sha256File(binA));
    expect(statSync(join(g, "usr/local/bin/planter")).mode & 0o777).toBe(0o755);
    expect(readFileSync(join(g, "etc/planter/lima-layout"), "utf8")).toBe("socket-activated-v1\n");
    expect(readFileSync(join(g, "etc/systemd/system/planterd.socket"), "utf8")).toBe(renderSocketUnit(GUEST_UNITS));
    expect(readFileSync(join(g, "etc/systemd/system/planterd.service"), "utf8")).toBe(renderServiceUnit(GUEST_UNITS));
    expect(existsSync(join(g, "etc/systemd/system/sockets.target.wants/planterd.socket"))).toBe(true);
    const user = Bun.spawnSync(["id", "-un"]).stdout.toString().trim();
    const groupLine = readFileSync(join(g, "etc/group"), "utf8")
      .split("\n")
      .find((l) => l.startsWith("planter:")) as string;
    expect(groupLine.split(":")[3]?.split(",")).toContain(user);
    const gid = Number(groupLine.split(":")[2]);
    const sock = statSync(join(g, "run/planter/planterd.sock"));
    expect([sock.isSocket(), sock.uid, sock.gid, sock.mode & 0o777]).toEqual([true, 0, gid, 0o660]);
    expect(statSync(join(g, "run/planter")).mode & 0o777).toBe(0o750);

    const state = JSON.parse(readFileSync(h.stateFile, "utf8"));
    expect(state.vm).toEqual({
      name: "planter",
      created_by_installer: true,
      arch: hostLimaArch(),
      host_socket: h.socket,
      binary_sha256: sha256File(binA),
    });

    // A job through the forwarded host socket with the host client: it runs in the guest (only the guest has the sentinel).
    expect(existsSync("/etc/planter/lima-layout")).toBe(false);
    const job = await planter({ ...h.env, PLANTER_SOCKET: h.socket }, "run", "--", "cat", "/etc/planter/lima-layout");
    expect(job).toEqual({ code: 0, stdout: "socket-activated-v1\n", stderr: "" });
    const pid1 = guestPid(g);

    // Second install: nothing changes in the guest, the same planterd serves.
    const before = guestTree(g);
    const again = await planter(h.env, "install", "--user", "--lima", "--lima-binary", binA, "--mount", h.mount);
    expect([again.code, again.stdout.split("\n")[0]]).toEqual([
      0,
      "planter agent in VM planter is up to date; nothing changed",
    ]);
    expect(guestTree(g)).toEqual(before);
    expect(guestPid(g)).toBe(pid1);

    // Another binary without --upgrade is refused; with it, replaced and the socket unit restarted.
    const refused = await planter(h.env, "install", "--user", "--lima", "--lima-binary", binB);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("has another planter binary");
    expect(refused.stderr).toContain("install --lima --upgrade");
    expect(sha256File(join(g, "usr/local/bin/planter"))).toBe(sha256File(binA));
    const up = await planter(h.env, "install", "--user", "--lima", "--upgrade", "--lima-binary", binB);
    expect(up.code).toBe(0);
    expect(up.stderr).toContain("replaced the binary and restarted planterd.socket in the VM");
    expect(sha256File(join(g, "usr/local/bin/planter"))).toBe(sha256File(binB));
    expect(alive(pid1)).toBe(false);
    // The new binary serves: its commit through the forwarded socket.
    const version = (await fetch("http://planterd/v1/version", { unix: h.socket }).then((r) => r.json())) as {
      commit: string;
    };
    expect(version.commit).toBe(OTHER_COMMIT);
    expect(JSON.parse(readFileSync(h.stateFile, "utf8")).vm.binary_sha256).toBe(sha256File(binB));

    // uninstall without --purge keeps the VM (and its record); --purge deletes it, which stops its planterd.
    const keep = await planter(h.env, "uninstall", "--user");
    expect(keep.code).toBe(0);
    expect(keep.stderr).toContain("kept VM planter (uninstall --purge deletes it)");
    expect((await vms(h.env)).map((v) => v.status)).toEqual(["Running"]);
    expect(JSON.parse(readFileSync(h.stateFile, "utf8")).vm.created_by_installer).toBe(true);
    const pid2 = guestPid(g);
    const purge = await planter(h.env, "uninstall", "--user", "--purge", "--yes");
    expect(purge.code).toBe(0);
    expect(purge.stderr).toContain("deleted VM planter");
    expect(await vms(h.env)).toEqual([]);
    expect(existsSync(join(h.lima, "planter"))).toBe(false);
    expect(alive(pid2)).toBe(false);
    expect(existsSync(h.stateFile)).toBe(false);
  }, 60_000);

  test("the dry run's plan is the list of steps install --lima then runs; again, copy and units are skipped", async () => {
    const h = host("same-plan");
    type Steps = { steps: { id: string; description: string; outcome?: string }[] };
    const listed = (r: Steps) => r.steps.map(({ id, description }) => ({ id, description }));
    const args = ["install", "--user", "--lima", "--lima-binary", binA, "--mount", h.mount, "--json"];
    for (const outcomes of [
      ["applied", "applied", "applied", "applied", "applied", "applied"],
      ["skipped", "skipped", "applied", "applied"],
    ]) {
      const vmsBefore = await vms(h.env);
      const stateBefore = existsSync(h.stateFile) ? readFileSync(h.stateFile, "utf8") : null;
      const dry = JSON.parse((await planter(h.env, ...args, "--dry-run")).stdout) as Steps;
      // The dry run changed nothing: no VM made or started, no record written.
      expect(await vms(h.env)).toEqual(vmsBefore);
      expect(existsSync(h.stateFile) ? readFileSync(h.stateFile, "utf8") : null).toBe(stateBefore);
      const r = await planter(h.env, ...args);
      expect(r.code).toBe(0);
      const ran = JSON.parse(r.stdout) as Steps;
      expect(listed(ran)).toEqual(listed(dry));
      expect(ran.steps.map((s) => s.outcome)).toEqual(outcomes);
    }
    expect((await planter(h.env, "uninstall", "--user", "--purge", "--yes")).code).toBe(0);
  }, 90_000);

  test("a VM install did not create is kept by uninstall --purge", async () => {
    const h = host("existing");
    const tpl = join(h.base, "mine.yaml");
    await Bun.write(
      tpl,
      renderLimaTemplate({
        name: "planter",
        cpus: 1,
        memory: "1GiB",
        disk: "10GiB",
        mounts: [],
        arch: hostLimaArch(),
        vmType: "qemu",
      }),
    );
    expect((await limactl(h.env, "create", "--name", "planter", tpl)).code).toBe(0);
    const i = await planter(h.env, "install", "--user", "--lima", "--lima-binary", binA);
    expect(i.code).toBe(0);
    // Created beforehand and stopped: install only starts it, copies and provisions.
    expect(i.stdout).toContain("start, copy, units done");
    expect(JSON.parse(readFileSync(h.stateFile, "utf8")).vm.created_by_installer).toBe(false);
    const purge = await planter(h.env, "uninstall", "--user", "--purge", "--yes");
    expect(purge.code).toBe(0);
    expect(purge.stderr).toContain("kept VM planter: install did not create it");
    expect((await vms(h.env)).map((v) => v.name)).toEqual(["planter"]);
  }, 60_000);

  test("a binary of another architecture is refused before any VM is created", async () => {
    const h = host("arch");
    const other = hostLimaArch() === "x86_64" ? "aarch64" : "x86_64";
    const i = await planter(h.env, "install", "--user", "--lima", "--arch", other, "--lima-binary", binA);
    expect(i.code).not.toBe(0);
    expect(i.stderr).toContain(`is a Linux binary for ${hostLimaArch()}, but the VM is ${other}`);
    expect(i.stderr).toContain(`--target=bun-linux-${other === "aarch64" ? "arm64" : "x64"}`);
    expect(await vms(h.env)).toEqual([]);
    expect(existsSync(join(h.guest, "usr/local/bin/planter"))).toBe(false);
    expect(existsSync(join(h.guest, "tmp/planter.new"))).toBe(false);
  }, 60_000);

  test("doctor lima: every check ok on a fresh install; a broken socket mode and a stopped VM fail, and their fixes work", async () => {
    const h = host("doctor");
    expect((await planter(h.env, "install", "--user", "--lima", "--lima-binary", binA)).code).toBe(0);
    type Report = { checks: { id: string; status: string; message: string; fix: string | null }[] };
    // binA is the binary the VM runs: its doctor expects the same version and commit.
    const doctor = async () =>
      JSON.parse((await run(h.env, [binA, "doctor", "lima", "--json", "--timeout", "30s"])).stdout) as Report;
    const statuses = (r: Report) => Object.fromEntries(r.checks.map((c) => [c.id, c.status]));
    const all = (s: string) =>
      Object.fromEntries(
        [
          "limactl",
          "vm-exists",
          "vm-running",
          "layout",
          "socket-forwarded",
          "guest-service",
          "guest-socket-perms",
          "guest-group",
          "version-match",
        ].map((id) => [`lima.${id}`, s]),
      );
    const healthy = await doctor();
    expect(statuses(healthy)).toEqual(all("ok"));

    const paste = async (r: Report, id: string) => {
      const fix = r.checks.find((c) => c.id === id)?.fix as string;
      expect(fix).toBeTruthy();
      expect((await run(h.env, ["sh", "-c", fix])).code).toBe(0);
    };
    chmodSync(join(h.guest, "run/planter/planterd.sock"), 0o666);
    const perms = await doctor();
    expect(statuses(perms)["lima.guest-socket-perms"]).toBe("fail");
    await paste(perms, "lima.guest-socket-perms");
    expect(statuses(await doctor())).toEqual(all("ok"));

    expect((await limactl(h.env, "stop", "planter")).code).toBe(0);
    const stopped = await doctor();
    expect(statuses(stopped)).toEqual({
      ...all("skip"),
      "lima.limactl": "ok",
      "lima.vm-exists": "ok",
      "lima.vm-running": "fail",
    });
    await paste(stopped, "lima.vm-running");
    expect(statuses(await doctor())).toEqual(all("ok"));
  }, 60_000);
});
