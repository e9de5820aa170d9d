/** install / uninstall: real installs into throwaway homes and staging roots, with recording shims for the host programs. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { nologinShell } from "../../lib/host/groups.ts";
import { renderServiceUnit, renderSocketUnit } from "../../lib/host/systemd.ts";
import { cleanup, pidAlive, waitFor } from "../harness.ts";
import {
  callLog,
  killUnder,
  planterWith as planter,
  planterBinary,
  runWith as run,
  SHIMS,
  tree,
} from "../host-fixture.ts";

const work = mkdtempSync("/tmp/pt-inst-");
// As root, a user-mode planterd runs jobs as nobody, who must pass through to its cell.
chmodSync(work, 0o711);
let binary = "";

beforeAll(async () => {
  binary = await planterBinary();
}, 60_000);
afterAll(() => {
  killUnder(work);
  cleanup(work);
});

/** A fresh fake host: a home, a runtime dir, a shim dir first on PATH, a call log. */
function host(name: string, shims: Record<string, string> = {}) {
  const base = join(work, name);
  const home = join(base, "home");
  const runtime = join(base, "run");
  const bin = join(base, "shims");
  // A lived-in home already has ~/.local/state (where planter's state stays after uninstall).
  mkdirSync(join(home, ".local", "state"), { recursive: true });
  mkdirSync(runtime, { mode: 0o700 });
  mkdirSync(bin);
  for (const [prog, shim] of Object.entries(shims)) symlinkSync(join(SHIMS, shim), join(bin, prog));
  const log = join(base, "calls.log");
  const env: Record<string, string> = {
    PATH: `${bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
    HOME: home,
    XDG_RUNTIME_DIR: runtime,
    PLANTER_MODE: "user",
    SHIM_LOG: log,
    SHIM_UNIT_DIR: join(home, ".config", "systemd", "user"),
    NO_COLOR: "1",
    BUN_RUNTIME_TRANSPILER_CACHE_PATH: "0",
  };
  return { base, home, runtime, env, calls: callLog(log) };
}

/** The command that creates the job user (nologin where this host has it). */
const USERADD = `useradd --system --user-group --no-create-home --home-dir /nonexistent --shell ${nologinShell()} planter-job`;

const notState = (rel: string) =>
  rel.startsWith("home/.local/state/planter") || rel === "calls.log" || rel.startsWith("calls.log.");

describe("user install without systemd (daemon started directly)", () => {
  test("install → run a job → upgrade → uninstall leaves the tree as before (state aside)", async () => {
    const h = host("direct");
    const before = tree(h.base, notState);
    const i = await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "no");
    expect(i.stderr).toContain("no running systemd: started planterd directly");
    expect(i.code).toBe(0);
    expect(i.stdout).toContain("planterd answers on");
    const bin = join(h.home, ".local", "bin", "planter");
    expect(await run(h.env, [bin, "run", "--", "echo", "installed"])).toEqual({
      code: 0,
      stdout: "installed\n",
      stderr: "",
    });
    // doctor on the installed host: nothing fails; install.state is ok, the systemd checks skip.
    const doc = await run(h.env, [bin, "doctor", "--json"]);
    const report = JSON.parse(doc.stdout) as { ok: boolean; checks: { id: string; status: string; message: string }[] };
    expect(report.checks.filter((c) => c.status === "fail")).toEqual([]);
    expect([doc.code, report.ok]).toEqual([0, true]);
    const status = Object.fromEntries(report.checks.map((c) => [c.id, c.status]));
    expect([
      status["install.state"],
      status["daemon.reachable"],
      status["daemon.version-match"],
      status["service.active"],
    ]).toEqual(["ok", "ok", "ok", "skip"]);
    const state = JSON.parse(readFileSync(join(h.home, ".local", "state", "planter", "install-state.json"), "utf8"));
    expect(state.daemon.managed_by).toBe("direct");
    expect(state.files.map((f: { path: string; kind: string }) => [f.path.slice(h.home.length), f.kind])).toEqual([
      ["/.local/bin/planter", "binary"],
      ["/.local/bin/planterd", "link"],
      ["/.local/share/bash-completion/completions/planter", "completion"],
      ["/.local/share/zsh/site-functions/_planter", "completion"],
      ["/.local/share/fish/vendor_completions.d/planter.fish", "completion"],
      ["/.local/share/man/man1/planter.1", "manpage"],
      ["/.config/planter/config.toml", "config"],
    ]);
    // The completions are the installed planter's own, and bash completes with them.
    const installed = join(h.home, ".local", "bin", "planter");
    const script = join(h.home, ".local/share/bash-completion/completions/planter");
    expect(readFileSync(script, "utf8")).toBe((await run(h.env, [installed, "completion", "bash"])).stdout);
    const completes = await run(h.env, [
      "bash",
      "-c",
      `source ${script}; COMP_WORDS=(planter job ki); COMP_CWORD=2; _planter; echo "\${COMPREPLY[*]}"`,
    ]);
    expect(completes.stdout).toBe("kill\n");
    expect(readFileSync(join(h.home, ".local/share/man/man1/planter.1"), "utf8")).toStartWith(".TH PLANTER 1 ");

    // Upgrade: the config a user edited is kept, the daemon is restarted, the metadata updated.
    writeFileSync(join(h.home, ".config", "planter", "config.toml"), '[sandbox]\nmode = "disabled"\n');
    const u = await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "no", "--json");
    expect(u.code).toBe(0);
    const up = JSON.parse(u.stdout);
    expect([up.upgrade, up.ready, up.daemon.managed_by]).toEqual([true, true, "direct"]);
    expect(up.daemon.pid).not.toBe(state.daemon.pid);
    expect(readFileSync(join(h.home, ".config", "planter", "config.toml"), "utf8")).toBe(
      '[sandbox]\nmode = "disabled"\n',
    );

    // The edited config is not what install wrote: uninstall keeps it unless --force.
    const un = await planter(h.env, "uninstall", "--user");
    expect(un.code).toBe(0);
    expect(un.stderr).toContain("kept");
    expect(existsSync(join(h.home, ".config", "planter", "config.toml"))).toBe(true);
    await waitFor(() => !existsSync(join(h.runtime, "planter", "planterd.sock")), "planterd to stop");
    const forced = await planter(h.env, "uninstall", "--user", "--force");
    expect(forced.code).toBe(0);
    expect(tree(h.base, notState)).toEqual(before);
    // Twice is harmless.
    const again = await planter(h.env, "uninstall", "--user");
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("not installed here");
  });

  test("--dry-run prints the plan and changes nothing", async () => {
    const h = host("dry");
    const before = tree(h.base);
    const r = await planter(h.env, "install", "--user", "--binary", binary, "--dry-run");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("nothing was changed");
    expect(r.stdout).toContain(`${h.home}/.local/bin/planter`);
    expect(tree(h.base)).toEqual(before);
  });

  test("--purge removes state too, and asks unless --yes", async () => {
    const h = host("purge");
    expect((await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "no")).code).toBe(0);
    const refused = await planter(h.env, "uninstall", "--user", "--purge");
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("confirm with --yes");
    const r = await planter(h.env, "uninstall", "--user", "--purge", "--yes");
    expect(r.code).toBe(0);
    expect(existsSync(join(h.home, ".local", "state", "planter"))).toBe(false);
  });
});

describe("the daemon uninstall stops, the mode install picks", () => {
  test("a planterd restarted by hand (another pid than recorded) is found by its state dir lock and stopped", async () => {
    const h = host("restarted");
    const i = await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "no", "--json");
    expect(i.code).toBe(0);
    const recorded = JSON.parse(i.stdout).daemon.pid as number;
    const bin = join(h.home, ".local", "bin", "planter");
    // The daemon dies; the user starts another the way doctor says (backgrounded, by hand).
    process.kill(recorded, "SIGKILL");
    await waitFor(() => !pidAlive(recorded), "the installed planterd to die");
    const byHand = Bun.spawn([bin, "daemon"], { env: h.env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    await waitFor(
      async () => (await run(h.env, [bin, "run", "--", "echo", "again"])).stdout === "again\n",
      "the planterd started by hand to run a job",
      20_000,
    );
    const u = await planter(h.env, "uninstall", "--user");
    expect(u.code).toBe(0);
    expect(u.stderr).toContain(`stopped planterd (pid ${byHand.pid})`);
    expect(u.stderr).toContain(`planterd (pid ${recorded}, as recorded by install) was not running`);
    expect(u.stderr).not.toContain(`stopped planterd (pid ${recorded})`);
    expect(await byHand.exited).toBe(0);
  }, 60_000);

  test("--purge after uninstall says that it purges the state dir, and does", async () => {
    const h = host("purge-after");
    expect((await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "no")).code).toBe(0);
    expect((await planter(h.env, "uninstall", "--user")).code).toBe(0);
    const state = join(h.home, ".local", "state", "planter");
    expect(existsSync(state)).toBe(true);
    const p = await planter(h.env, "uninstall", "--user", "--purge", "--yes");
    expect(p.code).toBe(0);
    expect(p.stderr).not.toContain("nothing to do");
    expect(p.stderr).toContain(`purging its state dir ${state}`);
    expect(p.stdout).toBe(`planter was not installed; purged its state dir ${state}\n`);
    expect(existsSync(state)).toBe(false);
    const again = await planter(h.env, "uninstall", "--user", "--purge", "--yes");
    expect(again.stderr).toContain("nothing to do");
  }, 60_000);

  test("PLANTER_MODE picks the mode when no --user or --system is given; a bad value is a usage error", async () => {
    const h = host("mode");
    const mode = async (value: string) => {
      const r = await planter({ ...h.env, PLANTER_MODE: value }, "install", "--binary", binary, "--dry-run", "--json");
      return r.code === 0 ? JSON.parse(r.stdout).mode : { code: r.code, stderr: r.stderr };
    };
    expect(await mode("user")).toBe("user");
    expect(await mode("system")).toBe("system");
    expect(await mode("bogus")).toEqual({
      code: 2,
      stderr: expect.stringContaining('PLANTER_MODE must be \\"user\\" or \\"system\\", not \\"bogus\\"'),
    });
    // A flag wins over the variable.
    const flag = await planter(
      { ...h.env, PLANTER_MODE: "system" },
      "install",
      "--user",
      "--binary",
      binary,
      "--dry-run",
      "--json",
    );
    expect(JSON.parse(flag.stdout).mode).toBe("user");
  });
});

describe("user units where no service manager answers (an image build)", () => {
  test("--systemd yes writes the units and enables them offline, starts nothing, and calls only is-system-running", async () => {
    const h = host("offline", { systemctl: "record" });
    const before = tree(h.base, notState);
    const r = await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "yes", "--json");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect([out.ready, out.daemon]).toEqual([null, { managed_by: "systemd", pid: null }]);
    const unitDir = join(h.home, ".config", "systemd", "user");
    expect(readlinkSync(join(unitDir, "sockets.target.wants", "planterd.socket"))).toBe(
      join(unitDir, "planterd.socket"),
    );
    expect(existsSync(join(unitDir, "planterd.service"))).toBe(true);
    expect(h.calls()).toEqual(["systemctl --user is-system-running"]);
    expect(existsSync(join(h.runtime, "planter", "planterd.sock"))).toBe(false);
    const text = await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "yes");
    expect(text.stderr).toContain("no service manager answers: planterd.socket enabled offline");

    const u = await planter(h.env, "uninstall", "--user");
    expect(u.code).toBe(0);
    expect(u.stderr).toContain("no service manager answers: removing the unit files and their links only");
    expect(h.calls().filter((c) => c !== "systemctl --user is-system-running")).toEqual([]);
    expect(tree(h.base, notState)).toEqual(before);
  }, 60_000);
});

describe("user install with systemd units (socket activation)", () => {
  test("the installed units socket-activate the installed binary; uninstall undoes it all", async () => {
    const h = host("units", { systemctl: "systemctl-activate" });
    const before = tree(h.base, notState);
    const r = await planter(h.env, "install", "--user", "--binary", binary, "--systemd", "yes");
    expect(r.code).toBe(0);
    expect(h.calls()).toEqual([
      "systemctl --user is-system-running",
      "systemctl --user daemon-reload",
      "systemctl --user enable --now planterd.socket",
    ]);
    const unitDir = join(h.home, ".config", "systemd", "user");
    const params = {
      mode: "user" as const,
      binary: join(h.home, ".local", "bin", "planter"),
      socketPath: join(h.runtime, "planter", "planterd.sock"),
      configPath: join(h.home, ".config", "planter", "config.toml"),
      stateDir: join(h.home, ".local", "state", "planter"),
      group: null,
    };
    expect(readFileSync(join(unitDir, "planterd.socket"), "utf8")).toBe(renderSocketUnit(params));
    expect(readFileSync(join(unitDir, "planterd.service"), "utf8")).toBe(renderServiceUnit(params));
    // The daemon really runs socket-activated, from the installed unit's settings.
    const bin = join(h.home, ".local", "bin", "planter");
    expect(await run(h.env, [bin, "run", "--", "echo", "activated"])).toEqual({
      code: 0,
      stdout: "activated\n",
      stderr: "",
    });
    expect(readFileSync(`${h.env.SHIM_LOG}.activator`, "utf8")).toContain("socket-activated");
    expect(statSync(params.socketPath).mode & 0o777).toBe(0o600);

    const u = await planter(h.env, "uninstall", "--user");
    expect(u.code).toBe(0);
    expect(h.calls().slice(3)).toEqual([
      "systemctl --user is-system-running",
      "systemctl --user disable --now planterd.socket planterd.service",
      "systemctl --user daemon-reload",
    ]);
    expect(tree(h.base, notState)).toEqual(before);
  });
});

describe("system install into a staging root", () => {
  const shims = {
    systemctl: "record",
    getent: "record",
    groupadd: "record",
    usermod: "record",
    gpasswd: "record",
    groupdel: "record",
    useradd: "record",
    userdel: "record",
  };

  test("units enabled offline, tmpfiles; the group and job user left to the package; no host program called; uninstall reverses exactly", async () => {
    const h = host("staging", shims);
    const root = join(h.base, "root");
    // A planterd that was there before install: saved, and put back by uninstall.
    mkdirSync(join(root, "usr", "local", "bin"), { recursive: true });
    writeFileSync(join(root, "usr", "local", "bin", "planterd"), "#!/bin/sh\necho older\n");
    chmodSync(join(root, "usr", "local", "bin", "planterd"), 0o755);
    const before = tree(root, (rel) => rel.startsWith("var/lib/planter"));
    const env = { ...h.env, PLANTER_MODE: "system", SUDO_USER: "alice", SHIM_EXIT_getent: "2" };
    const r = await planter(env, "install", "--system", "--root", root, "--binary", binary);
    expect(r.code).toBe(0);
    // The accounts are the target's, not this host's: no getent, groupadd, usermod, useradd; the package creates them.
    expect(r.stderr).toContain(
      `staging root: system user planter-job is not created here; the package must create it: ${USERADD}`,
    );
    expect(r.stderr).toContain(
      "staging root: group planter is not created here; the package must create it: groupadd --system planter",
    );
    // Nor is this host's systemctl asked anything: the units are enabled as `systemctl enable` would.
    expect(h.calls()).toEqual([]);
    expect(readlinkSync(join(root, "etc", "systemd", "system", "sockets.target.wants", "planterd.socket"))).toBe(
      "/etc/systemd/system/planterd.socket",
    );
    expect(readFileSync(join(root, "etc", "systemd", "system", "planterd.socket"), "utf8")).toBe(
      [
        "[Unit]",
        "Description=planter daemon socket",
        "Documentation=https://github.com/planter/planter",
        "",
        "[Socket]",
        "ListenStream=/run/planter/planterd.sock",
        "SocketMode=0660",
        "SocketUser=root",
        "SocketGroup=planter",
        "DirectoryMode=0750",
        "RemoveOnStop=yes",
        "",
        "[Install]",
        "WantedBy=sockets.target",
        "",
      ].join("\n"),
    );
    const service = readFileSync(join(root, "etc", "systemd", "system", "planterd.service"), "utf8");
    expect(service).toContain("ExecStart=/usr/local/bin/planter daemon --config /etc/planter/config.toml\n");
    expect(service).toContain("StateDirectory=planter\n");
    expect(service).toContain("KillMode=process\n");
    expect(service).not.toContain("RestrictNamespaces");
    expect(readFileSync(join(root, "etc", "tmpfiles.d", "planter.conf"), "utf8")).toContain(
      "d /run/planter 0750 root planter -",
    );
    const state = JSON.parse(readFileSync(join(root, "var", "lib", "planter", "install-state.json"), "utf8"));
    expect(state.group).toEqual({
      name: "planter",
      existed_before: null,
      created_by_installer: false,
      members_added: [],
      create_at_package_install: true,
    });
    expect(state.job_user).toEqual({
      name: "planter-job",
      existed_before: null,
      created_by_installer: false,
      create_at_package_install: true,
    });
    expect(state.files.find((f: { path: string }) => f.path === "/usr/local/bin/planterd")).toMatchObject({
      existed_before: true,
      kind: "link",
    });
    expect(state.platform).toMatchObject({ os: "linux", systemd: true });

    const u = await planter(env, "uninstall", "--system", "--root", root);
    expect(u.code).toBe(0);
    expect(h.calls()).toEqual([]);
    expect(tree(root, (rel) => rel.startsWith("var/lib/planter"))).toEqual(before);
    expect(readFileSync(join(root, "usr", "local", "bin", "planterd"), "utf8")).toBe("#!/bin/sh\necho older\n");
  });

  test("uninstall --root of an older record (group created on this host) changes no account here, and says what to undo", async () => {
    const h = host("staging-old", shims);
    const root = join(h.base, "root");
    const env = { ...h.env, PLANTER_MODE: "system" };
    expect((await planter(env, "install", "--system", "--root", root, "--binary", binary)).code).toBe(0);
    const file = join(root, "var", "lib", "planter", "install-state.json");
    const state = JSON.parse(readFileSync(file, "utf8"));
    state.group = { name: "planter", existed_before: false, created_by_installer: true, members_added: ["alice"] };
    writeFileSync(file, JSON.stringify(state));
    const u = await planter(env, "uninstall", "--system", "--root", root);
    expect(u.code).toBe(0);
    expect(u.stderr).toContain(
      "with --root nothing here is changed: undo it by hand if it is unwanted: gpasswd -d alice planter && groupdel planter",
    );
    expect(h.calls()).toEqual([]);
  }, 60_000);

  test("--systemd no writes no units; --dry-run --json says the package must create the group and the job user", async () => {
    const h = host("staging-dry", shims);
    const root = join(h.base, "root");
    const env = { ...h.env, PLANTER_MODE: "system" };
    const r = await planter(env, "install", "--system", "--root", root, "--binary", binary, "--dry-run", "--json");
    expect(r.code).toBe(0);
    const steps = JSON.parse(r.stdout).steps;
    expect(steps).toContainEqual({
      id: "job-user",
      description: `system user planter-job for root's jobs: not created in a staging root; the package must create it when installed (${USERADD})`,
    });
    expect(steps).toContainEqual({
      id: "group",
      description:
        "group planter: not created in a staging root; the package must create it when installed (groupadd --system planter)",
    });
    expect(steps.map((s: { id: string }) => s.id)).toContain("enable");
    const no = await planter(env, "install", "--system", "--root", root, "--binary", binary, "--systemd", "no");
    expect(no.code).toBe(0);
    expect(existsSync(join(root, "etc", "systemd"))).toBe(false);
    expect(existsSync(join(root, "etc", "tmpfiles.d"))).toBe(false);
    expect(h.calls()).toEqual([]);
  }, 60_000);
});

