/**
 * The view gate (lib/sandbox/gate.ts): bwrap resolves each mount's destination by path while it
 * makes the sandbox, so a directory on the way swapped for a symlink after planterd planned the
 * view (a concurrent job of the cell, the user's own process) would put a cover elsewhere and
 * leave the path it was for open. Before anything of the job runs, its spawner compares the
 * sandbox's mount table, read from outside, with the plan. Here the swap is made for certain:
 * after the plan, before the spawn.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import {
  chownSync,
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { readChildPid } from "../../lib/net/listen.ts";
import type { PipeEnds, PlanRequest } from "../../lib/sandbox/backend.ts";
import { BwrapBackend } from "../../lib/sandbox/bwrap.ts";
import { closeEnds, openGate } from "../../lib/sandbox/gate.ts";
import { dropArgv } from "../../lib/sandbox/identity.ts";
import { openInputs } from "../../lib/sandbox/inputs.ts";
import { complete, type EffectivePolicy } from "../../lib/sandbox/policy.ts";
import { hostRequest } from "../../lib/sandbox/run.ts";
import { tempHome, waitFor } from "../harness.ts";

if (!Bun.which("bwrap")) throw new Error("bubblewrap is needed: apt-get install -y bubblewrap");

const home = tempHome("view");
const saved = process.env.PLANTER_HOME;
process.env.PLANTER_HOME = home;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
afterAll(() => {
  process.env.PLANTER_HOME = saved;
  rmSync(home, { recursive: true, force: true });
});

/** A cell dir (the job's user's, as root) with `files`, and a private dir for the plan's inputs. */
function cell(files: Record<string, string>): { dir: string; scratch: string; priv: string } {
  const dir = mkdtempSync("/tmp/pt-view-");
  const scratch = mkdtempSync("/tmp/pt-view-scratch-");
  const priv = mkdtempSync("/tmp/pt-view-priv-");
  dirs.push(dir, scratch, priv);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  // As root the sandbox runs as the cell dir's owner: make that nobody, and everything theirs.
  if (process.getuid?.() === 0) {
    Bun.spawnSync(["chown", "-R", "65534:65534", dir, scratch]);
    chownSync(dir, 65534, 65534);
  }
  return { dir, scratch, priv };
}

/**
 * Plan `script` in `dir` with `policy`, open the plan's inputs (planterd's checks of every bind
 * source run there), call `between` (the swap: after every check of planter's, before bwrap
 * mounts), then run it.
 */
