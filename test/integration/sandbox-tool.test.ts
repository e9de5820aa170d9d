/** The `sandbox` tool: check, render and exec without a daemon. */
import { afterAll, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { rootPeerIdentity } from "../../lib/sandbox/identity.ts";
import { baseEnv, cli, PLANTER, tempHome } from "../harness.ts";

const home = tempHome();
const cell = mkdtempSync("/tmp/pt-sbcell-");
// As root, `sandbox exec` runs the command as the cell dir's owner (root's dirs: nobody).
if (process.getuid?.() === 0) chownSync(cell, 65534, 65534);
afterAll(() => {
  rmSync(home, { recursive: true, force: true });
  rmSync(cell, { recursive: true, force: true });
});

test("check probes for real and reports the backend", async () => {
  const r = await cli(home, ["sandbox", "check", "--json"]);
  expect(r.code).toBe(0);
  const j = JSON.parse(r.stdout);
  expect(j.ok).toBe(true);
  expect(j.backend).toBe("bwrap");
  expect(j.version).toMatch(/^bubblewrap \d/);
  expect(j.checks.map((c: { id: string; ok: boolean }) => [c.id, c.ok])).toEqual([
    ["write-inside", true],
    ["write-outside", true],
    ["network", true],
    ["not-root", true],
    ["proc-sys", true],
    ["host-socket", true],
    ["credentials", true],
    ["egress-allowed", true],
    ["egress-denied", true],
  ]);
  expect(j.checks.at(-1).detail).toBe("an unlisted name through the job's proxy: HTTP/1.1 403 Forbidden");
});

test("check fails with a hint when bwrap is missing", async () => {
  const shims = mkdtempSync("/tmp/pt-nobw-");
  const r = await cli(home, ["sandbox", "check"], { env: { PATH: shims } });
  expect(r.code).toBe(1);
  expect(r.stdout).toContain("sandbox: NOT working: bubblewrap (bwrap) is not installed");
  expect(r.stdout).toContain("hint: install it: sudo apt-get install bubblewrap");
  rmSync(shims, { recursive: true });
});

test("render prints the bwrap argv and the Seatbelt profile of a policy file", async () => {
  const policy = join(cell, "policy.json");
  writeFileSync(policy, JSON.stringify({ fs_mode: "read_only", network: "host" }));
  const b = JSON.parse(
    (await cli(home, ["sandbox", "render", "--policy", policy, "--cell", cell, "--json", "--", "make"])).stdout,
  );
  expect(b.backend).toBe("bwrap");
  expect(b.argv).toContain("--ro-bind");
  expect(b.argv).not.toContain("--unshare-net");
  // The command runs as the sandbox's first program, its environment set by bwrap.
  expect(b.argv.slice(-2)).toEqual(["--", "make"]);
  expect(b.argv).toContain("--clearenv");
  expect(b.argv).toContain("--setenv");
  const s = await cli(home, ["sandbox", "render", "--backend", "seatbelt", "--policy", policy, "--cell", cell]);
  expect(s.code).toBe(0);
  expect(s.stdout).toStartWith("(version 1)\n(deny default)\n");
  expect(s.stdout).toContain("(allow network*)");
  const bad = join(cell, "bad.json");
  writeFileSync(bad, JSON.stringify({ fs_mode: "sometimes" }));
  const e = await cli(home, ["sandbox", "render", "--policy", bad]);
  expect(e.code).toBe(1);
  expect(e.stderr).toContain("→ at fs_mode");
});

test("exec runs one command sandboxed and exits with its code", async () => {
  const ok = await cli(home, ["sandbox", "exec", "--cell", cell, "--", "sh", "-c", "echo in > inside; exit 4"]);
  expect(ok.code).toBe(4);
  expect(existsSync(join(cell, "inside"))).toBe(true);
  const probe = join(homedir(), `.planter-exec-probe-${process.pid}`);
  const denied = await cli(home, ["sandbox", "exec", "--cell", cell, "--", "sh", "-c", `echo x > ${probe}`]);
  expect(denied.code).not.toBe(0);
  expect(denied.stderr).toContain("Read-only file system");
  expect(existsSync(probe)).toBe(false);
  const none = await cli(home, ["sandbox", "exec"]);
  expect(none.code).toBe(2);
});

test("exec protects the workspace as a job does: git hooks and config read-only, new tool config set aside, git commit works", async () => {
  const repo = mkdtempSync("/tmp/pt-sbrepo-");
  const git = (args: string[]) =>
    Bun.spawnSync(["git", "-c", "safe.directory=*", "-C", repo, ...args], {
      env: { PATH: "/usr/bin:/bin", GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", LANG: "C" },
    });
  git(["init", "-q"]);
  git(["-c", "user.name=h", "-c", "user.email=h@e", "commit", "-q", "--allow-empty", "-m", "init"]);
  if (process.getuid?.() === 0) Bun.spawnSync(["chown", "-R", "65534:65534", repo]);
  const config = readFileSync(join(repo, ".git", "config"), "utf8");
  const script = [
    "echo '#!/bin/sh' > .git/hooks/pre-commit && echo WROTE-HOOK",
    "git config core.fsmonitor 'touch /tmp/fsmon' && echo WROTE-CONFIG",
    "mkdir -p .vscode && echo '{}' > .vscode/tasks.json",
    "git -c safe.directory='*' -c user.name=j -c user.email=j@e commit -q --allow-empty -m from-job && echo committed",
  ].join("; ");
  const r = await cli(home, ["sandbox", "exec", "--cell", repo, "--", "sh", "-c", script]);
  expect(r.stdout).toBe("committed\n");
  expect(readFileSync(join(repo, ".git", "config"), "utf8")).toBe(config);
  expect(existsSync(join(repo, ".git", "hooks", "pre-commit"))).toBe(false);
  expect(existsSync(join(repo, ".vscode", "tasks.json"))).toBe(false);
  expect(r.stderr).toContain(`sandbox: ${join(repo, ".vscode", "tasks.json")} (tool-config: new) set aside as`);
  expect(git(["log", "--format=%s"]).stdout.toString()).toBe("from-job\ninit\n");
  rmSync(repo, { recursive: true });
});

test("exec with a network allow list: the listed name answers through the proxy this process serves, others are refused", async () => {
  const origin = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("origin\n") });
  try {
    const policy = join(cell, "list.json");
    writeFileSync(policy, JSON.stringify({ network: { allow: ["localhost"], allow_local: true } }));
    const r = await cli(home, [
      "sandbox",
      "exec",
      "--cell",
      cell,
      "--policy",
      policy,
      "--",
      "sh",
      "-c",
      `curl -sS --noproxy '' http://localhost:${origin.port}/; curl -sS http://127.0.0.1:${origin.port}/ --noproxy '' -o /dev/null -w '%{http_code}\\n'`,
    ]);
    expect(r.stdout).toBe("origin\n403\n");
    expect(r.code).toBe(0);
  } finally {
    origin.stop(true);
  }
});

