/** The one wrapper for host programs (lib/host/exec.ts), `limactl list --json` through its schema, and what uninstall does with a recorded file (pure). */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { PlanterError } from "../../lib/api/errors.ts";
import { exec, execSync, describe as summary } from "../../lib/host/exec.ts";
import { parseList } from "../../lib/host/limactl.ts";
import { type FileVerdict, fileUndoPlan, KEPT_CHANGED } from "../../lib/host/transaction.ts";
import { cleanup } from "../harness.ts";

const dir = mkdtempSync("/tmp/pt-exec-");
afterAll(() => cleanup(dir));

/** A program named `name` in its own PATH dir. */
function program(name: string, body: string): string {
  const bin = mkdtempSync(join(dir, "bin-"));
  writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
  chmodSync(join(bin, name), 0o755);
  return bin;
}

describe("exec", () => {
  test("runs an argv (no shell) found on the PATH of the env it is given, with that env", async () => {
    const bin = program("greet", 'printf "%s|%s|%s" "$1" "$2" "$GREETING"');
    const r = await exec("greet", ["a b", "$HOME;"], { env: { PATH: bin, GREETING: "hi" } });
    expect(r).toEqual({ code: 0, stdout: "a b|$HOME;|hi", stderr: "" });
  });

  test("a failure throws E_UNAVAILABLE with zx's summary and stderr; nothrow returns it", async () => {
    const bin = program("fails", "echo 'no such group' >&2; exit 9");
    const env = { PATH: bin };
    const err = await exec("fails", ["--system", "planter"], { env, hint: "look" }).catch((e) => e);
    expect(err).toBeInstanceOf(PlanterError);
    expect([err.code, err.message, err.hint]).toEqual([
      "E_UNAVAILABLE",
      "fails --system planter: exit code 9: no such group",
      "look",
    ]);
    expect(await exec("fails", [], { env, nothrow: true })).toEqual({ code: 9, stdout: "", stderr: "no such group\n" });
  });

  test("a program not on PATH answers 127, 'command not found'", async () => {
    const r = await exec("no-such-program-here", ["x"], { env: { PATH: dir }, nothrow: true });
    expect(r.code).toBe(127);
    expect(summary("no-such-program-here", ["x"], r)).toBe(
      "no-such-program-here x: command not found: no-such-program-here: not found",
    );
  });

  test("past its time limit the program is killed and the call answers 124, even when a child holds its output open", async () => {
    // The child keeps stdout open long after the program is killed: the call must not wait for it.
    const bin = program("hangs", "sleep 30 & echo $!; exec sleep 30");
    const t = performance.now();
    const r = await exec("hangs", [], { env: { PATH: `${bin}:/usr/bin:/bin` }, timeoutMs: 300, nothrow: true });
    const ms = performance.now() - t;
    process.kill(Number(r.stdout), "SIGKILL");
    expect([r.code, r.stderr]).toEqual([124, "hangs: timed out after 300 ms"]);
    expect(ms).toBeLessThan(5000);
  });

  test("past maxOutputBytes the program is killed and the call answers 125 with none of its output", async () => {
    const bin = program("floods", "exec yes planter");
    const t = performance.now();
    const r = await exec("floods", [], {
      env: { PATH: `${bin}:/usr/bin:/bin` },
      maxOutputBytes: 1 << 20,
      nothrow: true,
    });
    expect(r).toEqual({ code: 125, stdout: "", stderr: "floods: stopped after more than 1048576 bytes of output" });
    expect(performance.now() - t).toBeLessThan(5000);
    const small = await exec("greet", [], { env: { PATH: program("greet", "echo hi") }, maxOutputBytes: 3 });
    expect(small).toEqual({ code: 0, stdout: "hi\n", stderr: "" });
  });

  test("a program that exits while a child it left holds the pipe: its output, without waiting for the child", async () => {
    const bin = program("leaves", "sleep 30 & echo $!");
    const t = performance.now();
    const r = await exec("leaves", [], { env: { PATH: `${bin}:/usr/bin:/bin` } });
    const ms = performance.now() - t;
    process.kill(Number(r.stdout), "SIGKILL");
    expect([r.code, r.stdout]).toEqual([0, expect.stringMatching(/^[0-9]+\n$/)]);
    expect(ms).toBeLessThan(5000);
  });
});

