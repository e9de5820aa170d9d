/** The Seatbelt backend on Linux: the profile as literal text, its regexes run as regexes, sandbox-exec through a shim. */

import { describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { PlanRequest } from "../../lib/sandbox/backend.ts";
import { CREDENTIAL_PATHS } from "../../lib/sandbox/credentials.ts";
import { HOST_ENV } from "../../lib/sandbox/env.ts";
import { openInputs } from "../../lib/sandbox/inputs.ts";
import { complete, DEFAULT_POLICY } from "../../lib/sandbox/policy.ts";
import { regexQuote, SeatbeltBackend, seatbeltProfile, variants } from "../../lib/sandbox/seatbelt.ts";

const STATE = "/Users/u/Library/Application Support/planter";
const CELL_HOME = `${STATE}/homes/c1`;

const req = (over: Partial<PlanRequest> = {}): PlanRequest => ({
  argv: ["/usr/bin/make", "test"],
  env: { PATH: "/usr/bin:/bin", HOME: CELL_HOME },
  cwd: "/Users/u/src/app",
  cellDir: "/Users/u/src/app",
  policy: DEFAULT_POLICY,
  protect: [STATE, "/Users/u/.config/planter"],
  home: CELL_HOME,
  hiddenHomes: ["/Users"],
  credentialHomes: ["/Users/u", CELL_HOME],
  otherCells: ["/Users/u/src/other"],
  workspaceReadOnly: ["/Users/u/src/app/.git/hooks", "/Users/u/src/app/.git/config"],
  tmpBytes: 1 << 30,
  jobDir: `${STATE}/jobs/j-1`,
  scratch: "/var/folders/zz/abc/T/planter-j-1",
  identity: null,
  ...over,
});

/** Credential paths in the order the profile lists them: shallow to deep. */
const CREDENTIALS_BY_DEPTH = [...CREDENTIAL_PATHS].sort((a, b) => a.split("/").length - b.split("/").length);
const credentialLines = (home: string) =>
  CREDENTIALS_BY_DEPTH.map(
    (c) => `(deny file-read* file-write* (literal "${home}/${c}") (subpath "${home}/${c}")) ; credential`,
  );
const rcLine = (home: string) =>
  `(deny file-write* ${[".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".zshrc", ".zshenv", ".zprofile", ".zlogin", ".config/fish/config.fish", ".gitconfig", ".config/git/config"].map((f) => `(literal "${home}/${f}")`).join(" ")})`;

const PROCESSES_AND_SYSTEM = [
  "(version 1)",
  "(deny default)",
  "",
  "; Processes: run and fork; signal and inspect only processes of this sandbox.",
  "(allow process-exec)",
  "(allow process-fork)",
  "(allow signal (target same-sandbox))",
  "(deny process-info*)",
  "(allow process-info* (target same-sandbox))",
  "",
  "; System: sysctl reads but other processes' arguments and environment (kern.procargs2.<pid>",
  "; shows any same-user process's environment); Mach services; POSIX shared memory and semaphores.",
  "(allow sysctl-read)",
  '(deny sysctl-read (sysctl-name-prefix "kern.procargs"))',
  "(allow mach-lookup)",
  "(allow ipc-posix-shm)",
  "(allow ipc-posix-sem)",
  "",
];
const FILES_HEAD = [
  "; Files: the host is readable; devices the job writes; then one rule per path, shallow to deep,",
  "; so a deeper path is an exception to the shallower one that contains it.",
  "(allow file-read*)",
  '(allow file-write* (literal "/dev/null") (literal "/dev/tty") (literal "/dev/zero") (literal "/dev/dtracehelper") (subpath "/dev/fd"))',
  '(allow file-ioctl (literal "/dev/tty"))',
  '(deny file-read* file-write* file-ioctl (regex "^/dev/(ttys[0-9]+|pty[p-w][0-9a-f]|tty[p-w][0-9a-f])$")) ; host terminals',
];

describe("seatbelt profile", () => {
  test("a default request, as literal text", () => {
    expect(seatbeltProfile(req())).toBe(
      [
        ...PROCESSES_AND_SYSTEM,
        "; Network: none; Unix sockets only, for the rules below.",
        "(allow system-socket (socket-domain AF_UNIX))",
        "",
        "; Unix sockets: no host service (docker, ssh-agent, planterd…) but those the policy names, even",
        "; with the host's network; DNS through the resolver only with it. The job's own TMPDIR is",
        "; private, so a socket there is one of its own servers (multiprocessing, test servers).",
        "(deny network-outbound (remote unix-socket))",
        '(allow network-bind network-inbound network-outbound (subpath "/var/folders/zz/abc/T/planter-j-1") (subpath "/private/var/folders/zz/abc/T/planter-j-1"))',
        "",
        ...FILES_HEAD,
        '(deny file-read* file-write* (subpath "/Users")) ; home',
        '(allow file-read* file-write* (subpath "/Users/u/src/app")) ; cell',
        '(deny file-read* file-write* network* (subpath "/Users/u/.config/planter")) ; planter',
        '(deny file-read* file-write* (subpath "/Users/u/src/other")) ; other cell',
        '(deny file-read* file-write* network* (subpath "/Users/u/Library/Application Support/planter")) ; planter',
        '(allow file-read* file-write* (subpath "/var/folders/zz/abc/T/planter-j-1") (subpath "/private/var/folders/zz/abc/T/planter-j-1")) ; TMPDIR',
        '(allow file-read* file-write* (subpath "/Users/u/Library/Application Support/planter/homes/c1")) ; cell home',
        ...credentialLines(CELL_HOME),
        "",
        "; Hidden directories on the way to what the job is given: stat-able (realpath needs it), not listable.",
        '(allow file-read-metadata (literal "/Users"))',
        '(allow file-read-metadata (literal "/Users/u"))',
        '(allow file-read-metadata (literal "/Users/u/src"))',
        '(allow file-read-metadata (literal "/Users/u/Library"))',
        '(allow file-read-metadata (literal "/Users/u/Library/Application Support"))',
        '(allow file-read-metadata (literal "/Users/u/Library/Application Support/planter"))',
        '(allow file-read-metadata (literal "/Users/u/Library/Application Support/planter/homes"))',
        "",
        "; Shell rc files in a writable home stay read-only: the next shell would run them.",
        rcLine(CELL_HOME),
        "",
        "; Workspace config stays read-only: the paths the daemon found, and at any depth of the cell a",
        "; .git entry itself, git hooks and config (also of submodules and worktrees), and tool config.",
        '(deny file-write* (subpath "/Users/u/src/app/.git/hooks"))',
        '(deny file-write* (subpath "/Users/u/src/app/.git/config"))',
        '(deny file-write* (regex "^/Users/u/src/app/(.*/)?\\\\.git$"))',
        '(deny file-write* (regex "^/Users/u/src/app/(.*/)?\\\\.git/((modules|worktrees)/.+/)?(hooks|info|config|config\\\\.worktree|commondir)(/|$)"))',
        '(deny file-write* (regex "^/Users/u/src/app/(.*/)?(\\\\.vscode|\\\\.idea|\\\\.claude|\\\\.mcp\\\\.json|\\\\.envrc|\\\\.gitmodules|\\\\.devcontainer|\\\\.cursor|\\\\.gemini|\\\\.codex|\\\\.pre-commit-config\\\\.yaml|\\\\.husky)(/|$)"))',
        "",
      ].join("\n"),
    );
  });

  test("Unix sockets, a path inside ~/.ssh, workspace config allowed and host network, as literal text", () => {
    const policy = complete({
      network: "host",
      read_only: ["/Users/u/.ssh/known_hosts"],
      unix_sockets: ["/Users/u/.ssh/agent.sock", "/tmp/gpg/S.gpg-agent"],
      workspace_config: "allow",
    });
    expect(seatbeltProfile(req({ policy, workspaceReadOnly: [] }))).toBe(
      [
        ...PROCESSES_AND_SYSTEM,
        "; Network: the host's.",
        "(allow system-socket)",
        "(allow network*)",
        "",
        "; Unix sockets: no host service (docker, ssh-agent, planterd…) but those the policy names, even",
        "; with the host's network; DNS through the resolver only with it. The job's own TMPDIR is",
        "; private, so a socket there is one of its own servers (multiprocessing, test servers).",
        "(deny network-outbound (remote unix-socket))",
        '(allow network-outbound (remote unix-socket (path-literal "/private/var/run/mDNSResponder"))) ; name lookups',
        '(allow network-bind network-inbound network-outbound (subpath "/var/folders/zz/abc/T/planter-j-1") (subpath "/private/var/folders/zz/abc/T/planter-j-1"))',
        '(allow network-outbound (remote unix-socket (path-literal "/Users/u/.ssh/agent.sock"))) ; unix_sockets',
        '(allow network-outbound (remote unix-socket (path-literal "/tmp/gpg/S.gpg-agent")) (remote unix-socket (path-literal "/private/tmp/gpg/S.gpg-agent"))) ; unix_sockets',
        "",
        ...FILES_HEAD,
        '(deny file-read* file-write* (subpath "/Users")) ; home',
        '(allow file-read* file-write* (subpath "/Users/u/src/app")) ; cell',
        '(allow file-read* (subpath "/Users/u/.ssh/known_hosts")) ; read_only',
        '(deny file-write* (subpath "/Users/u/.ssh/known_hosts")) ; read_only',
        '(deny file-read* file-write* network* (subpath "/Users/u/.config/planter")) ; planter',
        '(deny file-read* file-write* (subpath "/Users/u/src/other")) ; other cell',
        '(deny file-read* file-write* network* (subpath "/Users/u/Library/Application Support/planter")) ; planter',
        '(allow file-read* file-write* (subpath "/var/folders/zz/abc/T/planter-j-1") (subpath "/private/var/folders/zz/abc/T/planter-j-1")) ; TMPDIR',
        '(allow file-read* file-write* (subpath "/Users/u/Library/Application Support/planter/homes/c1")) ; cell home',
        ...credentialLines(CELL_HOME),
        "",
        "; Hidden directories on the way to what the job is given: stat-able (realpath needs it), not listable.",
        '(allow file-read-metadata (literal "/Users"))',
        '(allow file-read-metadata (literal "/Users/u"))',
        '(allow file-read-metadata (literal "/Users/u/src"))',
        '(allow file-read-metadata (literal "/Users/u/Library"))',
        '(allow file-read-metadata (literal "/Users/u/Library/Application Support"))',
        '(allow file-read-metadata (literal "/Users/u/Library/Application Support/planter"))',
        '(allow file-read-metadata (literal "/Users/u/Library/Application Support/planter/homes"))',
        '(allow file-read-metadata (literal "/Users/u/.ssh"))',
        "",
        "; Shell rc files in a writable home stay read-only: the next shell would run them.",
        rcLine(CELL_HOME),
        "",
      ].join("\n"),
    );
  });

  test("a credential is hidden inside a home the policy shows, unless the policy names it exactly", () => {
    const shown = seatbeltProfile(
      req({ policy: complete({ read_only: ["/Users/u", "/Users/u/.ssh/known_hosts", "/Users/u/.aws"] }) }),
    ).split("\n");
    const at = (line: string) => shown.indexOf(line);
    const home = at('(allow file-read* (subpath "/Users/u")) ; read_only');
    const ssh = at('(deny file-read* file-write* (literal "/Users/u/.ssh") (subpath "/Users/u/.ssh")) ; credential');
    const knownHosts = at('(allow file-read* (subpath "/Users/u/.ssh/known_hosts")) ; read_only');
    expect(home).toBeGreaterThan(at('(deny file-read* file-write* (subpath "/Users")) ; home'));
    expect(ssh).toBeGreaterThan(home);
    expect(knownHosts).toBeGreaterThan(ssh);
    expect(shown).toContain('(allow file-read* (subpath "/Users/u/.aws")) ; read_only');
    expect(shown.filter((l) => l.includes('"/Users/u/.aws"') && l.includes("credential"))).toEqual([]);
    // The real home's other credentials are hidden again (.gnupg), in the home the policy shows.
    expect(
      at('(deny file-read* file-write* (literal "/Users/u/.gnupg") (subpath "/Users/u/.gnupg")) ; credential'),
    ).toBeGreaterThan(home);
  });

  test("a deeper path is the exception: nested cells, read_only in read_write, a carve-out in a deny path", () => {
    const text = seatbeltProfile(
      req({
        cellDir: "/Users/u/src/app",
        otherCells: ["/Users/u/src", "/Users/u/src/app/vendor/lib"],
        policy: complete({
          read_write: ["/data", "/data/secret/out"],
          read_only: ["/data/in"],
          deny: ["/data/secret"],
        }),
      }),
    ).split("\n");
    const order = [
      '(deny file-read* file-write* (subpath "/Users/u/src")) ; other cell',
      '(allow file-read* file-write* (subpath "/Users/u/src/app")) ; cell',
      '(deny file-read* file-write* (subpath "/Users/u/src/app/vendor/lib")) ; other cell',
    ].map((l) => text.indexOf(l));
    expect(order.every((i, n) => i > 0 && (n === 0 || i > (order[n - 1] as number)))).toBe(true);
    const data = [
      '(allow file-read* file-write* (subpath "/data")) ; read_write',
      '(deny file-write* (subpath "/data/in")) ; read_only',
      '(deny file-read* file-write* network* (subpath "/data/secret")) ; deny',
      '(allow file-read* file-write* (subpath "/data/secret/out")) ; read_write',
    ].map((l) => text.indexOf(l));
    expect(data.every((i, n) => i > 0 && (n === 0 || i > (data[n - 1] as number)))).toBe(true);
    // The policy's path in a denied tree is stat-able on the way down, not listable.
    expect(text).toContain('(allow file-read-metadata (literal "/data/secret"))');
  });

  test("host network, a read_only cell and deny paths", () => {
    const text = seatbeltProfile(
      req({ policy: complete({ network: "host", fs_mode: "read_only", deny: ["/etc/secret"] }) }),
    );
    expect(text).toContain("(allow network*)\n");
    expect(text).toContain('(allow file-read* (subpath "/Users/u/src/app")) ; cell\n');
    expect(text).toContain('(deny file-write* (subpath "/Users/u/src/app")) ; cell\n');
    expect(text).toContain(
      '(deny file-read* file-write* network* (subpath "/etc/secret") (subpath "/private/etc/secret")) ; deny\n',
    );
    expect(text).not.toContain('(allow file-read* file-write* (subpath "/Users/u/src/app"))');
  });

  test("an allow list: the one TCP destination is the job's proxy port; without the port, no network", () => {
    const list = complete({ network: { allow: ["registry.npmjs.org"] } });
    const text = seatbeltProfile(req({ policy: list, proxyPort: 50123 }));
    expect(text).toContain(
      [
        "; Network: an allow list, enforced by the job's egress proxy, which planterd serves on this",
        "; loopback port: the one TCP destination; Unix sockets only for the rules below.",
        "(allow system-socket (socket-domain AF_UNIX) (socket-domain AF_INET) (socket-domain AF_INET6))",
        '(allow network-outbound (remote ip "localhost:50123")) ; egress proxy',
        "",
        "; Unix sockets: no host service",
      ].join("\n"),
    );
    expect(text).not.toContain("(allow network*)");
    expect(text).not.toContain("mDNSResponder"); // no name lookups: the proxy resolves
    const none = seatbeltProfile(req({ policy: list }));
    expect(none).toContain("(allow system-socket (socket-domain AF_UNIX))\n");
    expect(none).not.toContain("remote ip");
  });

  test("quotes are escaped and /private variants added", () => {
    expect(variants("/var/x")).toEqual(["/var/x", "/private/var/x"]);
    expect(variants("/Users/x")).toEqual(["/Users/x"]);
    const text = seatbeltProfile(req({ cellDir: '/w/a"b', workspaceReadOnly: [] }));
    expect(text).toContain('(allow file-read* file-write* (subpath "/w/a\\"b")) ; cell');
    expect(text).toContain('(deny file-write* (regex "^/w/a\\"b/(.*/)?\\\\.git$"))');
  });
});

describe("the profile's regexes", () => {
  test("regexQuote escapes every metacharacter and nothing else", () => {
    expect(regexQuote("/w/a.b+c*d?e(f)g[h]i{j}k|l^m$n\\o")).toBe(
      "/w/a\\.b\\+c\\*d\\?e\\(f\\)g\\[h\\]i\\{j\\}k\\|l\\^m\\$n\\\\o",
    );
    expect(regexQuote("/Users/u/My Project-2_x")).toBe("/Users/u/My Project-2_x");
    for (const s of ["/a.b", "/a+b (1)/[x]", "/$HOME/^x|y", "/c\\d{2}"])
      expect(new RegExp(`^${regexQuote(s)}$`).test(s)).toBe(true);
  });

  /** The profile's write-deny regexes, read back from its text (SBPL string escapes undone). */
  const regexes = (cellDir: string) =>
    [...seatbeltProfile(req({ cellDir, workspaceReadOnly: [] })).matchAll(/\(regex "((?:[^"\\]|\\.)*)"\)/g)].map(
      (m) => new RegExp((m[1] as string).replace(/\\(.)/g, "$1")),
    );
  const denied = (cellDir: string, path: string) => regexes(cellDir).some((r) => r.test(path));

  test.each([
    ["/c/.git", true],
    ["/c/.git/hooks", true],
    ["/c/.git/hooks/pre-commit", true],
    ["/c/.git/config", true],
    ["/c/.git/info/attributes", true],
    ["/c/sub/dir/.git", true],
    ["/c/sub/.git/config", true],
    ["/c/.git/modules/lib/hooks/post-checkout", true],
    ["/c/.git/modules/a/modules/b/config", true],
    ["/c/.git/worktrees/w/commondir", true],
    ["/c/.git/worktrees/w/config.worktree", true],
    ["/c/.vscode/settings.json", true],
    ["/c/pkg/.envrc", true],
    ["/c/.mcp.json", true],
    ["/c/.husky/pre-push", true],
    ["/c/.pre-commit-config.yaml", true],
    ["/c/.git/objects/ab/cdef", false],
    ["/c/.git/refs/heads/main", false],
    ["/c/.git/index", false],
    ["/c/.git/HEAD", false],
    ["/c/.git/configx", false],
    ["/c/.github/workflows/ci.yml", false],
    ["/c/.gitignore", false],
    ["/c/src/config/app.json", false],
    ["/c/my.vscode/x", false],
    ["/c/.mcp.jsonl", false],
    ["/cellar/.git/config", false],
    ["/other/.git/config", false],
  ])("%p in cell /c: write denied %p", (path, expected) => {
    expect(denied("/c", path)).toBe(expected);
  });

  test("a cell path with regex metacharacters matches only itself", () => {
    const cell = "/w/a+b (1)/c.d";
    expect(denied(cell, "/w/a+b (1)/c.d/.git/config")).toBe(true);
    expect(denied(cell, "/w/aab (1)/cXd/.git/config")).toBe(false);
    expect(denied(cell, "/w/a+b 1/c.d/.git/config")).toBe(false);
    expect(denied("/var/w", "/private/var/w/.git/hooks/x")).toBe(true);
  });

  test("workspace_config allow drops the regexes", () => {
    const text = seatbeltProfile(req({ policy: complete({ workspace_config: "allow" }), workspaceReadOnly: [] }));
    expect(text.split("\n").filter((l) => l.includes("(regex ") && !l.endsWith("; host terminals"))).toEqual([]);
    expect(text).not.toContain("Workspace config");
  });

  test("terminal devices: a job without a terminal opens, reads and sets none; a terminal job keeps its own usable", () => {
    const rule = (text: string) => text.split("\n").find((l) => l.endsWith("; host terminals"));
    const re = /\(regex "([^"]+)"\)/.exec(rule(seatbeltProfile(req())) ?? "")?.[1] ?? "";
    const matches = (p: string) => new RegExp(re).test(p);
    expect([matches("/dev/ttys003"), matches("/dev/ttyp0"), matches("/dev/ptyqf")]).toEqual([true, true, true]);
    // /dev/tty (the job's own terminal, if any), /dev/ptmx (a new pair of its own) and the rest stay.
    expect([matches("/dev/tty"), matches("/dev/ptmx"), matches("/dev/null"), matches("/dev/ttys003x")]).toEqual([
      false,
      false,
      false,
      false,
    ]);
    expect(rule(seatbeltProfile(req({ tty: true })))).toBeUndefined();
    // A terminal job: every terminal device but its own, whose path the holder puts in place of the marker.
    expect(seatbeltProfile(req({ tty: true }))).toContain(
      '\n(deny file-read* file-write* file-ioctl (require-all (regex "^/dev/(ttys[0-9]+|pty[p-w][0-9a-f]|tty[p-w][0-9a-f])$") (require-not (literal "/dev/planter-job-tty")))) ; host terminals but the job\'s own\n',
    );
  });
});