test("exec hides the secrets planter's config names outside its dirs (MCP token, [api.tcp] key and token files, targets' tokens and keys), as a job's sandbox does", async () => {
  const dir = mkdtempSync("/var/tmp/pt-sbsec-");
  chmodSync(dir, 0o755);
  const uid = process.getuid?.() === 0 ? 65534 : (process.getuid?.() ?? 0);
  const files: Record<string, string> = {
    "mcp.token": "mcp-secret-0123456789abcdef\n",
    "tcp.key": "tcp-key-secret-0123456789\n",
    "ci.token": "ci-secret-0123456789abcdef\n",
    "target.token": "target-secret-0123456789\n",
    "target.key": "target-key-secret-0123456789\n",
    id_ed25519: "ssh-key-secret-0123456789\n",
  };
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(dir, name), text, { mode: 0o600 });
    chownSync(join(dir, name), uid, uid);
  }
  writeFileSync(join(dir, "plain"), "not-a-secret\n", { mode: 0o644 });
  const config = join(home, "config.toml");
  writeFileSync(
    config,
    `[mcp]\ntoken_file = "${dir}/mcp.token"\n[api.tcp]\naddress = "127.0.0.1:1"\ncert = "${dir}/plain"\nkey = "${dir}/tcp.key"\n[[api.tcp.identities]]\nname = "ci"\nuid = 1000\ntoken_file = "${dir}/ci.token"\n[targets.far]\nurls = ["https://127.0.0.1:1"]\ncert = "${dir}/plain"\nkey = "${dir}/target.key"\ntoken_file = "${dir}/target.token"\n[targets.box]\nurls = ["ssh://u@127.0.0.1"]\nidentity = "${dir}/id_ed25519"\n`,
  );
  try {
    const r = await cli(home, ["sandbox", "exec", "--cell", cell, "--", "sh", "-c", `cat ${dir}/* 2>/dev/null; true`]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("not-a-secret\n");
  } finally {
    rmSync(config, { force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});

test("as root, exec never runs the command as root: a root-owned cell is refused with the reason", async () => {
  if (process.getuid?.() !== 0) return;
  const rootCell = mkdtempSync("/tmp/pt-sbroot-");
  const r = await cli(home, ["sandbox", "exec", "--cell", rootCell, "--", "id", "-u"]);
  expect(r.code).toBe(1);
  // planter-job where this host has it (an installed planter), else nobody: never root.
  const as = rootPeerIdentity("planter-job").identity;
  expect(as.uid).not.toBe(0);
  expect(r.stderr).toContain(`runs the command as ${as.user} (uid ${as.uid}), who cannot write ${rootCell}`);
  const owned = mkdtempSync("/tmp/pt-sbown-");
  chownSync(owned, 65534, 65534);
  const ok = await cli(home, ["sandbox", "exec", "--cell", owned, "--", "id", "-u"]);
  expect([ok.code, ok.stdout]).toEqual([0, "65534\n"]);
  rmSync(rootCell, { recursive: true });
  rmSync(owned, { recursive: true });
});

test("cell create --policy and run --policy carry policy files to the daemon", async () => {
  const { startDaemon } = await import("../harness.ts");
  const d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\n' });
  const ro = join(cell, "ro.json");
  writeFileSync(ro, JSON.stringify({ fs_mode: "read_only" }));
  const created = await cli(d.home, ["cell", "create", "locked", "--policy", ro, "--json"]);
  expect(created.code).toBe(0);
  expect(JSON.parse(created.stdout).sandbox).toEqual({ policy: { fs_mode: "read_only" } });
  const denied = await cli(d.home, ["run", "--cell", "locked", "--", "sh", "-c", "echo x > f"]);
  expect(denied.code).not.toBe(0);
  const wide = join(cell, "wide.json");
  writeFileSync(wide, JSON.stringify({ fs_mode: "writable" }));
  const widened = await cli(d.home, ["run", "--cell", "locked", "--policy", wide, "--", "true"]);
  expect(widened.code).toBe(1);
  expect(widened.stderr).toContain("widens");
  const net = join(cell, "net.json");
  writeFileSync(net, JSON.stringify({ network: "none" }));
  expect((await cli(d.home, ["run", "--policy", net, "--", "true"])).code).toBe(0);
  await d.stop();
  rmSync(d.home, { recursive: true, force: true });
});

test.skipIf(process.getuid?.() !== 0)(
  "as root, exec's scratch dir is its own: a name another user planted in the temp dir (a symlink to a root dir) is never followed",
  async () => {
    // Another local user guesses the scratch name (it held the pid) and points it at a root-owned dir.
    const tmp = mkdtempSync("/tmp/pt-sbtmp-");
    chmodSync(tmp, 0o1777);
    const victim = mkdtempSync("/tmp/pt-sbvictim-");
    try {
      const proc = Bun.spawn(
        [process.execPath, PLANTER, "sandbox", "exec", "--cell", cell, "--", "sh", "-c", 'echo "$HOME" > home-was'],
        { env: baseEnv(home, { TMPDIR: tmp }), stdout: "pipe", stderr: "pipe" },
      );
      symlinkSync(victim, join(tmp, `planter-sandbox-${proc.pid}`));
      const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
      expect([statSync(victim).uid, readdirSync(victim)]).toEqual([0, []]);
      expect([code, err]).toEqual([0, ""]);
      // It ran with a home of its own, gone after.
      const was = readFileSync(join(cell, "home-was"), "utf8").trim();
      expect(was.startsWith(`${tmp}/planter-sandbox-`)).toBe(true);
      expect(was).not.toBe(join(tmp, `planter-sandbox-${proc.pid}`));
      expect(existsSync(was)).toBe(false);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
      rmSync(victim, { recursive: true, force: true });
    }
  },
);
