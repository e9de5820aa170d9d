/**
 * A real OpenSSH server for the ssh target tests: `sshd -D` on 127.0.0.1 on a free port, with a
 * host key and a user key made here, its own sshd_config (no system sshd or its keys touched), and
 * a test user created here and removed after, whose planterd (run through setpriv from a bundle)
 * the target reaches. Root only (sshd logs users in; setpriv drops to the test user).
 */
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../lib/api/client.ts";
import { baseEnv, bundled, PLANTER, waitFor } from "./harness.ts";

export const SSHD = "/usr/sbin/sshd";
/** Whether this machine can run the ssh tests: root, sshd and ssh-keygen present. */
export const haveSshd =
  process.getuid?.() === 0 && existsSync(SSHD) && Bun.which("ssh") !== null && Bun.which("ssh-keygen") !== null;

/** A free TCP port on 127.0.0.1 (bound then released). */
export function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: exit ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  remove(): void;
}

/** A user made for this test (shell /bin/sh, no home), removed by `remove()`. */
export function createUser(prefix = "pt-ssh"): TestUser {
  const name = `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
  run([
    "useradd",
    "--password",
    "*",
    "--no-create-home",
    "--home-dir",
    "/nonexistent",
    "--shell",
    "/bin/sh",
    "--user-group",
    name,
  ]);
  const uid = Number(run(["id", "-u", name]).trim());
  const gid = Number(run(["id", "-g", name]).trim());
  return {
    name,
    uid,
    gid,
    remove: () => {
      Bun.spawnSync(["pkill", "-KILL", "-u", String(uid)]);
      Bun.spawnSync(["userdel", name]);
    },
  };
}

export interface Sshd {
  dir: string;
  port: number;
  /** The client's private key (0600, root's). */
  userKey: string;
  /** A known_hosts file holding the server's key for [127.0.0.1]:port. */
  knownHosts: string;
  /** The server's public host key line. */
  hostKeyPub: string;
  proc: Subprocess;
  log: () => string;
  stop(): Promise<void>;
}

/** Start sshd for `user` (key login only, stream-local forwarding on). */
export async function startSshd(user: TestUser): Promise<Sshd> {
  const dir = mkdtempSync("/tmp/pt-sshd-");
  chmodSync(dir, 0o755);
  const keygen = (file: string) =>
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "planter-test", "-f", file]);
  keygen(join(dir, "host_key"));
  keygen(join(dir, "user_key"));
  const authorized = join(dir, "authorized_keys");
  writeFileSync(authorized, await Bun.file(join(dir, "user_key.pub")).text());
  chmodSync(authorized, 0o644);
  const port = freePort();
  const config = join(dir, "sshd_config");
  writeFileSync(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${authorized}`,
      `AllowUsers ${user.name}`,
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      // The keys live under /tmp (sticky, world-writable), which StrictModes would refuse.
      "StrictModes no",
      "AllowStreamLocalForwarding yes",
      "X11Forwarding no",
      "PermitTTY no",
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
  );
  // "*": no password, yet not locked ("!" is, and sshd without PAM refuses a locked account a key login).
  // The privilege separation directory sshd requires (empty, root's; Debian's package makes it at boot).
  if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755 });
  let log = "";
  const proc = Bun.spawn([SSHD, "-D", "-e", "-f", config], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  (async () => {
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) log += new TextDecoder().decode(chunk);
  })();
  const hostKeyPub = (await Bun.file(join(dir, "host_key.pub")).text()).trim();
  const knownHosts = join(dir, "known_hosts");
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKeyPub}\n`);
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`sshd exited ${proc.exitCode}: ${log}`);
    try {
      const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      s.end();
      return true;
    } catch {
      return false;
    }
  }, "sshd to listen");
  return {
    dir,
    port,
    userKey: join(dir, "user_key"),
    knownHosts,
    hostKeyPub,
    proc,
    log: () => log,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface UserDaemon {
  home: string;
  socket: string;
  /** A client of the test's own (root), trusting the user's uid. */
  client: Client;
  proc: Subprocess;
  stderr: () => string;
  stop(): Promise<void>;
}

/** planterd as `user` in a home of its own (jobs unsandboxed: this is about reaching it). */
export async function startUserDaemon(user: TestUser, config = ""): Promise<UserDaemon> {
  const home = mkdtempSync("/tmp/pt-sshu-");
  chownSync(home, user.uid, user.gid);
  chmodSync(home, 0o700);
  const cfg = join(home, "config.toml");
  writeFileSync(cfg, `${config}\n[sandbox]\nmode = "disabled"\n[agents]\ntmux_dirs = []\n`);
  chownSync(cfg, user.uid, user.gid);
  let err = "";
  const proc = Bun.spawn(
    [
      "setpriv",
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      "--clear-groups",
      process.execPath,
      bundled(PLANTER),
      "daemon",
    ],
    {
      env: baseEnv(home, { HOME: home, PLANTER_MODE: "user" }),
      cwd: "/",
      stdin: "ignore",
      stdout: "ignore",
      stderr: "pipe",
    },
  );
  (async () => {
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) err += new TextDecoder().decode(chunk);
  })();
  const socket = join(home, "run", "planterd.sock");
  const client = new Client(socket, undefined, [user.uid]);
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`planterd as ${user.name} exited ${proc.exitCode}: ${err}`);
      return client.health().then(
        (h) => h.ok,
        () => false,
      );
    },
    `planterd as ${user.name} to answer`,
    20_000,
  );
  return {
    home,
    socket,
    client,
    proc,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill("SIGTERM");
        await proc.exited;
      }
      rmSync(home, { recursive: true, force: true });
    },
  };
}
