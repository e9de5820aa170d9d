/**
 * Targets (#18): `planter --all job ls` over three targets — local (the socket), ssh (a real sshd
 * on 127.0.0.1 to a planterd run as a user made here) and https (planterd's TLS listener with a
 * token) — against the slowest of the three alone, interleaved; and a warm request through the ssh
 * ControlMaster's forward, in process, beside the same request on a local socket. Root only for
 * the ssh part (sshd logs a user in). The CLI is the compiled dist/planter (built when missing).
 */
import { rmSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { entryClient } from "../lib/cli/target.ts";
import { readClientConfig } from "../lib/targets/registry.ts";
import { baseEnv, cli, startDaemon } from "../test/harness.ts";
import { createUser, freePort, haveSshd, startSshd, startUserDaemon } from "../test/ssh-fixture.ts";
import { haveOpenssl, makePki, tokenFile } from "../test/tls-fixture.ts";
import { BINARY, ensureBinary, header, median, note, percentile, report } from "./common.ts";

const BENCH = "18 targets";
/** Rounds of the CLI comparison (PLANTER_BENCH_ROUNDS: more on a loaded machine). */
const ROUNDS = Number(process.env.PLANTER_BENCH_ROUNDS) || 15;
const WARM = 300;

export async function targetsBench(): Promise<void> {
  header(`${BENCH}: --all job ls over local, ssh and https; a warm request over the ssh master`);
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
    const timed = async (args: string[], bin = BINARY) => {
      const t0 = performance.now();
      const p = Bun.spawn([bin, ...args], { env: baseEnv(home), stdout: "pipe", stderr: "pipe" });
      const [, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      const ms = performance.now() - t0;
      if (code !== 0) throw new Error(`${args.join(" ")}: ${err}`);
      return ms;
    };
    await compareCli(timed);

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

/**
 * `--all job ls` against each target alone, interleaved. PLANTER_BENCH_BASE: another build of
 * planter (an older commit's dist/planter), run in the same rounds, so that a change is compared
 * under the same load; it is given --all-targets (a build before `planter --all` knows only that).
 */
async function compareCli(timed: (args: string[], bin?: string) => Promise<number>): Promise<void> {
  const base = process.env.PLANTER_BENCH_BASE;
  const bins = base ? [BINARY, base] : [BINARY];
  const all = new Map<string, number[]>(bins.map((b) => [b, []]));
  const single = new Map<string, Record<string, number[]>>(bins.map((b) => [b, { local: [], box: [], tls: [] }]));
  const loads: string[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    if (i % 5 === 0) loads.push(loadavg()[0]?.toFixed(1) ?? "?");
    for (const b of bins) {
      all.get(b)?.push(await timed([b === BINARY ? "--all" : "--all-targets", "job", "ls", "--json"], b));
      const per = single.get(b) ?? {};
      for (const t of Object.keys(per)) per[t]?.push(await timed(["--target", t, "job", "ls", "--json"], b));
    }
  }
  note(`load (1 min) during the rounds: ${loads.join(", ")}`);
  for (const b of bins) {
    const singles = Object.entries(single.get(b) ?? {}).map(([t, xs]) => [t, median(xs)] as const);
    const slowest = Math.max(...singles.map(([, m]) => m));
    const p50 = median(all.get(b) ?? []);
    const who = b === BINARY ? "dist/planter" : b;
    note(`${who}: p50 per target ${singles.map(([t, m]) => `${t} ${m.toFixed(0)} ms`).join(", ")}`);
    note(`${who}: --all job ls p50 ${p50.toFixed(0)} ms, ${(p50 / slowest).toFixed(2)}× the slowest single target`);
    if (b === BINARY) report(BENCH, "--all job ls / slowest single target (p50)", p50 / slowest, "x", "le", 1.5);
  }
}
