/**
 * The view check (lib/sandbox/bwrap.ts): bwrap resolves each mount's destination by path while it
 * makes the sandbox, so a directory on the way swapped for a symlink after planterd planned the
 * view (a concurrent job of the cell, the user's own process) would put a cover elsewhere and
 * leave the path it was for open. The first thing that runs in the sandbox compares its mount
 * table with the plan. Here the swap is made for certain: after the plan, before the spawn.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { chownSync, closeSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { PlanRequest } from "../../lib/sandbox/backend.ts";
import { BwrapBackend } from "../../lib/sandbox/bwrap.ts";
import { dropArgv } from "../../lib/sandbox/identity.ts";
import { openInputs } from "../../lib/sandbox/inputs.ts";
import { complete, type EffectivePolicy } from "../../lib/sandbox/policy.ts";
import { hostRequest } from "../../lib/sandbox/run.ts";
import { tempHome } from "../harness.ts";

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
  const fds = openInputs(plan.inputs ?? [], c.priv, req.identity);
  let p: Subprocess<"ignore", "pipe", "pipe">;
  try {
    between();
    const argv = req.identity ? [...dropArgv(req.identity), ...plan.argv] : plan.argv;
    p = Bun.spawn(argv, { cwd: plan.cwd, env: plan.env, stdio: ["ignore", "pipe", "pipe", ...fds] });
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code, out, err };
}

test("a view with denied paths (one with a space and a backslash in its name) passes the check; the job runs", async () => {
  const c = cell({ "a/secret": "SECRET-A\n", "with space\\x/secret": "SECRET-B\n", "a/open": "open\n" });
  const policy = complete({ deny: [join(c.dir, "a/secret"), join(c.dir, "with space\\x/secret")] });
  const r = await run(c, 'cat a/secret "with space\\x/secret" a/open 2>/dev/null; echo ran; env', policy);
  expect(r.out).toStartWith("open\nran\n");
  expect(r.out).not.toContain("SECRET");
  // The check's own variables are gone before the job's program runs.
  expect(r.out).not.toContain("PLANTER_VIEW");
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
});

// bwrap checks what it binds from an fd (the pinned ancestors, the read-only workspace files): after
// the mount it lstats the destination and compares it with the fd ("Race condition binding dirfd").
// That sees a destination that is itself a symlink, not one whose *directory* was swapped (lstat
// follows the swapped directory to the misplaced mount, which is the fd's file); and what bwrap
// mounts by path (the covers: /dev/null on a file, a tmpfs on a directory) it does not check at
// all. The view check sees every one.
test("a denied file swapped for a symlink after planter's checks: its /dev/null cover would land on the decoy, so nothing runs", async () => {
  const c = cell({ "a/secret": "SECRET-A\n", "a/decoy": "decoy\n" });
  const policy = complete({ deny: [join(c.dir, "a/secret")] });
  const r = await run(c, "cat a/moved; echo ran", policy, () => {
    renameSync(join(c.dir, "a/secret"), join(c.dir, "a/moved"));
    symlinkSync("decoy", join(c.dir, "a/secret"));
  });
  expect(r.out).toBe("");
  expect(r.err).toBe(
    `planter: the sandbox is not the view planned: no ${join(c.dir, "a/secret")} ro mount there (a path on the way changed while the sandbox was made); the job did not run\n`,
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

test("a read-only workspace file whose directory is swapped after planter's checks: bwrap's fd check passes, the view check does not", async () => {
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
