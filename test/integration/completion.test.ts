/** Shell completions and the man page, generated from the command tree, run by the real bash, zsh, fish and groff. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PLANTER } from "../harness.ts";

const dir = mkdtempSync("/tmp/pt-compl-");
const files: Record<string, string> = {};

async function sh(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // HOME in the temp dir: fish makes its config and data dirs there, not in the real home.
  const env = { PATH: process.env.PATH ?? "", HOME: dir };
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", stdin: "ignore", env });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

beforeAll(async () => {
  for (const what of ["bash", "zsh", "fish"]) {
    const r = await sh([process.execPath, PLANTER, "completion", what]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    files[what] = join(dir, what);
    writeFileSync(files[what] as string, r.stdout);
  }
  const man = await sh([process.execPath, PLANTER, "manpage"]);
  expect(man.code).toBe(0);
  files.man = join(dir, "planter.1");
  writeFileSync(files.man, man.stdout);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("bash", () => {
  const complete = async (...words: string[]) => {
    const script = `source ${files.bash}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _planter; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = await sh(["bash", "-c", script]);
    expect(r.stderr).toBe("");
    return r.stdout.split("\n").filter(Boolean);
  };

  test("commands, subcommands, options (the group's too), enum values, files", async () => {
    expect(await complete("planter", "")).toContain("events");
    expect(await complete("planter", "jo")).toEqual(["job"]);
    expect(await complete("planter", "job", "")).toEqual([
      "ls",
      "status",
      "kill",
      "wait",
      "rm",
      "net",
      "stdin",
      "--socket",
      "--target",
      "--targets",
      "--all-targets",
      "--help",
    ]);
    expect(await complete("planter", "job", "kill", "--si")).toEqual(["--signal"]);
    expect(await complete("planter", "job", "kill", "-s", "")).toEqual([
      "TERM",
      "INT",
      "HUP",
      "QUIT",
      "KILL",
      "USR1",
      "USR2",
    ]);
    // An option's value is no command: `--target lima` before `run`, `-c NAME` after it.
    expect(await complete("planter", "--target", "lima", "run", "--sandbox", "en")).toEqual(["enforced"]);
    expect(await complete("planter", "run", "-c", "job", "--tim")).toEqual(["--timeout"]);
    expect(await complete("planter", "run", "--policy", files.bash?.slice(0, -2) as string)).toEqual([
      files.bash as string,
    ]);
  });

  test("cell update, job net, the --net options and events --kind", async () => {
    expect(await complete("planter", "cell", "u")).toEqual(["update"]);
    expect(await complete("planter", "job", "n")).toEqual(["net"]);
    for (const cmd of [["run"], ["cell", "create", "web"], ["cell", "update", "web"]]) {
      expect(await complete("planter", ...cmd, "--net-")).toEqual(["--net-allow", "--net-deny", "--net-local"]);
      expect(await complete("planter", ...cmd, "--net", "")).toEqual(["none", "host"]);
      // An entry list is a value, never a command word.
      expect(await complete("planter", ...cmd, "--net-allow", "a.example,b.example", "--poli")).toEqual(["--policy"]);
    }
    expect(await complete("planter", "events", "--ki")).toEqual(["--kind"]);
    expect(await complete("planter", "events", "--kind", "job", "--sub")).toEqual(["--subject"]);
  });

  test("--all before the command (every target) is the root's; after it, the command's own; a command gets only its own options", async () => {
    expect(await complete("planter", "--al")).toEqual(["--all", "--all-targets"]);
    // Between `job` and `ls` --all would be job ls's own (every job): the root's is not offered there.
    expect(await complete("planter", "job", "--al")).toEqual(["--all-targets"]);
    expect(await complete("planter", "job", "ls", "--al")).toEqual(["--all", "--all-targets"]);
    expect(await complete("planter", "--all", "job", "l")).toEqual(["ls"]);
    // run reads one target: neither --all nor --targets; completion takes no --target.
    expect(await complete("planter", "run", "--all")).toEqual([]);
    expect(await complete("planter", "run", "--targets")).toEqual([]);
    expect(await complete("planter", "completion", "--tar")).toEqual([]);
    // --targets' value is no command, at the root as at the group.
    expect(await complete("planter", "--targets", "a,b", "job", "l")).toEqual(["ls"]);
  });

  test("after -- it completes the job's command, not planter's options", async () => {
    const got = await complete("planter", "run", "--", "bas");
    expect(got).toContain("bash");
    expect(got.some((w) => w.startsWith("--"))).toBe(false);
  });
});

describe("zsh", () => {
  // The completion system's functions recorded, so the generated function runs in a real zsh.
  const complete = async (...words: string[]) => {
    const script = [
      "compdef() { :; }",
      `source ${files.zsh}`,
      'for a in "$@"; do :; done',
      "_describe() { local arr=$4; print -rl -- ${(P)arr}; }",
      "compadd() { shift; print -rl -- $@; }",
      "_files() { print FILES; }",
      "_command_names() { print COMMANDS; }",
      "_message() { print -r -- MESSAGE $@; }",
      `words=(${words.map((w) => `'${w}'`).join(" ")}); CURRENT=${words.length}; _planter`,
    ].join("\n");
    const r = await sh(["zsh", "-f", "-c", script]);
    expect(r.stderr).toBe("");
    return r.stdout.split("\n").filter(Boolean);
  };

  test("described commands and options, enum values, files; the job's command after --", async () => {
    const job = await complete("planter", "job", "");
    expect(job[0]).toMatch(/^ls:List jobs/);
    expect(job.map((l) => l.slice(0, l.search(/(?<!\\):/)))).toEqual([
      "ls",
      "status",
      "kill",
      "wait",
      "rm",
      "net",
      "stdin",
    ]);
    expect(await complete("planter", "job", "kill", "--signal", "")).toEqual([
      "TERM",
      "INT",
      "HUP",
      "QUIT",
      "KILL",
      "USR1",
      "USR2",
    ]);
    const opts = await complete("planter", "run", "--cell", "x", "--t");
    expect(opts.filter((o) => /^--(help|timeout|target):/.test(o)).length).toBe(3);
    expect(await complete("planter", "--target", "lima", "run", "--policy", "")).toEqual(["FILES"]);
    expect(await complete("planter", "run", "--", "")).toEqual(["COMMANDS"]);
    expect(await complete("planter", "cell", "update", "web", "--net", "")).toEqual(["none", "host"]);
    expect((await complete("planter", "cell", "")).map((l) => l.slice(0, l.search(/(?<!\\):/)))).toContain("update");
  });
});

describe("fish", () => {
  const complete = async (line: string) => {
    const r = await sh(["fish", "--no-config", "-c", `source ${files.fish}; complete -C '${line}'`]);
    expect(r.stderr).toBe("");
    return r.stdout.split("\n").filter(Boolean);
  };

  test("described commands and options, enum values", async () => {
    const job = await complete("planter job ");
    expect(job.map((l) => l.split("\t")[0])).toEqual(["kill", "ls", "net", "rm", "status", "stdin", "wait"]);
    expect(job[0]).toMatch(/^kill\tStop a job/);
    expect((await complete("planter job kill --signal ")).map((l) => l.split("\t")[0])).toEqual([
      "HUP",
      "INT",
      "KILL",
      "QUIT",
      "TERM",
      "USR1",
      "USR2",
    ]);
    expect((await complete("planter --target lima run --sand")).map((l) => l.split("\t")[0])).toEqual(["--sandbox"]);
    expect((await complete("planter job net --js")).map((l) => l.split("\t")[0])).toEqual(["--json"]);
    expect((await complete("planter cell update web --net ")).map((l) => l.split("\t")[0]).sort()).toEqual([
      "host",
      "none",
    ]);
  });
});

describe("the man page", () => {
  test("groff renders it without a warning; every command is in it with its options", async () => {
    const r = await sh(["groff", "-man", "-Tutf8", "-ww", "-P", "-c", "-P", "-b", "-P", "-u", files.man as string]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    for (const line of [
      "planter job kill [options] ID",
      "-s, --signal TERM|INT|HUP|QUIT|KILL|USR1|USR2",
      "planter events [options]",
      "planter cell update [options] NAME",
      "planter job net [options] ID",
      "--net-allow ENTRIES",
      "--kind KIND",
    ])
      expect(r.stdout).toContain(line);
    expect(r.stdout).toContain("EXIT STATUS");
    // The options written before the command, --all among them.
    const options = r.stdout.slice(r.stdout.indexOf("OPTIONS"), r.stdout.indexOf("COMMANDS")).replace(/\s+/g, " ");
    expect(options).toContain("--all");
    expect(options).toContain("before the command: read local and every registered target at once");
    expect(options).toContain("--target NAME");
  });
});
