/** Target URLs, the registry's edits of the config file, ssh's arguments and failures, the remote socket rule (pure). */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import { resolveTarget } from "../../lib/cli/target.ts";
import { parseConfig } from "../../lib/config.ts";
import { masterArgs, type SshPlan, sshFailure } from "../../lib/host/ssh.ts";
import { fanOut, fanOutExit } from "../../lib/targets/fanout.ts";
import { editTargets, parseClientConfig, readClientConfig, saveTarget } from "../../lib/targets/registry.ts";
import { remoteSocketProblem, statCommand } from "../../lib/targets/ssh.ts";
import { formatEndpoint, parseTargetUrl } from "../../lib/targets/url.ts";

const dir = mkdtempSync("/tmp/pt-targets-unit-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const refusal = (f: () => unknown): string | null => {
  try {
    f();
  } catch (e) {
    return `${(e as PlanterError).code}: ${(e as PlanterError).message}`;
  }
  return null;
};

describe("target URLs", () => {
  test("each kind, and back to text", () => {
    const cases: [string, unknown, string][] = [
      ["lima", { kind: "lima" }, "lima"],
      ["unix:///run/p.sock", { kind: "unix", socket: "/run/p.sock" }, "unix:///run/p.sock"],
      ["ssh://build1", { kind: "ssh", user: null, host: "build1", port: null, socket: null }, "ssh://build1"],
      [
        "ssh://dev@Build1.example.com:2222?socket=/run/user/1000/planter/planterd.sock",
        {
          kind: "ssh",
          user: "dev",
          host: "build1.example.com",
          port: 2222,
          socket: "/run/user/1000/planter/planterd.sock",
        },
        "ssh://dev@build1.example.com:2222?socket=/run/user/1000/planter/planterd.sock",
      ],
      ["ssh://[::1]:22", { kind: "ssh", user: null, host: "[::1]", port: 22, socket: null }, "ssh://[::1]:22"],
      ["https://ci1:8443", { kind: "https", host: "ci1", port: 8443 }, "https://ci1:8443"],
      ["https://ci1", { kind: "https", host: "ci1", port: 443 }, "https://ci1:443"],
    ];
    for (const [text, parsed, back] of cases) {
      const e = parseTargetUrl(text);
      expect(e).toEqual(parsed as never);
      expect(formatEndpoint(e)).toBe(back);
    }
  });
  test("refused: what ssh would read as an option or a second forward, paths a shell could misread, junk", () => {
    const bad = [
      "ssh://-oProxyCommand=touch%20x",
      "ssh://host:22?socket=/a:/b",
      "ssh://host?socket=relative.sock",
      "ssh://host?socket=/a/../b",
      "ssh://host?socket=/a'b",
      "ssh://host?socket=/a%20b",
      "ssh://host?socket=/a&socket=/b",
      "ssh://host?other=1",
      "ssh://-l@host",
      "ssh://host/path",
      "ssh://host:0",
      "ssh://host:70000",
      "https://user@host:1",
      "https://host:1/v1",
      "https://host:1?x=1",
      "http://host:1",
      "unix://relative",
      "local",
      "",
      "ssh://",
      "ssh://a..b",
    ];
    for (const text of bad) {
      const r = refusal(() => parseTargetUrl(text));
      expect(r).toStartWith(`E_USAGE: bad target URL ${JSON.stringify(text)}: `);
    }
  });
});