describe("system install on this host: paths moved below a temp dir, accounts through shims", () => {
  // The account programs behave on fake passwd and group files ($SHIM_ETC), recording every call.
  const shims = Object.fromEntries(
    ["getent", "useradd", "userdel", "groupadd", "groupdel", "usermod", "gpasswd"].map((p) => [p, "accounts"]),
  );
  /** A host whose system install writes only below its base: PLANTER_HOME, --prefix, no systemd. */
  function sysHost(name: string, passwd = "") {
    const h = host(name, shims);
    const etc = join(h.base, "etc");
    mkdirSync(etc);
    writeFileSync(join(etc, "passwd"), passwd);
    const env = {
      ...h.env,
      PLANTER_MODE: "system",
      PLANTER_HOME: join(h.base, "planter"),
      SUDO_USER: "alice",
      SHIM_ETC: etc,
    };
    const args = ["--system", "--prefix", join(h.base, "usr"), "--systemd", "no", "--binary", binary];
    const passwdText = () => readFileSync(join(etc, "passwd"), "utf8");
    const groupText = () => readFileSync(join(etc, "group"), "utf8");
    return { ...h, env, args, passwdText, groupText };
  }
  // State stays after uninstall (as in every mode); the fake account files are checked by content.
  const skipState = (rel: string) =>
    notState(rel) || rel === "planter" || rel.startsWith("planter/state") || rel.startsWith("etc/");

  test("--dry-run shows the job user step and calls nothing", async () => {
    const h = sysHost("sys-dry");
    const before = tree(h.base);
    const r = await planter(h.env, "install", ...h.args, "--dry-run");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      `  job-user     create system user planter-job for root's jobs unless it exists (${USERADD})\n`,
    );
    const j = JSON.parse((await planter(h.env, "install", ...h.args, "--dry-run", "--json")).stdout);
    expect(j.steps).toContainEqual({
      id: "job-user",
      description: `create system user planter-job for root's jobs unless it exists (${USERADD})`,
    });
    expect(j.job_user).toBeNull();
    expect(h.calls()).toEqual([]);
    expect(tree(h.base)).toEqual(before);
  });

  test.skipIf(process.getuid?.() !== 0)(
    "creates planter-job when missing, remembers it across an upgrade, and uninstall deletes it",
    async () => {
      const h = sysHost("sys-user");
      const before = tree(h.base, skipState);
      const i = await planter(h.env, "install", ...h.args, "--json");
      expect(i.code).toBe(0);
      const created = {
        name: "planter-job",
        existed_before: false,
        created_by_installer: true,
        create_at_package_install: false,
      };
      expect(JSON.parse(i.stdout).job_user).toEqual(created);
      expect(h.calls()).toEqual([
        "getent group planter",
        "groupadd --system planter",
        "getent group planter",
        "usermod -aG planter alice",
        "getent passwd planter-job",
        USERADD,
      ]);
      expect(h.passwdText()).toBe(`planter-job:x:998:998::/nonexistent:${nologinShell()}\n`);
      expect(h.groupText()).toBe("planter:x:999:alice\nplanter-job:x:998:\n");
      const state = () => JSON.parse(readFileSync(join(h.base, "planter", "state", "install-state.json"), "utf8"));
      expect(state().job_user).toEqual(created);

      // Re-running install finds the user it created and still owns it.
      const u = await planter(h.env, "install", ...h.args, "--json");
      expect(u.code).toBe(0);
      expect(JSON.parse(u.stdout)).toMatchObject({ upgrade: true, job_user: created });
      expect(h.calls().slice(6)).toEqual(["getent group planter", "getent group planter", "getent passwd planter-job"]);

      const un = await planter(h.env, "uninstall", "--system");
      expect(un.code).toBe(0);
      expect(un.stderr).toContain("deleted user planter-job");
      expect(h.calls().slice(9)).toEqual(["gpasswd -d alice planter", "groupdel planter", "userdel planter-job"]);
      expect([h.passwdText(), h.groupText()]).toEqual(["", ""]);
      expect(tree(h.base, skipState)).toEqual(before);
    },
    60_000,
  );

  test.skipIf(process.getuid?.() !== 0)(
    "a job user that was there before is used and left alone",
    async () => {
      const line = "planter-job:x:990:990::/nonexistent:/usr/sbin/nologin\n";
      const h = sysHost("sys-user-exists", line);
      const i = await planter(h.env, "install", ...h.args, "--json");
      expect(i.code).toBe(0);
      expect(JSON.parse(i.stdout).job_user).toEqual({
        name: "planter-job",
        existed_before: true,
        created_by_installer: false,
        create_at_package_install: false,
      });
      expect(h.calls().filter((c) => /passwd|useradd/.test(c))).toEqual(["getent passwd planter-job"]);
      const un = await planter(h.env, "uninstall", "--system");
      expect(un.code).toBe(0);
      expect(h.calls().filter((c) => c.startsWith("userdel"))).toEqual([]);
      expect(h.passwdText()).toBe(line);
    },
    60_000,
  );

  test.skipIf(process.getuid?.() !== 0)(
    "an existing group and membership are left alone",
    async () => {
      const h = sysHost("sys-group-exists");
      writeFileSync(join(h.env.SHIM_ETC, "group"), "planter:x:990:alice\n");
      expect((await planter(h.env, "install", ...h.args)).code).toBe(0);
      expect(h.calls().filter((c) => /^(getent group|groupadd|usermod)/.test(c))).toEqual([
        "getent group planter",
        "getent group planter",
      ]);
      expect((await planter(h.env, "uninstall", "--system")).code).toBe(0);
      expect(h.calls().filter((c) => /groupdel|gpasswd/.test(c))).toEqual([]);
      expect(h.groupText()).toBe("planter:x:990:alice\n");
    },
    60_000,
  );

  test("uninstall after a partial install (groupadd failed) takes back what was done", async () => {
    const h = sysHost("sys-partial");
    const before = tree(h.base, skipState);
    const env = { ...h.env, SHIM_EXIT_groupadd: "9" };
    const r = await planter(env, "install", ...h.args);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("groupadd --system planter: exit code 9");
    expect(existsSync(join(h.base, "usr", "bin", "planter"))).toBe(true);
    const u = await planter(env, "uninstall", "--system");
    expect(u.code).toBe(0);
    expect(tree(h.base, skipState)).toEqual(before);
  });

  test("a failed useradd stops install with its message; uninstall then deletes no user", async () => {
    const h = sysHost("sys-user-fails");
    const env = { ...h.env, SHIM_EXIT_useradd: "9" };
    const r = await planter(env, "install", ...h.args);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${USERADD}: exit code 9`);
    const u = await planter(env, "uninstall", "--system");
    expect(u.code).toBe(0);
    expect(h.calls().filter((c) => /^user(add|del)/.test(c))).toEqual([USERADD]);
  });
});

afterAll(() => rmSync(work, { recursive: true, force: true }));
