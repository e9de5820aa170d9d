/**
 * Targets (#18): `job ls --all-targets` over three targets — local (the socket), ssh (a real sshd
 * on 127.0.0.1 to a planterd run as a user made here) and https (planterd's TLS listener with a
 * token) — against the slowest of the three alone, interleaved; and a warm request through the ssh
 * ControlMaster's forward, in process, beside the same request on a local socket. Root only for
 * the ssh part (sshd logs a user in). The CLI is the compiled dist/planter (built when missing).
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { entryClient } from "../lib/cli/target.ts";
import { readClientConfig } from "../lib/targets/registry.ts";
import { baseEnv, cli, startDaemon } from "../test/harness.ts";
import { createUser, freePort, haveSshd, startSshd, startUserDaemon } from "../test/ssh-fixture.ts";
import { haveOpenssl, makePki, tokenFile } from "../test/tls-fixture.ts";
import { BINARY, ensureBinary, header, median, note, percentile, report } from "./common.ts";

const BENCH = "18 targets";
const ROUNDS = 15;
const WARM = 300;

export async function targetsBench(): Promise<void> {
  header(`${BENCH}: --all-targets job ls over local, ssh and https; a warm request over the ssh master`);
  if (!haveSshd || !haveOpenssl) {
    note("skipped: needs root, sshd and openssl");
    return;
  }
  const user = createUser("pt-bench");
  const sshd = await startSshd(user);
  const remote = await startUserDaemon(user);
  const pki = makePki();
  const token = "bench-token-0123456789abcdef0123";
  const serverToken = tokenFile(pki.dir, "server.token", token);
  const clientToken = tokenFile(pki.dir, "client.token", token);
  const port = freePort();
  const https = await startDaemon({
    config: `[authz]\nallowed_uids = [65534]\n[api.tcp]\naddress = "127.0.0.1:${port}"\ncert = "${pki.serverCert}"\nkey = "${pki.serverKey}"\n[[api.tcp.identities]]\nname = "bench"\nuid = 65534\ntoken_file = "${serverToken}"\n`,
  });
  const local = await startDaemon();
  const home = local.home;
  try {
    for (const c of [local.client, https.client, remote.client])
      for (let i = 0; i < 5; i++) await c.createJob({ cell: "default", argv: ["true"] });
    const add = async (...args: string[]) => {
      const r = await cli(home, ["target", "add", ...args]);
      if (r.code !== 0) throw new Error(r.stderr);
    };
    await add(
      "box",
      `ssh://${user.name}@127.0.0.1:${sshd.port}?socket=${remote.socket}`,
      "--identity",
      sshd.userKey,
      "--known-hosts",
      sshd.knownHosts,
    );
    await add("tls", `https://127.0.0.1:${port}`, "--ca", pki.ca, "--token-file", clientToken);
    // Warm: the ssh master is started once, as a user's first command would.
    for (const t of ["local", "box", "tls"]) await cli(home, ["--target", t, "job", "ls", "--json"]);

    // The compiled binary, as a user runs it (its chunks load per command: ssh and https code only when needed).
    await ensureBinary();
    const timed = async (args: string[]) => {
      const t0 = performance.now();
      const p = Bun.spawn([BINARY, ...args], { env: baseEnv(home), stdout: "pipe", stderr: "pipe" });
      const [, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      const ms = performance.now() - t0;
      if (code !== 0) throw new Error(`${args.join(" ")}: ${err}`);
      return ms;
    };
    const all: number[] = [];
    const single: Record<string, number[]> = { local: [], box: [], tls: [] };
    for (let i = 0; i < ROUNDS; i++) {
      all.push(await timed(["--all-targets", "job", "ls", "--json"]));
      for (const t of Object.keys(single)) single[t]?.push(await timed(["--target", t, "job", "ls", "--json"]));
    }
    const singles = Object.entries(single).map(([t, xs]) => [t, median(xs)] as const);
    const slowest = Math.max(...singles.map(([, m]) => m));
    note(`dist/planter: p50 per target ${singles.map(([t, m]) => `${t} ${m.toFixed(0)} ms`).join(", ")}`);
    note(`--all-targets job ls p50 ${median(all).toFixed(0)} ms`);
    report(BENCH, "--all-targets / slowest single target (p50)", median(all) / slowest, "x", "le", 1.5);

    // A warm request over the ssh forward, in process (the master and forward already up).
    const entry = readClientConfig(join(home, "config.toml"), true).targets.box;
    if (!entry) throw new Error("target box was not registered");
    const env = { ...process.env, PLANTER_HOME: home };
    const box = entryClient("box", entry, env);
    await box.version();
    const over = async (c: { version(): Promise<unknown> }) => {
      const out: number[] = [];
      for (let i = 0; i < WARM; i++) {
        const t0 = performance.now();
        await c.version();
        out.push(performance.now() - t0);
      }
      return out;
    };
    const direct = await over(local.client);
    const viaSsh = await over(box);
    note(
      `local socket GET /v1/version p50 ${median(direct).toFixed(2)} ms, p99 ${percentile(direct, 99).toFixed(2)} ms`,
    );
    note(`over ssh p99 ${percentile(viaSsh, 99).toFixed(2)} ms`);
    report(BENCH, "warm request over the ssh ControlMaster p50", median(viaSsh), "ms", "le", 5);
  } finally {
    Bun.spawnSync(["ssh", "-O", "exit", "-o", `ControlPath=${join(home, "targets", "box.ctl")}`, "x"], {
      stderr: "ignore",
    });
    await local.stop();
    await https.stop();
    await remote.stop();
    await sshd.stop();
    user.remove();
    for (const d of [local.home, https.home, pki.dir]) rmSync(d, { recursive: true, force: true });
  }
}