describe("execSync: the same rules, in hand", () => {
  test("an argv found on the env's PATH; with clean, nothing of this process's env", () => {
    const bin = program("greet", 'printf "%s|%s|%s|%s" "$1" "$2" "$GREETING" "${HOME-unset}"');
    expect(execSync("greet", ["a b", "$HOME;"], { env: { PATH: bin, GREETING: "hi" } }).stdout).toBe(
      `a b|$HOME;|hi|${process.env.HOME}`,
    );
    expect(execSync("greet", ["x", "y"], { env: { PATH: bin }, clean: true })).toEqual({
      code: 0,
      stdout: "x|y||unset",
      stderr: "",
    });
  });

  test("a failure throws E_UNAVAILABLE with the summary; nothrow returns it; not found is 127; a signal is 128+N", () => {
    const bin = program("fails", "echo 'no such user' >&2; exit 2");
    const err = (() => {
      try {
        execSync("fails", ["passwd", "x"], { env: { PATH: bin } });
      } catch (e) {
        return e as PlanterError;
      }
    })();
    expect([err?.code, err?.message]).toEqual(["E_UNAVAILABLE", "fails passwd x: exit code 2: no such user"]);
    expect(execSync("no-such-program-here", [], { env: { PATH: dir }, nothrow: true }).code).toBe(127);
    const killed = program("killed", "kill -TERM $$");
    expect(execSync("killed", [], { env: { PATH: `${killed}:/usr/bin:/bin` }, nothrow: true }).code).toBe(143);
  });

  test("past its time limit: killed, 124, even when a child holds its output open", () => {
    const bin = program("hangs", "sleep 30 & echo $! >&2; exec sleep 30");
    const t = performance.now();
    const r = execSync("hangs", [], { env: { PATH: `${bin}:/usr/bin:/bin` }, timeoutMs: 300, nothrow: true });
    const ms = performance.now() - t;
    const child = Number(/^[0-9]+/.exec(r.stderr)?.[0]);
    if (child > 0) process.kill(child, "SIGKILL");
    expect([r.code, r.stderr.endsWith("hangs: timed out after 300 ms")]).toEqual([124, true]);
    expect(ms).toBeLessThan(5000);
  });

  test("past maxOutputBytes: killed, 125, none of its output", () => {
    const bin = program("floods", "exec yes planter");
    const r = execSync("floods", [], { env: { PATH: `${bin}:/usr/bin:/bin` }, maxOutputBytes: 1 << 16, nothrow: true });
    expect(r).toEqual({ code: 125, stdout: "", stderr: "floods: stopped after more than 65536 bytes of output" });
  });
});

describe("limactl list --json through its schema", () => {
  test("checked fields, the rest kept; an unexpected line is an error naming the line and the field", () => {
    const line = { name: "planter", status: "Running", dir: "/h/.lima/planter", arch: "aarch64" };
    expect(parseList(`${JSON.stringify({ ...line, config: { mounts: [{ location: "~" }] } })}\n`)).toEqual([
      { ...line, config: { mounts: [{ location: "~" }] } },
    ]);
    const bad = (text: string) => {
      try {
        parseList(text);
      } catch (e) {
        return [(e as PlanterError).code, (e as PlanterError).message];
      }
      return null;
    };
    expect(bad(`${JSON.stringify(line)}\n{"name":"x","status":"Running","dir":"/d"}\n`)).toEqual([
      "E_UNAVAILABLE",
      expect.stringMatching(/^limactl list --json, line 2: .*arch/),
    ]);
    expect(bad("Error: something\n")).toEqual([
      "E_UNAVAILABLE",
      expect.stringMatching(/^limactl list --json, line 1: not JSON/),
    ]);
    expect(bad(JSON.stringify({ ...line, config: { mounts: [{ location: 7 }] } }))).toEqual([
      "E_UNAVAILABLE",
      expect.stringMatching(/line 1: .*config\.mounts\.0\.location/),
    ]);
  });
});

