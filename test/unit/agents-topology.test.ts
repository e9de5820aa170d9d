/**
 * The observer's topology without tmux: the agent CLIs recognised from argv and comm, a pane's
 * process tree walked through a fake /proc, tmux's output parsed from literal text, the socket
 * dirs found the way tmux itself accepts them. The real /proc at the end.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import {
  agentOf,
  canWalk,
  findAgent,
  type ProcReader,
  parsePs,
  processOwner,
  procReader,
  psReader,
  topAgentProcess,
} from "../../lib/agents/recognise.ts";
import {
  defaultDirs,
  findSockets,
  PANE_FORMAT,
  parsePanes,
  parseTick,
  tickArgs,
  tickError,
} from "../../lib/agents/tmux.ts";

describe("which agent a process is", () => {
  test("the native Claude Code binary, Codex's and Gemini's node scripts, and scripts named after them", () => {
    const cases: [string[], string | null, string | null][] = [
      [["/home/u/.local/bin/claude"], "claude", "claude"],
      [["claude", "--resume"], "claude", "claude"],
      [["/opt/agents/node_modules/@anthropic-ai/claude-code/bin/claude.exe"], "claude.exe", "claude"],
      [["node", "/usr/lib/node_modules/@openai/codex/bin/codex.js"], "node", "codex"],
      [["node", "/home/u/.npm-global/bin/codex", "--model", "x"], "node", "codex"],
      [["/usr/lib/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"], "codex", "codex"],
      [
        ["/usr/bin/node", "--max-old-space-size=8192", "/usr/lib/node_modules/@google/gemini-cli/bundle/gemini.js"],
        "node",
        "gemini",
      ],
      [["node", "/x/bin/gemini"], "node", "gemini"],
      [["bun", "/x/claude"], "bun", "claude"],
      // A script started by its #! line: argv names the interpreter, comm the script.
      [["/bin/bash", "/repo/test/fixtures/agents/claude"], "claude", "claude"],
      [["bash"], "bash", null],
      [["vim", "claude"], "vim", null],
      [["node", "/srv/app/server.js"], "node", null],
      [["node"], "node", null],
      [["less", "/x/codex"], "less", null],
    ];
    expect(cases.map(([argv, comm]) => agentOf(argv, comm) as string | null)).toEqual(cases.map((c) => c[2]));
  });
});

/** A fake /proc: pid → parent, argv, comm, start, uid. */
function fakeProc(table: Record<number, { ppid: number; argv: string[]; comm?: string; uid?: number }>): ProcReader {
  return {
    children: (pid) =>
      Object.entries(table)
        .filter(([, p]) => p.ppid === pid)
        .map(([c]) => Number(c)),
    argv: (pid) => table[pid]?.argv ?? null,
    comm: (pid) => table[pid]?.comm ?? table[pid]?.argv[0]?.split("/").pop() ?? null,
    facts: (pid) =>
      table[pid] ? { start: String(pid * 10), ppid: table[pid].ppid, uid: table[pid].uid ?? 1000 } : null,
    alive: (ref) => {
      const [pid, start] = ref.split(":").map(Number) as [number, number];
      return table[pid] !== undefined && start === pid * 10;
    },
  };
}