describe("the registry in the config file", () => {
  const entry = { urls: ["ssh://dev@box"], identity: "/k/id" };
  test("editTargets keeps comments and other sections, replaces only the named table", () => {
    const text =
      '# mine\n[sandbox]\nmode = "disabled" # keep\n\n[targets.a]\nurls = ["lima"]\n\n[targets.b]\nurls = ["unix:///s"]\n';
    const added = editTargets(text, "c", entry);
    expect(added).toBe(`${text}\n[targets.c]\nurls = ["ssh://dev@box"]\nidentity = "/k/id"\n`);
    const replaced = editTargets(added, "a", { urls: ["unix:///t"] });
    expect(replaced).toBe(
      '# mine\n[sandbox]\nmode = "disabled" # keep\n\n[targets.b]\nurls = ["unix:///s"]\n\n[targets.c]\nurls = ["ssh://dev@box"]\nidentity = "/k/id"\n\n[targets.a]\nurls = ["unix:///t"]\n',
    );
    expect(editTargets(replaced, "b", null)).toBe(
      '# mine\n[sandbox]\nmode = "disabled" # keep\n\n[targets.c]\nurls = ["ssh://dev@box"]\nidentity = "/k/id"\n\n[targets.a]\nurls = ["unix:///t"]\n',
    );
    expect(editTargets(replaced, "a", null)).toBe(
      '# mine\n[sandbox]\nmode = "disabled" # keep\n\n[targets.b]\nurls = ["unix:///s"]\n\n[targets.c]\nurls = ["ssh://dev@box"]\nidentity = "/k/id"\n',
    );
    expect(editTargets("", "x", { urls: ["lima"] })).toBe('[targets.x]\nurls = ["lima"]\n');
  });
  test("saveTarget: atomic, 0600 for a new file, the old mode kept; what would not read back changes nothing", () => {
    const path = join(dir, "sub", "config.toml");
    saveTarget(path, "box", entry);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readClientConfig(path, true).targets).toEqual({ box: entry });
    writeFileSync(path, '[client]\ntarget = "box"\n[targets]\nbox = { urls = ["lima"] }\n');
    chmodSync(path, 0o640);
    const before = readFileSync(path, "utf8");
    expect(refusal(() => saveTarget(path, "box", entry))).toStartWith(
      `E_CONFIG: cannot edit the target box in ${path}: `,
    );
    expect(readFileSync(path, "utf8")).toBe(before);
    saveTarget(path, "other", { urls: ["unix:///x"] });
    expect(statSync(path).mode & 0o777).toBe(0o640);
    expect(Object.keys(readClientConfig(path, true).targets).sort()).toEqual(["box", "other"]);
  });
  test("a bad entry, a reserved name or a default naming no target fails closed (E_CONFIG)", () => {
    const p = "c.toml";
    expect(refusal(() => parseClientConfig(p, '[targets.x]\nurls = ["ssh://-oX"]\n'))).toContain("targets.x.urls");
    expect(refusal(() => parseClientConfig(p, '[targets.local]\nurls = ["lima"]\n'))).toContain("reserved");
    expect(refusal(() => parseClientConfig(p, '[targets.x]\nurls = ["lima"]\nbogus = 1\n'))).toContain("bogus");
    expect(refusal(() => parseClientConfig(p, '[targets.x]\nurls = ["ssh://a", "ssh://b"]\n'))).toContain(
      "several URLs only for https endpoints",
    );
    expect(refusal(() => parseClientConfig(p, '[client]\ntarget = "nope"\n'))).toBe(
      'E_CONFIG: invalid config c.toml: client.target: "nope" is not a target (local, lima)',
    );
    expect(parseClientConfig(p, '[client]\ntarget = "x"\n[targets.x]\nurls = ["lima"]\n')).toEqual({
      target: "x",
      targets: { x: { urls: ["lima"] } },
    });
  });
  test("planterd accepts [targets] in its config", () => {
    expect(parseConfig({ targets: { x: { urls: ["https://h:1"] } } }, "c.toml").targets).toEqual({
      x: { urls: ["https://h:1"] },
    });
  });
  test("--target takes a registered name; an unknown one lists the known", () => {
    expect(resolveTarget({ flag: "box", known: () => ["box"] })).toEqual({ target: "box", source: "flag" });
    expect(refusal(() => resolveTarget({ env: "nope", known: () => ["box"] }))).toBe(
      'E_USAGE: PLANTER_TARGET must be one of local, lima, box, not "nope"',
    );
  });
});