describe("what uninstall does with a recorded file", () => {
  const plan = (path: FileVerdict["path"], backup: FileVerdict["backup"], force = false) =>
    fileUndoPlan({ path, backup }, force);
  const ALTERED = "it changed since install saved it, so it is not put back";

  test("planter's file goes; the original comes back only from a backup that is what install saved", () => {
    expect(plan("ours", "none")).toEqual({ removed: true, restored: false, kept: null });
    expect(plan("ours", "intact")).toEqual({ removed: true, restored: true, kept: null });
    expect(plan("ours", "missing")).toEqual({ removed: true, restored: false, kept: null });
    expect(plan("ours", "altered")).toEqual({ removed: true, restored: false, kept: ALTERED });
    expect(plan("absent", "intact")).toEqual({ removed: false, restored: true, kept: null });
    expect(plan("absent", "altered")).toEqual({ removed: false, restored: false, kept: ALTERED });
  });

  test("a file the user changed stays (--force removes it, and still puts back no altered backup)", () => {
    expect(plan("changed", "intact")).toEqual({ removed: false, restored: false, kept: KEPT_CHANGED });
    expect(plan("changed", "intact", true)).toEqual({ removed: true, restored: true, kept: null });
    expect(plan("changed", "altered", true)).toEqual({ removed: true, restored: false, kept: ALTERED });
  });

  test("the original found in place (a run stopped before replacing it, or after putting it back) is left, its copy dropped", () => {
    expect(plan("original", "intact")).toEqual({ removed: false, restored: true, kept: null });
    expect(plan("original", "missing")).toEqual({ removed: false, restored: true, kept: null });
  });

  test("what is at the path after planter's file was removed is never touched, whatever the flags", () => {
    for (const force of [false, true]) {
      expect(plan("theirs", "missing", force)).toEqual({ removed: false, restored: false, kept: null });
      expect(plan("theirs", "intact", force)).toEqual({
        removed: false,
        restored: false,
        kept: "something else is at the path now, so it is not put back over it",
      });
      expect(plan("theirs", "altered", force).removed).toBe(false);
    }
  });
});

describe("what a client loads of lib/host", () => {
  test("--target lima's code (lib/cli/target.ts, with what it imports on use) holds no installer, template or step engine", async () => {
    const r = await Bun.build({
      entrypoints: [join(import.meta.dir, "..", "..", "lib", "cli", "target.ts")],
      target: "bun",
    });
    expect(r.success).toBe(true);
    const text = (await r.outputs[0]?.text()) ?? "";
    const host = [...text.matchAll(/^\/\/ (lib\/host\/\S+\.ts)$/gm)].map((m) => m[1]).sort();
    // ssh.ts: the ssh wrapper of ssh:// targets (lib/targets/ssh.ts, imported only when one is used).
    expect(host).toEqual([
      "lib/host/exec.ts",
      "lib/host/lima-paths.ts",
      "lib/host/limactl.ts",
      "lib/host/ssh.ts",
      "lib/host/systemd.ts",
    ]);
  });
});

describe("what a client command loads of the targets", () => {
  test("job ls (split as the binary is) loads the ssh and https code only on use: neither is in a chunk it imports statically", async () => {
    const out = mkdtempSync("/tmp/pt-split-");
    try {
      const r = await Bun.build({
        entrypoints: [join(import.meta.dir, "..", "..", "lib", "cli", "lifecycle", "job.ts")],
        target: "bun",
        splitting: true,
        outdir: out,
      });
      expect(r.success).toBe(true);
      const text = new Map<string, string>();
      for (const o of r.outputs) text.set(basename(o.path), await o.text());
      const entry = basename(r.outputs.find((o) => o.kind === "entry-point")?.path ?? "");
      // Every chunk the entry reaches through static imports.
      const reached = new Set<string>();
      const todo = [entry];
      while (todo.length) {
        const name = todo.pop() as string;
        if (reached.has(name)) continue;
        reached.add(name);
        for (const m of (text.get(name) ?? "").matchAll(/from\s*"\.\/([^"]+)"/g)) todo.push(m[1] as string);
      }
      const modules = [...reached].flatMap((n) =>
        [...(text.get(n) ?? "").matchAll(/^\/\/ (lib\/\S+\.ts)$/gm)].map((m) => m[1]),
      );
      for (const lazy of ["lib/targets/ssh.ts", "lib/host/ssh.ts", "lib/targets/https.ts", "lib/daemon/tcp.ts"])
        expect(modules).not.toContain(lazy);
      // They are there, in chunks of their own.
      const all = [...text.values()].join("\n");
      expect(all).toContain("// lib/targets/ssh.ts");
      expect(all).toContain("// lib/targets/https.ts");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
