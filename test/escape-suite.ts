/**
 * The escape suite: real bubblewrap, planterd as root (root's jobs run as nobody) and planterd as an
 * unprivileged user (nobody). Every case tries a way out of the sandbox and asserts that it fails,
 * next to the legitimate variant that must keep working, so that each case can fail.
 *
 * Cases named "HOLE:" are open holes, kept as `test.todo` (run them with `bun test --todo`): each
 * describes an escape that still works and what it reaches; plans/tracker.md lists them.
 * They are left failing on purpose, so a fix turns them green. A case named "closed hole:" was one
 * of them, found by attack and fixed; the name keeps what it was.
 *
 * One file per mode (test/integration/escape-root.test.ts, escape-user.test.ts), so the two halves
 * run in parallel; `escapeSuite` registers everything for the file that calls it (a module shared by
 * files in one process is evaluated once, so nothing here runs at import).
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import {
  appendFileSync,
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createConnection, createServer, type Server } from "node:net";
import { dirname, join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../lib/api/client.ts";
import type { Job, Limits, SandboxMode } from "../lib/api/contract.ts";
import type { PlanterError } from "../lib/api/errors.ts";
import type { Policy } from "../lib/sandbox/policy.ts";
import { baseEnv, bundled, cli, PLANTER, startDaemon, tempHome, waitFor } from "./harness.ts";
import { freePort } from "./ssh-fixture.ts";
import { haveOpenssl, makePki } from "./tls-fixture.ts";

export type Mode = "root" | "user";

/** Register the escape suite for planterd in each of `modes`, with the host fixtures they share. */
export function escapeSuite(modes: readonly Mode[]): void {
  setDefaultTimeout(60_000);

  /** planterd as root runs root's jobs as nobody; planterd as a user runs them as itself (nobody here). */
  const JOB_UID = 65534;
  /**
   * Root only: it runs planterd as root and, through setpriv, as nobody (the unprivileged user
   * mode), with root's fixtures (/run, root's keyring). As a user the whole suite is skipped.
   */
  const asRoot = process.getuid?.() === 0;
  const TAG = `${process.pid}-${modes.join("-")}`;
  const HOST_PIDNS = readlinkSync("/proc/self/ns/pid");
  const MIB = 1024 * 1024;
  const CONFIG =
    '[sandbox]\n\n[jobs]\nroot_peer_user = "nobody"\nkill_grace_ms = 1000\n\n[monitor]\ninterval_ms = 100\n\n[authz]\nallowed_uids = [65534]\n\n[network.hosts]\n"api.test" = ["127.0.0.1"]\n"host.test" = ["127.0.0.1"]\n';
  /** A variable in planterd's own environment: a policy's env.pass may hand it to a job. */
  const DAEMON_SECRET = `daemon-secret-${TAG}`;

  /** Credential files planter lists (lib/sandbox/credentials.ts), planted in the fake home. */
  const LISTED = [
    ".ssh/id_ed25519",
    ".aws/credentials",
    ".npmrc",
    ".git-credentials",
    ".bash_history",
    ".config/gh/hosts.yml",
    ".docker/config.json",
    ".kube/config",
  ];
  /** Widely used credential files outside that list. */
  const UNLISTED = [
    ".pgpass",
    ".my.cnf",
    ".m2/settings.xml",
    ".gradle/gradle.properties",
    ".config/rclone/rclone.conf",
    ".s3cfg",
    ".boto",
    ".composer/auth.json",
    ".claude/.credentials.json",
    ".codex/auth.json",
    ".terraformrc",
    ".pulumi/credentials.json",
    ".cache/huggingface/token",
    ".databrickscfg",
    ".authinfo",
    ".config/glab-cli/config.yml",
    ".docker/key.pem",
    ".minikube/profiles/minikube/client.key",
    ".config/pip/pip.conf",
    ".cloudflared/cert.pem",
    ".config/github-copilot/apps.json",
    ".var/app/org.mozilla.firefox/.mozilla/firefox/profiles.ini",
    ".local/share/TelegramDesktop/tdata/key_datas",
  ];

  /** Unix socket probe: connects to each path (`@name` is abstract) and prints what happened. */
  const PROBE_UNIX = `use Socket;
  for my $p (@ARGV) {
    (my $addr = $p) =~ s/^@/\\0/;
    my $s;
    if (!socket($s, AF_UNIX, SOCK_STREAM, 0)) { print "$p socket: $!\\n"; next }
    if (connect($s, pack_sockaddr_un($addr))) { my $l = <$s> // ""; chomp $l; print "$p connected: $l\\n" }
    else { print "$p connect: $!\\n" }
  }
  `;

  /** Datagram probe: a datagram socket or pair could sendto() any socket path. */
  const PROBE_DGRAM = `use Socket;
  my ($path) = @ARGV;
  if (socket(my $s, AF_UNIX, SOCK_DGRAM, 0)) { print "dgram socket ok\\n"; print send($s, "from-job", 0, pack_sockaddr_un($path)) ? "sent\\n" : "send: $!\\n" }
  else { print "dgram socket: $!\\n" }
  if (socketpair(my $a, my $b, AF_UNIX, SOCK_DGRAM, 0)) { print "dgram pair ok\\n"; print send($a, "from-job", 0, pack_sockaddr_un($path)) ? "sent\\n" : "send: $!\\n" }
  else { print "dgram pair: $!\\n" }
  if (socketpair(my $c, my $d, AF_UNIX, SOCK_STREAM, 0)) { syswrite($c, "x"); my $x; sysread($d, $x, 1); print "stream pair ok $x\\n" }
  else { print "stream pair: $!\\n" }
  `;

  /** Namespaces and mounts from a job, by raw syscall (no helper program in between). */
  const PROBE_NS = `require "syscall.ph";
  my $r = syscall(&SYS_unshare, 0x10000000); print "unshare(NEWUSER) $r ", ($r < 0 ? "$!" : "ok"), "\\n";
  $r = syscall(&SYS_unshare, 0x00020000); print "unshare(NEWNS) $r ", ($r < 0 ? "$!" : "ok"), "\\n";
  $r = syscall(&SYS_clone, 0x10000000 | 17, 0, 0, 0, 0);
  if ($r == 0) { exit 0 } print "clone(NEWUSER) $r ", ($r < 0 ? "$!" : "ok"), "\\n"; waitpid($r, 0) if $r > 0;
  my ($src, $dst, $fs) = ("none", "/tmp", "tmpfs");
  $r = syscall(&SYS_mount, $src, $dst, $fs, 0, 0); print "mount $r ", ($r < 0 ? "$!" : "ok"), "\\n";
  my $root = "/root"; $r = syscall(&SYS_umount2, $root, 2); print "umount2 $r ", ($r < 0 ? "$!" : "ok"), "\\n";
  my $pid = fork(); if ($pid == 0) { exit 7 } waitpid($pid, 0); print "fork ok ", $? >> 8, "\\n";
  `;

  /** Kernel keys: whether /proc/keys lists DESC, keyctl read of SERIAL, and (with a third argument) add_key. */
  const PROBE_KEYS = `require "syscall.ph";
  my ($serial, $desc, $add) = @ARGV;
  open my $k, "<", "/proc/keys"; my @keys = grep { /\\Q$desc\\E/ } <$k>; print "listed ", scalar(@keys), "\\n";
  my $buf = "\\0" x 256; my $n = syscall(&SYS_keyctl, 11, $serial + 0, $buf, 256);
  print "read $n ", ($n < 0 ? "$!" : substr($buf, 0, $n)), "\\n";
  if ($add) {
    my ($t, $d, $p) = ("user", "planter-escape-job", "x");
    $n = syscall(&SYS_add_key, $t, $d, $p, 1, -3); print "add_key $n ", ($n < 0 ? "$!" : "ok"), "\\n";
  }
  `;

  /** Memory no RSS sample counts: a memfd (no mapping) or SysV segments (detached). */
  const PROBE_MEMFD = `require "syscall.ph";
  my $name = "planter-escape"; my $fd = syscall(&SYS_memfd_create, $name, 0);
  die "memfd_create: $!\\n" if $fd < 0;
  open(my $f, ">&=", $fd) or die "fdopen: $!\\n";
  my $mb = "a" x (1 << 20);
  for (1 .. 200) { print $f $mb or die "write: $!\\n" }
  $f->flush or die "flush: $!\\n";
  print "held ", (-s $f) >> 20, " MiB\\n";
  select(undef, undef, undef, 1.5);
  print "alive\\n";
  `;
  const PROBE_SYSV = `use IPC::SysV qw(IPC_PRIVATE S_IRUSR S_IWUSR);
  my $seg = 50 << 20; my $mb = "a" x (1 << 20);
  for (1 .. 4) {
    my $id = shmget(IPC_PRIVATE, $seg, S_IRUSR | S_IWUSR) // die "shmget: $!\\n";
    for my $o (0 .. 49) { shmwrite($id, $mb, $o << 20, 1 << 20) or die "shmwrite: $!\\n" }
  }
  open my $s, "<", "/proc/sysvipc/shm"; <$s>; my $t = 0; while (<$s>) { my @f = split; $t += $f[3] }
  print "held ", $t >> 20, " MiB\\n";
  select(undef, undef, undef, 1.5);
  print "alive\\n";
  `;

  /** A library whose constructor leaves a marker `<pid ns> <comm> <pid>` in MARKDIR wherever it loads. */
  const MARKER_LIB = `#include <fcntl.h>
  #include <stdio.h>
  #include <string.h>
  #include <unistd.h>
  __attribute__((constructor)) static void mark(void) {
    char ns[64] = {0}, comm[64] = {0}, path[1024];
    if (readlink("/proc/self/ns/pid", ns, sizeof ns - 1) < 0) strcpy(ns, "unknown");
    int c = open("/proc/self/comm", O_RDONLY);
    if (c >= 0) { if (read(c, comm, sizeof comm - 1) < 0) comm[0] = 0; close(c); }
    comm[strcspn(comm, "\\n")] = 0;
    snprintf(path, sizeof path, "%s/%s %s %d", MARKDIR, ns, comm, (int)getpid());
    int f = open(path, O_CREAT | O_WRONLY, 0666);
    if (f >= 0) close(f);
  }
  `;

  interface Planterd {
    mode: Mode;
    home: string;
    socket: string;
    state: string;
    client: Client;
    /** planterd's HOME: a real home with credentials in it. */
    fakeHome: string;
    /** Custom cell dirs live here. */
    scratch: string;
    /** planterd's own secrets its config names outside its dirs, where a job could see them (/var/tmp), by content. */
    secrets: Record<string, string>;
    stop(): Promise<void>;
  }

  interface Ran {
    job: Job;
    out: string;
    err: string;
  }

  interface JobOpts {
    cell?: string;
    argv?: string[];
    cwd?: string;
    env?: Record<string, string>;
    limits?: Limits;
    policy?: Policy;
    mode?: SandboxMode;
    /** Skip the check that the job ran enforced under bwrap. */
    anyBackend?: boolean;
  }

  const cleanups: (() => void)[] = [];
  const userDaemons = new Set<Subprocess>();
  process.on("exit", () => {
    for (const p of userDaemons) if (p.exitCode === null) p.kill("SIGKILL");
  });

  /** Give a tree to the job user (nobody), who must write it in both modes. */
  function giveToJobUser(path: string): void {
    Bun.spawnSync(["chown", "-R", `${JOB_UID}:${JOB_UID}`, path]);
  }

  function writeTree(root: string, files: Record<string, string>, mode = 0o644): void {
    for (const [rel, text] of Object.entries(files)) {
      const f = join(root, rel);
      mkdirSync(dirname(f), { recursive: true, mode: 0o755 });
      writeFileSync(f, text, { mode });
      chmodSync(f, mode);
    }
  }

  /** A scratch dir in the host's /tmp that the job user can pass through. */
  function scratchDir(prefix: string, base = "/tmp"): string {
    const d = mkdtempSync(`${base}/${prefix}-`);
    chmodSync(d, 0o755);
    cleanups.push(() => rmSync(d, { recursive: true, force: true }));
    return d;
  }

  /** The fake home planterd runs with: credentials, an rc file and an ordinary file. */
  function fakeHome(base = "/tmp"): string {
    const h = scratchDir("pt-eh", base);
    const files: Record<string, string> = { "notes.txt": "ordinary-home-file\n", ".bashrc": "# rc\n" };
    for (const c of [...LISTED, ...UNLISTED]) files[c] = `credential:${c}\n`;
    writeTree(h, files);
    return h;
  }

  /**
   * planterd in `mode`. `homeVia`: its HOME is a symlink to the fake home, both in /var/tmp (a job
   * sees /var/tmp; /home → /var/home on Fedora Atomic and other ostree hosts is the same layout).
   */
  async function startPlanterd(
    mode: Mode,
    o: { homeVia?: "symlink"; mounts?: (p: { home: string; fakeHome: string }) => string } = {},
  ): Promise<Planterd> {
    const home = fakeHome(o.homeVia ? "/var/tmp" : "/tmp");
    let homeEnv = home;
    if (o.homeVia) {
      homeEnv = join(scratchDir("pt-ehl", "/var/tmp"), "home");
      symlinkSync(home, homeEnv);
    }
    const scratch = scratchDir("pt-es");
    // planterd's TLS listener, its key and an identity's token file in /var/tmp (which jobs see),
    // the daemon's user's own 0600 files (a user's planterd runs its jobs as that same user).
    const secrets: Record<string, string> = {};
    let config = CONFIG;
    if (haveOpenssl) {
      const pki = makePki("ci");
      cleanups.push(() => rmSync(pki.dir, { recursive: true, force: true }));
      const dir = scratchDir("pt-esec", "/var/tmp");
      const owner = mode === "root" ? 0 : JOB_UID;
      const put = (name: string, text: string) => {
        const f = join(dir, name);
        writeFileSync(f, text, { mode: 0o600 });
        chownSync(f, owner, owner);
        secrets[f] = text;
        return f;
      };
      const key = put("server.key", readFileSync(pki.serverKey, "utf8"));
      const token = put("ci.token", `tcp-token-${TAG}-0123456789\n`);
      const cert = join(dir, "server.pem");
      writeFileSync(cert, readFileSync(pki.serverCert));
      config += `\n[api.tcp]\naddress = "127.0.0.1:${freePort()}"\ncert = "${cert}"\nkey = "${key}"\n[[api.tcp.identities]]\nname = "ci"\nuid = ${JOB_UID}\ntoken_file = "${token}"\n`;
    }
    // `mounts`: shell commands run as root in a mount namespace of planterd's own, before it starts
    // (the host's mounts stay as they are).
    const inMounts = (planterHome: string) =>
      o.mounts
        ? [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            `set -e\n${o.mounts({ home: planterHome, fakeHome: home })}\nexec "$@"`,
            "sh",
          ]
        : [];
    if (mode === "root") {
      const dhome = tempHome();
      const d = await startDaemon({
        home: dhome,
        config,
        env: { HOME: homeEnv, ESCAPE_DAEMON_SECRET: DAEMON_SECRET },
        prefix: inMounts(dhome),
      });
      // Peers other than root (nobody, allowed by the config) may reach the socket.
      chmodSync(join(d.home, "run"), 0o755);
      chmodSync(d.socket, 0o666);
      cleanups.push(() => rmSync(d.home, { recursive: true, force: true }));
      return {
        mode,
        home: d.home,
        socket: d.socket,
        state: join(d.home, "state"),
        client: d.client,
        fakeHome: home,
        scratch,
        secrets,
        stop: async () => {
          await d.stop();
        },
      };
    }
    giveToJobUser(home);
    giveToJobUser(scratch);
    const planterHome = scratchDir("pt-eu");
    chownSync(planterHome, JOB_UID, JOB_UID);
    writeFileSync(join(planterHome, "config.toml"), config);
    let err = "";
    const proc = Bun.spawn(
      // A bundle in a world-readable dir: the job user may not reach this checkout.
      [
        ...inMounts(planterHome),
        "setpriv",
        `--reuid=${JOB_UID}`,
        `--regid=${JOB_UID}`,
        "--clear-groups",
        process.execPath,
        bundled(PLANTER),
        "daemon",
      ],
      {
        env: baseEnv(planterHome, { HOME: homeEnv, ESCAPE_DAEMON_SECRET: DAEMON_SECRET }),
        cwd: "/",
        stdin: "ignore",
        stdout: "ignore",
        stderr: "pipe",
      },
    );
    userDaemons.add(proc);
    (async () => {
      for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) err += new TextDecoder().decode(chunk);
    })();
    const socket = join(planterHome, "run", "planterd.sock");
    // The test runs as root; this daemon runs as JOB_UID, which a client trusts only when told.
    const client = new Client(socket, undefined, [JOB_UID]);
    await waitFor(
      async () => {
        if (proc.exitCode !== null) throw new Error(`planterd (as nobody) exited ${proc.exitCode}: ${err}`);
        return client.health().then(
          (h) => h.ok,
          () => false,
        );
      },
      "planterd as nobody to answer",
      20_000,
    );
    return {
      mode,
      home: planterHome,
      socket,
      state: join(planterHome, "state"),
      client,
      fakeHome: home,
      scratch,
      secrets,
      stop: async () => {
        proc.kill("SIGTERM");
        await proc.exited;
      },
    };
  }

  const text = async (p: Planterd, id: string, stream: "stdout" | "stderr") =>
    Buffer.from((await p.client.logs(id, { stream })).data, "base64").toString();

  /** Run a job (sh -c SCRIPT unless argv is given) and return it finished with its output. */
  async function run(p: Planterd, script: string, o: JobOpts = {}): Promise<Ran> {
    const sandbox = o.policy || o.mode ? { mode: o.mode, policy: o.policy } : undefined;
    const j = await p.client.createJob({
      cell: o.cell,
      argv: o.argv ?? ["sh", "-c", script],
      cwd: o.cwd,
      env: o.env,
      limits: o.limits,
      sandbox,
    });
    if (!o.anyBackend) expect([j.sandbox.mode, j.sandbox.backend]).toEqual(["enforced", "bwrap"]);
    const job = (await p.client.waitJob(j.id, 45_000)).job;
    return { job, out: await text(p, j.id, "stdout"), err: await text(p, j.id, "stderr") };
  }

  /** The refusal of a request that must be refused (a success fails the test). */
  async function refusal(req: Promise<unknown>): Promise<PlanterError> {
    const r = await req.then(
      (ok) => ({ ok }),
      (e: PlanterError) => ({ e }),
    );
    if ("ok" in r) throw new Error(`expected a refusal, got ${JSON.stringify(r.ok).slice(0, 400)}`);
    return r.e;
  }

  /** One API request as another local user (nobody), a peer of planterd as root. */
  async function asPeer(
    p: Planterd,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> & { error?: { code: string; message: string } } }> {
    const fixture = bundled(join(import.meta.dir, "integration", "escape-fixture.ts"));
    const args = [fixture, p.socket, method, path, ...(body === undefined ? [] : [JSON.stringify(body)])];
    const proc = Bun.spawn(
      ["setpriv", `--reuid=${JOB_UID}`, `--regid=${JOB_UID}`, "--clear-groups", process.execPath, ...args],
      { env: { PATH: "/usr/bin:/bin", HOME: "/tmp" }, cwd: "/tmp", stdout: "pipe", stderr: "pipe" },
    );
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    await proc.exited;
    if (!out.trim()) throw new Error(`peer request failed: ${err}`);
    return JSON.parse(out);
  }

  let cellSeq = 0;
  /** A custom-dir cell (owned by the job user) with `files`, and its dir. */
  async function mkCell(
    p: Planterd,
    o: {
      files?: Record<string, string>;
      policy?: Policy;
      mode?: SandboxMode;
      env?: Record<string, string>;
    } = {},
  ): Promise<{ name: string; dir: string }> {
    const name = `c${++cellSeq}`;
    const dir = join(p.scratch, name);
    mkdirSync(dir, { mode: 0o755 });
    writeTree(dir, o.files ?? {});
    giveToJobUser(dir);
    await p.client.createCell({
      name,
      dir,
      env: o.env,
      sandbox: o.policy || o.mode ? { mode: o.mode, policy: o.policy } : undefined,
    });
    return { name, dir };
  }

  /** A managed cell (its dir under the state dir). */
  async function mkManaged(p: Planterd, policy?: Record<string, unknown>): Promise<{ name: string; dir: string }> {
    const name = `m${++cellSeq}`;
    const c = await p.client.createCell({ name, sandbox: policy ? { policy } : undefined });
    return { name, dir: c.dir };
  }

  /** git on the host, as the user working in the cell would run it (root, own HOME, no system config). */
  let gitHome = "";
  function hostGit(dir: string, args: string[]): { code: number; out: string; err: string } {
    const r = Bun.spawnSync(["git", "-C", dir, ...args], {
      env: { PATH: "/usr/bin:/bin", HOME: gitHome, GIT_CONFIG_NOSYSTEM: "1", LANG: "C" },
      stdout: "pipe",
      stderr: "pipe",
    });
    return { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
  }

  /** A repository with one commit, as the user would have it. */
  function hostRepo(dir: string, extra: (d: string) => void = () => {}): void {
    hostGit(dir, ["init", "-q"]);
    writeFileSync(join(dir, "README"), "readme\n");
    extra(dir);
    hostGit(dir, ["add", "-A"]);
    hostGit(dir, ["commit", "-qm", "init"]);
    giveToJobUser(dir);
  }

  /** Markers a host-side command would leave: a host dir no job can see (the job's /tmp is private). */
  let markers = "";
  const marker = (name: string) => join(markers, name);

  // ------------------------------------------------------------------ host fixtures shared by both modes

  let keySerial = 0;
  let libc: { symbols: { syscall: (...a: unknown[]) => bigint } } | null = null;
  const servers: Server[] = [];
  let sockDir = "";
  let agentSock = "";
  let hostTmpSock = "";
  let runDir = "";
  let runSock = "";
  let hostProc: Subprocess | null = null;
  const abstractName = `planter-escape-${TAG}`;

  function listen(path: string, reply: string): Promise<void> {
    const s = createServer((c) => c.end(`${reply}\n`));
    servers.push(s);
    return new Promise((r) =>
      s.listen(path, () => {
        if (!path.startsWith("\0")) chmodSync(path, 0o777);
        r();
      }),
    );
  }

  beforeAll(async () => {
    if (!asRoot) return;
    markers = scratchDir("pt-emark");
    chmodSync(markers, 0o777);
    gitHome = scratchDir("pt-egit");
    writeFileSync(
      join(gitHome, ".gitconfig"),
      "[safe]\n\tdirectory = *\n[user]\n\tname = host\n\temail = host@example.com\n",
    );
    // A key in the session keyring planterd starts with: jobs must get a fresh one.
    libc = dlopen("libc.so.6", {
      syscall: {
        args: [FFIType.i64, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.i64, FFIType.i64],
        returns: FFIType.i64,
      },
    }) as unknown as typeof libc;
    const payload = Buffer.from("keyring-secret");
    keySerial = Number(
      libc?.symbols.syscall(
        248n,
        ptr(Buffer.from("user\0")),
        ptr(Buffer.from(`planter-escape-${TAG}\0`)),
        ptr(payload),
        BigInt(payload.length),
        -3n,
      ),
    );
    sockDir = scratchDir("pt-esock");
    agentSock = join(sockDir, "agent.sock");
    hostTmpSock = join(sockDir, "host.sock");
    await listen(agentSock, "agent");
    await listen(hostTmpSock, "host-tmp");
    await listen(`\0${abstractName}`, "abstract");
    runDir = `/run/pt-escape-${TAG}`;
    mkdirSync(runDir, { mode: 0o755 });
    cleanups.push(() => rmSync(runDir, { recursive: true, force: true }));
    runSock = join(runDir, "rt.sock");
    await listen(runSock, "runtime-dir");
    hostProc = Bun.spawn(["perl", "-e", "sleep 600", `planter-escape-hostproc-${TAG}`], { stdout: "ignore" });
  });

  afterAll(() => {
    hostProc?.kill("SIGKILL");
    for (const s of servers) s.close();
    // KEYCTL_REVOKE
    if (keySerial > 0) libc?.symbols.syscall(250n, 3, keySerial, 0, 0, 0);
    for (const c of cleanups.reverse()) c();
  });

  // ------------------------------------------------------------------ the suite, once per mode

  for (const mode of modes) {
    describe.skipIf(!asRoot)(`planterd as ${mode} (needs root: the user mode runs as nobody through setpriv)`, () => {
      let p: Planterd;
      beforeAll(async () => {
        p = await startPlanterd(mode);
      });
      afterAll(async () => {
        await p?.stop();
      });

      describe("privilege", () => {
        test("the job never runs as root", async () => {
          const r = await run(p, "id -u; id -g; id -G");
          expect(r.job.exit_code).toBe(0);
          expect(r.out).toBe(`${JOB_UID}\n${JOB_UID}\n${JOB_UID}\n`);
          expect(r.job.run_as?.uid).toBe(JOB_UID);
        });

        test("cannot write /proc/sys/kernel/core_pattern (reading it works)", async () => {
          const before = readFileSync("/proc/sys/kernel/core_pattern", "utf8");
          const r = await run(
            p,
            "cat /proc/sys/kernel/core_pattern; echo '|/bin/sh -c id' > /proc/sys/kernel/core_pattern && echo WROTE",
          );
          expect(r.out).toBe(before);
          expect(r.err).toMatch(/Read-only file system|Permission denied/);
          expect(readFileSync("/proc/sys/kernel/core_pattern", "utf8")).toBe(before);
        });

        test("cannot write /proc/sysrq-trigger (where the kernel has it) or other /proc/sys knobs", async () => {
          const panic = readFileSync("/proc/sys/kernel/panic", "utf8");
          const domain = readFileSync("/proc/sys/kernel/domainname", "utf8");
          const r = await run(
            p,
            "echo h > /proc/sysrq-trigger && echo WROTE-TRIGGER; echo 7 > /proc/sys/kernel/panic && echo WROTE-PANIC; echo escape > /proc/sys/kernel/domainname && echo WROTE-DOMAIN; cat /proc/sys/kernel/panic",
          );
          expect(r.out).toBe(panic);
          expect(readFileSync("/proc/sys/kernel/panic", "utf8")).toBe(panic);
          expect(readFileSync("/proc/sys/kernel/domainname", "utf8")).toBe(domain);
        });

        test("cannot read /etc/shadow (reads /etc/passwd)", async () => {
          const r = await run(p, "cat /etc/shadow && echo READ-SHADOW; head -1 /etc/passwd");
          expect(r.out).toBe(`${readFileSync("/etc/passwd", "utf8").split("\n")[0]}\n`);
          expect(r.err).toContain("Permission denied");
        });

        test("root's session keyring stays out of reach: not listed, keyctl and add_key refused", async () => {
          expect(keySerial).toBeGreaterThan(0);
          // The host, with the keyring planterd started with, lists and reads the key.
          const desc = `planter-escape-${TAG}`;
          const host = Bun.spawnSync(["perl", "-e", PROBE_KEYS, String(keySerial), desc]).stdout.toString();
          expect(host).toBe("listed 1\nread 14 keyring-secret\n");
          const { dir, name } = await mkCell(p, { files: { "keys.pl": PROBE_KEYS } });
          const r = await run(p, "", {
            cell: name,
            argv: ["perl", join(dir, "keys.pl"), String(keySerial), desc, "add"],
          });
          expect(r.out).toBe("listed 0\nread -1 Operation not permitted\nadd_key -1 Operation not permitted\n");
        });

        test("no capabilities at all, no_new_privs set, a seccomp filter on", async () => {
          const r = await run(p, "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status");
          expect(r.out).toBe(
            [
              "CapInh:\t0000000000000000",
              "CapPrm:\t0000000000000000",
              "CapEff:\t0000000000000000",
              "CapBnd:\t0000000000000000",
              "CapAmb:\t0000000000000000",
              "NoNewPrivs:\t1",
              "Seccomp:\t2",
              "",
            ].join("\n"),
          );
        });

        test("setuid binaries do not elevate (su, mount), though they are setuid on the host", async () => {
          expect(statSync("/usr/bin/su").mode & 0o4000).toBe(0o4000);
          expect(statSync("/usr/bin/mount").mode & 0o4000).toBe(0o4000);
          const r = await run(
            p,
            "su root -c 'id -u' </dev/null; echo su=$?; mkdir -p m; mount -t tmpfs none m; echo mount=$?; mount --bind /etc m; echo bind=$?; id -u",
          );
          expect(r.out).not.toMatch(/^0$/m);
          expect(r.out).toContain("su=1\n");
          expect(r.out).not.toMatch(/mount=0|bind=0/);
          expect(r.out.endsWith(`${JOB_UID}\n`)).toBe(true);
        });

        test("no new user namespace, mount namespace or mount (unshare tool, raw syscalls); fork works", async () => {
          const { dir, name } = await mkCell(p, { files: { "ns.pl": PROBE_NS } });
          const tool = await run(p, "unshare -U true; echo unshare-U=$?; unshare -rm true; echo unshare-rm=$?", {
            cell: name,
          });
          expect(tool.out).toBe("unshare-U=1\nunshare-rm=1\n");
          const r = await run(p, "", { cell: name, argv: ["perl", join(dir, "ns.pl")] });
          const lines = r.out.split("\n");
          expect(lines[0]).toBe("unshare(NEWUSER) -1 Operation not permitted");
          expect(lines[1]).toBe("unshare(NEWNS) -1 Operation not permitted");
          expect(lines[2]).toMatch(/^clone\(NEWUSER\) -1 (No space left on device|Operation not permitted)$/);
          expect(lines[3]).toBe("mount -1 Operation not permitted");
          expect(lines[4]).toBe("umount2 -1 Operation not permitted");
          expect(lines[5]).toBe("fork ok 7");
        });

        test("syscalls newer than the filter's table: open_tree_attr refused by number, clone3 of a user namespace fails, unreviewed numbers ENOSYS; fchmodat2 and close_range work", async () => {
          const probe = `require "syscall.ph";
          sub r { my ($n, $v) = @_; print "$n ", ($v < 0 ? 0 + $! : "ok"), "\\n" }
          my ($root, $file) = ("/", "f");
          r("open_tree_attr", syscall(467, -100, $root, 0, 0, 0));
          my $args = pack("QQQQQQQQ", 0x10000000, 0, 0, 0, 17, 0, 0, 0);
          my $pid = syscall(435, $args, 64); if ($pid == 0) { exit 0 } waitpid($pid, 0) if $pid > 0; r("clone3_newuser", $pid);
          r("unreviewed", syscall(470, 0, 0, 0)); r("unreviewed_x32", syscall(0x40000000 + 470, 0, 0, 0));
          open(my $f, ">", "f") or die; close $f; r("fchmodat2", syscall(452, -100, $file, 0600, 0));
          r("close_range", syscall(436, 1000, 1010, 0));
          `;
          const { dir, name } = await mkCell(p, { files: { "new.pl": probe } });
          const r = await run(p, "", { cell: name, argv: ["perl", join(dir, "new.pl")] });
          expect(r.err).toBe("");
          expect(r.out).toMatch(
            /^open_tree_attr 1\nclone3_newuser (28|1)\nunreviewed 38\nunreviewed_x32 38\nfchmodat2 ok\nclose_range ok\n$/,
          );
        });

        test("a tree another local user plants at /tmp/planter-JOB (a name ps shows) is not removed by planterd at the job's end", async () => {
          const { dir, name } = await mkCell(p);
          const j = await p.client.createJob({
            cell: name,
            argv: ["sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; echo done"],
          });
          const planted = `/tmp/planter-${j.id}`;
          const plant = Bun.spawnSync(
            [
              "setpriv",
              "--reuid=12345",
              "--regid=12345",
              "--clear-groups",
              "sh",
              "-c",
              'mkdir -p "$1/sub" && echo mine > "$1/sub/f"',
              "-",
              planted,
            ],
            { stderr: "pipe" },
          );
          expect(plant.stderr.toString()).toBe("");
          try {
            writeFileSync(join(dir, "go"), "");
            const end = (await p.client.waitJob(j.id, 45_000)).job;
            expect([end.state, end.exit_code, await text(p, j.id, "stdout")]).toEqual(["exited", 0, "done\n"]);
            // The end is recorded after the job's clean-up: the other user's tree is as it was.
            expect(readFileSync(join(planted, "sub", "f"), "utf8")).toBe("mine\n");
          } finally {
            rmSync(planted, { recursive: true, force: true });
          }
        });

        test.skipIf(!haveOpenssl)(
          "planterd's TLS key and [api.tcp] token files are hidden wherever the config puts them; what is not secret (its certificate) shows",
          async () => {
            const files = Object.keys(p.secrets);
            expect(files.length).toBe(2);
            const cert = join(dirname(files[0] as string), "server.pem");
            const r = await run(p, "", {
              argv: ["sh", "-c", 'for f in "$@"; do cat "$f" 2>/dev/null; done; echo; head -1 "$0"', cert, ...files],
            });
            for (const [f, text] of Object.entries(p.secrets))
              expect({ f, shown: r.out.includes(text.trim().split("\n")[1] ?? text.trim()) }).toEqual({
                f,
                shown: false,
              });
            expect(r.out).toContain("-----BEGIN CERTIFICATE-----");
          },
        );

        test("host processes are out of sight (own pid namespace); the job sees its own", async () => {
          const r = await run(
            p,
            "ls /proc | grep -c '^[0-9]'; grep -l 'planter-escape-hostpro[c]' /proc/[0-9]*/cmdline; echo self=$$",
          );
          const [count] = r.out.split("\n");
          expect(Number(count)).toBeLessThanOrEqual(6);
          expect(r.out).not.toContain("/cmdline");
          expect(r.out).toMatch(/self=\d+\n$/);
        });

        test("kill -9 -1 reaches only the job's own processes; planterd and host processes live on", async () => {
          // kill(-1) spares the caller and the namespace's init: the job's sleep dies, the shell goes on.
          const r = await run(p, "sleep 30 & s=$!; kill -9 -1; wait $s; echo sleep=$?");
          expect(r.out).toBe("sleep=137\n");
          expect(hostProc?.exitCode).toBeNull();
          expect((await p.client.health()).ok).toBe(true);
          expect((await run(p, "echo next")).out).toBe("next\n");
        });

        test("the host's SysV IPC and loopback listeners are out of reach (own IPC and network namespaces)", async () => {
          const seg = Bun.spawnSync([
            "perl",
            "-MIPC::SysV=IPC_PRIVATE,S_IRUSR,S_IWUSR",
            "-e",
            "print shmget(IPC_PRIVATE, 4096, S_IRUSR|S_IWUSR|0004)",
          ]);
          const shmid = seg.stdout.toString().trim();
          cleanups.push(() => Bun.spawnSync(["ipcrm", "-m", shmid]));
          expect(readFileSync("/proc/sysvipc/shm", "utf8")).toContain(` ${shmid} `);
          const tcp = createServer((c) => c.end("host-tcp\n"));
          servers.push(tcp);
          await new Promise<void>((r) => tcp.listen(0, "127.0.0.1", r));
          const port = (tcp.address() as { port: number }).port;
          const script = `grep -c ' ${shmid} ' /proc/sysvipc/shm; bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port} && head -1 <&3' 2>/dev/null || echo no-tcp`;
          const r = await run(p, script);
          expect(r.out).toBe("0\nno-tcp\n");
          // With network host the same listener answers.
          const net = await mkCell(p, { policy: { network: "host" } });
          expect((await run(p, script, { cell: net.name })).out).toBe("0\nhost-tcp\n");
        });

        test("a job's own policy read_only: [/proc] never shows the host's processes (refused or hidden)", async () => {
          const r = await run(
            p,
            "grep -l 'planter-escape-hostpro[c]' /proc/[0-9]*/cmdline; ls /proc | grep -c '^[0-9]'",
            {
              policy: { read_only: ["/proc"] },
            },
          ).catch((e: PlanterError) => ({ refused: e.message }));
          // Refusing the path is a fix; so is a job that does not see the host's processes through it.
          if ("refused" in r) return;
          expect(r.out).not.toContain("/cmdline");
          expect(Number(r.out.trim().split("\n").pop())).toBeLessThanOrEqual(6);
        });
      });

      describe("network allow lists", () => {
        /** A loopback origin on the host: what a list job may reach by name, and nothing else of. */
        async function origin(): Promise<number> {
          const o = createServer((c) =>
            c.once("data", () => c.end("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\norigin\n")),
          );
          servers.push(o);
          await new Promise<void>((r) => o.listen(0, "127.0.0.1", r));
          return (o.address() as { port: number }).port;
        }

        test("the listed name answers through the proxy; the host's loopback by address, by unlisted name or direct does not", async () => {
          const port = await origin();
          const c = await mkCell(p, { policy: { network: { allow: ["api.test", "host.test:1"], allow_local: true } } });
          const r = await run(
            p,
            `curl -sS http://api.test:${port}/; echo "rc=$?"
curl -sS -o /dev/null -w '%{http_code}\\n' --noproxy '' http://127.0.0.1:${port}/
curl -sS -o /dev/null -w '%{http_code}\\n' http://host.test:${port}/
curl -sS -o /dev/null -w '%{http_code}\\n' --noproxy '*' --max-time 20 http://127.0.0.1:${port}/ 2>/dev/null; echo "direct=$?"
bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port}' 2>/dev/null && echo reached || echo no-tcp`,
            { cell: c.name },
          );
          expect(r.out).toBe("origin\nrc=0\n403\n403\n000\ndirect=7\nno-tcp\n");
        });

        test("without allow_local a name that resolves to the host's loopback is refused", async () => {
          const port = await origin();
          const c = await mkCell(p, { policy: { network: { allow: ["api.test"] } } });
          const r = await run(p, `curl -sS -o /dev/null -w '%{http_code}\\n' http://api.test:${port}/`, {
            cell: c.name,
          });
          expect(r.out).toBe("403\n");
        });

        test("another job cannot use a list job's proxy, and a list job still cannot make Unix sockets", async () => {
          const port = await origin();
          const c = await mkCell(p, { policy: { network: { allow: ["api.test"], allow_local: true } } });
          const held = await p.client.createJob({
            cell: c.name,
            argv: ["sh", "-c", `curl -sS http://api.test:${port}/; while [ ! -e stop ]; do sleep 0.05; done`],
          });
          await waitFor(async () => (await text(p, held.id, "stdout")).includes("origin"), "the list job's answer");
          // A job of a cell with no network, and one with the host's: port 3128 is not the list job's.
          const none = await run(
            p,
            `curl -sS --max-time 20 -x http://127.0.0.1:3128 http://api.test:${port}/ 2>&1 | tail -1`,
          );
          expect(none.out).toContain("Failed to connect to 127.0.0.1 port 3128");
          const host = await mkCell(p, { policy: { network: "host" } });
          const fromHost = await run(
            p,
            `curl -sS --max-time 20 -x http://127.0.0.1:3128 http://api.test:${port}/ 2>&1 | tail -1`,
            { cell: host.name },
          );
          expect(fromHost.out).not.toContain("origin");
          const unix = await run(
            p,
            "perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_STREAM, 0) or print \"refused: $!\\n\"'",
            {
              cell: c.name,
            },
          );
          expect(unix.out).toMatch(/^refused: /);
          writeFileSync(join(c.dir, "stop"), "");
          await p.client.waitJob(held.id, 45_000);
        });
      });

      describe("host Unix sockets", () => {
        test("planterd's socket is hidden, also for a job whose policy turns AF_UNIX on", async () => {
          const { dir, name } = await mkCell(p, {
            files: { "u.pl": PROBE_UNIX },
            policy: { unix_sockets: [agentSock] },
          });
          const r = await run(p, "", { cell: name, argv: ["perl", join(dir, "u.pl"), p.socket, agentSock] });
          expect(r.out).toBe(`${p.socket} connect: No such file or directory\n${agentSock} connected: agent\n`);
          const plain = await run(p, `test -e ${p.socket} && echo visible; echo checked`);
          expect(plain.out).toBe("checked\n");
          expect((await p.client.health()).ok).toBe(true);
        });

        test("a listener in the host's /tmp: refused without unix_sockets, absent with them (private /tmp)", async () => {
          const a = await mkCell(p, { files: { "u.pl": PROBE_UNIX } });
          const r = await run(p, "", { cell: a.name, argv: ["perl", join(a.dir, "u.pl"), hostTmpSock] });
          expect(r.out).toBe(`${hostTmpSock} socket: Operation not permitted\n`);
          const b = await mkCell(p, { files: { "u.pl": PROBE_UNIX }, policy: { unix_sockets: [agentSock] } });
          const s = await run(p, "", { cell: b.name, argv: ["perl", join(b.dir, "u.pl"), hostTmpSock, agentSock] });
          expect(s.out).toBe(`${hostTmpSock} connect: No such file or directory\n${agentSock} connected: agent\n`);
        });

        test("a listener in a host runtime dir (/run, also as /var/run): refused, and with unix_sockets listing another socket still unreachable", async () => {
          const a = await mkCell(p, { files: { "u.pl": PROBE_UNIX } });
          const r = await run(p, "", { cell: a.name, argv: ["perl", join(a.dir, "u.pl"), runSock] });
          expect(r.out).toBe(`${runSock} socket: Operation not permitted\n`);
          // With AF_UNIX on for the listed socket, every other socket under /run is covered (D-Bus,
          // Docker, systemd, a user's runtime dir): the listed one answers, the others refuse.
          const viaVarRun = runSock.replace(/^\/run\//, "/var/run/");
          // A socket directly in /run is covered itself (/run holds more than sockets).
          const direct = `/run/pt-escape-${TAG}-${mode}.sock`;
          await listen(direct, "run-direct");
          cleanups.push(() => rmSync(direct, { force: true }));
          const b = await mkCell(p, { files: { "u.pl": PROBE_UNIX }, policy: { unix_sockets: [agentSock] } });
          const s = await run(p, "", {
            cell: b.name,
            argv: ["perl", join(b.dir, "u.pl"), runSock, viaVarRun, direct, agentSock],
          });
          // The directory holding the socket is covered (an empty one in the sandbox).
          expect(s.out).toBe(
            `${runSock} connect: No such file or directory\n${viaVarRun} connect: No such file or directory\n${direct} connect: Connection refused\n${agentSock} connected: agent\n`,
          );
          // Listing the /run socket itself passes it.
          const c = await mkCell(p, { files: { "u.pl": PROBE_UNIX }, policy: { unix_sockets: [runSock] } });
          const t = await run(p, "", { cell: c.name, argv: ["perl", join(c.dir, "u.pl"), runSock] });
          expect(t.out).toBe(`${runSock} connected: runtime-dir\n`);
        });

        test("a host process listening on a socket file inside the cell is refused to the job", async () => {
          const a = await mkCell(p, { files: { "u.pl": PROBE_UNIX } });
          const inside = join(a.dir, "inside.sock");
          await listen(inside, "in-cell");
          // The host reaches it; the job, on the same path, may not even make the socket.
          const host = await new Promise<string>((resolve) => {
            let got = "";
            createConnection(inside)
              .on("data", (b) => {
                got += b;
              })
              .on("close", () => resolve(got));
          });
          expect(host).toBe("in-cell\n");
          const r = await run(p, "", { cell: a.name, argv: ["perl", join(a.dir, "u.pl"), inside] });
          expect(r.out).toBe(`${inside} socket: Operation not permitted\n`);
        });

        test("with unix_sockets, a host listener in the cell dir becomes reachable (coarse, as documented)", async () => {
          const a = await mkCell(p, { files: { "u.pl": PROBE_UNIX }, policy: { unix_sockets: [agentSock] } });
          const inside = join(a.dir, "inside.sock");
          await listen(inside, "in-cell");
          const r = await run(p, "", { cell: a.name, argv: ["perl", join(a.dir, "u.pl"), inside, p.socket] });
          expect(r.out).toBe(`${inside} connected: in-cell\n${p.socket} connect: No such file or directory\n`);
        });

        test("abstract sockets with network none: refused, and with unix_sockets the host's are out of reach", async () => {
          const a = await mkCell(p, { files: { "u.pl": PROBE_UNIX } });
          const r = await run(p, "", { cell: a.name, argv: ["perl", join(a.dir, "u.pl"), `@${abstractName}`] });
          expect(r.out).toBe(`@${abstractName} socket: Operation not permitted\n`);
          const b = await mkCell(p, { files: { "u.pl": PROBE_UNIX }, policy: { unix_sockets: [agentSock] } });
          const s = await run(p, "", {
            cell: b.name,
            argv: ["perl", join(b.dir, "u.pl"), `@${abstractName}`, agentSock],
          });
          expect(s.out).toBe(`@${abstractName} connect: Connection refused\n${agentSock} connected: agent\n`);
        });

        test("abstract sockets with network host: refused without unix_sockets", async () => {
          const a = await mkCell(p, { files: { "u.pl": PROBE_UNIX }, policy: { network: "host" } });
          const r = await run(p, "", { cell: a.name, argv: ["perl", join(a.dir, "u.pl"), `@${abstractName}`] });
          expect(r.out).toBe(`@${abstractName} socket: Operation not permitted\n`);
        });

        test("unix_sockets with network host is refused (every host abstract socket); with network none only the listed one is reached", async () => {
          const e = await refusal(
            p.client.createCell({
              name: `abstract-${mode}`,
              sandbox: { policy: { network: "host", unix_sockets: [agentSock] } },
            }),
          );
          expect(e.message).toContain('with network "host" would reach every abstract Unix socket of the host');
          const a = await mkCell(p, { files: { "u.pl": PROBE_UNIX }, policy: { unix_sockets: [agentSock] } });
          const r = await run(p, "", {
            cell: a.name,
            argv: ["perl", join(a.dir, "u.pl"), agentSock, `@${abstractName}`],
          });
          expect(r.out).toStartWith(`${agentSock} connected: agent\n`);
          expect(r.out).not.toContain(`@${abstractName} connected`);
        });

        test("AF_VSOCK (the hypervisor's and other VMs' sockets, in no network namespace) and other families: refused with network none and host, with or without unix_sockets; inet and netlink work", async () => {
          // family → socket() result; AF_VSOCK 40, AF_BLUETOOTH 31, AF_ALG 38, AF_RDS 21, AF_TIPC 30, AF_KCM 41, 63, 64.
          const probe = `for my $f (40, 31, 38, 21, 30, 41, 63, 64, 2, 10, 16) { my $ok = socket(my $s, $f, 1, 0) || socket($s, $f, 5, 0) || socket($s, $f, 2, 0) || socket($s, $f, 3, 0); print "$f ", ($ok ? "ok" : ($!{EPERM} ? "EPERM" : "other")), "\\n" }`;
          const want =
            "40 EPERM\n31 EPERM\n38 EPERM\n21 EPERM\n30 EPERM\n41 EPERM\n63 EPERM\n64 EPERM\n2 ok\n10 ok\n16 ok\n";
          const { dir, name } = await mkCell(p, { files: { "f.pl": probe } });
          expect((await run(p, "", { cell: name, argv: ["perl", join(dir, "f.pl")] })).out).toBe(want);
          const host = await mkCell(p, { files: { "f.pl": probe }, policy: { network: "host" } });
          expect((await run(p, "", { cell: host.name, argv: ["perl", join(host.dir, "f.pl")] })).out).toBe(want);
          const unix = await mkCell(p, { files: { "f.pl": probe }, policy: { unix_sockets: [agentSock] } });
          expect((await run(p, "", { cell: unix.name, argv: ["perl", join(unix.dir, "f.pl")] })).out).toBe(want);
        });

        test("datagram sockets (a /dev/log-style receiver in the cell): refused; stream pairs still work", async () => {
          const a = await mkCell(p, { files: { "d.pl": PROBE_DGRAM } });
          const logSock = join(a.dir, "log.sock");
          const got = join(markers, `dgram-${mode}`);
          const recv = Bun.spawn([
            "perl",
            "-MSocket",
            "-e",
            'socket(S, AF_UNIX, SOCK_DGRAM, 0) or die; bind(S, pack_sockaddr_un($ARGV[0])) or die; chmod 0777, $ARGV[0]; open F, ">", $ARGV[1]; close F; while (recv(S, my $b, 100, 0) // last) { open F, ">>", $ARGV[1]; print F "$b\\n"; close F }',
            logSock,
            got,
          ]);
          await waitFor(() => existsSync(got), "the datagram receiver");
          const r = await run(p, "test -e /dev/log && echo dev-log; perl d.pl log.sock", { cell: a.name });
          recv.kill();
          expect(r.out).toBe(
            "dgram socket: Operation not permitted\ndgram pair: Operation not permitted\nstream pair ok x\n",
          );
          expect(readFileSync(got, "utf8")).toBe("");
        });
      });

      describe("environment", () => {
        test("LD_PRELOAD of a library an earlier job built loads in the job only, never in planter's processes", async () => {
          const { dir, name } = await mkCell(p, { files: { "mark.c": MARKER_LIB } });
          mkdirSync(join(dir, "marks"), { mode: 0o777 });
          chmodSync(join(dir, "marks"), 0o777);
          const built = await run(p, `gcc -shared -fPIC -DMARKDIR='"${dir}/marks"' -o evil.so mark.c && echo built`, {
            cell: name,
          });
          expect(built.out).toBe("built\n");
          const lib = join(dir, "evil.so");
          const r = await run(p, "cat /dev/null; echo ran", {
            cell: name,
            env: { LD_PRELOAD: lib, LD_AUDIT: lib, LD_LIBRARY_PATH: dir },
          });
          expect(r.out).toBe("ran\n");
          // A cell's env is the job's too.
          const c = await mkCell(p, { env: { LD_PRELOAD: lib } });
          const r2 = await run(p, "true", { cell: c.name });
          expect(r2.job.exit_code).toBe(0);
          const marks = readdirSync(join(dir, "marks"));
          expect(marks.filter((m) => !m.startsWith(HOST_PIDNS)).length).toBeGreaterThan(0);
          expect(marks.filter((m) => m.startsWith(HOST_PIDNS))).toEqual([]);
        });

        test("PATH naming the cell's own mv, cat, head, setpriv, bwrap, sh runs them in the job only", async () => {
          const { dir, name } = await mkCell(p);
          const evil = join(dir, "evil");
          const marks = join(dir, "marks");
          mkdirSync(marks, { mode: 0o777 });
          chmodSync(marks, 0o777);
          const real: Record<string, string> = {
            mv: "/usr/bin/mv",
            cat: "/usr/bin/cat",
            head: "/usr/bin/head",
            setpriv: "/usr/bin/setpriv",
            bwrap: "/usr/bin/bwrap",
            sh: "/bin/sh",
            printf: "/usr/bin/printf",
          };
          for (const [tool, path] of Object.entries(real)) {
            writeTree(
              evil,
              {
                [tool]: `#!/bin/sh\n: > "${marks}/$(/usr/bin/readlink /proc/self/ns/pid) ${tool} $$"\nexec ${path} "$@"\n`,
              },
              0o755,
            );
          }
          giveToJobUser(dir);
          const r = await run(p, "echo x | cat | head -1; echo done", {
            cell: name,
            env: { PATH: `${evil}:/usr/bin:/bin` },
            limits: { max_log_bytes: 1000 },
          });
          expect(r.out).toBe("x\ndone\n");
          const seen = readdirSync(marks);
          // argv[0] sh, cat and head resolved through PATH inside the sandbox: the job's own.
          expect(
            seen
              .filter((m) => !m.startsWith(HOST_PIDNS))
              .map((m) => m.split(" ")[1])
              .sort(),
          ).toEqual(["cat", "head", "sh"].sort());
          expect(seen.filter((m) => m.startsWith(HOST_PIDNS))).toEqual([]);
        });

        test("BASH_ENV and ENV are sourced by the job's shells only", async () => {
          const { dir, name } = await mkCell(p);
          const marks = join(dir, "marks");
          mkdirSync(marks, { mode: 0o777 });
          chmodSync(marks, 0o777);
          writeTree(dir, { "env.sh": `: > "${marks}/$(readlink /proc/self/ns/pid) sourced $$"\n` });
          giveToJobUser(dir);
          const r = await run(p, "bash -c 'echo bash'", {
            cell: name,
            env: { BASH_ENV: join(dir, "env.sh"), ENV: join(dir, "env.sh") },
          });
          expect(r.out).toBe("bash\n");
          const seen = readdirSync(marks);
          expect(seen.filter((m) => !m.startsWith(HOST_PIDNS)).length).toBe(1);
          expect(seen.filter((m) => m.startsWith(HOST_PIDNS))).toEqual([]);
        });

        test("a secret in the job's env shows in no host process's command line or environment", async () => {
          const secret = `planter-escape-secret-${TAG}-${mode}-${Math.random().toString(36).slice(2)}`;
          const { dir, name } = await mkCell(p);
          const j = await p.client.createJob({
            cell: name,
            argv: ["sh", "-c", 'echo "$ESCAPE_SECRET" > seen; while [ ! -e go ]; do sleep 0.05; done'],
            env: { ESCAPE_SECRET: secret },
          });
          await waitFor(() => existsSync(join(dir, "seen")), "the job to start");
          const hits: { pid: string; where: string; inside: boolean }[] = [];
          for (const pid of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
            for (const where of ["cmdline", "environ"]) {
              let data = "";
              let ns = "";
              try {
                data = readFileSync(`/proc/${pid}/${where}`, "latin1");
                ns = readlinkSync(`/proc/${pid}/ns/pid`);
              } catch {
                continue;
              }
              if (data.includes(secret)) hits.push({ pid, where, inside: ns !== HOST_PIDNS });
            }
          }
          writeFileSync(join(dir, "go"), "");
          await p.client.waitJob(j.id, 20_000);
          expect(readFileSync(join(dir, "seen"), "utf8")).toBe(`${secret}\n`);
          // The job's own processes hold it in their environment; nothing outside the sandbox does.
          expect(hits.some((h) => h.inside && h.where === "environ")).toBe(true);
          expect(hits.filter((h) => !h.inside)).toEqual([]);
        });
      });

      describe("paths", () => {
        test("a cell dir may not be planter's dirs, /, a system dir, a home, however spelt", async () => {
          const linkState = join(p.scratch, `to-state-${mode}`);
          symlinkSync(p.state, linkState);
          const linkEtc = join(p.scratch, `to-etc-${mode}`);
          symlinkSync("/etc", linkEtc);
          // A directory service's user's home: no passwd line, right under /home.
          const ldapHome = mkdtempSync("/home/pt-eldapcell-");
          cleanups.push(() => rmSync(ldapHome, { recursive: true, force: true }));
          const before = (await p.client.listCells()).cells.length;
          const bad = [
            `${p.state}/`,
            `${p.state}//`,
            `${p.home}/state/../state`,
            `${p.state}/cells`,
            p.home,
            `${p.home}/run`,
            linkState,
            `${linkState}/`,
            "/",
            "//",
            "/etc",
            "//etc//",
            linkEtc,
            "/usr/local",
            "/var/lib",
            "/root",
            "/tmp",
            p.fakeHome,
            `${p.fakeHome}/.`,
            ldapHome,
          ];
          for (const [i, dir] of bad.entries()) {
            const e = await refusal(p.client.createCell({ name: `bad-${i}`, dir }));
            expect([dir, e.code]).toEqual([dir, "E_BAD_REQUEST"]);
          }
          expect((await p.client.listCells()).cells.length).toBe(before);
          // A project dir inside the home is fine, stored canonical.
          const proj = join(p.fakeHome, "proj");
          mkdirSync(proj, { recursive: true });
          giveToJobUser(proj);
          const ok = await p.client.createCell({ name: `home-proj-${mode}`, dir: `${proj}/` });
          expect(ok.dir).toBe(proj);
        });

        test("a cell dir or writable path inside the kernel's dirs (/dev/shm, /sys, /proc) or the runtime dirs (/run) is refused; one in /var/tmp works", async () => {
          const shmDir = mkdtempSync("/dev/shm/pt-ecell-");
          const runDirCell = mkdtempSync("/run/pt-ecell-");
          for (const d of [shmDir, runDirCell]) {
            cleanups.push(() => rmSync(d, { recursive: true, force: true }));
            giveToJobUser(d);
          }
          const before = (await p.client.listCells()).cells.length;
          for (const [i, dir] of [
            "/dev/shm",
            shmDir,
            "/sys/fs/cgroup",
            "/proc/self/fd",
            runDirCell,
            "/run/user",
          ].entries()) {
            const e = await refusal(p.client.createCell({ name: `kern-${i}`, dir }));
            expect([dir, e.code]).toEqual([dir, "E_BAD_REQUEST"]);
          }
          expect((await p.client.listCells()).cells.length).toBe(before);
          const { name } = await mkCell(p);
          const e = await refusal(
            p.client.createJob({ cell: name, argv: ["true"], sandbox: { policy: { read_write: [runDirCell] } } }),
          );
          expect(e.code).toBe("E_BAD_REQUEST");
          const ok = scratchDir("pt-evtcell", "/var/tmp");
          giveToJobUser(ok);
          await p.client.createCell({ name: `vt-${mode}`, dir: ok });
          const r = await run(p, "touch made && pwd", { cell: `vt-${mode}` });
          expect(r.out).toBe(`${ok}\n`);
        });

        test("cells may not nest: inner and outer refused, a sibling accepted", async () => {
          const outer = await mkCell(p);
          mkdirSync(join(outer.dir, "inner"));
          giveToJobUser(outer.dir);
          expect(
            (await refusal(p.client.createCell({ name: `inner-${mode}`, dir: join(outer.dir, "inner") }))).code,
          ).toBe("E_BAD_REQUEST");
          const wrap = join(p.scratch, `wrap-${mode}`);
          mkdirSync(join(wrap, "in"), { recursive: true });
          giveToJobUser(wrap);
          await p.client.createCell({ name: `wrapped-${mode}`, dir: join(wrap, "in") });
          const e = await refusal(p.client.createCell({ name: `wrapper-${mode}`, dir: wrap }));
          expect(e.message).toContain("overlaps another cell");
          mkdirSync(join(wrap, "sibling"));
          giveToJobUser(wrap);
          expect((await p.client.createCell({ name: `sibling-${mode}`, dir: join(wrap, "sibling") })).dir).toBe(
            join(wrap, "sibling"),
          );
        });

        test("policy paths through symlinks an earlier job planted (to /root, the state dir, another cell) are refused", async () => {
          const other = await mkCell(p, { files: { "theirs.txt": "other-cell\n" } });
          const { name, dir } = await mkCell(p);
          const plant = await run(
            p,
            `ln -s /root l-root; ln -s ${p.state} l-state; ln -s ${other.dir} l-other; ln -s ${p.fakeHome} l-home; mkdir real; echo planted`,
            { cell: name },
          );
          expect(plant.out).toBe("planted\n");
          const jobs = (await p.client.listJobs({})).jobs.length;
          for (const field of ["read_write", "read_only"]) {
            for (const l of ["l-root", "l-state", "l-other", "l-home"]) {
              const e = await refusal(
                p.client.createJob({ cell: name, argv: ["true"], sandbox: { policy: { [field]: [join(dir, l)] } } }),
              );
              expect([field, l, e.code]).toEqual([field, l, "E_BAD_REQUEST"]);
            }
          }
          expect((await p.client.listJobs({})).jobs.length).toBe(jobs);
          const r = await run(p, "echo ok > real/f && cat real/f", {
            cell: name,
            policy: { read_write: [join(dir, "real")] },
          });
          expect(r.out).toBe("ok\n");
        });

        test("a deny path's parents cannot be renamed or removed within the job", async () => {
          const { name, dir } = await mkCell(p, { files: { "a/b/secret.txt": "deny-secret\n", "a/b/ok.txt": "ok\n" } });
          const deny = join(dir, "a", "b", "secret.txt");
          const r = await run(
            p,
            "cat a/b/secret.txt; mv a a2; mv a/b a/b2; mv a/b/secret.txt s; rm -rf a; ln a/b/secret.txt hl; cat a2/b/secret.txt a/b2/secret.txt s hl; find . -type f | xargs cat; echo done",
            { cell: name, policy: { deny: [deny] } },
          );
          expect(r.out).not.toContain("deny-secret");
          expect(r.out).toEndWith("done\n");
          expect(readFileSync(deny, "utf8")).toBe("deny-secret\n");
        });

        test("a cell's deny holds across jobs and while a concurrent job of the cell keeps renaming", async () => {
          const { name, dir } = await mkCell(p, { files: { "a/b/secret.txt": "deny-secret\n" } });
          await p.client.removeCell(name, false);
          await p.client.createCell({ name, dir, sandbox: { policy: { deny: [join(dir, "a/b/secret.txt")] } } });
          const mover = await p.client.createJob({
            cell: name,
            argv: [
              "sh",
              "-c",
              "while [ ! -e stop ]; do mv a x 2>/dev/null; mv x a 2>/dev/null; mv a/b a/c 2>/dev/null; mv a/c a/b 2>/dev/null; done",
            ],
          });
          for (let i = 0; i < 4; i++) {
            const r = await run(p, "find . -type f ! -name stop | xargs cat 2>/dev/null; echo done", { cell: name });
            expect(r.out).toBe("done\n");
          }
          writeFileSync(join(dir, "stop"), "");
          await p.client.waitJob(mover.id, 20_000);
          expect(readFileSync(join(dir, "a/b/secret.txt"), "utf8")).toBe("deny-secret\n");
        });

        test("a denied file with another hard link is refused (cell and job policy)", async () => {
          const dir = join(p.scratch, `hl-${mode}`);
          mkdirSync(dir);
          writeFileSync(join(dir, "secret.txt"), "linked-secret\n");
          linkSync(join(dir, "secret.txt"), join(dir, "copy.txt"));
          writeFileSync(join(dir, "single.txt"), "single\n");
          giveToJobUser(dir);
          const e = await refusal(
            p.client.createCell({ name: `hl-${mode}`, dir, sandbox: { policy: { deny: [join(dir, "secret.txt")] } } }),
          );
          expect(e.message).toContain("hard link");
          await p.client.createCell({ name: `hl-${mode}`, dir });
          const j = await refusal(
            p.client.createJob({
              cell: `hl-${mode}`,
              argv: ["true"],
              sandbox: { policy: { deny: [join(dir, "secret.txt")] } },
            }),
          );
          expect(j.message).toContain("hard link");
          // A file with no other link may be denied: the job cannot read it.
          const r = await run(p, "cat single.txt copy.txt; echo done", {
            cell: `hl-${mode}`,
            policy: { deny: [join(dir, "single.txt")] },
          });
          expect(r.out).toBe("linked-secret\ndone\n");
        });

        test("a denied directory holding a file hard-linked elsewhere in the cell does not leak it (refused or hidden)", async () => {
          const dir = join(p.scratch, `hld-${mode}`);
          mkdirSync(join(dir, "secrets"), { recursive: true });
          mkdirSync(join(dir, "pub"));
          writeFileSync(join(dir, "secrets", "key"), "dir-deny-secret\n");
          linkSync(join(dir, "secrets", "key"), join(dir, "pub", "key"));
          giveToJobUser(dir);
          const cell = await p.client
            .createCell({ name: `hld-${mode}`, dir, sandbox: { policy: { deny: [join(dir, "secrets")] } } })
            .catch((e: PlanterError) => ({ refused: e.message }));
          if ("refused" in cell) return;
          const r = await run(p, "cat secrets/key pub/key 2>/dev/null; echo done", { cell: `hld-${mode}` });
          expect(r.out).toBe("done\n");
        });

        test("a deny path written with a trailing slash still hides the file", async () => {
          const { name, dir } = await mkCell(p, { files: { "secret.txt": "slash-secret\n" } });
          const e = await p.client
            .createJob({
              cell: name,
              argv: ["cat", "secret.txt"],
              sandbox: { policy: { deny: [`${dir}/secret.txt/`] } },
            })
            .catch((x: PlanterError) => x);
          if (!("id" in e)) return; // refused: fixed
          const done = (await p.client.waitJob(e.id, 20_000)).job;
          expect(await text(p, done.id, "stdout")).toBe("");
        });

        test("closed hole: files under a deny path that the workspace protection binds read-only (.envrc, .git/config, .vscode) show through the deny", async () => {
          const { name, dir } = await mkCell(p, {
            files: {
              "private/plain.txt": "plain-secret\n",
              "private/.envrc": "export API_TOKEN=envrc-secret\n",
              "private/.vscode/settings.json": '{"token":"vscode-secret"}\n',
              "repo/code.txt": "code\n",
            },
          });
          hostRepo(join(dir, "private"));
          hostGit(join(dir, "private"), ["remote", "add", "origin", "https://user:ghp_denied@example.com/x/y"]);
          hostRepo(join(dir, "repo"));
          giveToJobUser(dir);
          await p.client.removeCell(name, false);
          await p.client.createCell({
            name,
            dir,
            sandbox: { policy: { deny: [join(dir, "private"), join(dir, "repo", ".git")] } },
          });
          const r = await run(
            p,
            "cat private/plain.txt private/.envrc private/.git/config private/.vscode/settings.json repo/.git/config 2>/dev/null; cat repo/code.txt",
            { cell: name },
          );
          // Only what lies outside the denied paths shows.
          expect(r.out).toBe("code\n");
        });

        test("a read_write carve-out inside a deny path works; the rest stays hidden", async () => {
          const { name, dir } = await mkCell(p, {
            files: { "private/secret.txt": "carve-secret\n", "private/out/.keep": "" },
          });
          const r = await run(p, "cat private/secret.txt; ls private; echo made > private/out/r && echo wrote", {
            cell: name,
            policy: { deny: [join(dir, "private")], read_write: [join(dir, "private", "out")] },
          });
          expect(r.out).not.toContain("carve-secret");
          expect(r.out).toContain("wrote\n");
          expect(readFileSync(join(dir, "private", "out", "r"), "utf8")).toBe("made\n");
        });

        test("a job's own read_write in or under its cell's deny path is refused: only the cell carves out", async () => {
          const { name, dir } = await mkCell(p, {
            files: { "secrets/prod/key": "cell-denied-key\n", "secrets/top": "top-secret\n" },
          });
          await p.client.removeCell(name, false);
          await p.client.createCell({ name, dir, sandbox: { policy: { deny: [join(dir, "secrets")] } } });
          for (const rw of [join(dir, "secrets"), join(dir, "secrets/prod")]) {
            const e = await refusal(
              p.client.createJob({ cell: name, argv: ["true"], sandbox: { policy: { read_write: [rw] } } }),
            );
            expect(e.message).toContain(`read_write ${rw} lies in the cell's deny path ${join(dir, "secrets")}`);
          }
          const ro = await refusal(
            p.client.createJob({
              cell: name,
              argv: ["true"],
              sandbox: { policy: { read_only: [join(dir, "secrets/prod")] } },
            }),
          );
          expect(ro.message).toContain("hidden in the cell");
          // The legitimate variant: the cell itself still hides it from a plain job.
          const r = await run(p, "cat secrets/prod/key secrets/top 2>/dev/null; echo done", { cell: name });
          expect(r.out).toBe("done\n");
        });

        /** Start a job that waits for `go` in its cell, then runs SCRIPT; resolves once it runs. */
        const waiting = async (cell: string, dir: string, script: string, policy?: Record<string, unknown>) => {
          const j = await p.client.createJob({
            cell,
            argv: ["sh", "-c", `touch started; while [ ! -e go ]; do sleep 0.05; done; ${script}`],
            sandbox: policy ? { policy } : undefined,
          });
          await waitFor(() => existsSync(join(dir, "started")), "the job to start");
          return {
            id: j.id,
            finish: async () => {
              writeFileSync(join(dir, "go"), "");
              const done = (await p.client.waitJob(j.id, 30_000)).job;
              return { job: done, out: await text(p, j.id, "stdout"), err: await text(p, j.id, "stderr") };
            },
          };
        };

        test("deny paths that appear while a job runs stay hidden from it: a file, a dir, nested, in a read-only cell", async () => {
          const { name, dir } = await mkCell(p);
          await p.client.removeCell(name, false);
          await p.client.createCell({
            name,
            dir,
            sandbox: { policy: { deny: [join(dir, ".env"), `${join(dir, "secrets")}/`, join(dir, "a/b/key")] } },
          });
          const j = await waiting(
            name,
            dir,
            "cat .env secrets/key a/b/key 2>/dev/null; ls -A secrets a 2>/dev/null; echo x > .env 2>/dev/null && echo wrote; echo done",
          );
          // The host (its user, a tool) writes the secrets while the job runs.
          writeFileSync(join(dir, ".env"), "TOKEN=late-secret\n");
          writeFileSync(join(dir, "secrets/key"), "late-key\n");
          mkdirSync(join(dir, "a/b"), { recursive: true });
          writeFileSync(join(dir, "a/b/key"), "late-nested\n");
          const r = await j.finish();
          // The placeholders show as empty entries, as any deny cover does.
          expect(r.out).toBe("a:\n\nsecrets:\ndone\n");
          // What the host wrote is its own: kept after the job.
          expect(readFileSync(join(dir, ".env"), "utf8")).toBe("TOKEN=late-secret\n");
          expect(readFileSync(join(dir, "a/b/key"), "utf8")).toBe("late-nested\n");
          // A job started after they exist does not see them either.
          const later = await run(p, "cat .env secrets/key a/b/key; echo done", { cell: name });
          expect(later.out).toBe("done\n");
          // A read-only cell holds its missing deny path the same way.
          const ro = await mkCell(p);
          await p.client.removeCell(ro.name, false);
          await p.client.createCell({
            name: ro.name,
            dir: ro.dir,
            sandbox: { policy: { fs_mode: "read_only", deny: [join(ro.dir, "creds.json")] } },
          });
          const k = await p.client.createJob({
            cell: ro.name,
            argv: ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; cat creds.json 2>/dev/null; echo done"],
          });
          await waitFor(
            async () => (await p.client.getJob(k.id)).state === "running",
            "the read-only cell's job to run",
          );
          writeFileSync(join(ro.dir, "creds.json"), "late-creds\n");
          writeFileSync(join(ro.dir, "go"), "");
          await p.client.waitJob(k.id, 30_000);
          expect(await text(p, k.id, "stdout")).toBe("done\n");
        });

        test("a placeholder is removed after the job when still empty, shared with a job still running, kept once the host wrote to it", async () => {
          const { name, dir } = await mkCell(p);
          await p.client.removeCell(name, false);
          await p.client.createCell({
            name,
            dir,
            sandbox: { policy: { deny: [join(dir, ".env"), join(dir, "x/y")] } },
          });
          const a = await waiting(name, dir, "echo a-done");
          // The placeholders exist on the host while the job runs: empty, owned as the cell dir is.
          expect(statSync(join(dir, ".env")).size).toBe(0);
          expect(readdirSync(join(dir, "x"))).toEqual([]);
          expect(statSync(join(dir, ".env")).uid).toBe(statSync(dir).uid);
          const b = await p.client.createJob({
            cell: name,
            argv: ["sh", "-c", "while [ ! -e go2 ]; do sleep 0.05; done; cat .env x/y 2>/dev/null; echo b-done"],
          });
          await waitFor(async () => (await p.client.getJob(b.id)).state === "running", "the second job to run");
          expect((await a.finish()).out).toBe("a-done\n");
          // The second job still relies on them: they stay, and what the host writes stays hidden from it.
          expect(existsSync(join(dir, ".env"))).toBe(true);
          writeFileSync(join(dir, ".env"), "TOKEN=while-b-runs\n");
          writeFileSync(join(dir, "x/y"), "nested-while-b\n");
          writeFileSync(join(dir, "go2"), "");
          await p.client.waitJob(b.id, 30_000);
          expect(await text(p, b.id, "stdout")).toBe("b-done\n");
          // Now written by the host: kept. An untouched placeholder goes with its last job.
          expect(readFileSync(join(dir, ".env"), "utf8")).toBe("TOKEN=while-b-runs\n");
          const c = await mkCell(p);
          await p.client.removeCell(c.name, false);
          await p.client.createCell({
            name: c.name,
            dir: c.dir,
            sandbox: { policy: { deny: [join(c.dir, "vault/")] } },
          });
          const r = await run(p, "ls -A; mkdir vault/in 2>/dev/null && echo made; echo done", { cell: c.name });
          expect(r.out).toBe("vault\ndone\n");
          expect(readdirSync(c.dir).sort()).toEqual([]);
        });

        test("a job cannot replace, move or plant through a placeholder; nothing of its tries is left for the host", async () => {
          const { name, dir } = await mkCell(p, { files: { "keep.txt": "kept\n" } });
          await p.client.removeCell(name, false);
          await p.client.createCell({
            name,
            dir,
            sandbox: { policy: { deny: [join(dir, ".env"), join(dir, "conf/db/")] } },
          });
          const r = await run(
            p,
            [
              "rm -f .env 2>/dev/null || echo rm-refused",
              "mv .env moved 2>/dev/null || echo mv-refused",
              "mv keep.txt .env 2>/dev/null || echo over-refused",
              "ln -sf /etc/passwd .env 2>/dev/null || echo ln-refused",
              "rmdir conf/db 2>/dev/null || echo rmdir-refused",
              "mv conf conf2 2>/dev/null || echo pin-refused",
              "touch conf/db/x 2>/dev/null || echo write-refused",
            ].join("; "),
            { cell: name },
          );
          expect(r.out).toBe(
            "rm-refused\nmv-refused\nover-refused\nln-refused\nrmdir-refused\npin-refused\nwrite-refused\n",
          );
          // After the job: the placeholders are gone, the rest as it was; `conf` was made for conf/db and goes too.
          expect(readdirSync(dir).sort()).toEqual(["keep.txt"]);
        });

        test("a missing deny path the job could see outside its own trees is refused; hidden or unreachable ones need nothing", async () => {
          const { name, dir } = await mkCell(p);
          // Outside /tmp (the job's own /tmp is private): the host's read-only view shows it.
          const outside = mkdtempSync("/var/tmp/pt-eoutside-");
          cleanups.push(() => rmSync(outside, { recursive: true, force: true }));
          const jobDirs = () => readdirSync(join(p.state, "jobs")).length;
          const before = jobDirs();
          const e = await refusal(
            p.client.createJob({
              cell: name,
              argv: ["true"],
              sandbox: { policy: { deny: [join(dir, ".env"), join(outside, "later.key")] } },
            }),
          );
          expect([e.code, e.message]).toEqual([
            "E_BAD_REQUEST",
            `sandbox deny path ${join(outside, "later.key")} does not exist, and the job could read it if it appeared while the job runs: planter holds a missing deny path only in the cell dir or a read_write path`,
          ]);
          // The placeholder made for the first one before the second was refused is gone again.
          expect([readdirSync(outside), readdirSync(dir), jobDirs()]).toEqual([[], [], before]);
          // In a read_write path of the job's: held there.
          const rw = scratchDir("pt-erw");
          giveToJobUser(rw);
          await p.client.removeCell(name, false);
          await p.client.createCell({ name, dir, sandbox: { policy: { read_write: [rw] } } });
          const held = await run(p, "ls -A; echo done", {
            cell: name,
            cwd: rw,
            policy: { read_write: [rw], deny: [join(rw, "later.key")] },
          });
          expect(held.out).toBe("later.key\ndone\n");
          expect(readdirSync(rw)).toEqual([]);
          // Under /tmp (private to the job) or a hidden home: nothing to hold, nothing made.
          const hiddenOk = await run(p, "echo ran", {
            cell: name,
            policy: { deny: [join(p.scratch, "..", "pt-nothing-here", "k"), join(p.fakeHome, "later")] },
          });
          expect(hiddenOk.out).toBe("ran\n");
          expect(existsSync(join(p.fakeHome, "later"))).toBe(false);
        });

        /** The job's end and its `job.sandbox_changed` events. */
        const changedEnd = async (id: string) => {
          const job = (await p.client.waitJob(id, 30_000)).job;
          const changed: unknown[] = [];
          for await (const e of p.client.events({ limit: 10_000 }))
            if (e.subject === `job/${id}` && e.kind === "job.sandbox_changed") changed.push(e.data.path);
          return { state: job.state, reason: job.reason, signal: job.signal, changed };
        };

        test("a host that replaces a covered path while a job runs stops the job: atomic save, rm + mkdir, a renamed ancestor", async () => {
          const { name, dir } = await mkCell(p, {
            files: { ".env": "TOKEN=old\n", "secrets/key": "k1\n", "a/b/key": "k2\n" },
          });
          await p.client.removeCell(name, false);
          const deny = [join(dir, ".env"), join(dir, "secrets"), join(dir, "a/b/key")];
          await p.client.createCell({ name, dir, sandbox: { policy: { deny } } });
          const replacements: [string, () => void][] = [
            [
              join(dir, ".env"),
              () => {
                // An editor's atomic save: a new file renamed over the old one.
                writeFileSync(join(dir, ".env.tmp"), "TOKEN=renamed-in\n");
                renameSync(join(dir, ".env.tmp"), join(dir, ".env"));
              },
            ],
            [
              join(dir, "secrets"),
              () => {
                rmSync(join(dir, "secrets"), { recursive: true });
                mkdirSync(join(dir, "secrets"));
                writeFileSync(join(dir, "secrets/key"), "replaced\n");
              },
            ],
            [
              join(dir, "a"),
              () => {
                renameSync(join(dir, "a"), join(dir, "a.old"));
                mkdirSync(join(dir, "a/b"), { recursive: true });
                writeFileSync(join(dir, "a/b/key"), "replaced\n");
              },
            ],
          ];
          for (const [path, replace] of replacements) {
            const j = await waiting(name, dir, "cat .env secrets/key a/b/key; echo done");
            replace();
            expect(await changedEnd(j.id)).toEqual({
              state: "killed",
              reason: "sandbox_changed",
              signal: "KILL",
              changed: [path],
            });
            // It never got to read: what it printed, if anything, is not the new content.
            expect(await text(p, j.id, "stdout")).toBe("");
            rmSync(join(dir, "started"), { force: true });
          }
          writeFileSync(join(dir, "go"), "");
        });

        test("what does not move a cover leaves the job running: writes in place, saves inside a denied dir, siblings", async () => {
          const { name, dir } = await mkCell(p, {
            files: { ".env": "TOKEN=old\n", "secrets/key": "k1\n", notes: "n\n" },
          });
          await p.client.removeCell(name, false);
          await p.client.createCell({
            name,
            dir,
            sandbox: { policy: { deny: [join(dir, ".env"), join(dir, "secrets")] } },
          });
          const j = await waiting(name, dir, "cat .env secrets/key 2>/dev/null; cat notes; echo done");
          appendFileSync(join(dir, ".env"), "MORE=1\n");
          writeFileSync(join(dir, "secrets/key.tmp"), "saved\n");
          renameSync(join(dir, "secrets/key.tmp"), join(dir, "secrets/key"));
          writeFileSync(join(dir, "notes.tmp"), "edited\n");
          renameSync(join(dir, "notes.tmp"), join(dir, "notes"));
          const done = await j.finish();
          expect([done.job.state, done.out]).toEqual(["exited", "edited\ndone\n"]);
        });

        test("paths behind a directory the requester cannot search answer alike whether they exist or not", async () => {
          // As root, the requester is another user (a peer); as a user, planterd itself cannot search it.
          const priv = scratchDir("pt-epriv");
          chmodSync(priv, 0o700);
          mkdirSync(join(priv, "proj/sub"), { recursive: true });
          writeFileSync(join(priv, "id_rsa"), "x\n");
          const links = scratchDir("pt-elinks");
          symlinkSync(join(priv, "id_rsa"), join(links, "to-there"));
          symlinkSync(join(priv, "id_ed25519"), join(links, "to-absent"));
          const cell = `probe-${mode}`;
          if (mode === "root") expect((await asPeer(p, "POST", "/v1/cells", { name: cell })).status).toBe(201);
          else await p.client.createCell({ name: cell });
          const ask = async (path: string, body: Record<string, unknown>) => {
            if (mode === "root") {
              const r = await asPeer(p, "POST", path, body);
              return `${r.status} ${r.body.error?.code} ${r.body.error?.message}`;
            }
            const r = await (path === "/v1/cells"
              ? p.client.createCell(body as never)
              : p.client.createJob(body as never)
            )
              .then(() => "created")
              .catch((e: PlanterError) => `${e.code} ${e.message}`);
            return r;
          };
          const job = (b: Record<string, unknown>) => ["/v1/jobs", { cell, argv: ["true"], ...b }] as const;
          const policy = (f: string, x: string) => ({ sandbox: { policy: { [f]: [x] } } });
          const probes: ((x: string) => readonly [string, Record<string, unknown>])[] = [
            (x) => job({ cwd: x }),
            ...["read_only", "read_write", "unix_sockets", "deny"].map((f) => (x: string) => job(policy(f, x))),
            (x) => ["/v1/cells", { name: `probe-${mode}-x`, dir: x }],
            (x) => ["/v1/cells", { name: `probe-${mode}-y`, ...policy("read_only", x) }],
          ];
          const pairs = [
            [join(priv, "id_rsa"), join(priv, "id_ed25519")],
            [join(priv, "proj"), join(priv, "nope")],
            [join(priv, "proj/sub"), join(priv, "proj/none")],
            [`${priv}/../${priv.split("/").pop()}/proj`, `${priv}/../${priv.split("/").pop()}/gone`],
            [join(links, "to-there"), join(links, "to-absent")],
          ];
          // One probe of a path that is there and one that is not: the same answer, and a refusal.
          const alike = async (probe: (typeof probes)[number], there: string, absent: string) => {
            const [pathA, bodyA] = probe(there);
            const [, bodyB] = probe(absent);
            const a = (await ask(pathA, bodyA)).replaceAll(there, "PATH");
            const b = (await ask(pathA, bodyB)).replaceAll(absent, "PATH");
            expect([there, a]).toEqual([there, b]);
            // (planterd as a user cannot see a deny path there either: it drops it, for both alike.)
            if (mode === "root" || !JSON.stringify(bodyA).includes("deny")) expect(a).not.toStartWith("created");
          };
          let n = 0;
          for (const probe of probes) {
            for (const [there, absent] of pairs) {
              await alike(probe, there as string, absent as string);
              n++;
            }
          }
          expect(n).toBe(35);
          // Nothing was made, and a path the requester can reach still works.
          expect((await p.client.listCells()).cells.map((c) => c.name)).not.toContain(`probe-${mode}-x`);
          const ok = await (mode === "root"
            ? asPeer(p, "POST", "/v1/jobs", { cell, argv: ["true"], cwd: "/etc" }).then((r) => r.status)
            : p.client.createJob({ cell, argv: ["true"], cwd: "/etc" }).then(() => 201));
          expect(ok).toBe(201);
        });

        test("cwd tricks: hidden, planted and relative spellings refused; visible dirs work", async () => {
          const other = await mkCell(p);
          const { name, dir } = await mkCell(p, { files: { "sub/.keep": "" } });
          await run(p, `ln -s ${p.state} to-state; ln -s ${other.dir} to-other`, { cell: name });
          for (const cwd of [
            "/tmp",
            p.state,
            join(p.state, "cells"),
            other.dir,
            join(dir, "to-state"),
            join(dir, "to-other"),
            `${dir}/sub/../..`,
            p.fakeHome,
            "/root",
          ]) {
            const e = await refusal(p.client.createJob({ cell: name, argv: ["pwd"], cwd }));
            expect([cwd, e.code]).toEqual([cwd, "E_BAD_REQUEST"]);
          }
          const ok = await run(p, "pwd", { cell: name, cwd: `${dir}//sub/` });
          expect([ok.out, ok.job.cwd]).toEqual([`${dir}/sub\n`, `${dir}/sub`]);
          const etc = await run(p, "pwd; touch x 2>/dev/null || echo read-only", { cell: name, cwd: "/etc" });
          expect(etc.out).toBe("/etc\nread-only\n");
        });

        test("a policy path swapped for a symlink by a concurrent job of the cell binds nothing outside", async () => {
          const { name, dir } = await mkCell(p, { files: { "out/.keep": "" } });
          const target = scratchDir("pt-etarget");
          chmodSync(target, 0o777);
          const swapper = await p.client.createJob({
            cell: name,
            argv: [
              "sh",
              "-c",
              `while [ ! -e stop ]; do rm -rf out; ln -s ${target} out; rm -f out; mkdir out; done; rm -rf out; mkdir out`,
            ],
          });
          const outcomes: string[] = [];
          for (let i = 0; i < 16; i++) {
            const field = i % 2 ? "read_only" : "read_write";
            const j = await p.client
              .createJob({
                cell: name,
                argv: ["sh", "-c", "echo escaped > out/pwned"],
                sandbox: { policy: { [field]: [join(dir, "out")] } },
              })
              .catch((e: PlanterError) => e);
            if (!("id" in j)) {
              outcomes.push(`refused ${j.code}`);
              continue;
            }
            const f = (await p.client.waitJob(j.id, 20_000)).job;
            outcomes.push(`${f.state} ${f.reason}`);
          }
          writeFileSync(join(dir, "stop"), "");
          await p.client.waitJob(swapper.id, 20_000);
          expect(readdirSync(target)).toEqual([]);
          // Once the swapping stops, the same policy works.
          const r = await run(p, "echo inside > out/ok && cat out/ok", {
            cell: name,
            policy: { read_write: [join(dir, "out")] },
          });
          expect(r.out).toBe("inside\n");
          expect(outcomes.length).toBe(16);
        });

        test("trailing slashes and // in every path field are canonicalised and still work", async () => {
          const dir = join(p.scratch, `slashes-${mode}`);
          writeTree(dir, { "out/.keep": "", "secret.txt": "slashed-secret\n", "sub/.keep": "" });
          giveToJobUser(dir);
          const cell = await p.client.createCell({
            name: `slashes-${mode}`,
            dir: `/${dir}//`,
            sandbox: { policy: { unix_sockets: [`/${agentSock}`], read_only: ["//etc//"] } },
          });
          expect(cell.dir).toBe(dir);
          writeTree(dir, { "u.pl": PROBE_UNIX });
          giveToJobUser(dir);
          const r = await run(p, `cat ../secret.txt; echo w > ../out/f && echo wrote; perl ../u.pl ${agentSock}`, {
            cell: `slashes-${mode}`,
            cwd: `${dir}//sub/`,
            policy: {
              read_write: [`${dir}//out/`],
              deny: [`/${dir}//secret.txt`],
              unix_sockets: [`${dirname(agentSock)}//agent.sock`],
            },
          });
          expect(r.job.cwd).toBe(join(dir, "sub"));
          expect(r.job.sandbox.policy).toMatchObject({
            read_write: [join(dir, "out")],
            read_only: ["/etc"],
            deny: [join(dir, "secret.txt")],
            unix_sockets: [agentSock],
          });
          expect(r.out).toBe(`wrote\n${agentSock} connected: agent\n`);
        });

        test("a job's own policy read_only: [/] never brings back the host's /tmp, /proc and /dev (refused or hidden)", async () => {
          const probe = join(sockDir, "host-tmp-secret.txt");
          writeFileSync(probe, "host-tmp-secret\n", { mode: 0o644 });
          const script = `cat ${probe}; grep -l 'planter-escape-hostpro[c]' /proc/[0-9]*/cmdline; echo done`;
          const plain = await run(p, script);
          expect(plain.out).toBe("done\n");
          const r = await run(p, script, { policy: { read_only: ["/"] } }).catch((e: PlanterError) => ({
            refused: e.message,
          }));
          // The host's /tmp (other users' files and sockets) and process list must stay out of sight;
          // a cell's own policy may not bring them back either.
          const cell = await p.client
            .createCell({ name: `root-ro-${mode}`, sandbox: { policy: { read_only: ["/"] } } })
            .then(
              async (c) => (await run(p, script, { cell: c.name })).out,
              (e: PlanterError) => e.code,
            );
          expect(["E_BAD_REQUEST", "done\n"]).toContain(cell);
          if ("refused" in r) return;
          expect(r.out).toBe("done\n");
        });

        test("a job's own policy read_only: [/dev/shm] never shows the host's /dev/shm (refused or hidden)", async () => {
          const probe = `/dev/shm/planter-escape-${TAG}-${mode}`;
          writeFileSync(probe, "host-shm-secret\n", { mode: 0o644 });
          cleanups.push(() => rmSync(probe, { force: true }));
          const plain = await run(p, `cat ${probe}; echo done`);
          expect(plain.out).toBe("done\n");
          const r = await run(p, `cat ${probe}; echo done`, { policy: { read_only: ["/dev/shm"] } }).catch(
            (e: PlanterError) => ({ refused: e.message }),
          );
          if ("refused" in r) return;
          expect(r.out).toBe("done\n");
        });
      });

      describe("credentials", () => {
        test("the real homes are hidden by default: planterd's home and /root", async () => {
          const h = p.fakeHome;
          const r = await run(
            p,
            `for f in ${[...LISTED, ...UNLISTED, "notes.txt"].join(" ")}; do cat ${h}/$f 2>/dev/null; done; ls -A ${h} | grep -c '^[.]'; ls -A /root | wc -l; echo done`,
          );
          // Only the mountpoints of cells inside the home may show (as empty names), no file of it.
          expect(r.out).toBe("0\n0\ndone\n");
          expect(readFileSync(join(h, ".npmrc"), "utf8")).toBe("credential:.npmrc\n");
        });

        test("read_only: [home] shows the home but none of the listed credentials", async () => {
          const h = p.fakeHome;
          const { name } = await mkCell(p, { policy: { read_only: [h] } });
          const r = await run(
            p,
            `cat ${h}/notes.txt ${h}/.bashrc; for f in ${LISTED.join(" ")}; do cat ${h}/$f 2>/dev/null; done; echo done`,
            {
              cell: name,
            },
          );
          expect(r.out).toBe("ordinary-home-file\n# rc\ndone\n");
        });

        test("read_only: [home] hides credentials that are symlinks (file, dir) or lie below one, at their targets", async () => {
          const h = p.fakeHome;
          const dot = join(h, "dotfiles");
          // A dotfile manager's layout: the credentials live in dotfiles/, the home holds links.
          mkdirSync(join(dot, "config"), { recursive: true, mode: 0o755 });
          renameSync(join(h, ".npmrc"), join(dot, "npmrc"));
          symlinkSync("dotfiles/npmrc", join(h, ".npmrc"));
          renameSync(join(h, ".ssh"), join(dot, "ssh"));
          symlinkSync(`${dot}/ssh`, join(h, ".ssh"));
          renameSync(join(h, ".config"), join(dot, "config", "c"));
          symlinkSync("dotfiles/config/c", join(h, ".config"));
          giveToJobUser(h);
          try {
            const { name } = await mkCell(p, { policy: { read_only: [h] } });
            const names = [".npmrc", "dotfiles/npmrc", ".ssh/id_ed25519", "dotfiles/ssh/id_ed25519"];
            names.push(".config/gh/hosts.yml", "dotfiles/config/c/gh/hosts.yml");
            const r = await run(
              p,
              `for f in ${names.join(" ")}; do cat ${h}/$f 2>/dev/null; done; cat ${h}/notes.txt`,
              {
                cell: name,
              },
            );
            expect([r.job.exit_code, r.out]).toEqual([0, "ordinary-home-file\n"]);
          } finally {
            for (const [link, real] of [
              [".npmrc", "dotfiles/npmrc"],
              [".ssh", "dotfiles/ssh"],
              [".config", "dotfiles/config/c"],
            ] as const) {
              rmSync(join(h, link));
              renameSync(join(h, real), join(h, link));
            }
            rmSync(dot, { recursive: true });
          }
        });

        test("read_only: [home] with a listed credential hard-linked elsewhere in the home: the job fails, never shows it", async () => {
          const h = p.fakeHome;
          const { name } = await mkCell(p, { policy: { read_only: [h] } });
          for (const [cred, other] of [
            [".git-credentials", "backup-git-credentials"],
            [".aws/credentials", "aws-credentials.bak"],
          ] as const) {
            linkSync(join(h, cred), join(h, other));
            try {
              // The job fails before it starts (sandbox_error, with the reason), never runs with the link.
              const r = await run(p, `cat ${h}/${other}; echo ran`, { cell: name });
              expect([r.job.state, r.job.reason, r.out]).toEqual(["failed", "sandbox_error", ""]);
              expect(r.job.message).toContain(`credential ${join(h, cred.split("/")[0] as string)} cannot be hidden`);
            } finally {
              rmSync(join(h, other));
            }
          }
          expect((await run(p, `cat ${h}/notes.txt`, { cell: name })).out).toBe("ordinary-home-file\n");
        });

        test("a home under /home of a user not in /etc/passwd (LDAP, SSSD) that a policy shows keeps its credentials hidden, also when /home is shown whole", async () => {
          // A directory service's user: no passwd line, a home under /home, world-readable files.
          const other = mkdtempSync("/home/pt-eldap-");
          cleanups.push(() => rmSync(other, { recursive: true, force: true }));
          chmodSync(other, 0o755);
          writeTree(other, {
            "notes.txt": "ldap-home\n",
            ".npmrc": "//registry:_authToken=ldap-secret\n",
            ".ssh/id_rsa.pub": "pub\n",
          });
          Bun.spawnSync(["chown", "-R", "4242:4242", other]);
          for (const shown of [other, "/home"]) {
            const { name } = await mkCell(p, { policy: { read_only: [shown] } });
            const r = await run(
              p,
              `cat ${other}/notes.txt; cat ${other}/.npmrc ${other}/.ssh/id_rsa.pub 2>/dev/null; echo done`,
              {
                cell: name,
              },
            );
            expect([shown, r.out]).toEqual([shown, "ldap-home\ndone\n"]);
          }
        });

        test("a credential named one by one is passed, the others stay hidden", async () => {
          const h = p.fakeHome;
          const { name } = await mkCell(p, { policy: { read_only: [h, join(h, ".npmrc"), join(h, ".ssh")] } });
          const r = await run(
            p,
            `cat ${h}/.npmrc ${h}/.ssh/id_ed25519; cat ${h}/.aws/credentials ${h}/.git-credentials 2>/dev/null; echo done`,
            {
              cell: name,
            },
          );
          expect(r.out).toBe("credential:.npmrc\ncredential:.ssh/id_ed25519\ndone\n");
        });

        test("a job cannot name the hidden home itself (its cell hides it)", async () => {
          const e = await refusal(
            p.client.createJob({ argv: ["true"], sandbox: { policy: { read_only: [p.fakeHome] } } }),
          );
          expect(e.code).toBe("E_BAD_REQUEST");
          expect(e.message).toContain("widens");
        });

        test("closed hole: read_only: [home] shows common credentials planter does not list", async () => {
          const h = p.fakeHome;
          const { name } = await mkCell(p, { policy: { read_only: [h] } });
          const r = await run(p, `for f in ${UNLISTED.join(" ")}; do cat ${h}/$f 2>/dev/null; done; echo done`, {
            cell: name,
          });
          const leaked = r.out
            .split("\n")
            .filter((l) => l.startsWith("credential:"))
            .map((l) => l.slice("credential:".length));
          expect(leaked).toEqual([]);
        });
      });

      describe("workspace", () => {
        test("fsmonitor: the job cannot write .git/config; the host's git status runs nothing", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const before = readFileSync(join(dir, ".git", "config"), "utf8");
          const m = marker(`fsmonitor-${mode}`);
          const r = await run(
            p,
            `git config core.fsmonitor 'touch ${m}; false'; echo rc=$?; printf '[core]\\n\\tfsmonitor = touch ${m}\\n' >> .git/config; echo rc=$?`,
            { cell: name },
          );
          expect(r.out).not.toContain("rc=0");
          expect(readFileSync(join(dir, ".git", "config"), "utf8")).toBe(before);
          expect(hostGit(dir, ["status", "--short"]).code).toBe(0);
          expect(existsSync(m)).toBe(false);
        });

        test("hooks: the job cannot write .git/hooks; the host's commit runs nothing", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`hook-${mode}`);
          const r = await run(
            p,
            `printf '#!/bin/sh\\ntouch ${m}\\n' > .git/hooks/pre-commit; echo rc=$?; ln -s /bin/true .git/hooks/post-commit; echo rc=$?`,
            { cell: name },
          );
          expect(r.out).toBe("rc=2\nrc=1\n");
          expect(hostGit(dir, ["commit", "-q", "--allow-empty", "-m", "host"]).code).toBe(0);
          expect(existsSync(m)).toBe(false);
        });

        test("core.hooksPath: the hooks dir it names is read-only too, and the key cannot be moved", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir, (d) => {
            writeTree(d, { ".githooks/pre-commit": "#!/bin/sh\ntrue\n" }, 0o755);
            hostGit(d, ["config", "core.hooksPath", ".githooks"]);
          });
          const m = marker(`hookspath-${mode}`);
          const r = await run(
            p,
            `printf '#!/bin/sh\\ntouch ${m}\\n' > .githooks/pre-commit; echo rc=$?; printf '#!/bin/sh\\ntouch ${m}\\n' > .githooks/post-commit; echo rc=$?; mkdir -p evil && printf '#!/bin/sh\\ntouch ${m}\\n' > evil/pre-commit && chmod +x evil/pre-commit; git config core.hooksPath evil; echo rc=$?`,
            { cell: name },
          );
          expect(r.out).not.toContain("rc=0");
          expect(hostGit(dir, ["commit", "-q", "--allow-empty", "-m", "host"]).code).toBe(0);
          expect(existsSync(m)).toBe(false);
        });

        test("moving .git aside and building a new one: set aside after the job, the host runs nothing", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`rebuilt-${mode}`);
          const r = await run(
            p,
            `mv .git .git-old && git init -q && git config core.fsmonitor 'touch ${m}; false' && printf '#!/bin/sh\\ntouch ${m}\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit && echo rebuilt`,
            { cell: name },
          );
          hostGit(dir, ["status", "--short"]);
          hostGit(dir, ["commit", "-q", "--allow-empty", "-m", "host"]);
          expect(existsSync(m)).toBe(false);
          if (r.out === "rebuilt\n") {
            const paths = r.job.workspace.map((f) => f.path);
            expect(paths).toContain(join(dir, ".git", "config"));
            expect(paths).toContain(join(dir, ".git", "hooks", "pre-commit"));
          }
        });

        test("a nested repository the job creates keeps no dangerous config", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`nested-${mode}`);
          const r = await run(
            p,
            `git init -q sub && git -C sub config core.fsmonitor 'touch ${m}; false' && echo made`,
            {
              cell: name,
            },
          );
          expect(r.out).toBe("made\n");
          hostGit(join(dir, "sub"), ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          expect(r.job.workspace.map((f) => f.path)).toContain(join(dir, "sub", ".git", "config"));
        });

        test("a bare repository made in the cell root (with a work tree) runs nothing on the host", async () => {
          const { name, dir } = await mkCell(p, { files: { "file.txt": "x\n" } });
          const m = marker(`bare-${mode}`);
          const r = await run(
            p,
            `git init -q --bare . && git config core.bare false && git config core.worktree "$PWD" && git config core.fsmonitor 'touch ${m}; false' && echo made`,
            { cell: name },
          );
          expect(r.out).toBe("made\n");
          hostGit(dir, ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          expect(r.job.workspace.length).toBeGreaterThan(0);
        });

        test("a .git gitlink (and a nested one) to a git dir in the job's home is set aside", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`gitlink-${mode}`);
          const evil = `git init -q --bare "$HOME/evil.git" && git --git-dir="$HOME/evil.git" config core.bare false && git --git-dir="$HOME/evil.git" config core.fsmonitor 'touch ${m}; false'`;
          const r = await run(
            p,
            `${evil} && mkdir sub && printf 'gitdir: %s\\n' "$HOME/evil.git" > sub/.git && mv .git .git-real && printf 'gitdir: %s\\n' "$HOME/evil.git" > .git; echo done`,
            { cell: name },
          );
          expect(r.out).toBe("done\n");
          hostGit(dir, ["status", "--short"]);
          hostGit(join(dir, "sub"), ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          expect(r.job.workspace.map((f) => f.kind)).toContain("git-redirect");
        });

        test("a commondir sending git to a git dir in the job's home is set aside", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`commondir-${mode}`);
          const r = await run(
            p,
            `git init -q --bare "$HOME/evil.git" && git --git-dir="$HOME/evil.git" config core.bare false && git --git-dir="$HOME/evil.git" config core.fsmonitor 'touch ${m}; false' && printf '%s\\n' "$HOME/evil.git" > .git/commondir && echo planted`,
            { cell: name },
          );
          expect(r.out).toBe("planted\n");
          hostGit(dir, ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          expect(r.job.workspace.map((f) => f.path)).toContain(join(dir, ".git", "commondir"));
        });

        test(".vscode: the existing one is read-only, a new tasks.json is set aside", async () => {
          const { name, dir } = await mkCell(p, { files: { ".vscode/settings.json": "{}\n" } });
          const task =
            '{"version":"2.0.0","tasks":[{"label":"x","type":"shell","command":"id","runOptions":{"runOn":"folderOpen"}}]}';
          const r = await run(
            p,
            `echo '${task}' > .vscode/tasks.json; echo rc=$?; echo '//' >> .vscode/settings.json; echo rc=$?; mkdir -p app/.vscode && echo '${task}' > app/.vscode/tasks.json && echo made`,
            { cell: name },
          );
          expect(r.out).toBe("rc=2\nrc=2\nmade\n");
          expect(readFileSync(join(dir, ".vscode/settings.json"), "utf8")).toBe("{}\n");
          expect(existsSync(join(dir, "app/.vscode/tasks.json"))).toBe(false);
          const f = r.job.workspace.find((x) => x.path === join(dir, "app/.vscode/tasks.json"));
          expect(f?.saved_as).toStartWith(join(dir, "app/.vscode/tasks.json.planter-quarantine-"));
        });

        test(".claude/settings.json and .mcp.json a job creates are set aside", async () => {
          const { name, dir } = await mkCell(p);
          const r = await run(
            p,
            `mkdir .claude && echo '{"hooks":{"SessionStart":[{"hooks":[{"type":"command","command":"id"}]}]}}' > .claude/settings.json && echo '{"mcpServers":{"x":{"command":"id"}}}' > .mcp.json && echo made`,
            { cell: name },
          );
          expect(r.out).toBe("made\n");
          expect(existsSync(join(dir, ".claude/settings.json"))).toBe(false);
          expect(existsSync(join(dir, ".mcp.json"))).toBe(false);
          expect(r.job.workspace.map((f) => f.path).sort()).toEqual(
            [join(dir, ".claude/settings.json"), join(dir, ".mcp.json")].sort(),
          );
        });

        test("mise (trusted by path), Emacs .dir-locals-2.el, Vim's .vimrc and .lazy.lua, Roo/Qwen/Junie/Crush config: existing ones read-only, new ones set aside", async () => {
          const { name, dir } = await mkCell(p, { files: { "mise.toml": "[env]\nA = '1'\n" } });
          const made = [".dir-locals-2.el", ".vimrc", ".lazy.lua", "sub/.mise.toml", ".config/mise/config.toml"];
          made.push(".roo/mcp.json", ".qwen/settings.json", ".junie/mcp/mcp.json", "crush.json");
          const r = await run(
            p,
            `echo '[hooks]' >> mise.toml 2>/dev/null || echo mise-read-only; for f in ${made.join(" ")}; do mkdir -p $(dirname $f) && echo x > $f; done; echo made`,
            { cell: name },
          );
          expect(r.out).toBe("mise-read-only\nmade\n");
          expect(readFileSync(join(dir, "mise.toml"), "utf8")).toBe("[env]\nA = '1'\n");
          expect(made.filter((f) => existsSync(join(dir, f)))).toEqual([]);
          expect(r.job.workspace.map((f) => f.path).sort()).toEqual(made.map((f) => join(dir, f)).sort());
        });

        test(".envrc: the existing one is read-only, a new one in a subdir is set aside", async () => {
          const { name, dir } = await mkCell(p, { files: { ".envrc": "export A=1\n" } });
          const r = await run(p, "echo 'id' >> .envrc; echo rc=$?; mkdir sub && echo 'id' > sub/.envrc && echo made", {
            cell: name,
          });
          expect(r.out).toBe("rc=2\nmade\n");
          expect(readFileSync(join(dir, ".envrc"), "utf8")).toBe("export A=1\n");
          expect(existsSync(join(dir, "sub/.envrc"))).toBe(false);
          expect(r.job.workspace.map((f) => f.path)).toEqual([join(dir, "sub/.envrc")]);
        });

        test("git add and commit still work inside the job", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const r = await run(
            p,
            "echo hi > f.txt && git add f.txt && git -c user.name=job -c user.email=job@example.com commit -qm from-job && echo committed",
            {
              cell: name,
            },
          );
          expect(r.out).toBe("committed\n");
          expect(r.job.workspace).toEqual([]);
          expect(hostGit(dir, ["log", "--format=%s"]).out).toBe("from-job\ninit\n");
        });

        test("job status --json shows what was set aside", async () => {
          const { name, dir } = await mkCell(p);
          const r = await run(p, "mkdir .idea && echo '<x/>' > .idea/workspace.xml", { cell: name });
          const s = await cli(p.home, ["job", "status", r.job.id, "--json"], {
            uid: p.mode === "user" ? JOB_UID : undefined,
          });
          expect(s.code).toBe(0);
          const shown = JSON.parse(s.stdout) as Job;
          expect(shown.workspace).toEqual([
            {
              path: join(dir, ".idea/workspace.xml"),
              kind: "tool-config",
              detail: expect.any(String),
              saved_as: expect.stringContaining(`.idea/workspace.xml.planter-quarantine-${r.job.id}`),
              restored: false,
            },
          ]);
        });

        test("a job planting hundreds of tool configs: every one set aside, its record and events list 100 and count the rest", async () => {
          const { name, dir } = await mkCell(p);
          const n = 250;
          const r = await run(
            p,
            `i=0; while [ $i -lt ${n} ]; do mkdir d$i && echo 'echo pwn' > d$i/.envrc; i=$((i+1)); done`,
            {
              cell: name,
            },
          );
          expect(r.job.exit_code).toBe(0);
          // Nothing of it is left where the host's direnv would load it.
          const left = readdirSync(dir).filter((d) => existsSync(join(dir, d, ".envrc")));
          expect(left).toEqual([]);
          const w = r.job.workspace;
          expect(w.length).toBe(100);
          expect(w.slice(0, 99).every((f) => f.kind === "tool-config" && f.saved_as.includes(r.job.id))).toBe(true);
          expect(w[99]).toEqual({
            path: dir,
            kind: "more-set-aside",
            detail: expect.stringContaining(`${n - 99} more entries the job added or changed were set aside`),
            saved_as: "",
            restored: false,
          });
          const evs: { kind: string; subject: string }[] = [];
          for await (const e of p.client.events({})) if (e.subject === `job/${r.job.id}`) evs.push(e);
          expect(evs.filter((e) => e.kind === "job.workspace_set_aside").length).toBe(100);
        });

        test("closed hole: when the cell's parent is swapped for a symlink during the job, the review writes the cell's files into another tree", async () => {
          // The cell's owner (nobody) owns the cell dir's parent; the victim tree belongs to root.
          const parent = scratchDir("pt-eown");
          const cellDir = join(parent, "proj");
          writeTree(
            cellDir,
            { ".envrc": "the-owner's-envrc\n", ".git/hooks/pre-commit": "#!/bin/sh\ntouch MARK\n" },
            0o755,
          );
          writeTree(cellDir, {
            ".git/HEAD": "ref: refs/heads/main\n",
            ".git/objects/.keep": "",
            ".git/refs/.keep": "",
          });
          giveToJobUser(parent);
          const victim = scratchDir("pt-evictim");
          writeTree(
            join(victim, "proj"),
            { ".envrc": "victim-envrc\n", ".git/hooks/pre-commit": "#!/bin/sh\ntrue\n" },
            0o755,
          );
          writeTree(join(victim, "proj"), {
            ".git/HEAD": "ref: refs/heads/main\n",
            ".git/objects/.keep": "",
            ".git/refs/.keep": "",
          });
          // As root the victim is root's; as a user planterd can only touch its own user's files.
          if (mode === "user") giveToJobUser(victim);
          const name = `swap-${mode}`;
          await p.client.createCell({ name, dir: cellDir });
          const j = await p.client.createJob({
            cell: name,
            argv: ["sh", "-c", "touch started; while [ ! -e go ]; do sleep 0.05; done"],
          });
          await waitFor(() => existsSync(join(cellDir, "started")), "the job to start");
          const swap = Bun.spawnSync([
            "setpriv",
            `--reuid=${JOB_UID}`,
            `--regid=${JOB_UID}`,
            "--clear-groups",
            "sh",
            "-c",
            `mv ${parent} ${parent}.old && ln -s ${victim} ${parent}`,
          ]);
          expect(swap.exitCode).toBe(0);
          cleanups.push(() => rmSync(`${parent}.old`, { recursive: true, force: true }));
          writeFileSync(join(`${parent}.old`, "proj", "go"), "");
          const done = (await p.client.waitJob(j.id, 20_000)).job;
          expect(done.state).toBe("exited");
          expect(readFileSync(join(victim, "proj", ".envrc"), "utf8")).toBe("victim-envrc\n");
          expect(readFileSync(join(victim, "proj", ".git/hooks/pre-commit"), "utf8")).toBe("#!/bin/sh\ntrue\n");
          expect(readdirSync(join(victim, "proj")).sort()).toEqual([".envrc", ".git"]);
          expect(done.workspace.filter((f) => f.path.startsWith(victim))).toEqual([]);
        });

        test("a hooks dir a global git config names relative to the work tree (core.hooksPath = .githooks) is set aside", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`global-hookspath-${mode}`);
          const r = await run(
            p,
            `mkdir -p .githooks && printf '#!/bin/sh\\ntouch ${m}\\n' > .githooks/pre-commit && chmod +x .githooks/pre-commit && echo planted`,
            { cell: name },
          );
          expect(r.out).toBe("planted\n");
          // A user whose ~/.gitconfig says core.hooksPath = .githooks (a common team setup) commits.
          const home = scratchDir("pt-egit2");
          writeFileSync(
            join(home, ".gitconfig"),
            "[safe]\n\tdirectory = *\n[user]\n\tname = host\n\temail = host@example.com\n[core]\n\thooksPath = .githooks\n",
          );
          Bun.spawnSync(["git", "-C", dir, "commit", "-q", "--allow-empty", "-m", "host"], {
            env: { PATH: "/usr/bin:/bin", HOME: home, GIT_CONFIG_NOSYSTEM: "1" },
          });
          expect(existsSync(m)).toBe(false);
        });

        test("what the user's own global git config names in a work tree (hooksPath, programs, includes) is read-only, or set aside", async () => {
          const { name, dir } = await mkCell(p);
          const m = marker(`global-git-${mode}`);
          const evil = `#!/bin/sh\ntouch ${m}\n`;
          hostRepo(dir, (d) =>
            writeTree(d, { "ci/hooks/pre-commit": "#!/bin/sh\ntrue\n", "tools/fsmon.sh": "#!/bin/sh\ntrue\n" }, 0o755),
          );
          mkdirSync(join(dir, "b"));
          hostRepo(join(dir, "b"));
          // planterd's user's (the host user's) global config, and a file it includes.
          const h = p.fakeHome;
          writeFileSync(
            join(h, ".gitconfig"),
            `[safe]\n\tdirectory = *\n[user]\n\tname = host\n\temail = host@example.com\n[core]\n\thooksPath = ci/hooks\n\tfsmonitor = ./tools/fsmon.sh\n[alias]\n\tst = !sh scripts/st.sh\n[include]\n\tpath = more.inc\n`,
          );
          writeFileSync(
            join(h, "more.inc"),
            `[diff "x"]\n\ttextconv = bin/conv\n[include]\n\tpath = ${dir}/team.gitconfig\n`,
          );
          try {
            const r = await run(
              p,
              [
                `printf '${evil}' > ci/hooks/pre-commit; echo rc=$?`,
                `printf '${evil}' > tools/fsmon.sh; echo rc=$?`,
                `mkdir -p b/ci/hooks scripts bin && printf '${evil}' > b/ci/hooks/post-checkout && printf '${evil}' > scripts/st.sh && printf '${evil}' > bin/conv`,
                `printf '[core]\\n\\tpager = touch ${m}\\n' > team.gitconfig`,
                `git init -q newrepo && mkdir -p newrepo/ci/hooks && printf '${evil}' > newrepo/ci/hooks/pre-commit`,
                "chmod +x b/ci/hooks/* scripts/* bin/* newrepo/ci/hooks/*; echo planted",
              ].join("; "),
              { cell: name },
            );
            expect(r.out).toBe("rc=2\nrc=2\nplanted\n");
            expect(readFileSync(join(dir, "ci/hooks/pre-commit"), "utf8")).toBe("#!/bin/sh\ntrue\n");
            const set = r.job.workspace.map((f) => f.path.slice(dir.length + 1)).sort();
            expect(set).toEqual([
              "b/ci/hooks/post-checkout",
              "bin/conv",
              "newrepo/ci/hooks/pre-commit",
              "scripts/st.sh",
              "team.gitconfig",
            ]);
            expect(readFileSync(join(dir, "team.gitconfig"), "utf8")).not.toContain("pager");
            // The host user's git, with that global config, runs none of it.
            for (const repo of [dir, join(dir, "b"), join(dir, "newrepo")]) {
              Bun.spawnSync(
                ["git", "-C", repo, "-c", "diff.x.textconv=bin/conv", "commit", "-q", "--allow-empty", "-m", "host"],
                {
                  env: { PATH: "/usr/bin:/bin", HOME: h, GIT_CONFIG_NOSYSTEM: "1" },
                },
              );
              Bun.spawnSync(["git", "-C", repo, "st"], {
                env: { PATH: "/usr/bin:/bin", HOME: h, GIT_CONFIG_NOSYSTEM: "1" },
              });
              Bun.spawnSync(["git", "-C", repo, "status"], {
                env: { PATH: "/usr/bin:/bin", HOME: h, GIT_CONFIG_NOSYSTEM: "1" },
              });
            }
            expect(existsSync(m)).toBe(false);
          } finally {
            rmSync(join(h, ".gitconfig"), { force: true });
            rmSync(join(h, "more.inc"), { force: true });
          }
        });

        test("closed hole: tool config the review does not list (.hg/hgrc hooks, .helix/languages.toml servers) is left in place", async () => {
          const { name, dir } = await mkCell(p);
          const r = await run(
            p,
            "mkdir -p .hg .helix && printf '[hooks]\\npre-status = id\\n' > .hg/hgrc && printf '[language-server.x]\\ncommand = \"id\"\\n' > .helix/languages.toml && echo planted",
            { cell: name },
          );
          expect(r.out).toBe("planted\n");
          expect([existsSync(join(dir, ".hg/hgrc")), existsSync(join(dir, ".helix/languages.toml"))]).toEqual([
            false,
            false,
          ]);
        });

        test("closed hole: a tool config file whose name leaves no room for the quarantine suffix stays in place", async () => {
          const { name, dir } = await mkCell(p);
          const long = `${"a".repeat(240)}.md`;
          const r = await run(
            p,
            `mkdir -p .claude/agents && echo 'tools: Bash' > .claude/agents/${long} && echo made`,
            {
              cell: name,
            },
          );
          expect(r.out).toBe("made\n");
          expect(r.job.workspace.map((f) => f.path)).toEqual([join(dir, ".claude/agents", long)]);
          expect(existsSync(join(dir, ".claude/agents", long))).toBe(false);
        });

        test("a symlink the job leaves in the cell to a directory in its home (absolute, relative, made later) is set aside; the host's git there runs nothing", async () => {
          const { name, dir } = await mkCell(p, { files: { "src/main.c": "int main;\n", "docs/a.md": "a\n" } });
          hostRepo(dir);
          const m = marker(`homelink-${mode}`);
          const evil = `git init -q "$HOME/evil" && git -C "$HOME/evil" config core.fsmonitor 'touch ${m}; false' && mkdir -p "$HOME/evil/app" "$HOME/bin" && cp /bin/true "$HOME/bin/python3"`;
          const r = await run(
            p,
            `${evil} && ln -s "$HOME/evil" tools && ln -s "$(realpath --relative-to=. "$HOME/evil")/app" app && rm -rf src && ln -s "$HOME/evil" src && ln -s "$HOME/not-yet" later && mkdir -p .venv/bin && ln -s "$HOME/bin/python3" .venv/bin/python && ln -s docs manual && ln -s /usr/share share && echo planted`,
            { cell: name },
          );
          expect(r.out).toBe("planted\n");
          for (const d of ["tools", "app", "src"]) hostGit(join(dir, d), ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          expect(r.job.workspace.map((f) => f.path).sort()).toEqual(["app", "src", "tools"].map((n) => join(dir, n)));
          // A link into the home that leads nowhere yet is judged again once it does.
          const later = await run(
            p,
            `git init -q "$HOME/not-yet" && git -C "$HOME/not-yet" config core.fsmonitor 'touch ${m}; false'`,
            {
              cell: name,
            },
          );
          hostGit(join(dir, "later"), ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          expect(later.job.workspace.map((f) => f.path)).toEqual([join(dir, "later")]);
          // Links inside the cell, to the host's own read-only tree, or to a file in the home (a venv's interpreter) stay.
          expect(readlinkSync(join(dir, "manual"))).toBe("docs");
          expect(readlinkSync(join(dir, "share"))).toBe("/usr/share");
          expect(existsSync(join(dir, ".venv/bin/python"))).toBe(true);
        });

        test("a directory made to look like a git dir (HEAD, refs) does not hide its objects/ from the review", async () => {
          const { name, dir } = await mkCell(p, { files: { "lib/objects/shape.c": "int shape;\n" } });
          hostRepo(dir);
          const m = marker(`objects-${mode}`);
          const task =
            '{"version":"2.0.0","tasks":[{"label":"x","type":"shell","command":"id","runOptions":{"runOn":"folderOpen"}}]}';
          const r = await run(
            p,
            `echo 'ref: refs/heads/main' > lib/HEAD && mkdir lib/refs && git init -q lib/objects/r && git -C lib/objects/r config core.fsmonitor 'touch ${m}; false' && mkdir -p lib/objects/ab/.vscode && echo '${task}' > lib/objects/ab/.vscode/tasks.json && echo planted`,
            { cell: name },
          );
          expect(r.out).toBe("planted\n");
          hostGit(join(dir, "lib/objects/r"), ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          const paths = r.job.workspace.map((f) => f.path);
          expect(paths).toContain(join(dir, "lib/objects/r/.git/config"));
          expect(paths).toContain(join(dir, "lib/objects/ab/.vscode/tasks.json"));
          // A real repository's objects still pass untouched (commit in the job, status on the host).
          const ok = await run(
            p,
            "echo more > more.txt && git add more.txt && git -c user.name=j -c user.email=j@x commit -qm more && echo ok",
            { cell: name },
          );
          expect(ok.out).toBe("ok\n");
          expect(ok.job.workspace).toEqual([]);
        });

        test("what a job plants in directories it then makes read-only (even the cell dir) is still set aside", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`rodir-${mode}`);
          const r = await run(
            p,
            `git init -q sub && printf '#!/bin/sh\\ntouch ${m}\\n' > sub/.git/hooks/pre-commit && chmod +x sub/.git/hooks/pre-commit && chmod 555 sub/.git/hooks && mkdir .claude && echo '{"hooks":{}}' > .claude/settings.json && chmod 555 .claude && echo 'touch ${m}' > .envrc && mkdir locked && chmod 000 locked && chmod 555 . && echo planted`,
            { cell: name },
          );
          expect(r.out).toBe("planted\n");
          hostGit(join(dir, "sub"), ["commit", "-q", "--allow-empty", "-m", "host"]);
          expect(existsSync(m)).toBe(false);
          for (const f of [".envrc", ".claude/settings.json", "sub/.git/hooks/pre-commit"])
            expect([f, existsSync(join(dir, f))]).toEqual([f, false]);
          expect(r.job.workspace.filter((f) => !f.saved_as)).toEqual([]);
          // The modes the job chose are kept.
          expect(statSync(dir).mode & 0o777).toBe(0o555);
          expect(statSync(join(dir, ".claude")).mode & 0o777).toBe(0o555);
          chmodSync(dir, 0o755);
        });

        test("a hard link the job makes to a config or hook it creates is no way past a later job's read-only bind", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`hardlink-${mode}`);
          const first = await run(
            p,
            "git init -q sub && ln sub/.git/config keep && mkdir -p .vscode && echo '{}' > .vscode/settings.json && ln .vscode/settings.json keep2 && echo made",
            { cell: name },
          );
          expect(first.out).toBe("made\n");
          expect(first.job.workspace.map((f) => f.path).sort()).toEqual(
            [join(dir, ".vscode/settings.json"), join(dir, "sub/.git/config")].sort(),
          );
          // The repository keeps a config of its own (a copy), no longer the file behind `keep`.
          expect(statSync(join(dir, "sub/.git/config")).nlink).toBe(1);
          const later = await p.client.createJob({
            cell: name,
            argv: [
              "sh",
              "-c",
              `printf '[core]\\n\\tfsmonitor = touch ${m}; false\\n' >> keep && touch written && while [ ! -e go ]; do sleep 0.02; done`,
            ],
          });
          await waitFor(() => existsSync(join(dir, "written")), "the later job to write through its link");
          expect(readFileSync(join(dir, "sub/.git/config"), "utf8")).not.toContain("fsmonitor");
          hostGit(join(dir, "sub"), ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
          writeFileSync(join(dir, "go"), "");
          await p.client.waitJob(later.id, 20_000);
          // A repository made without links keeps its config where it is.
          const plain = await run(p, "git init -q other && echo made", { cell: name });
          expect(plain.job.workspace).toEqual([]);
        });

        test("a concurrent job of the cell cannot put back what an earlier job's review set aside", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const plant =
            "echo 'touch /tmp/pwned' > .envrc && mkdir -p .claude && echo '{\"hooks\":{}}' > .claude/settings.json";
          const a = await p.client.createJob({
            cell: name,
            argv: ["sh", "-c", `${plant} && touch a-ready && while [ ! -e b-started ]; do sleep 0.02; done`],
          });
          await waitFor(() => existsSync(join(dir, "a-ready")), "job A to plant");
          const b = await run(
            p,
            `touch b-started; i=0; while [ -e .envrc ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done; sleep 0.2; ${plant}; echo rc=$?`,
            { cell: name },
          );
          const aEnd = (await p.client.waitJob(a.id, 20_000)).job;
          expect(aEnd.workspace.map((f) => f.path)).toContain(join(dir, ".envrc"));
          expect(b.out).toContain("rc=");
          expect(existsSync(join(dir, ".envrc"))).toBe(false);
          expect(existsSync(join(dir, ".claude", "settings.json"))).toBe(false);
          // A second job that changes nothing leaves what the host has alone.
          const c = await run(p, "true", { cell: name });
          expect(c.job.workspace).toEqual([]);
        });

        test("a job narrowing to fs_mode read_only with read_write: [its cell] keeps the workspace protection", async () => {
          const { name, dir } = await mkCell(p);
          hostRepo(dir);
          const m = marker(`narrowed-${mode}`);
          const r = await run(p, `git config core.fsmonitor 'touch ${m}; false'; echo rc=$?`, {
            cell: name,
            policy: { fs_mode: "read_only", read_write: [dir] },
          }).catch((e: PlanterError) => ({ refused: e.message }));
          if ("refused" in r) return;
          hostGit(dir, ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
        });

        test("a read-only cell's read_write dir holding a repository keeps the workspace protection", async () => {
          const dir = join(p.scratch, `rocell-${mode}`);
          mkdirSync(join(dir, "work"), { recursive: true });
          hostRepo(join(dir, "work"));
          giveToJobUser(dir);
          await p.client.createCell({
            name: `rocell-${mode}`,
            dir,
            sandbox: { policy: { fs_mode: "read_only", read_write: [join(dir, "work")] } },
          });
          const m = marker(`rocell-${mode}`);
          const r = await run(
            p,
            `git -C work config core.fsmonitor 'touch ${m}; false'; echo rc=$?; echo x > top.txt`,
            {
              cell: `rocell-${mode}`,
            },
          );
          expect(r.err).toContain("Read-only file system");
          hostGit(join(dir, "work"), ["status", "--short"]);
          expect(existsSync(m)).toBe(false);
        });
      });

      if (mode === "root") {
        describe("peers (planterd as root, a local user allowed on its socket)", () => {
          test("a peer's missing deny path is held only where the peer could create it", async () => {
            const mine = scratchDir("pt-epeerdeny");
            giveToJobUser(mine);
            const rootOwned = scratchDir("pt-erootdeny");
            const c = await asPeer(p, "POST", "/v1/cells", {
              name: "peer-deny",
              dir: mine,
              sandbox: { policy: { read_only: [rootOwned] } },
            });
            expect(c.status).toBe(201);
            const ok = await asPeer(p, "POST", "/v1/jobs", {
              cell: "peer-deny",
              argv: ["sh", "-c", "ls -A; echo done"],
              sandbox: { policy: { deny: [join(mine, "later.env")] } },
            });
            expect(ok.status).toBe(201);
            await p.client.waitJob(ok.body.id as string, 20_000);
            expect(await text(p, ok.body.id as string, "stdout")).toBe("later.env\ndone\n");
            // In root's read-only dir, outside the peer's own trees: refused, nothing made there.
            const no = await asPeer(p, "POST", "/v1/jobs", {
              cell: "peer-deny",
              argv: ["true"],
              sandbox: { policy: { deny: [join(rootOwned, "later.env")] } },
            });
            expect([no.status, no.body.error?.code]).toEqual([400, "E_BAD_REQUEST"]);
            expect(readdirSync(rootOwned)).toEqual([]);
            // In its own cell, but in a dir root owns there: the peer could not create it, nor does root for it.
            mkdirSync(join(mine, "rootsub"), { mode: 0o755 });
            const sub = await asPeer(p, "POST", "/v1/jobs", {
              cell: "peer-deny",
              argv: ["true"],
              sandbox: { policy: { deny: [join(mine, "rootsub", "later.env")] } },
            });
            expect([sub.status, sub.body.error?.message]).toEqual([
              400,
              `sandbox deny path ${join(mine, "rootsub", "later.env")} does not exist, and you (uid ${JOB_UID}) may not create it in ${join(mine, "rootsub")} to hold it`,
            ]);
            expect(readdirSync(mine)).toEqual(["rootsub"]);
            expect(readdirSync(join(mine, "rootsub"))).toEqual([]);
          });

          test("a peer's policy cannot bind a file behind a directory the peer cannot search; a reachable one binds", async () => {
            const priv = scratchDir("pt-epriv");
            chmodSync(priv, 0o700);
            writeFileSync(join(priv, "secret.txt"), "peer-unreachable\n", { mode: 0o644 });
            const open = scratchDir("pt-eopen");
            writeFileSync(join(open, "shared.txt"), "peer-readable\n", { mode: 0o644 });
            const file = join(open, "shared.txt");
            const c = await asPeer(p, "POST", "/v1/cells", {
              name: "peer-open",
              sandbox: { policy: { read_only: [file] } },
            });
            expect(c.status).toBe(201);
            const j = await asPeer(p, "POST", "/v1/jobs", { cell: "peer-open", argv: ["cat", file] });
            expect(j.status).toBe(201);
            const done = (await p.client.waitJob(j.body.id as string, 20_000)).job;
            expect([done.run_as?.uid, await text(p, done.id, "stdout")]).toEqual([JOB_UID, "peer-readable\n"]);
            // The unreachable one is refused when the cell is made, and nothing is made.
            const secret = join(priv, "secret.txt");
            const refused = await asPeer(p, "POST", "/v1/cells", {
              name: "peer-priv",
              sandbox: { policy: { read_only: [secret] } },
            });
            expect([refused.status, refused.body.error?.code]).toEqual([400, "E_BAD_REQUEST"]);
            expect(refused.body.error?.message).toContain(
              `sandbox read_only path ${secret} is not a path you can reach`,
            );
            expect((await asPeer(p, "GET", "/v1/cells/peer-priv")).status).toBe(404);
          });

          test("a peer's cell policy path, a symlink of its own retargeted after the cell was made, never binds what the peer cannot reach", async () => {
            const priv = scratchDir("pt-eretpriv");
            chmodSync(priv, 0o700);
            mkdirSync(join(priv, "data"), { mode: 0o755 });
            writeFileSync(join(priv, "data", "secret.txt"), "peer-unreachable\n", { mode: 0o644 });
            const mine = scratchDir("pt-eretmine");
            mkdirSync(join(mine, "ok"), { mode: 0o755 });
            writeFileSync(join(mine, "ok", "secret.txt"), "peer-own\n", { mode: 0o644 });
            symlinkSync(join(mine, "ok"), join(mine, "link"));
            giveToJobUser(mine);
            Bun.spawnSync(["chown", "-h", `${JOB_UID}:${JOB_UID}`, join(mine, "link")]);
            const link = join(mine, "link");
            const c = await asPeer(p, "POST", "/v1/cells", {
              name: "peer-retarget",
              sandbox: { policy: { read_only: [link] } },
            });
            expect(c.status).toBe(201);
            const job = async (policy?: Record<string, unknown>) => {
              const j = await asPeer(p, "POST", "/v1/jobs", {
                cell: "peer-retarget",
                argv: [
                  "sh",
                  "-c",
                  `cat ${join(mine, "ok", "secret.txt")} ${join(priv, "data", "secret.txt")} 2>&1; true`,
                ],
                ...(policy ? { sandbox: { policy } } : {}),
              });
              if (j.status !== 201) return { refused: j.body.error?.message ?? "" };
              await p.client.waitJob(j.body.id as string, 20_000);
              return { out: await text(p, j.body.id as string, "stdout") };
            };
            // While the link points at the peer's own dir, the cell binds that.
            const before = await job();
            expect("out" in before && before.out).toContain("peer-own\n");
            // The peer points its link into root's 0700 dir (as the peer, in its own dir). Each job
            // resolves the cell's paths again, with the rights of the user it runs as: refused with one
            // answer whether the target exists or not (root's own lookup told them apart: "does not
            // exist", or a job failed by bwrap's "Permission denied").
            const retarget = (to: string) =>
              expect(
                Bun.spawnSync([
                  "setpriv",
                  `--reuid=${JOB_UID}`,
                  `--regid=${JOB_UID}`,
                  "--clear-groups",
                  "ln",
                  "-sfn",
                  to,
                  link,
                ]).exitCode,
              ).toBe(0);
            const unreachable = `sandbox read_only path ${link} is not a path you can reach (uid ${JOB_UID})`;
            for (const to of [join(priv, "data"), join(priv, "missing")]) {
              retarget(to);
              const after = await job();
              expect(after).toEqual({ refused: expect.stringContaining(unreachable) });
              // The same through a job's own policy naming the link.
              expect(await job({ read_only: [link] })).toEqual({ refused: expect.stringContaining(unreachable) });
            }
            retarget(join(mine, "ok"));
            expect(await job()).toEqual({ out: expect.stringContaining("peer-own\n") });
          });

          test("closed hole: a peer's cell policy env.pass hands it planterd's (root's) own environment", async () => {
            // Root may pass the daemon's variables to its own jobs.
            const own = await mkCell(p, { policy: { env: { pass: ["ESCAPE_DAEMON_SECRET"] } } });
            expect((await run(p, 'echo "[$ESCAPE_DAEMON_SECRET]"', { cell: own.name })).out).toBe(
              `[${DAEMON_SECRET}]\n`,
            );
            const c = await asPeer(p, "POST", "/v1/cells", {
              name: "peer-env",
              sandbox: { policy: { env: { pass: ["ESCAPE_DAEMON_SECRET"] } } },
            });
            if (c.status !== 201) return; // refused: fixed
            const j = await asPeer(p, "POST", "/v1/jobs", {
              cell: "peer-env",
              argv: ["sh", "-c", 'echo "[$ESCAPE_DAEMON_SECRET]"'],
            });
            if (j.status !== 201) return;
            await p.client.waitJob(j.body.id as string, 20_000);
            expect(await text(p, j.body.id as string, "stdout")).toBe("[]\n");
          });

          test("closed hole: any peer reads the environment of root's jobs (secrets passed with --env) through job status and list", async () => {
            const token = `root-deploy-token-${TAG}`;
            const j = await p.client.createJob({ argv: ["true"], env: { DEPLOY_TOKEN: token } });
            await p.client.waitJob(j.id, 20_000);
            // Listing and status stay open to every peer (like ps): the job shows, its values do not.
            const one = await asPeer(p, "GET", `/v1/jobs/${j.id}`);
            const all = await asPeer(p, "GET", "/v1/jobs?limit=1000");
            expect([one.status, all.status, one.body.id]).toEqual([200, 200, j.id]);
            expect(JSON.stringify(one.body)).not.toContain(token);
            expect(JSON.stringify(all.body)).not.toContain(token);
          });

          test("closed hole: a peer makes a cell of a directory it cannot write, and root's review then rewrites files there", async () => {
            const foreign = scratchDir("pt-eforeign");
            writeFileSync(join(foreign, ".envrc"), "owner-v1\n", { mode: 0o644 });
            const c = await asPeer(p, "POST", "/v1/cells", { name: "peer-foreign", dir: foreign });
            if (c.status !== 201) return; // refused: fixed
            const j = await asPeer(p, "POST", "/v1/jobs", {
              cell: "peer-foreign",
              argv: ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; touch x 2>/dev/null || echo read-only"],
            });
            expect(j.status).toBe(201);
            const id = j.body.id as string;
            await waitFor(async () => (await p.client.getJob(id)).state === "running", "the peer's job to run");
            // The directory's owner (root) goes on working while the peer's job runs.
            writeFileSync(join(foreign, ".envrc"), "owner-v2\n");
            writeFileSync(join(foreign, "go"), "");
            const done = (await p.client.waitJob(id, 20_000)).job;
            expect(await text(p, id, "stdout")).toBe("read-only\n");
            expect(readFileSync(join(foreign, ".envrc"), "utf8")).toBe("owner-v2\n");
            expect(done.workspace).toEqual([]);
          });
        });
      }

      describe("memory through /tmp and /dev/shm", () => {
        test("/tmp is capped at max_rss: 200 MiB fails with ENOSPC, 50 MiB works", async () => {
          const r = await run(
            p,
            "dd if=/dev/zero of=/tmp/big bs=1M count=200 2>&1 | grep -o 'No space left on device\\|Cannot allocate memory' | head -1; rm -f /tmp/big; dd if=/dev/zero of=/tmp/ok bs=1M count=50 2>/dev/null && echo small-ok",
            { limits: { max_rss_bytes: 100 * MIB } },
          );
          // Where jobs get cgroups the tmpfs pages count against the memory limit as well: the
          // kernel may refuse them (ENOMEM) or the job may end at its memory limit first.
          if (r.job.reason === "memory_limit") return;
          expect(r.out.replace("Cannot allocate memory", "No space left on device")).toBe(
            "No space left on device\nsmall-ok\n",
          );
        });

        test("/dev/shm is capped at 64 MiB", async () => {
          const r = await run(
            p,
            "dd if=/dev/zero of=/dev/shm/big bs=1M count=100 2>&1 | grep -o 'No space left on device' | head -1; rm -f /dev/shm/big; dd if=/dev/zero of=/dev/shm/ok bs=1M count=32 2>/dev/null && echo small-ok",
          );
          expect(r.out).toBe("No space left on device\nsmall-ok\n");
        });

        test("the covers are read-only: /dev, /home, /root, planter's dirs, the real home", async () => {
          const r = await run(
            p,
            `for d in /dev /home /root ${p.home} ${p.state} ${p.fakeHome} /proc/sys; do touch $d/x 2>/dev/null && echo wrote $d; mkdir $d/y 2>/dev/null && echo made $d; done; touch $HOME/x ./x && echo own-ok`,
          );
          expect(r.out).toBe("own-ok\n");
        });

        // The kernel counts these pages in the job's memory cgroup (planterd as root here); an
        // unprivileged planterd on a host with no delegated cgroup has only the RSS monitor: open there.
        const cgroupTest = mode === "root" ? test : test.todo;

        cgroupTest(
          `${mode === "root" ? "" : "HOLE: "}a memfd holds 200 MiB under max_rss 100 MiB without the job being stopped`,
          async () => {
            const { dir, name } = await mkCell(p, { files: { "m.pl": PROBE_MEMFD } });
            const r = await run(p, "", {
              cell: name,
              argv: ["perl", join(dir, "m.pl")],
              limits: { max_rss_bytes: 100 * MIB },
            });
            const escaped = r.out.includes("held 200 MiB") && r.job.reason !== "memory_limit";
            expect({ escaped, out: r.out, reason: r.job.reason }).toMatchObject({ escaped: false });
          },
        );

        cgroupTest(
          `${mode === "root" ? "" : "HOLE: "}SysV shared memory holds 200 MiB under max_rss 100 MiB without the job being stopped`,
          async () => {
            const { dir, name } = await mkCell(p, { files: { "s.pl": PROBE_SYSV } });
            const r = await run(p, "", {
              cell: name,
              argv: ["perl", join(dir, "s.pl")],
              limits: { max_rss_bytes: 100 * MIB },
            });
            const escaped = r.out.includes("held 200 MiB") && r.job.reason !== "memory_limit";
            expect({ escaped, out: r.out, reason: r.job.reason }).toMatchObject({ escaped: false });
          },
        );
      });

      describe("logs", () => {
        test("truncate -s 0 /proc/self/fd/1 leaves the recorded log whole", async () => {
          const r = await run(p, "echo before; truncate -s 0 /proc/self/fd/1 2>/dev/null; echo after");
          expect(r.out).toBe("before\nafter\n");
        });

        test("reopening stdout with O_TRUNC (: > /dev/stdout) leaves the recorded log whole", async () => {
          const r = await run(
            p,
            "echo before; ( : > /dev/stdout ) 2>/dev/null; ( : > /proc/self/fd/1 ) 2>/dev/null; ( exec 3>/proc/self/fd/1 && echo reopened >&3 ) 2>/dev/null; echo after",
          );
          expect(r.out).toStartWith("before\n");
          expect(r.out).toEndWith("after\n");
          expect(r.out.replace("reopened\n", "")).toBe("before\nafter\n");
        });

        test("writing past the quota through a reopened stdout: the log ends at most at the quota", async () => {
          const r = await run(
            p,
            "( exec 3>/proc/self/fd/1 && head -c 20000 /dev/zero | tr '\\0' a >&3 ) 2>/dev/null; head -c 20000 /dev/zero | tr '\\0' b; head -c 20000 /dev/zero | tr '\\0' c >&2",
            { limits: { max_log_bytes: 1000 } },
          );
          const out = await p.client.logs(r.job.id, { stream: "stdout" });
          const err = await p.client.logs(r.job.id, { stream: "stderr" });
          expect(out.size + err.size).toBeLessThanOrEqual(1000);
          expect(out.size + err.size).toBeGreaterThan(0);
        });

        test("a job cannot read its own log files or list the jobs dir", async () => {
          const r = await run(
            p,
            `echo mine; cat ${p.state}/jobs/$PLANTER_JOB_ID/stdout; ls ${p.state}/jobs; echo done`,
          );
          expect(r.out).toBe("mine\ndone\n");
        });
      });

      describe("other cells", () => {
        test("a custom-dir cell's files are invisible from another cell's job (also while both run)", async () => {
          const a = await mkCell(p, { files: { "a.txt": "cell-a-file\n" } });
          const b = await mkCell(p, { files: { "b.txt": "cell-b-file\n" } });
          const [ra, rb] = await Promise.all([
            run(p, `cat a.txt; cat ${b.dir}/b.txt; ls ${b.dir}; echo x > ${b.dir}/w; sleep 0.3; echo done`, {
              cell: a.name,
            }),
            run(p, `cat b.txt; cat ${a.dir}/a.txt; ls ${a.dir}; echo x > ${a.dir}/w; sleep 0.3; echo done`, {
              cell: b.name,
            }),
          ]);
          expect(ra.out).toBe("cell-a-file\ndone\n");
          expect(rb.out).toBe("cell-b-file\ndone\n");
          expect(existsSync(join(a.dir, "w")) || existsSync(join(b.dir, "w"))).toBe(false);
        });

        test("another cell's dir shows in the job's mountinfo only where the job could otherwise see it", async () => {
          const a = await mkCell(p);
          const inTmp = await mkCell(p, { files: { "t.txt": "tmp-cell\n" } });
          const inHome = join(p.fakeHome, `proj-${mode}`);
          writeTree(inHome, { "h.txt": "home-cell\n" });
          giveToJobUser(inHome);
          await p.client.createCell({ name: `home-cell-${mode}`, dir: inHome });
          const vis = mkdtempSync("/var/tmp/pt-evis-");
          chmodSync(vis, 0o755);
          cleanups.push(() => rmSync(vis, { recursive: true, force: true }));
          writeTree(vis, { "v.txt": "visible-area-cell\n" });
          giveToJobUser(vis);
          await p.client.createCell({ name: `vis-cell-${mode}`, dir: vis });
          try {
            const r = await run(
              p,
              `cat ${inTmp.dir}/t.txt ${inHome}/h.txt ${vis}/v.txt 2>/dev/null; ls -A ${vis}; grep -c -e ${inTmp.dir} -e ${inHome} /proc/self/mountinfo; grep -c ${vis} /proc/self/mountinfo`,
              { cell: a.name },
            );
            // Hidden all three; only the one in a place the job could see needs (and names) a cover.
            expect(r.out).toBe("0\n1\n");
          } finally {
            await p.client.removeCell(`home-cell-${mode}`, true);
            await p.client.removeCell(`vis-cell-${mode}`, true);
            rmSync(inHome, { recursive: true, force: true });
          }
        });

        test("a managed cell's files and home are invisible from another cell's job", async () => {
          const m1 = await mkManaged(p);
          const m2 = await mkManaged(p);
          const w = await run(p, "echo managed-file > f; echo home-file > $HOME/h; echo $HOME", { cell: m1.name });
          const home1 = w.out.trim();
          expect(home1).toBe(join(p.state, "homes", m1.name));
          const r = await run(p, `cat ${m1.dir}/f ${home1}/h; ls ${p.state}/cells; ls ${p.state}/homes; echo done`, {
            cell: m2.name,
          });
          expect(r.out).toBe(`${m2.name}\n${m2.name}\ndone\n`);
        });

        test("another job's logs in the state dir are invisible", async () => {
          const m1 = await mkManaged(p);
          const w = await run(p, "echo other-job-log", { cell: m1.name });
          const r = await run(
            p,
            `cat ${p.state}/jobs/${w.job.id}/stdout; cat ${p.state}/planter.db >/dev/null && echo db; echo done`,
          );
          expect(r.out).toBe("done\n");
          expect(await text(p, w.job.id, "stdout")).toBe("other-job-log\n");
        });

        test("a custom-dir cell sees no managed cell, a managed cell no custom one", async () => {
          const c = await mkCell(p, { files: { "c.txt": "custom\n" } });
          const m = await mkManaged(p);
          await run(p, "echo managed > f", { cell: m.name });
          const fromCustom = await run(p, `cat ${m.dir}/f; echo done`, { cell: c.name });
          const fromManaged = await run(p, `cat ${c.dir}/c.txt; echo done`, { cell: m.name });
          expect([fromCustom.out, fromManaged.out]).toEqual(["done\n", "done\n"]);
        });
      });

      describe("fail-open", () => {
        test("the default mode is enforced: a job that names none runs under bwrap", async () => {
          expect((await p.client.version()).sandbox_mode).toBe("enforced");
          const r = await run(p, "true");
          expect(r.job.sandbox).toMatchObject({ mode: "enforced", backend: "bwrap", fallback: false });
        });

        test("a job may not lower its cell's mode (disabled, permissive), may keep or raise it", async () => {
          const jobs = (await p.client.listJobs({})).jobs.length;
          for (const m of ["disabled", "permissive"] as const) {
            const e = await refusal(p.client.createJob({ argv: ["true"], sandbox: { mode: m } }));
            expect([m, e.code]).toEqual([m, "E_BAD_REQUEST"]);
            expect(e.message).toContain("lower");
          }
          expect((await p.client.listJobs({})).jobs.length).toBe(jobs);
          expect((await run(p, "true", { mode: "enforced" })).job.exit_code).toBe(0);
        });

        test("a permissive cell's job may not ask for disabled; a disabled cell's job still never runs as root and may raise", async () => {
          const perm = await mkCell(p, { mode: "permissive" });
          expect(
            (await refusal(p.client.createJob({ cell: perm.name, argv: ["true"], sandbox: { mode: "disabled" } })))
              .code,
          ).toBe("E_BAD_REQUEST");
          const raised = await run(p, "true", { cell: perm.name, mode: "enforced" });
          expect(raised.job.sandbox.backend).toBe("bwrap");
          const off = await mkCell(p, { mode: "disabled" });
          const plain = await run(p, "id -u", { cell: off.name, anyBackend: true });
          expect([plain.job.sandbox.backend, plain.out]).toEqual(["none", `${JOB_UID}\n`]);
          const up = await run(p, "id -u", { cell: off.name, mode: "enforced" });
          expect(up.job.sandbox.backend).toBe("bwrap");
        });
      });

      describe("home", () => {
        test("HOME is the cell's own home, writable, kept across the cell's jobs", async () => {
          const m = await mkManaged(p);
          const a = await run(p, "echo $HOME; echo kept > $HOME/k", { cell: m.name });
          expect(a.out).toBe(`${join(p.state, "homes", m.name)}\n`);
          const b = await run(p, "cat $HOME/k", { cell: m.name });
          expect(b.out).toBe("kept\n");
        });

        test("homes are not shared between cells", async () => {
          const a = await mkManaged(p);
          const b = await mkManaged(p);
          await run(p, "echo only-a > $HOME/k", { cell: a.name });
          const r = await run(p, `cat $HOME/k; cat ${join(p.state, "homes", a.name)}/k; echo $HOME`, { cell: b.name });
          expect(r.out).toBe(`${join(p.state, "homes", b.name)}\n`);
        });

        test("npm works with the cell home (version, cache dir)", async () => {
          const m = await mkManaged(p);
          const r = await run(p, "npm --version && npm config get cache", {
            cell: m.name,
            env: { NO_UPDATE_NOTIFIER: "1", npm_config_update_notifier: "false" },
          });
          expect(r.job.exit_code).toBe(0);
          expect(r.out).toMatch(new RegExp(`^\\d+\\.\\d+\\.\\d+\\n${join(p.state, "homes", m.name)}/\\.npm\\n$`));
        });

        test("git init, global config and commit work in a job", async () => {
          const m = await mkManaged(p);
          const r = await run(
            p,
            "git config --global user.name job && git config --global user.email job@example.com && git init -q r && cd r && echo a > a && git add a && git commit -qm first && git log --format=%s",
            { cell: m.name },
          );
          expect([r.job.exit_code, r.out]).toEqual([0, "first\n"]);
        });
      });
    });
  }

  // ------------------------------------------------------------------ a home reached through a symlink

  for (const mode of ["root", "user"] as const) {
    describe(`planterd as ${mode}, with host bind mounts showing hidden paths under second names`, () => {
      let p: Planterd;
      const alias = { state: "", home: "", proc: "", tmp: "", ordinary: "" };
      let ordinarySrc = "";
      beforeAll(async () => {
        for (const k of Object.keys(alias) as (keyof typeof alias)[])
          alias[k] = scratchDir(`pt-ealias-${k}`, "/var/tmp");
        ordinarySrc = scratchDir("pt-eordinary", "/var/tmp");
        writeFileSync(join(ordinarySrc, "plain.txt"), "plain-host-file\n");
        chmodSync(join(ordinarySrc, "plain.txt"), 0o644);
        p = await startPlanterd(mode, {
          mounts: ({ home, fakeHome }) =>
            [
              `mount --bind ${home} ${alias.state}`,
              `mount --bind ${fakeHome} ${alias.home}`,
              `mount -t proc proc ${alias.proc}`,
              `mount --bind /tmp ${alias.tmp}`,
              `mount --bind ${ordinarySrc} ${alias.ordinary}`,
            ].join("\n"),
        });
      });
      afterAll(async () => {
        await p?.stop();
      });

      test("planter's state and socket dir, another cell and its home stay hidden under their second name", async () => {
        const other = await mkManaged(p);
        const w = await run(p, "echo other-cell-file > f.txt && echo other-home-file > $HOME/h.txt", {
          cell: other.name,
        });
        expect(w.job.exit_code).toBe(0);
        const rel = other.dir.slice(p.home.length);
        const r = await run(
          p,
          `cat ${alias.state}${rel}/f.txt ${alias.state}/state/homes/${other.name}/h.txt 2>/dev/null; find ${alias.state}/state ${alias.state}/run -mindepth 1 2>/dev/null; cat ${alias.ordinary}/plain.txt`,
        );
        expect(r.out).toBe("plain-host-file\n");
      });

      test("planterd's real home under a second name keeps its files and credentials hidden", async () => {
        const r = await run(
          p,
          `cat ${alias.home}/notes.txt ${alias.home}/.ssh/id_ed25519 ${alias.home}/.npmrc 2>/dev/null; ls -A ${alias.home}; echo done`,
        );
        expect(r.out).toBe("done\n");
      });

      test("a host /proc mounted elsewhere (a chroot's) shows no host process; the job's own /proc works", async () => {
        const r = await run(p, `ls -A ${alias.proc} | wc -l; cat /proc/self/comm`);
        expect(r.out).toBe("0\ncat\n");
      });

      test("the host's /tmp under a second name shows none of it (a deny path there, other cells, planterd's home)", async () => {
        const { name, dir } = await mkCell(p, { files: { "secret.txt": "aliased-deny-secret\n", "ok.txt": "ok\n" } });
        await p.client.removeCell(name, false);
        await p.client.createCell({ name, dir, sandbox: { policy: { deny: [join(dir, "secret.txt")] } } });
        // (Empty mount points of the covers inside may show: names, never contents.)
        const r = await run(
          p,
          `cat ${alias.tmp}${dir.slice(4)}/secret.txt 2>/dev/null; find ${alias.tmp} ! -type d; cat ok.txt`,
          {
            cell: name,
          },
        );
        expect(r.out).toBe("ok\n");
      });
    });

    describe(`planterd as ${mode}, its HOME a symlink to the real home`, () => {
      let p: Planterd;
      let link = "";
      beforeAll(async () => {
        p = await startPlanterd(mode, { homeVia: "symlink" });
        link = readdirSync("/var/tmp")
          .filter((n) => n.startsWith("pt-ehl-"))
          .map((n) => join("/var/tmp", n, "home"))
          .find((l) => existsSync(l) && realpathSync(l) === p.fakeHome) as string;
      });
      afterAll(async () => {
        await p?.stop();
      });

      const readAll = (h: string) => ["notes.txt", ...LISTED].map((f) => `cat ${join(h, f)} 2>/dev/null;`).join(" ");

      test("the real home stays hidden by both names, and jobs run", async () => {
        expect(link).toBeTruthy();
        expect(readFileSync(join(link, "notes.txt"), "utf8")).toBe("ordinary-home-file\n");
        const r = await run(p, `${readAll(p.fakeHome)} ${readAll(link)} ls -A ${p.fakeHome} 2>/dev/null; echo done`);
        expect([r.job.exit_code, r.out, r.err]).toEqual([0, "done\n", ""]);
      });

      test("read_only: [home] by its symlink or its real path shows the home but none of the listed credentials", async () => {
        for (const named of [link, p.fakeHome]) {
          const c = await mkCell(p, { policy: { read_only: [named] } });
          const r = await run(p, `${readAll(p.fakeHome)} echo done`, { cell: c.name });
          expect([r.job.exit_code, r.out]).toEqual([0, "ordinary-home-file\ndone\n"]);
        }
      });
    });
  }
}
