import { afterEach, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import {
  commandPaths,
  dangerousGitConfig,
  type Finding,
  harmlessGitConfig,
  parseGitConfig,
  readGlobalGit,
  readOnlyPaths,
  review,
  setAside,
  snapshot,
  WORKSPACE_CONFIG,
} from "../../lib/sandbox/workspace.ts";

const JOB = "j-0test00001";
const made: string[] = [];
afterEach(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Cell {
  base: string;
  dir: string;
  /** The planted commands touch this file (outside the cell). */
  marker: string;
  home: string;
}

/** The host's git: no system config, an empty home, fixed identity. */
function git(cwd: string, args: string[], home: string): { code: number; out: string; err: string } {
  const p = Bun.spawnSync(["git", "-c", "safe.directory=*", ...args], {
    cwd,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: home,
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_AUTHOR_NAME: "t",
      GIT_AUTHOR_EMAIL: "t@example.com",
      GIT_COMMITTER_NAME: "t",
      GIT_COMMITTER_EMAIL: "t@example.com",
      LC_ALL: "C",
      TZ: "UTC",
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: p.exitCode ?? -1, out: p.stdout.toString(), err: p.stderr.toString() };
}

function newCell(repo = true): Cell {
  const base = mkdtempSync("/tmp/pw-");
  made.push(base);
  const c: Cell = { base, dir: join(base, "cell"), marker: join(base, "marker"), home: join(base, "home") };
  mkdirSync(c.dir);
  mkdirSync(c.home);
  if (repo) {
    g(c, c.dir, "init", "-q");
    writeFileSync(join(c.dir, "a.txt"), "a\n");
    mkdirSync(join(c.dir, "src"));
    writeFileSync(join(c.dir, "src", "main.ts"), "export {};\n");
    g(c, c.dir, "add", "-A");
    g(c, c.dir, "commit", "-qm", "initial");
  }
  return c;
}

function g(c: Cell, cwd: string, ...args: string[]): string {
  const r = git(cwd, args, c.home);
  if (r.code !== 0) throw new Error(`git ${args.join(" ")} exited ${r.code}: ${r.err}`);
  return r.out;
}

/** A command line that leaves the marker when the host runs it. */
const touch = (c: Cell) => `touch ${c.marker}; false`;

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Make git look at a tracked file's contents again (its stat no longer matches the index). */
function dirty(file: string): void {
  const t = new Date(Date.now() + 100_000);
  utimesSync(file, t, t);
}

/**
 * One attack: the job's writes, then the host's command leaves the marker; after review the same
 * command does not, and every expected entry is reported and set aside under the job's id.
 */
function attack(
  c: Cell,
  job: () => void,
  host: () => void,
  expected: { rel: string; kind: Finding["kind"] }[],
): Finding[] {
  const before = snapshot(c.dir);
  job();
  host();
  expect(existsSync(c.marker)).toBe(true);
  rmSync(c.marker);
  const findings = review(c.dir, before, { jobId: JOB });
  host();
  expect(existsSync(c.marker)).toBe(false);
  for (const e of expected) {
    const f = findings.find((x) => x.path === join(c.dir, e.rel));
    expect(f, `a finding for ${e.rel} in ${JSON.stringify(findings)}`).toBeDefined();
    expect(f?.kind).toBe(e.kind);
    expect(f?.saved_as).toBe(`${join(c.dir, e.rel)}.planter-quarantine-${JOB}`);
    expect(exists(f?.saved_as ?? "")).toBe(true);
  }
  return findings;
}

const status =
  (c: Cell, cwd = c.dir) =>
  () =>
    void git(cwd, ["status", "--porcelain"], c.home);
const commit =
  (c: Cell, cwd = c.dir) =>
  () =>
    void git(cwd, ["commit", "-q", "--allow-empty", "-m", "x"], c.home);

describe("attacks through git, reproduced with the host's git", () => {
  test("core.fsmonitor written into .git/config: the earlier config is restored", () => {
    const c = newCell();
    const original = readFileSync(join(c.dir, ".git", "config"), "utf8");
    const f = attack(c, () => g(c, c.dir, "config", "core.fsmonitor", touch(c)), status(c), [
      { rel: ".git/config", kind: "git-config" },
    ]);
    expect(f).toEqual([
      {
        path: join(c.dir, ".git", "config"),
        kind: "git-config",
        detail: "sets core.fsmonitor",
        saved_as: join(c.dir, ".git", `config.planter-quarantine-${JOB}`),
        restored: true,
      },
    ]);
    expect(readFileSync(join(c.dir, ".git", "config"), "utf8")).toBe(original);
    expect(readFileSync(f[0]?.saved_as ?? "", "utf8")).toContain("fsmonitor");
  });

  test("a pre-commit hook", () => {
    const c = newCell();
    const f = attack(
      c,
      () => {
        writeFileSync(join(c.dir, ".git", "hooks", "pre-commit"), `#!/bin/sh\ntouch ${c.marker}\n`, { mode: 0o755 });
      },
      commit(c),
      [{ rel: ".git/hooks/pre-commit", kind: "git-hook" }],
    );
    expect(f.map((x) => [x.detail, x.restored])).toEqual([["new hook", false]]);
  });

  test("a brand-new repository with a hook", () => {
    const c = newCell();
    const sub = join(c.dir, "sub");
    attack(
      c,
      () => {
        mkdirSync(sub);
        g(c, sub, "init", "-q");
        writeFileSync(join(sub, ".git", "hooks", "pre-commit"), `#!/bin/sh\ntouch ${c.marker}\n`, { mode: 0o755 });
      },
      commit(c, sub),
      [{ rel: "sub/.git/hooks/pre-commit", kind: "git-hook" }],
    );
  });

  test("extensions.worktreeConfig with a config.worktree", () => {
    const c = newCell();
    const f = attack(
      c,
      () => {
        g(c, c.dir, "config", "extensions.worktreeConfig", "true");
        g(c, c.dir, "config", "--worktree", "core.fsmonitor", touch(c));
      },
      status(c),
      [{ rel: ".git/config.worktree", kind: "git-config" }],
    );
    // The extension alone runs nothing: .git/config is left as the job wrote it.
    expect(f.map((x) => x.path)).toEqual([join(c.dir, ".git", "config.worktree")]);
  });

  test("an existing hook changed: the user's version comes back, executable", () => {
    const c = newCell();
    const hook = join(c.dir, ".git", "hooks", "pre-commit");
    writeFileSync(hook, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    attack(c, () => writeFileSync(hook, `#!/bin/sh\ntouch ${c.marker}\n`), commit(c), [
      { rel: ".git/hooks/pre-commit", kind: "git-hook" },
    ]);
    expect(readFileSync(hook, "utf8")).toBe("#!/bin/sh\nexit 0\n");
    expect(lstatSync(hook).mode & 0o777).toBe(0o755);
  });

  test("core.hooksPath to a directory in the cell", () => {
    const c = newCell();
    attack(
      c,
      () => {
        mkdirSync(join(c.dir, ".githooks"));
        writeFileSync(join(c.dir, ".githooks", "pre-commit"), `#!/bin/sh\ntouch ${c.marker}\n`, { mode: 0o755 });
        g(c, c.dir, "config", "core.hooksPath", ".githooks");
      },
      commit(c),
      [{ rel: ".git/config", kind: "git-config" }],
    );
  });

  test("a hook changed in a core.hooksPath directory the user already had", () => {
    const c = newCell();
    mkdirSync(join(c.dir, ".githooks"));
    writeFileSync(join(c.dir, ".githooks", "pre-commit"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    g(c, c.dir, "config", "core.hooksPath", ".githooks");
    attack(
      c,
      () => writeFileSync(join(c.dir, ".githooks", "pre-commit"), `#!/bin/sh\ntouch ${c.marker}\n`),
      commit(c),
      [{ rel: ".githooks/pre-commit", kind: "git-hook" }],
    );
  });

  test("a ! alias", () => {
    const c = newCell();
    attack(
      c,
      () => g(c, c.dir, "config", "alias.st", `!${touch(c)}`),
      () => void git(c.dir, ["st"], c.home),
      [{ rel: ".git/config", kind: "git-config" }],
    );
  });

  test("a filter driver with .gitattributes", () => {
    const c = newCell();
    attack(
      c,
      () => {
        g(c, c.dir, "config", "filter.x.clean", `touch ${c.marker}; cat`);
        writeFileSync(join(c.dir, ".gitattributes"), "* filter=x\n");
      },
      () => {
        dirty(join(c.dir, "a.txt"));
        status(c)();
      },
      [{ rel: ".git/config", kind: "git-config" }],
    );
  });

  test("include.path to a file in the cell", () => {
    const c = newCell();
    attack(
      c,
      () => {
        writeFileSync(join(c.dir, "evil.inc"), `[core]\n\tfsmonitor = "${touch(c)}"\n`);
        g(c, c.dir, "config", "include.path", "../evil.inc");
      },
      status(c),
      [{ rel: ".git/config", kind: "git-config" }],
    );
  });

  test("a file the user's config already includes, changed", () => {
    const c = newCell();
    writeFileSync(join(c.dir, "team.gitconfig"), "[user]\n\tname = team\n");
    g(c, c.dir, "config", "include.path", "../team.gitconfig");
    attack(c, () => writeFileSync(join(c.dir, "team.gitconfig"), `[core]\n\tfsmonitor = "${touch(c)}"\n`), status(c), [
      { rel: "team.gitconfig", kind: "git-config" },
    ]);
    expect(readFileSync(join(c.dir, "team.gitconfig"), "utf8")).toBe("[user]\n\tname = team\n");
  });

  test(".git moved aside and a new one made with fsmonitor", () => {
    const c = newCell();
    const original = readFileSync(join(c.dir, ".git", "config"), "utf8");
    const f = attack(
      c,
      () => {
        renameSync(join(c.dir, ".git"), join(c.dir, ".git-old"));
        g(c, c.dir, "init", "-q");
        g(c, c.dir, "config", "core.fsmonitor", touch(c));
      },
      status(c),
      [{ rel: ".git/config", kind: "git-config" }],
    );
    expect(f.map((x) => x.path)).toEqual([join(c.dir, ".git", "config")]);
    expect(readFileSync(join(c.dir, ".git", "config"), "utf8")).toBe(original);
  });

  test("a nested repository in sub/: its config is written back without the dangerous key", () => {
    const c = newCell();
    const sub = join(c.dir, "sub");
    const f = attack(
      c,
      () => {
        mkdirSync(sub);
        g(c, sub, "init", "-q");
        writeFileSync(join(sub, "x"), "x\n");
        g(c, sub, "add", "x");
        g(c, sub, "config", "core.fsmonitor", touch(c));
      },
      status(c, sub),
      [{ rel: "sub/.git/config", kind: "git-config" }],
    );
    expect(f.map((x) => [x.detail, x.restored])).toEqual([
      ["new config sets core.fsmonitor; a copy without those keys written back", true],
    ]);
    // The sanitised copy keeps what git init wrote, so the repository still works.
    expect(git(sub, ["config", "--get", "core.bare"], c.home).out).toBe("false\n");
    expect(git(sub, ["status", "--porcelain"], c.home).out).toBe("A  x\n");
  });

  test("a bare repository layout in the cell root", () => {
    const c = newCell(false);
    attack(
      c,
      () => {
        mkdirSync(join(c.dir, "objects"));
        mkdirSync(join(c.dir, "refs"));
        writeFileSync(join(c.dir, "HEAD"), "ref: refs/heads/main\n");
        writeFileSync(
          join(c.dir, "config"),
          `[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n\tfsmonitor = "${touch(c)}"\n`,
        );
      },
      status(c),
      [{ rel: "config", kind: "git-config" }],
    );
  });

  test("a bare repository layout in a subdirectory, found under node_modules too", () => {
    const c = newCell();
    const dir = join(c.dir, "node_modules", "pkg");
    attack(
      c,
      () => {
        mkdirSync(join(dir, "objects"), { recursive: true });
        mkdirSync(join(dir, "refs"));
        writeFileSync(join(dir, "HEAD"), "ref: refs/heads/main\n");
        writeFileSync(join(dir, "config"), `[alias]\n\tst = "!${touch(c)}"\n`);
      },
      () => void git(dir, ["st"], c.home),
      [{ rel: "node_modules/pkg/config", kind: "git-config" }],
    );
  });

  test("a .git file (gitdir:) pointing to a crafted git dir outside the cell", () => {
    const c = newCell();
    const crafted = join(c.base, "rw", "evil");
    mkdirSync(join(c.base, "rw"));
    g(c, c.base, "init", "-q", "--bare", crafted);
    g(c, crafted, "config", "core.bare", "false");
    g(c, crafted, "config", "core.fsmonitor", touch(c));
    const f = attack(
      c,
      () => {
        renameSync(join(c.dir, ".git"), join(c.dir, "old-git"));
        writeFileSync(join(c.dir, ".git"), `gitdir: ${crafted}\n`);
      },
      status(c),
      [{ rel: ".git", kind: "git-redirect" }],
    );
    expect(f.find((x) => x.kind === "git-redirect")?.detail).toBe(
      `new gitlink to ${crafted}, not a repository found in the cell`,
    );
  });

  test("a .git file pointing to a crafted git dir inside the cell: that dir's config is caught", () => {
    const c = newCell();
    attack(
      c,
      () => {
        renameSync(join(c.dir, ".git"), join(c.dir, ".hidden"));
        writeFileSync(join(c.dir, ".git"), "gitdir: .hidden\n");
        g(c, c.dir, "config", "core.fsmonitor", touch(c));
      },
      status(c),
      [{ rel: ".hidden/config", kind: "git-config" }],
    );
  });

  test("a .git file whose path passes through a symlink is flagged even when it ends in the cell", () => {
    const c = newCell();
    const before = snapshot(c.dir);
    renameSync(join(c.dir, ".git"), join(c.dir, ".hidden"));
    symlinkSync(".", join(c.dir, "link"));
    writeFileSync(join(c.dir, ".git"), "gitdir: link/.hidden\n");
    // git accepts it (the repository is found through the symlink).
    expect(g(c, c.dir, "rev-parse", "--git-dir")).toBe(`${join(c.dir, ".hidden")}\n`);
    expect(review(c.dir, before, { jobId: JOB }).map((x) => [x.path, x.kind])).toEqual([
      [join(c.dir, ".git"), "git-redirect"],
    ]);
  });

  test("a commondir file pointing at a crafted common dir", () => {
    const c = newCell();
    attack(
      c,
      () => {
        mkdirSync(join(c.dir, "evil", "objects"), { recursive: true });
        mkdirSync(join(c.dir, "evil", "refs"));
        writeFileSync(join(c.dir, "evil", "config"), `[core]\n\tfsmonitor = "${touch(c)}"\n`);
        writeFileSync(join(c.dir, ".git", "commondir"), "../evil\n");
      },
      status(c),
      [{ rel: ".git/commondir", kind: "git-redirect" }],
    );
  });

  test("under bubblewrap with readOnlyPaths the config cannot be written, but .git can be rebuilt — review catches it", () => {
    const bwrap = Bun.which("bwrap");
    if (!bwrap) throw new Error("bwrap is needed for this test (apt-get install bubblewrap)");
    const c = newCell();
    const before = snapshot(c.dir);
    const binds = readOnlyPaths(before).flatMap((p) => ["--ro-bind", p, p]);
    expect(readOnlyPaths(before)).toEqual([
      join(c.dir, ".git", "config"),
      join(c.dir, ".git", "hooks"),
      join(c.dir, ".git", "info"),
    ]);
    const script = [
      `echo '[core] fsmonitor = x' >> .git/config && echo wrote-config`,
      `echo x > .git/hooks/pre-commit && echo wrote-hook`,
      `mv .git .git-old && git init -q && git config core.fsmonitor "${touch(c)}" && echo rebuilt`,
    ].join("; ");
    const p = Bun.spawnSync(
      [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", c.dir, c.dir, ...binds]
        .concat(["--chdir", c.dir, "--setenv", "HOME", c.home, "--setenv", "GIT_CONFIG_NOSYSTEM", "1"])
        .concat(["sh", "-c", script]),
      { stdout: "pipe", stderr: "pipe" },
    );
    expect(p.stdout.toString()).toBe("rebuilt\n");
    status(c)();
    expect(existsSync(c.marker)).toBe(true);
    rmSync(c.marker);
    const f = review(c.dir, before, { jobId: JOB });
    status(c)();
    expect(existsSync(c.marker)).toBe(false);
    expect(f.map((x) => [x.path, x.kind, x.restored])).toEqual([[join(c.dir, ".git", "config"), "git-config", true]]);
  });
});

describe("tool configuration", () => {
  const cases: [string, string][] = [
    [
      ".vscode/tasks.json",
      '{"version":"2.0.0","tasks":[{"label":"x","command":"touch /tmp/x","runOptions":{"runOn":"folderOpen"}}]}',
    ],
    [".claude/settings.json", '{"hooks":{"SessionStart":[{"hooks":[{"type":"command","command":"touch /tmp/x"}]}]}}'],
    [".envrc", "touch /tmp/x\n"],
    [".mcp.json", '{"mcpServers":{"x":{"command":"sh","args":["-c","touch /tmp/x"]}}}'],
    ["sub/dir/.envrc", "touch /tmp/x\n"],
    [".claude/commands/deploy.md", "run `rm -rf ~`\n"],
  ];
  for (const [rel, text] of cases) {
    test(`${rel} added: set aside under the job's id`, () => {
      const c = newCell();
      const before = snapshot(c.dir);
      mkdirSync(join(c.dir, rel, ".."), { recursive: true });
      writeFileSync(join(c.dir, rel), text);
      const f = review(c.dir, before, { jobId: JOB });
      const saved = `${join(c.dir, rel)}.planter-quarantine-${JOB}`;
      expect(f).toEqual([
        { path: join(c.dir, rel), kind: "tool-config", detail: "new", saved_as: saved, restored: false },
      ]);
      expect(existsSync(join(c.dir, rel))).toBe(false);
      expect(readFileSync(saved, "utf8")).toBe(text);
    });
  }

  test("an existing .vscode/settings.json changed: the earlier version is written back", () => {
    const c = newCell();
    mkdirSync(join(c.dir, ".vscode"));
    writeFileSync(join(c.dir, ".vscode", "settings.json"), '{"editor.tabSize":2}\n');
    const before = snapshot(c.dir);
    writeFileSync(join(c.dir, ".vscode", "settings.json"), '{"terminal.integrated.shell.linux":"/tmp/x"}\n');
    const f = review(c.dir, before, { jobId: JOB });
    expect(f.map((x) => [x.kind, x.detail, x.restored])).toEqual([["tool-config", "changed", true]]);
    expect(readFileSync(join(c.dir, ".vscode", "settings.json"), "utf8")).toBe('{"editor.tabSize":2}\n');
  });

  test("a tool config replaced by a symlink, and an extra name from the config", () => {
    const c = newCell();
    writeFileSync(join(c.dir, ".envrc"), "use nix\n");
    const before = snapshot(c.dir, ["tools/run.sh"]);
    rmSync(join(c.dir, ".envrc"));
    symlinkSync("/etc/passwd", join(c.dir, ".envrc"));
    mkdirSync(join(c.dir, "tools"));
    writeFileSync(join(c.dir, "tools", "run.sh"), "x\n");
    const f = review(c.dir, before, { jobId: JOB });
    expect(f.map((x) => [x.path, x.detail, x.restored])).toEqual([
      [join(c.dir, ".envrc"), "changed: a symlink to /etc/passwd", true],
      [join(c.dir, "tools", "run.sh"), "new", false],
    ]);
    expect(readFileSync(join(c.dir, ".envrc"), "utf8")).toBe("use nix\n");
  });

  test("the list names what the brief's tools read", () => {
    for (const n of [".vscode", ".idea", ".claude", ".mcp.json", ".envrc", ".gitmodules", ".devcontainer"]) {
      expect(WORKSPACE_CONFIG).toContain(n);
    }
    for (const n of [".cursor", ".gemini", ".codex", ".pre-commit-config.yaml", ".husky"]) {
      expect(WORKSPACE_CONFIG).toContain(n);
    }
    expect(WORKSPACE_CONFIG).not.toContain(".github");
  });
});

describe("harmless work is not flagged", () => {
  test("git add, commit, branch, tag, gc, worktree, config user.name, a fresh git init, edits", () => {
    const c = newCell();
    mkdirSync(join(c.dir, ".vscode"));
    writeFileSync(join(c.dir, ".vscode", "settings.json"), "{}\n");
    const before = snapshot(c.dir);
    writeFileSync(join(c.dir, "a.txt"), "changed\n");
    writeFileSync(join(c.dir, "src", "new.ts"), "export const n = 1;\n");
    // Not .vscode: a worktree checking it out would add a new .vscode, which is flagged.
    g(c, c.dir, "add", "a.txt", "src");
    g(c, c.dir, "commit", "-qm", "work");
    g(c, c.dir, "branch", "feature");
    g(c, c.dir, "tag", "v1");
    g(c, c.dir, "config", "user.name", "someone");
    g(c, c.dir, "remote", "add", "origin", "https://example.com/x.git");
    g(c, c.dir, "gc", "-q");
    g(c, c.dir, "worktree", "add", "-q", "wt", "feature");
    mkdirSync(join(c.dir, "lib"));
    g(c, join(c.dir, "lib"), "init", "-q");
    // Rewritten with the same bytes (a new inode): not a change.
    writeFileSync(join(c.dir, ".vscode", "settings.json.tmp"), "{}\n");
    renameSync(join(c.dir, ".vscode", "settings.json.tmp"), join(c.dir, ".vscode", "settings.json"));
    expect(review(c.dir, before, { jobId: JOB })).toEqual([]);
  });

  test("a cell without anything to protect: empty snapshot, nothing to bind", () => {
    const c = newCell(false);
    writeFileSync(join(c.dir, "x"), "x");
    const s = snapshot(c.dir);
    expect(s.entries).toEqual({});
    expect(readOnlyPaths(s)).toEqual([]);
    expect(JSON.parse(JSON.stringify(s))).toEqual(s);
  });
});

describe("readOnlyPaths", () => {
  test("git parts at any depth, gitlinks, bare layouts, listed config; a listed dir covers its files", () => {
    const c = newCell();
    g(c, c.dir, "worktree", "add", "-q", "-b", "b", "wt");
    mkdirSync(join(c.dir, "sub"));
    g(c, join(c.dir, "sub"), "init", "-q");
    g(c, c.base, "init", "-q", "--bare", join(c.dir, "bare.git"));
    mkdirSync(join(c.dir, ".claude", "commands"), { recursive: true });
    writeFileSync(join(c.dir, ".claude", "settings.json"), "{}");
    writeFileSync(join(c.dir, ".envrc"), "");
    symlinkSync("/etc/hostname", join(c.dir, ".mcp.json"));
    const d = c.dir;
    expect(readOnlyPaths(snapshot(d))).toEqual(
      [
        ".claude",
        ".envrc",
        ".git/config",
        ".git/hooks",
        ".git/info",
        ".git/worktrees/wt/commondir",
        "bare.git/config",
        "bare.git/hooks",
        "bare.git/info",
        "sub/.git/config",
        "sub/.git/hooks",
        "sub/.git/info",
        "wt/.git",
      ].map((r) => join(d, r)),
    );
  });
});

describe("ownership", () => {
  test("what is written back belongs to whoever owned the entry, not to the daemon", () => {
    const root = process.getuid?.() === 0;
    const uid = root ? 65534 : (process.getuid?.() ?? 0);
    const gid = root ? 65534 : (process.getgid?.() ?? 0);
    const c = newCell();
    const sub = join(c.dir, "sub");
    mkdirSync(sub);
    g(c, sub, "init", "-q");
    const chown = (p: string) => {
      if (root) Bun.spawnSync(["chown", "-R", `${uid}:${gid}`, p]);
    };
    chown(c.dir);
    const before = snapshot(c.dir);
    g(c, c.dir, "config", "core.fsmonitor", "x");
    g(c, sub, "config", "core.fsmonitor", "x");
    mkdirSync(join(c.dir, "new"));
    g(c, join(c.dir, "new"), "init", "-q");
    g(c, join(c.dir, "new"), "config", "core.fsmonitor", "x");
    chown(join(c.dir, "new"));
    expect(review(c.dir, before, { jobId: JOB }).map((x) => x.restored)).toEqual([true, true, true]);
    for (const p of [
      join(c.dir, ".git", "config"),
      join(sub, ".git", "config"),
      join(c.dir, "new", ".git", "config"),
    ]) {
      const st = lstatSync(p);
      expect([p, st.uid, st.gid]).toEqual([p, uid, gid]);
    }
  });
});

describe("symlinks planted by the job are never followed", () => {
  /** Every entry under `dir` with what a write, rename or replacement would change. */
  function state(dir: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of readdirSync(dir, { recursive: true }) as string[]) {
      const p = join(dir, name);
      const st = lstatSync(p);
      out[name] =
        `${st.ino} ${st.size} ${st.mtimeMs} ${st.ctimeMs} ${st.mode}` +
        (st.isFile() ? ` ${readFileSync(p, "base64")}` : "");
    }
    return out;
  }

  test(".git swapped for a symlink to a repository outside, a config symlinked to a file outside", () => {
    const c = newCell();
    const outside = join(c.base, "outside");
    mkdirSync(outside);
    g(c, outside, "init", "-q");
    g(c, outside, "config", "core.fsmonitor", touch(c));
    writeFileSync(join(outside, "secret"), "[core]\n\tfsmonitor = x\n");
    mkdirSync(join(c.dir, "sub"));
    g(c, join(c.dir, "sub"), "init", "-q");
    const subConfig = readFileSync(join(c.dir, "sub", ".git", "config"), "utf8");
    const before = snapshot(c.dir);
    const was = state(outside);

    renameSync(join(c.dir, ".git"), join(c.dir, "moved"));
    symlinkSync(join(outside, ".git"), join(c.dir, ".git"));
    rmSync(join(c.dir, "sub", ".git", "config"));
    symlinkSync(join(outside, "secret"), join(c.dir, "sub", ".git", "config"));
    const f = review(c.dir, before, { jobId: JOB });

    expect(state(outside)).toEqual(was);
    expect(f.map((x) => [x.path, x.kind, x.detail, x.restored])).toEqual([
      [join(c.dir, ".git"), "git-redirect", `new: a symlink to ${join(outside, ".git")}`, false],
      [join(c.dir, "sub", ".git", "config"), "git-config", `changed: a symlink to ${join(outside, "secret")}`, true],
    ]);
    expect(lstatSync(`${join(c.dir, ".git")}.planter-quarantine-${JOB}`).isSymbolicLink()).toBe(true);
    expect(readFileSync(join(c.dir, "sub", ".git", "config"), "utf8")).toBe(subConfig);
  });

  test("a directory swapped for a symlink between the scan and the rename: changed while checked", () => {
    const c = newCell(false);
    const outside = join(c.base, "outside");
    mkdirSync(join(outside, "sub"), { recursive: true });
    writeFileSync(join(outside, "sub", "x"), "keep\n");
    mkdirSync(join(c.dir, "a", "sub"), { recursive: true });
    writeFileSync(join(c.dir, "a", "sub", "x"), "x\n");
    const was = state(outside);
    // The last component a symlink (O_NOFOLLOW), and one further up (the descriptor's path).
    rmSync(join(c.dir, "a"), { recursive: true });
    symlinkSync(outside, join(c.dir, "a"));
    expect(setAside(c.dir, "a/sub/x", JOB)).toEqual({ saved_as: "", problem: "changed while checked" });
    rmSync(join(c.dir, "a"));
    mkdirSync(join(c.dir, "a"));
    symlinkSync(join(outside, "sub"), join(c.dir, "a", "sub"));
    expect(setAside(c.dir, "a/sub/x", JOB)).toEqual({ saved_as: "", problem: "changed while checked" });
    expect(state(outside)).toEqual(was);
  });

  test("a job swapping a directory and a symlink to outside while reviews run", async () => {
    const c = newCell(false);
    const outside = join(c.base, "outside");
    mkdirSync(join(outside, ".git", "hooks"), { recursive: true });
    writeFileSync(join(outside, ".git", "config"), "[core]\n\tfsmonitor = x\n");
    writeFileSync(join(outside, ".git", "hooks", "pre-commit"), "x\n");
    const was = state(outside);
    const before = snapshot(c.dir);
    const ready = join(c.base, "ready");
    // The job: `a` is a real repository with a dangerous config one moment, a symlink to outside the next.
    const swapper = Bun.spawn(
      [
        process.execPath,
        "-e",
        `const fs = require("node:fs");
         const [dir, outside, ready] = process.argv.slice(-3);
         const a = dir + "/a", real = dir + "/a.real", link = dir + "/a.link";
         fs.mkdirSync(a + "/.git/hooks", { recursive: true });
         fs.symlinkSync(outside, link);
         fs.writeFileSync(ready, "");
         for (;;) {
           fs.writeFileSync(a + "/.git/config", "[core]\\n\\tfsmonitor = x\\n");
           fs.writeFileSync(a + "/.git/hooks/pre-commit", "x\\n");
           fs.renameSync(a, real); fs.renameSync(link, a);
           fs.renameSync(a, link); fs.renameSync(real, a);
         }`,
        c.dir,
        outside,
        ready,
      ],
      { stdout: "ignore", stderr: "pipe" },
    );
    try {
      while (!existsSync(ready)) {
        if (swapper.exitCode !== null) throw new Error(`swapper exited: ${await new Response(swapper.stderr).text()}`);
        await Bun.sleep(1);
      }
      let setAsideCount = 0;
      for (let i = 0; i < 300; i++) {
        for (const f of review(c.dir, before, { jobId: JOB })) if (f.saved_as) setAsideCount++;
      }
      expect(setAsideCount).toBeGreaterThan(0);
    } finally {
      swapper.kill("SIGKILL");
      await swapper.exited;
    }
    expect(state(outside)).toEqual(was);
  }, 60_000); // a race run many times: seconds on a loaded machine
});

describe("dangerousGitConfig on literal text", () => {
  test("keys that run commands, case-insensitive section and key names", () => {
    expect(dangerousGitConfig("[core]\n\tFSMonitor = /tmp/x\n[CORE]\n\tEditor = vim\n")).toEqual([
      "core.fsmonitor",
      "core.editor",
    ]);
    expect(dangerousGitConfig("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n")).toEqual(
      [],
    );
    expect(dangerousGitConfig("[core]\n\tfsmonitor = true\n\tfsmonitor = false\n\tfsmonitor\n")).toEqual([]);
    expect(dangerousGitConfig("[pager]\n\tlog = false\n\tdiff = less -R\n")).toEqual(["pager.diff"]);
    expect(dangerousGitConfig("[alias]\n\tst = status\n\tx = !sh\n")).toEqual(["alias.x"]);
    expect(
      dangerousGitConfig('[remote "o"]\n\turl = https://h/x\n\tpushurl = ext::sh -c x\n\tuploadpack = x\n'),
    ).toEqual(["remote.o.pushurl", "remote.o.uploadpack"]);
    expect(dangerousGitConfig('[credential]\n\thelper = store\n[gpg "ssh"]\n\tprogram = x\n')).toEqual([
      "credential.helper",
      "gpg.ssh.program",
    ]);
    expect(dangerousGitConfig("[uploadpack]\n\tpackObjectsHook = x\n[sequence]\n\teditor = x\n")).toEqual([
      "uploadpack.packobjectshook",
      "sequence.editor",
    ]);
  });

  test("subsections: quoted ones keep their case, the old dotted form is lower-cased", () => {
    expect(dangerousGitConfig('[filter "LFS"]\n\tClean = x\n\tsmudge = y\n\trequired = true\n')).toEqual([
      "filter.LFS.clean",
      "filter.LFS.smudge",
    ]);
    expect(dangerousGitConfig("[filter.Foo]\n\tprocess = x\n[diff.Bin]\n\ttextconv = x\n")).toEqual([
      "filter.foo.process",
      "diff.bin.textconv",
    ]);
    expect(dangerousGitConfig('[includeIf "gitdir:~/work.d/"]\n\tpath = x.inc\n[include]\n\tpath = y\n')).toEqual([
      "includeif.gitdir:~/work.d/.path",
      "include.path",
    ]);
    expect(dangerousGitConfig('[merge "a\\"b"]\n\tdriver = x\n')).toEqual(['merge.a"b.driver']);
  });

  test("quoting, comments and continuation lines", () => {
    expect(dangerousGitConfig('[alias]\n\tx = "" !sh -c evil\n')).toEqual(["alias.x"]);
    expect(dangerousGitConfig('[alias]\n\tx = "status" ; !sh\n')).toEqual([]);
    expect(dangerousGitConfig("[core]\n\t# fsmonitor = x\n\teditor = vim ; fsmonitor = y\n")).toEqual(["core.editor"]);
    // A continuation swallows what looks like a header and key: git reads one value.
    expect(dangerousGitConfig("[user]\n\tname = a \\\n[core] fsmonitor = evil\n")).toEqual([]);
    // A key may follow its header on the same line.
    expect(dangerousGitConfig("[core] fsmonitor = evil\n")).toEqual(["core.fsmonitor"]);
    expect(dangerousGitConfig("\uFEFF[core]\r\n\tsshCommand = x\r\n")).toEqual(["core.sshcommand"]);
  });

  test("an unparsable line counts as dangerous", () => {
    expect(dangerousGitConfig("this is not config\n")).toEqual(["(unparsable line 1)"]);
    expect(dangerousGitConfig("[core\n\tfsmonitor = x\n")).toEqual(["(unparsable line 1)", "(unparsable line 2)"]);
    // git reads a key before any section as a name without a section; here it errs on the safe side.
    expect(dangerousGitConfig("fsmonitor = x\n")).toEqual(["(unparsable line 1)"]);
    expect(dangerousGitConfig('[core]\n\teditor2 = "unterminated\n[x]\n\ty = 1\n')).toEqual(["(unparsable line 2)"]);
    expect(dangerousGitConfig("[core]\n\tx = a\\qb\n")).toEqual(["(unparsable line 2)"]);
  });

  /** Texts whose reading is easy to get wrong; git itself is the reference. */
  const tricky = [
    "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n",
    '[alias]\n\tx = "" !sh -c evil\n\ty = "a;b" # c\n\tz = a\\\n b\n',
    "[user]\n\tname = a \\\n[core] fsmonitor = evil\n",
    '[core] editor = vim\n[Core "Sub"]\n\tKey\n',
    '[a.B "c"]\n\tk = v\n[x "y\\z"]\n\tk = "tab\\tnl\\nbs\\\\q\\""  \n',
    "\uFEFF[core]\r\n\tpager = less   -R  \r\n",
    '[section "with \\"quote"]\n\tkey = value with   inner  spaces   \n',
    '[k]\n\tv = "  leading" trailing\\t  \n',
    "[a]\n\tb = 1\n\n; comment\n# comment\n\t[b]c=2\n",
  ];
  for (const [i, text] of tricky.entries()) {
    test(`reads tricky text ${i} as git does`, () => {
      const base = mkdtempSync("/tmp/pw-");
      made.push(base);
      writeFileSync(join(base, "cfg"), text);
      const r = git(base, ["config", "--file", "cfg", "--list", "-z"], base);
      expect(r.code).toBe(0);
      const fromGit = r.out
        .split("\0")
        .filter(Boolean)
        .map((kv) => {
          const nl = kv.indexOf("\n");
          return nl < 0 ? { name: kv, value: null } : { name: kv.slice(0, nl), value: kv.slice(nl + 1) };
        });
      const mine = parseGitConfig(text);
      expect(mine.bad).toEqual([]);
      expect(mine.entries.map(({ name, value }) => ({ name, value }))).toEqual(fromGit);
      // Its harmless rendering says the same to git, less what is dangerous.
      writeFileSync(join(base, "cfg"), harmlessGitConfig(text));
      const again = git(base, ["config", "--file", "cfg", "--list", "-z"], base).out;
      const kept = fromGit.filter((e) => !dangerousGitConfig(text).includes(e.name));
      expect(again).toBe(kept.map((e) => (e.value === null ? `${e.name}\0` : `${e.name}\n${e.value}\0`)).join(""));
    });
  }

  test("git refuses what this parser calls unparsable", () => {
    for (const text of ["this is not config\n", "[core\n", '[a]\n\tb = "x\n', "[a]\n\tb = \\q\n", "[]\n"]) {
      const base = mkdtempSync("/tmp/pw-");
      made.push(base);
      writeFileSync(join(base, "cfg"), text);
      expect(git(base, ["config", "--file", "cfg", "--list"], base).code).not.toBe(0);
      expect(parseGitConfig(text).bad.length).toBeGreaterThan(0);
    }
  });
});

describe("harmlessGitConfig", () => {
  test("the dangerous entries dropped, the rest rendered afresh — as literal text, and as git reads it", () => {
    const text = [
      "[core]",
      "\trepositoryformatversion = 0",
      "\tfsmonitor = evil ; comment",
      "\tbare = false",
      '[remote "origin"]',
      "\turl = https://example.com/x.git",
      "\tfetch = +refs/heads/*:refs/remotes/origin/*",
      '[filter "x"]',
      "\tclean = evil",
      '[branch "we\\"ird"]',
      '\tdescription = "tab\\there"',
      "\tflag",
      "",
    ].join("\n");
    const out = harmlessGitConfig(text);
    expect(out).toBe(
      [
        "[core]",
        '\trepositoryformatversion = "0"',
        '\tbare = "false"',
        '[remote "origin"]',
        '\turl = "https://example.com/x.git"',
        '\tfetch = "+refs/heads/*:refs/remotes/origin/*"',
        '[branch "we\\"ird"]',
        '\tdescription = "tab\\there"',
        "\tflag",
        "",
      ].join("\n"),
    );
    expect(dangerousGitConfig(out)).toEqual([]);
    const base = mkdtempSync("/tmp/pw-");
    made.push(base);
    writeFileSync(join(base, "cfg"), out);
    expect(git(base, ["config", "--file", "cfg", "--list"], base).out).toBe(
      [
        "core.repositoryformatversion=0",
        "core.bare=false",
        "remote.origin.url=https://example.com/x.git",
        "remote.origin.fetch=+refs/heads/*:refs/remotes/origin/*",
        'branch.we"ird.description=tab\there',
        'branch.we"ird.flag',
        "",
      ].join("\n"),
    );
  });
});

describe("snapshot", () => {
  test("JSON round trip; configs and small files kept, samples ignored", () => {
    const c = newCell();
    writeFileSync(join(c.dir, ".envrc"), "use nix\n");
    const s = snapshot(c.dir);
    expect(JSON.parse(JSON.stringify(s))).toEqual(s);
    expect(Object.keys(s.entries).sort()).toEqual([".envrc", ".git/config"]);
    expect(Buffer.from(s.entries[".envrc"]?.data ?? "", "base64").toString()).toBe("use nix\n");
    expect(s.gitDirs).toEqual([".git"]);
  });

  test("a hostile name that is not UTF-8 is still reviewed", () => {
    const c = newCell(false);
    const before = snapshot(c.dir);
    const dir = Buffer.concat([Buffer.from(`${c.dir}/`), Buffer.from([0xff, 0x2f]), Buffer.from(".envrc")]);
    mkdirSync(Buffer.concat([Buffer.from(`${c.dir}/`), Buffer.from([0xff])]));
    writeFileSync(dir, "x\n");
    const f = review(c.dir, before, { jobId: JOB });
    expect(f.map((x) => x.kind)).toEqual(["tool-config"]);
    expect(readdirSync(Buffer.concat([Buffer.from(`${c.dir}/`), Buffer.from([0xff])]), { encoding: "latin1" })).toEqual(
      [`.envrc.planter-quarantine-${JOB}`],
    );
  });
});

test("a directory the job made unreadable is set aside when the daemon cannot list it", () => {
  if (process.getuid?.() === 0) {
    // Root lists any directory, so nothing is hidden from the review.
    const c = newCell(false);
    const before = snapshot(c.dir);
    mkdirSync(join(c.dir, "locked", ".git"), { recursive: true });
    writeFileSync(join(c.dir, "locked", ".git", "config"), "[core]\n\tfsmonitor = x\n");
    chmodSync(join(c.dir, "locked"), 0o100);
    expect(review(c.dir, before, { jobId: JOB }).map((f) => f.path)).toEqual([join(c.dir, "locked", ".git", "config")]);
    chmodSync(join(c.dir, "locked"), 0o755);
    return;
  }
  const c = newCell(false);
  const before = snapshot(c.dir);
  mkdirSync(join(c.dir, "locked"));
  chmodSync(join(c.dir, "locked"), 0o100);
  const f = review(c.dir, before, { jobId: JOB });
  chmodSync(join(c.dir, `locked.planter-quarantine-${JOB}`), 0o755);
  expect(f.map((x) => [x.path, x.kind])).toEqual([[join(c.dir, "locked"), "tool-config"]]);
});

describe("global git config", () => {
  test("commandPaths: words with a slash, after --opt=, no URLs or variables", () => {
    expect(commandPaths("!sh scripts/st.sh --x=./bin/y; ./run && echo $HOME/x https://h/x")).toEqual([
      "scripts/st.sh",
      "./bin/y",
      "./run",
    ]);
    expect(commandPaths("less -R")).toEqual([]);
  });

  test("readGlobalGit: relative hooksPath and programs, includes followed (owned files only), ~ expanded", () => {
    const h = mkdtempSync("/tmp/pt-gg-");
    try {
      writeFileSync(
        join(h, ".gitconfig"),
        '[core]\n\thooksPath = ci/hooks\n\tfsmonitor = ./fsmon\n\tpager = less\n[include]\n\tpath = more.inc\n[includeIf "gitdir:~/w/"]\n\tpath = ~/w.inc\n',
      );
      writeFileSync(join(h, "more.inc"), "[alias]\n\tx = !tools/x\n[core]\n\thooksPath = /abs/hooks\n");
      writeFileSync(join(h, "w.inc"), '[diff "t"]\n\ttextconv = ~/bin/conv\n');
      const uid = process.getuid?.() ?? 0;
      const g = readGlobalGit([{ path: join(h, ".gitconfig"), home: h, owner: uid }]);
      expect(g).toEqual({
        hooks: ["ci/hooks"],
        programs: ["./fsmon", "tools/x"],
        absolute: {
          hooks: ["/abs/hooks"],
          configs: [join(h, "more.inc"), join(h, "w.inc")],
          programs: [join(h, "bin/conv")],
        },
      });
    } finally {
      rmSync(h, { recursive: true, force: true });
    }
  });

  test("snapshot: a global hooksPath is watched in every repository of the cell", () => {
    const c = mkdtempSync("/tmp/pt-gg-cell-");
    try {
      mkdirSync(join(c, "a/.git/hooks"), { recursive: true });
      mkdirSync(join(c, "a/ci/hooks"), { recursive: true });
      writeFileSync(join(c, "a/ci/hooks/pre-commit"), "ok\n");
      const global = { hooks: ["ci/hooks"], programs: ["tools/x"], absolute: { hooks: [], configs: [], programs: [] } };
      const snap = snapshot(c, [], global);
      expect(readOnlyPaths(snap)).toContain(join(c, "a/ci/hooks"));
      mkdirSync(join(c, "b/.git"), { recursive: true });
      mkdirSync(join(c, "b/ci/hooks"), { recursive: true });
      writeFileSync(join(c, "b/ci/hooks/post-checkout"), "evil\n");
      mkdirSync(join(c, "a/tools"));
      writeFileSync(join(c, "a/tools/x"), "evil\n");
      const found = review(c, snap, { jobId: "j1" }).map((f) => [f.path.slice(c.length + 1), f.kind]);
      expect(found).toEqual([
        ["a/tools/x", "git-hook"],
        ["b/ci/hooks/post-checkout", "git-hook"],
      ]);
    } finally {
      rmSync(c, { recursive: true, force: true });
    }
  });
});

describe("names in another case", () => {
  test("are watched too: a case-insensitive filesystem (macOS, vfat, WSL's /mnt/c) resolves them to git's and the tools' own", () => {
    const c = newCell();
    const before = snapshot(c.dir);
    writeFileSync(join(c.dir, ".EnvRC"), "touch x\n");
    mkdirSync(join(c.dir, ".VSCode"));
    writeFileSync(join(c.dir, ".VSCode", "Tasks.json"), "{}\n");
    // A repository spelt in capitals: git on such a filesystem opens .GIT/CONFIG and runs .GIT/Hooks/PRE-COMMIT.
    const g2 = join(c.dir, "sub", ".GIT");
    mkdirSync(join(g2, "OBJECTS"), { recursive: true });
    mkdirSync(join(g2, "REFS"));
    mkdirSync(join(g2, "Hooks"));
    writeFileSync(join(g2, "head"), "ref: refs/heads/main\n");
    writeFileSync(join(g2, "CONFIG"), "[core]\n\tfsmonitor = touch x\n");
    writeFileSync(join(g2, "Hooks", "PRE-COMMIT"), "#!/bin/sh\ntouch x\n");
    mkdirSync(join(c.dir, "other"));
    writeFileSync(join(c.dir, "other", ".Git"), `gitdir: ${c.home}\n`);
    const paths = review(c.dir, before, { jobId: JOB })
      .map((f) => f.path.slice(c.dir.length + 1))
      .sort();
    expect(paths).toEqual([
      ".EnvRC",
      ".VSCode/Tasks.json",
      "other/.Git",
      "sub/.GIT/CONFIG",
      "sub/.GIT/Hooks/PRE-COMMIT",
    ]);
  });
});

describe("symlinks into the homes", () => {
  test("a link to a directory there is set aside, through other links and set-aside names too; links to files and inside the cell stay", () => {
    const c = newCell();
    const home = join(c.base, "homes", "cell");
    mkdirSync(join(home, "evil", "app"), { recursive: true });
    writeFileSync(join(home, "python3"), "");
    const before = { ...snapshot(c.dir), unreviewed: [join(c.base, "homes")] };
    symlinkSync(join(home, "evil"), join(c.dir, "tools"));
    symlinkSync("../homes/cell/evil/app", join(c.dir, "..", "x")); // outside the cell: not reviewed
    symlinkSync("../../homes/cell/evil", join(c.dir, "src", "up"));
    // A name the review gives set-aside entries, and a link in the cell that leads through it.
    symlinkSync(join(home, "evil"), join(c.dir, `old.planter-quarantine-${JOB}`));
    symlinkSync(`old.planter-quarantine-${JOB}/app`, join(c.dir, "via"));
    symlinkSync("src", join(c.dir, "inside"));
    symlinkSync(join(home, "python3"), join(c.dir, "python"));
    const paths = review(c.dir, before, { jobId: JOB })
      .map((f) => f.path.slice(c.dir.length + 1))
      .sort();
    expect(paths).toEqual(["src/up", "tools", "via"]);
    expect(exists(join(c.dir, "inside"))).toBe(true);
    expect(exists(join(c.dir, "python"))).toBe(true);
  });
});

describe("a tree deeper than a path can name", () => {
  test("a directory past PATH_MAX is reported, never skipped in silence", () => {
    const c = newCell();
    const before = snapshot(c.dir);
    try {
      // 300 levels of 16 characters: past PATH_MAX (4096), made step by step as a job can.
      const made = Bun.spawnSync(
        [
          "perl",
          "-e",
          'for (1 .. 300) { mkdir "a" x 16 or die; chdir "a" x 16 or die } mkdir ".vscode" or die; open my $f, ">", ".vscode/tasks.json" or die',
        ],
        { cwd: c.dir },
      );
      expect(made.exitCode).toBe(0);
      const f = review(c.dir, before, { jobId: JOB });
      expect(f.length).toBeGreaterThan(0);
      expect(f.every((x) => x.path.startsWith(join(c.dir, "aaaaaaaaaaaaaaaa")))).toBe(true);
    } finally {
      // (rmSync gives up past PATH_MAX; rm walks with openat.)
      Bun.spawnSync(["rm", "-rf", join(c.dir, "aaaaaaaaaaaaaaaa")]);
    }
  });
});