describe("the agent of a pane's tree", () => {
  const proc = fakeProc({
    100: { ppid: 1, argv: ["-bash"] },
    110: { ppid: 100, argv: ["node", "/usr/lib/node_modules/@openai/codex/bin/codex.js"] },
    111: { ppid: 110, argv: ["/usr/lib/node_modules/@openai/codex-linux-x64/vendor/bin/codex"] },
    112: { ppid: 111, argv: ["bash", "-c", "sleep 100"] },
    200: { ppid: 1, argv: ["-zsh"] },
    210: { ppid: 200, argv: ["npx", "claude"], comm: "npm exec claude" },
    211: { ppid: 210, argv: ["sh", "-c", "claude"] },
    212: { ppid: 211, argv: ["/home/u/.npm/_npx/1/node_modules/.bin/claude"], uid: 1001 },
    300: { ppid: 1, argv: ["-bash"] },
    310: { ppid: 300, argv: ["vim", "notes"] },
  });

  test("the topmost agent process, below wrappers; none in a plain shell", () => {
    expect(findAgent(100, proc)).toEqual({ agent: "codex", pid: 110, process: "110:1100", uid: 1000 });
    expect(findAgent(200, proc)).toEqual({ agent: "claude", pid: 212, process: "212:2120", uid: 1001 });
    expect(findAgent(300, proc)).toBeNull();
    expect(findAgent(999, proc)).toBeNull();
  });

  test("a hook's parent maps to the runtime's process: the topmost agent above it", () => {
    expect(topAgentProcess(111, proc)).toBe("110:1100");
    expect(topAgentProcess(212, proc)).toBe("212:2120");
    expect(topAgentProcess(112, proc)).toBeNull();
  });

  test("a process named by PID:START: its uid while it lives, null once the pid is another process's", () => {
    expect(processOwner("212:2120", proc)).toBe(1001);
    expect(processOwner("212:999", proc)).toBeNull();
    expect(processOwner("999:1", proc)).toBeNull();
    expect(processOwner("nonsense", proc)).toBeNull();
    expect([proc.alive("212:2120"), proc.alive("212:999")]).toEqual([true, false]);
  });

  test("the real /proc: this process's children are found, and a script named claude is an agent", async () => {
    expect(canWalk()).toBe(true);
    const dir = mkdtempSync("/tmp/pt-agent-");
    try {
      const script = join(dir, "claude");
      await Bun.write(script, "#!/bin/sh\nsleep 30\n");
      chmodSync(script, 0o755);
      const shell = Bun.spawn(["sh", "-c", `${script}; true`], { stdout: "ignore" });
      let found: ReturnType<typeof findAgent> = null;
      try {
        found = findAgent(shell.pid);
        for (let i = 0; !found && i < 400; i++) {
          await Bun.sleep(5);
          found = findAgent(shell.pid);
        }
        expect(found?.agent).toBe("claude");
        expect(found?.uid).toBe(process.getuid?.() ?? -1);
        expect(processOwner(found?.process ?? "")).toBe(process.getuid?.() ?? -1);
        expect(procReader.alive(found?.process ?? "")).toBe(true);
        expect(procReader.alive(`${found?.pid}:1`)).toBe(false);
      } finally {
        // The script's sleep, the script, the shell.
        if (found) Bun.spawnSync(["pkill", "-KILL", "-P", String(found.pid)]);
        Bun.spawnSync(["pkill", "-KILL", "-P", String(shell.pid)]);
        shell.kill("SIGKILL");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the tree from ps (macOS, where there is no /proc)", () => {
  // Literal output of macOS's ps with the observer's columns, TZ=UTC and LC_ALL=C.
  const MAC = [
    "    1     0     0 Ss   Mon Dec  7 06:41:38 2026 /sbin/launchd",
    "  501     1   501 S    Mon Dec  7 09:02:11 2026 /opt/homebrew/bin/tmux new -s work",
    "  502   501   501 Ss+  Mon Dec  7 09:02:11 2026 -zsh",
    "  610   502   501 S+   Mon Dec  7 09:05:59 2026 node /opt/homebrew/lib/node_modules/@openai/codex/bin/codex.js --model x",
    "  611   610   501 S+   Mon Dec  7 09:05:59 2026 /opt/homebrew/lib/node_modules/@openai/codex-darwin-arm64/vendor/bin/codex",
    "  620   502   501 Z+   Mon Dec  7 09:06:00 2026 (claude)",
    "  700   501   501 Ss+  Mon Dec 17 10:00:00 2026 /bin/zsh -c claude --resume",
    "  701   700   501 S+   Mon Dec 17 10:00:01 2026 /Users/u/.local/bin/claude --resume",
    "garbage line",
    "",
  ];
  /** The two listings macOS's ps prints for these processes (PS_FACTS, then PS_ARGS). */
  const listings = (lines: string[]) => {
    const at = /^(\s*\d+\s+\d+\s+\d+\s+\S+\s+\w{3}\s+\w{3}\s+\d{1,2}\s+[\d:]{8}\s+\d{4})\s?(.*)$/;
    const facts = lines.map((l) => at.exec(l)?.[1] ?? l);
    const args = lines.map((l) => {
      const m = at.exec(l);
      return m ? `${/^\s*\d+/.exec(l)?.[0]} ${m[2]}` : l;
    });
    return { facts: facts.join("\n"), args: args.join("\n") };
  };
  const MAC_PS = listings(MAC);

  test("parsed: parent, uid, state, the start as UTC seconds, argv split at spaces; broken lines left out", () => {
    const t = parsePs(MAC_PS);
    expect([...t.keys()]).toEqual([1, 501, 502, 610, 611, 620, 700, 701]);
    expect(t.get(610)).toEqual({
      ppid: 502,
      uid: 501,
      stat: "S+",
      start: String(Date.UTC(2026, 11, 7, 9, 5, 59) / 1000),
      argv: ["node", "/opt/homebrew/lib/node_modules/@openai/codex/bin/codex.js", "--model", "x"],
    });
  });

  test("a newline in a process's arguments forges no process, no uid and no other process's arguments", () => {
    // A ps that printed arguments as they are: process 900 (uid 501) names pid 999 with uid 0, and
    // claims another argv for 610 (a real agent of uid 501) and for 1 (launchd).
    const forged =
      "\n  999     1     0 Ss   Mon Dec  7 06:41:38 2026 /Users/u/.local/bin/claude\n  610 /bin/sleep\n    1 claude";
    const t = parsePs({
      facts: `${MAC_PS.facts}\n  900   502   501 S+   Mon Dec  7 09:10:00 2026`,
      args: `${MAC_PS.args}\n  900 innocent${forged}`,
    });
    // No line of the facts listing names 999: it is no process at all.
    expect(t.has(999)).toBe(false);
    // 610 and 1 were named twice in the arguments: neither gets any (not recognised, never the forged).
    expect(t.get(610)?.argv).toEqual([]);
    expect(t.get(1)?.argv).toEqual([]);
    expect(t.get(610)?.uid).toBe(501);
    // The forger's own arguments end at its newline.
    expect(t.get(900)?.argv).toEqual(["innocent"]);
    // A facts line with anything after the start (a process's text where none belongs) is no line.
    expect(parsePs({ facts: "  5     1     0 Ss   Mon Dec  7 06:41:38 2026 x", args: "  5 claude" }).has(5)).toBe(
      false,
    );
  });

  test("a reader over one listing per tick: agents found below wrappers, zombies gone, PID:START checked", () => {
    let listings = 0;
    let clock = 0;
    const read = psReader(
      () => {
        listings++;
        return MAC_PS;
      },
      250,
      () => clock,
    );
    expect(findAgent(502, read)).toEqual({
      agent: "codex",
      pid: 610,
      process: `610:${Date.UTC(2026, 11, 7, 9, 5, 59) / 1000}`,
      uid: 501,
    });
    // `zsh -c 'claude …'` is a command line: the agent is the child.
    expect(findAgent(700, read)?.pid).toBe(701);
    expect(read.facts(620)).toBeNull();
    expect(topAgentProcess(611, read)).toBe(`610:${Date.UTC(2026, 11, 7, 9, 5, 59) / 1000}`);
    expect(processOwner(`701:${Date.UTC(2026, 11, 17, 10, 0, 1) / 1000}`, read)).toBe(501);
    expect(read.alive("701:1")).toBe(false);
    expect(listings).toBe(1);
    clock = 300;
    read.argv(1);
    expect(listings).toBe(2);
  });

  test("the real ps of this host (procps takes the same columns): a script named claude under a shell", async () => {
    const dir = mkdtempSync("/tmp/pt-agent-ps-");
    const read = psReader(undefined, 0);
    try {
      const script = join(dir, "claude");
      await Bun.write(script, "#!/bin/sh\nsleep 30\n");
      chmodSync(script, 0o755);
      const shell = Bun.spawn(["sh", "-c", `${script}; true`], { stdout: "ignore" });
      let found: ReturnType<typeof findAgent> = null;
      try {
        for (let i = 0; !found && i < 400; i++) {
          found = findAgent(shell.pid, read);
          if (!found) await Bun.sleep(5);
        }
        expect(found?.agent).toBe("claude");
        expect(found?.uid).toBe(process.getuid?.() ?? -1);
        expect(read.alive(found?.process ?? "")).toBe(true);
        // The script's sleep, then the script (which may have ended with its sleep already).
        Bun.spawnSync(["pkill", "-KILL", "-P", String(found?.pid)]);
        Bun.spawnSync(["kill", "-KILL", String(found?.pid)]);
        let alive = true;
        for (let i = 0; alive && i < 400; i++) {
          alive = read.alive(found?.process ?? "");
          if (alive) await Bun.sleep(5);
        }
        expect(alive).toBe(false);
      } finally {
        Bun.spawnSync(["pkill", "-KILL", "-P", String(shell.pid)]);
        shell.kill("SIGKILL");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("tmux's output", () => {
  test("list-panes: ids, pids, names; a title with tabs stays whole, broken lines are left out", () => {
    const text = [
      "%0\t8422\t8421\t0\t0\t0\tmain\tclaude\t✳ Claude Code",
      "%12\t9000\t8421\t3\t1\t1\twork\tbash\ta\ttitle\twith tabs",
      "garbage",
      "%x\t1\t2\t3\t4\t0\ts\tc\tt",
      "",
    ].join("\n");
    expect(parsePanes(text)).toEqual([
      {
        pane_id: "%0",
        pane_pid: 8422,
        server_pid: 8421,
        window: 0,
        index: 0,
        dead: false,
        session: "main",
        command: "claude",
        title: "✳ Claude Code",
      },
      {
        pane_id: "%12",
        pane_pid: 9000,
        server_pid: 8421,
        window: 3,
        index: 1,
        dead: true,
        session: "work",
        command: "bash\ta\ttitle",
        title: "with tabs",
      },
    ]);
  });

  test("one call per tick: the pane list, then each screen after its marker", () => {
    expect(tickArgs("/s", ["%1", "%2"], "M-")).toEqual([
      "-u",
      "-S",
      "/s",
      "list-panes",
      "-a",
      "-F",
      PANE_FORMAT,
      ";",
      "display-message",
      "-p",
      "M-0",
      ";",
      "capture-pane",
      "-p",
      "-t",
      "%1",
      ";",
      "display-message",
      "-p",
      "M-1",
      ";",
      "capture-pane",
      "-p",
      "-t",
      "%2",
    ]);
    const pane = "%1\t5\t4\t0\t0\t0\ts\tclaude\tt";
    const out = `${pane}\nM-0\nline a\n\nline b\nM-1\nM-0 is not a marker here\nlast\n`;
    const t = parseTick(out, ["%1", "%2"], "M-");
    expect(t.panes.map((p) => p.pane_id)).toEqual(["%1"]);
    expect([...t.screens]).toEqual([
      ["%1", "line a\n\nline b"],
      ["%2", "M-0 is not a marker here\nlast"],
    ]);
    // tmux stops at a pane that went away: the screens after it are missing, the list is whole.
    const cut = parseTick(`${pane}\nM-0\nonly\n`, ["%1", "%9", "%2"], "M-");
    expect([...cut.screens.keys()]).toEqual(["%1"]);
  });

  test("a failed call: no server there (its panes are gone) or no answer", () => {
    expect(tickError(1, "no server running on /tmp/tmux-0/x\n")).toBe("gone");
    expect(tickError(1, "error connecting to /tmp/s (Connection refused)\n")).toBe("gone");
    expect(tickError(1, "server exited unexpectedly\n")).toBe("gone");
    expect(tickError(1, "no current target\n")).toBe("gone");
    expect(tickError(1, "error connecting to /tmp/s (Permission denied)\n")).toBe("unreachable");
    expect(tickError(124, "tmux -S: timed out after 5000 ms")).toBe("unreachable");
  });
});

describe("the sockets", () => {
  test("tmux's default dirs: TMUX_TMPDIR's and /tmp's tmux-UID; every user's for root", () => {
    expect(defaultDirs(1000, { TMUX_TMPDIR: "/run/user/1000" })).toEqual([
      "/run/user/1000/tmux-1000",
      "/tmp/tmux-1000",
    ]);
    expect(defaultDirs(1000, {})).toEqual(["/tmp/tmux-1000"]);
  });

  test("real sockets only, no symlinks; a default dir must be its uid's and closed to others", async () => {
    const base = mkdtempSync("/tmp/pt-socks-");
    const servers: ReturnType<typeof createServer>[] = [];
    const listen = (path: string) =>
      new Promise<void>((resolve) => {
        const s = createServer();
        servers.push(s);
        s.listen(path, resolve);
      });
    try {
      const uid = process.getuid?.() ?? 0;
      const mine = join(base, `tmux-${uid}`);
      mkdirSync(mine, { mode: 0o700 });
      await listen(join(mine, "default"));
      await listen(join(mine, "work"));
      await Bun.write(join(mine, "not-a-socket"), "");
      symlinkSync(join(mine, "default"), join(mine, "link"));
      const open = join(base, `tmux-${uid + 1}`);
      mkdirSync(open, { mode: 0o700 });
      await listen(join(open, "default"));
      const loose = join(base, "loose");
      mkdirSync(loose, { mode: 0o777 });
      chmodSync(loose, 0o777);
      await listen(join(loose, "sock"));
      const names = (dirs: string[], checkDirNames: boolean, explicit: string[] = []) =>
        findSockets(dirs, explicit, { self: uid, checkDirNames })
          .map((s) => s.path.slice(base.length + 1))
          .sort();
      expect(names([mine, open], true)).toEqual([`tmux-${uid}/default`, `tmux-${uid}/work`]);
      expect(names([loose], true)).toEqual([]);
      // Dirs named in the config are read as they are; sockets named one by one too.
      expect(names([loose], false, [join(mine, "link"), join(mine, "work")])).toEqual([
        "loose/sock",
        `tmux-${uid}/work`,
      ]);
      expect(findSockets([mine], [], { self: uid, checkDirNames: true })[0]).toMatchObject({ uid });
    } finally {
      for (const s of servers) s.close();
      rmSync(base, { recursive: true, force: true });
    }
  });
});