describe("seatbelt plan", () => {
  test("sandbox-exec -f PROFILE -- env loader -- ARGV; the job's env only in fd 3 (recording shim)", async () => {
    const dir = mkdtempSync("/tmp/pt-shim-");
    const log = join(dir, "log");
    const shim = join(import.meta.dir, "..", "shims", "sandbox-exec");
    const backend = new SeatbeltBackend(shim);
    const job = 'echo "$GREETING|$TMPDIR"';
    const r = req({
      argv: ["/bin/sh", "-c", job],
      env: { PATH: "/usr/bin:/bin", GREETING: "it's a secret" },
      jobDir: dir,
      scratch: join(dir, "tmp"),
      cwd: dir,
      cellDir: dir,
    });
    const plan = backend.plan(r);
    const loader = '. /dev/fd/3 && exec 3<&- && exec "$@"';
    expect(plan.argv).toEqual([
      shim,
      "-f",
      join(dir, "sandbox.sb"),
      "--",
      "/bin/sh",
      "-c",
      loader,
      "planter-env",
      "/bin/sh",
      "-c",
      job,
    ]);
    expect(plan.env).toEqual(HOST_ENV);
    expect(plan.cwd).toBe(dir);
    expect(plan.dirs).toEqual([join(dir, "tmp")]);
    expect(
      plan.inputs?.map((i) => ("data" in i ? new TextDecoder().decode(i.data) : "path" in i ? i.path : i.pipe)),
    ).toEqual([`export PATH='/usr/bin:/bin'\nexport GREETING='it'\\''s a secret'\nexport TMPDIR='${dir}/tmp/'\n`]);
    expect(JSON.stringify([plan.argv, plan.env, plan.files])).not.toContain("secret");
    for (const f of plan.files ?? []) await Bun.write(f.path, f.content);
    // As the supervisor does: the inputs become fds 3, 4, … of sandbox-exec.
    const fds = openInputs(plan.inputs ?? [], dir);
    const p = Bun.spawn(plan.argv, {
      env: { ...plan.env, SHIM_LOG: log },
      cwd: plan.cwd,
      stdio: ["ignore", "pipe", "pipe", ...fds],
    });
    for (const fd of fds) closeSync(fd);
    expect(await new Response(p.stdout).text()).toBe(`it's a secret|${dir}/tmp/\n`);
    expect(await p.exited).toBe(0);
    expect(readFileSync(log, "utf8")).toBe(
      `-f\n${join(dir, "sandbox.sb")}\n--\n/bin/sh\n-c\n${loader}\nplanter-env\n/bin/sh\n-c\n${job}\n\n`,
    );
    expect(readFileSync(`${log}.profile`, "utf8")).toBe(seatbeltProfile(r));
    expect((await backend.probe()).ok).toBe(true);
    rmSync(dir, { recursive: true });
  });

  test("an allow list's job gets the proxy variables for its port in its env (fd 3)", () => {
    const shim = join(import.meta.dir, "..", "shims", "sandbox-exec");
    const plan = new SeatbeltBackend(shim).plan(
      req({
        policy: complete({ network: { allow: ["a.test"] } }),
        proxyPort: 50123,
        jobDir: "/tmp/x",
        scratch: "/tmp/x/tmp",
      }),
    );
    const env = new TextDecoder().decode((plan.inputs as { data: Uint8Array }[])[0]?.data);
    for (const line of [
      "export HTTP_PROXY='http://127.0.0.1:50123'",
      "export https_proxy='http://127.0.0.1:50123'",
      "export ALL_PROXY='socks5h://127.0.0.1:50123'",
      "export NO_PROXY='localhost,127.0.0.1,::1'",
    ])
      expect(env).toContain(`${line}\n`);
  });

  test("without sandbox-exec the plan is refused with a hint", () => {
    expect(() => new SeatbeltBackend("/nonexistent/sandbox-exec").plan(req())).toThrow("not found");
  });
});