async function run(
  c: { dir: string; scratch: string; priv: string },
  script: string,
  policy: EffectivePolicy,
  between: () => void = () => {},
  extra: Partial<PlanRequest> = {},
) {
  const req = {
    ...hostRequest({
      argv: ["/bin/sh", "-c", script],
      cellDir: c.dir,
      policy,
      env: { PATH: "/usr/bin:/bin" },
      jobDir: c.priv,
      scratch: c.scratch,
    }),
    ...extra,
  };
  const plan = new BwrapBackend().plan(req);
  const ends: PipeEnds = {};
  const fds = openInputs(plan.inputs ?? [], c.priv, req.identity, ends);
  let p: Subprocess<"ignore", "pipe", "pipe">;
  try {
    between();
    const argv = req.identity ? [...dropArgv(req.identity), ...plan.argv] : plan.argv;
    p = Bun.spawn(argv, { cwd: plan.cwd, env: plan.env, stdio: ["ignore", "pipe", "pipe", ...fds] });
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  // The gate, as planterd holds it (lib/sandbox/gate.ts): a view not the one planned is refused
  // from outside, and the sandbox killed before anything of the job ran (as planterd reports it:
  // the refusal's words, and 125 for "did not start").
  const proc = p;
  const refused = await openGate(ends, plan.planned).then(
    () => null,
    (e: Error) => {
      proc.kill("SIGKILL");
      closeEnds(ends);
      return e.message;
    },
  );
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return refused === null ? { code, out, err } : { code: 125, out, err: `${err}planter: ${refused}\n` };
}

test("a view with denied paths (one with a space and a backslash in its name) passes the gate; the job runs", async () => {
  const c = cell({ "a/secret": "SECRET-A\n", "with space\\x/secret": "SECRET-B\n", "a/open": "open\n" });
  const policy = complete({ deny: [join(c.dir, "a/secret"), join(c.dir, "with space\\x/secret")] });
  const r = await run(c, 'cat a/secret "with space\\x/secret" a/open 2>/dev/null; echo ran; env', policy);
  expect(r.out).toStartWith("open\nran\n");
  expect(r.out).not.toContain("SECRET");
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
});

// bwrap checks what it binds from an fd (the pinned ancestors, the read-only workspace files): after
// the mount it lstats the destination and compares it with the fd ("Race condition binding dirfd").
// That sees a destination that is itself a symlink, not one whose *directory* was swapped (lstat
// follows the swapped directory to the misplaced mount, which is the fd's file); and what bwrap
// mounts by path (the covers: /dev/null on a file, a tmpfs on a directory) it does not check at
// all. The gate sees every one.
test("a denied file swapped for a symlink after planter's checks: its /dev/null cover would land on the decoy, so nothing runs", async () => {
  const c = cell({ "a/secret": "SECRET-A\n", "a/decoy": "decoy\n" });
  const policy = complete({ deny: [join(c.dir, "a/secret")] });
  const r = await run(c, "cat a/moved; echo ran", policy, () => {
    renameSync(join(c.dir, "a/secret"), join(c.dir, "a/moved"));
    symlinkSync("decoy", join(c.dir, "a/secret"));
  });
  expect(r.out).toBe("");
  expect(r.err).toBe(
    `planter: the sandbox is not the view planned: no ${join(c.dir, "a/secret")} ro mount there; the job did not run\n`,
  );
  expect(r.code).toBe(125);
});

test("a denied directory swapped after planter's checks: its tmpfs cover and the read-only remount would miss", async () => {
  const c = cell({ "p/keys/id": "SECRET-KEY\n", "elsewhere/.keep": "" });
  const policy = complete({ deny: [join(c.dir, "p/keys")] });
  const r = await run(c, "cat p/moved/id; touch p/keys/new && echo wrote; echo ran", policy, () => {
    renameSync(join(c.dir, "p/keys"), join(c.dir, "p/moved"));
    symlinkSync("../elsewhere", join(c.dir, "p/keys"));
  });
  expect(r.out).toBe("");
  expect(r.err).toContain(`no ${join(c.dir, "p/keys")} ro mount there`);
  expect(r.code).toBe(125);
});

test("a read-only workspace file swapped after planter's checks: bwrap's own fd check refuses it", async () => {
  const c = cell({ ".git/config": "[core]\n", ".git/HEAD": "ref: refs/heads/main\n", "other/config": "[x]\n" });
  const script = "echo '[core] hooksPath = /tmp' >> .git-moved/config && echo wrote; echo ran";
  const swap = () => {
    renameSync(join(c.dir, ".git"), join(c.dir, ".git-moved"));
    mkdirSync(join(c.dir, ".git"));
    symlinkSync(join(c.dir, "other/config"), join(c.dir, ".git", "config"));
  };
  const r = await run(c, script, complete(undefined), swap, { workspaceReadOnly: [join(c.dir, ".git/config")] });
  expect(r.out).toBe("");
  expect(r.err).toMatch(/^bwrap: /);
  expect(r.code).not.toBe(0);
});

test("a read-only workspace file whose directory is swapped after planter's checks: bwrap's fd check passes, the gate does not", async () => {
  const c = cell({ ".git/config": "[core]\n", ".git/HEAD": "ref: refs/heads/main\n", "decoy/config": "[x]\n" });
  const script = "echo '[core] hooksPath = /tmp' >> .git-moved/config && echo wrote; echo ran";
  const swap = () => {
    renameSync(join(c.dir, ".git"), join(c.dir, ".git-moved"));
    symlinkSync("decoy", join(c.dir, ".git"));
  };
  const r = await run(c, script, complete(undefined), swap, { workspaceReadOnly: [join(c.dir, ".git/config")] });
  expect(r.out).toBe("");
  expect(r.err).toContain(
    `planter: the sandbox is not the view planned: no ${join(c.dir, ".git/config")} ro mount there`,
  );
  expect(r.code).toBe(125);
});

// Nothing the job asks for may run before the gate's verdict: bwrap takes its environment and
// execs nothing but the job's program with it. An LD_PRELOAD (or an
// LD_AUDIT) loaded earlier would run the job's code in the sandbox as made, the misplaced cover
// included.
test.skipIf(!Bun.which("gcc"))(
  "LD_PRELOAD in the job's environment loads nothing before the gate: a refused sandbox ran none of the job's code",
  async () => {
    const c = cell({ "p/keys/id": "SECRET-KEY\n", "elsewhere/.keep": "" });
    const src = join(c.scratch, "mark.c");
    writeFileSync(
      src,
      `#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
  char b[64]; int n = 0, f = open("p/moved/id", O_RDONLY);
  if (f >= 0) { n = read(f, b, sizeof b); close(f); }
  int o = open("leaked", O_CREAT | O_WRONLY | O_APPEND, 0666);
  if (o >= 0) { if (n > 0 && write(o, b, n) < 0) {} close(o); }
}
`,
    );
    const lib = join(c.dir, "evil.so");
    const built = Bun.spawnSync(["gcc", "-shared", "-fPIC", "-o", lib, src]);
    expect(built.exitCode).toBe(0);
    const policy = complete({ deny: [join(c.dir, "p/keys")] });
    const swap = () => {
      renameSync(join(c.dir, "p/keys"), join(c.dir, "p/moved"));
      symlinkSync("../elsewhere", join(c.dir, "p/keys"));
    };
    const env = { PATH: "/usr/bin:/bin", LD_PRELOAD: lib, LD_AUDIT: lib };
    const r = await run(c, "echo ran", policy, swap, { env });
    expect(r.out).toBe("");
    expect(r.err).toContain(`no ${join(c.dir, "p/keys")} ro mount there`);
    expect(r.code).toBe(125);
    expect(existsSync(join(c.dir, "leaked"))).toBe(false);
    // Where the gate lets it go, the job's environment is the job's: the library loads in the job.
    const ok = cell({ "p/keys/id": "SECRET-KEY\n" });
    const lib2 = join(ok.dir, "evil.so");
    expect(Bun.spawnSync(["gcc", "-shared", "-fPIC", "-o", lib2, src]).exitCode).toBe(0);
    const r2 = await run(ok, "echo ran", policy, () => {}, { env: { ...env, LD_PRELOAD: lib2, LD_AUDIT: "" } });
    expect(r2.out).toBe("ran\n");
    expect(existsSync(join(ok.dir, "leaked"))).toBe(true);
  },
);

// The plan of a view is as long as its mounts: a cell with many repositories (each one's .git
// hooks, config, info read-only) or a policy of many long paths; one environment variable or
// argument holds at most 128 KiB (MAX_ARG_STRLEN). No part of the plan may travel in one.
test("a view whose plan is larger than one environment variable may hold (128 KiB) passes the gate", async () => {
  const files: Record<string, string> = {};
  const seg = "d".repeat(200);
  const deep = Array.from({ length: 15 }, (_, i) => `${seg}${i}`).join("/");
  for (let i = 0; i < 60; i++) files[`${deep}/r${i}/config`] = "[core]\n";
  const c = cell(files);
  const pinned = Object.keys(files).map((f) => join(c.dir, f));
  expect(pinned.join("\n").length).toBeGreaterThan(128 * 1024);
  const r = await run(c, "echo ran", complete(undefined), () => {}, { workspaceReadOnly: pinned });
  expect(r.err).toBe("");
  expect(r.out).toBe("ran\n");
  expect(r.code).toBe(0);
});

test("the job's environment is exactly its own and PWD (quotes, newlines, $ and backslashes kept), and no fd of the plan is left to it", async () => {
  const c = cell({});
  const env = { PATH: "/usr/bin:/bin", Q: 'it\'s "x"\n$(no) `no` \\n end', EMPTY: "" };
  const r = await run(c, "ls /proc/self/fd | tr '\\n' ' '; echo; env -0", complete(undefined), () => {}, { env });
  expect(r.err).toBe("");
  const [fds, rest] = [r.out.slice(0, r.out.indexOf("\n")), r.out.slice(r.out.indexOf("\n") + 1)];
  // 0-2 and ls's own open of its fd dir.
  expect(fds.trim().split(" ").map(Number).sort()).toEqual([0, 1, 2, 3]);
  const got = Object.fromEntries(
    rest
      .split("\0")
      .filter((x) => x)
      .map((x) => [x.slice(0, x.indexOf("=")), x.slice(x.indexOf("=") + 1)]),
  );
  // PWD: bwrap sets it (its --chdir), as a shell would.
  expect(got).toEqual({ ...env, PWD: c.dir });
  // A program that is no shell gets the job's environment and PWD, nothing else.
  const direct = await run(c, "", complete(undefined), () => {}, { env, argv: ["/usr/bin/env", "-0"] });
  expect(
    direct.out
      .split("\0")
      .filter((x) => x)
      .sort(),
  ).toEqual(
    Object.entries({ ...env, PWD: c.dir })
      .map(([k, v]) => `${k}=${v}`)
      .sort(),
  );
});

test("the sandbox's /dev/shm is empty, with the host's /tmp shown read-only too", async () => {
  const c = cell({});
  const r = await run(c, "ls -A /dev/shm; echo ran", complete({ read_only: ["/tmp"] }));
  expect(r.err).toBe("");
  expect(r.out).toBe("ran\n");
  expect(r.code).toBe(0);
});

// A bind keeps the read-only flag of its source's mount: a `read_write` path on a read-only host
// mount shows `ro` in the sandbox's mountinfo. The gate holds where each mount is, and that the
// read-only ones are read-only; a writable one found read-only is no reason to refuse the job.
test.skipIf(process.getuid?.() !== 0 || !Bun.which("unshare"))(
  "a read_write path on a read-only host mount (a mount namespace of its own here) passes the gate",
  async () => {
    const c = cell({});
    const extra = mkdtempSync("/var/tmp/pt-view-ro-");
    dirs.push(extra);
    writeFileSync(join(extra, "f"), "data\n");
    Bun.spawnSync(["chown", "-R", "65534:65534", extra]);
    const lib = join(import.meta.dir, "../../lib/sandbox");
    const script = join(c.priv, "run.ts");
    writeFileSync(
      script,
      `import { closeSync } from "node:fs";
import { BwrapBackend } from "${lib}/bwrap.ts";
import { dropArgv } from "${lib}/identity.ts";
import { openGate } from "${lib}/gate.ts";
import { openInputs } from "${lib}/inputs.ts";
import { complete } from "${lib}/policy.ts";
import { hostRequest } from "${lib}/run.ts";
const req = hostRequest({ argv: ["/bin/sh", "-c", "cat ${extra}/f; echo ran"], cellDir: ${JSON.stringify(c.dir)},
  policy: complete({ read_write: [${JSON.stringify(extra)}] }), env: { PATH: "/usr/bin:/bin" },
  jobDir: ${JSON.stringify(c.priv)}, scratch: ${JSON.stringify(c.scratch)} });
const plan = new BwrapBackend().plan(req);
const ends = {};
const fds = openInputs(plan.inputs ?? [], ${JSON.stringify(c.priv)}, req.identity, ends);
const argv = req.identity ? [...dropArgv(req.identity), ...plan.argv] : plan.argv;
const p = Bun.spawn(argv, { cwd: plan.cwd, env: plan.env, stdio: ["ignore", "inherit", "inherit", ...fds] });
for (const fd of fds) closeSync(fd);
await openGate(ends, plan.planned).catch((e) => { console.error("planter: " + e.message); p.kill("SIGKILL"); });
process.exitCode = await p.exited;
`,
    );
    const mount = `mount --bind '${extra}' '${extra}' && mount -o remount,bind,ro '${extra}'`;
    const p = Bun.spawn(
      ["unshare", "-m", "--propagation", "private", "sh", "-c", `${mount} && exec "$0" "$1"`, process.execPath, script],
      { stdout: "pipe", stderr: "pipe", env: { ...process.env, PLANTER_HOME: home } },
    );
    const [code, out, err] = await Promise.all([
      p.exited,
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
    ]);
    expect(err).toBe("");
    expect(out).toBe("data\nran\n");
    expect(code).toBe(0);
  },
);

test("denied paths with a newline, a tab, '#', quotes and non-ASCII letters in their names pass the gate", async () => {
  const names = ["new\nline/secret", "tab\there/secret", "#hash 'q' \"dq\"/secret", "été-ü/secret"];
  const c = cell(Object.fromEntries(names.map((n) => [n, "SECRET\n"])));
  const policy = complete({ deny: names.map((n) => join(c.dir, n)) });
  const r = await run(c, "cat */secret 2>/dev/null; echo ran", policy);
  expect([r.code, r.out, r.err]).toEqual([0, "ran\n", ""]);
});

// Found by an attack on the check planter ran inside the sandbox before the gate: a concurrent job
// of the cell names a file of its own in a repository's config; the next launch binds it
// read-only at that name, and one swap of the directory above lands the bind on /usr/bin/dash.
// The check's own shell was then the attacker's program and copied the next job's environment
// into the cell. The gate reads the mounts from outside and ends the sandbox before anything in it
// runs; here the job's own /bin/sh would have been the attacker's.
test("closed hole: a config-named bind swapped onto /usr/bin/dash is refused from outside before any shell runs", async () => {
  const c = cell({
    "r/.git/HEAD": "ref: refs/heads/main\n",
    "r/.git/config": "[include]\n\tpath = dash\n",
    "r/.git/dash": "#!/usr/bin/perl\nopen O, '>', 'stolen'; print O map { \"$_=$ENV{$_}\\n\" } keys %ENV;\n",
  });
  Bun.spawnSync(["chmod", "755", join(c.dir, "r/.git/dash")]);
  const swap = () => {
    renameSync(join(c.dir, "r/.git"), join(c.dir, "r/git-moved"));
    symlinkSync("../../../usr/bin", join(c.dir, "r/.git"));
  };
  const env = { PATH: "/usr/bin:/bin", GITHUB_TOKEN: "ghp_victim_secret" };
  const r = await run(c, "echo job", complete(undefined), swap, {
    env,
    workspaceReadOnly: [join(c.dir, "r/.git/dash")],
  });
  expect(existsSync(join(c.dir, "stolen"))).toBe(false);
  expect(r.code).toBe(125);
});

// Fail closed: the block pipe's second write end is the sandbox's own (--sync-fd, kept by bwrap's
// init): a spawner gone before the gate answers (planterd killed there) ends no pipe, so the
// sandbox waits instead of running unchecked.
test("a gate nobody answers keeps the sandbox waiting: its spawner's ends closed, the job never runs", async () => {
  const c = cell({});
  const req = hostRequest({
    argv: ["/bin/sh", "-c", "echo ran > ran"],
    cellDir: c.dir,
    policy: complete(undefined),
    env: { PATH: "/usr/bin:/bin" },
    jobDir: c.priv,
    scratch: c.scratch,
  });
  const plan = new BwrapBackend().plan(req);
  const ends: PipeEnds = {};
  const fds = openInputs(plan.inputs ?? [], c.priv, req.identity, ends);
  const argv = req.identity ? [...dropArgv(req.identity), ...plan.argv] : plan.argv;
  const p = Bun.spawn(argv, { cwd: plan.cwd, env: plan.env, stdio: ["ignore", "ignore", "ignore", ...fds] });
  for (const fd of fds) closeSync(fd);
  const pid = await readChildPid(ends.info as number);
  expect(pid).toBeNumber();
  const pipe = `pipe:[${fstatSync(ends.block as number).ino}]`;
  const waitingOnGate = () => {
    const f = readFileSync(`/proc/${pid}/syscall`, "utf8").trim().split(" ");
    return f[0] === "0" && f[1] !== undefined && readlinkSync(`/proc/${pid}/fd/${Number.parseInt(f[1], 16)}`) === pipe;
  };
  await waitFor(waitingOnGate, "the sandbox at its gate");
  // The sandbox holds a write end of its own gate pipe (--sync-fd), so the pipe cannot end.
  const writers = readdirSync(`/proc/${pid}/fd`).filter((n) => {
    if (readlinkSync(`/proc/${pid}/fd/${n}`) !== pipe) return false;
    const flags = /flags:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${n}`, "utf8"))?.[1] ?? "0";
    return (Number.parseInt(flags, 8) & 3) === 1; // O_WRONLY
  });
  expect(writers.length).toBeGreaterThan(0);
  // planterd's ends go (as when it is killed): the sandbox still waits on the same read.
  closeEnds(ends);
  expect(waitingOnGate()).toBe(true);
  expect(existsSync(join(c.dir, "ran"))).toBe(false);
  process.kill(pid as number, "SIGKILL");
  await p.exited;
  expect(existsSync(join(c.dir, "ran"))).toBe(false);
});