describe("ssh", () => {
  const plan: SshPlan = {
    user: "dev",
    host: "box",
    port: 2222,
    identity: "/k/id",
    knownHosts: "/k/kh",
    control: "/r/ssh/b.ctl",
    connectTimeoutS: 3,
    persistS: 600,
  };
  test("the master: host keys always checked, no prompt, a bounded connect, the forward, the host after --", () => {
    expect(masterArgs(plan, "/r/ssh/b.sock", "/run/planter/planterd.sock").join(" ")).toBe(
      "-M -f -N -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=3 -o ControlPath=/r/ssh/b.ctl -o ServerAliveInterval=5 -o ServerAliveCountMax=2 -o UserKnownHostsFile=/k/kh -o GlobalKnownHostsFile=/dev/null -i /k/id -o IdentitiesOnly=yes -p 2222 -l dev -o ControlPersist=600 -o ExitOnForwardFailure=yes -o StreamLocalBindUnlink=yes -o StreamLocalBindMask=0177 -L /r/ssh/b.sock:/run/planter/planterd.sock -- box",
    );
  });
  test("failures: unknown and changed keys are exit 4 with a known_hosts hint; a refused login and a timeout exit 3", () => {
    const f = (stderr: string, code = 255) => sshFailure(plan, "b", { code, stdout: "", stderr });
    const unknown = f(
      "No ED25519 host key is known for [box]:2222 and you have requested strict checking.\nHost key verification failed.\n",
    );
    expect([unknown.code, unknown.exitCode]).toEqual(["E_UNTRUSTED_DAEMON", 4]);
    expect(unknown.hint).toContain("ssh-keyscan -p 2222 box >> /k/kh");
    const changed = f(
      "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key for [box]:2222 has changed and you have requested strict checking.\nHost key verification failed.\n",
    );
    expect(changed.message).toContain("its host key is not the one in /k/kh");
    expect(changed.hint).toContain("ssh-keygen -f /k/kh -R '[box]:2222'");
    expect(changed.exitCode).toBe(4);
    expect(f("dev@box: Permission denied (publickey).\n").exitCode).toBe(3);
    expect(f("ssh: connect to host box port 2222: Connection timed out\n").message).toContain(
      "did not answer within 3 s",
    );
    expect(f("", 127).code).toBe("E_UNAVAILABLE");
  });
  test("the remote socket: the login user's or root's, in a directory only they may change", () => {
    const s = "/run/planter/planterd.sock";
    expect(statCommand(s)).toBe(
      "id -u && stat -L -c '%u %a %F' -- '/run/planter/planterd.sock' && stat -L -c '%u %a' -- '/run/planter'",
    );
    expect(remoteSocketProblem("1000\n0 660 socket\n0 750\n", s)).toBeNull();
    expect(remoteSocketProblem("1000\n1000 600 socket\n1000 700\n", s)).toBeNull();
    expect(remoteSocketProblem("1000\n0 600 socket\n0 1777\n", s)).toBeNull();
    expect(remoteSocketProblem("1000\n1001 600 socket\n1000 700\n", s)).toContain("owned by uid 1001");
    expect(remoteSocketProblem("1000\n1000 600 socket\n1001 700\n", s)).toContain("directory");
    expect(remoteSocketProblem("1000\n1000 600 socket\n1000 777\n", s)).toContain("writable by others");
    expect(remoteSocketProblem("1000\n1000 600 regular file\n1000 700\n", s)).toContain("not a socket");
    expect(remoteSocketProblem("junk", s)).toContain("cannot read");
  });
});

describe("the ssh control socket's path", () => {
  test("too long for a Unix socket address: refused before ssh runs, saying what to do", async () => {
    const { ensureForward } = await import("../../lib/targets/ssh.ts");
    const long = `/tmp/${"x".repeat(80)}`;
    const endpoint = { kind: "ssh" as const, user: null, host: "h", port: null, socket: null };
    await expect(ensureForward({ name: "box", endpoint, env: { PLANTER_HOME: long } })).rejects.toThrow(
      /would be longer than a Unix socket address holds/,
    );
  });
});

describe("fan-out", () => {
  test("each target under its own deadline; partial is exit 5, none answering the first failure's code", async () => {
    const { Client } = await import("../../lib/api/client.ts");
    const { PlanterError } = await import("../../lib/api/errors.ts");
    const r = await fanOut(
      ["a", "b", "c"],
      (n) => new Client(`/nowhere/${n}`),
      async (_c, name, signal) => {
        if (name === "b") throw new PlanterError("E_DAEMON_UNREACHABLE", "b is down");
        if (name === "c") await new Promise((res) => signal.addEventListener("abort", res));
        return name.toUpperCase();
      },
      100,
    );
    expect(r.map((x) => [x.target, x.ok, x.ok ? x.value : x.error.message])).toEqual([
      ["a", true, "A"],
      ["b", false, "b is down"],
      ["c", false, "target c did not answer within 100 ms"],
    ]);
    expect(fanOutExit(r)).toBe(5);
    expect(fanOutExit(r.slice(1))).toBe(3);
    expect(fanOutExit(r.slice(0, 1))).toBe(0);
  });
});
