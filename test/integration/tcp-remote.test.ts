/**
 * `[api.tcp] allow_remote` beyond loopback, on a network this test makes and removes: two network
 * namespaces joined by a veth pair made inside them (never in the host's namespace), with private
 * addresses (10.250.18.0/30, fd00:18::/64) that exist only there. planterd's TLS listener runs in
 * one on 10.250.18.1; a client in the other reaches it with a token and with a client
 * certificate, and without credentials is refused; without allow_remote planterd refuses to start
 * on that address (IPv4 and IPv6). The host's own addresses and routes are compared before and
 * after. Needs root and `ip netns`; skipped, saying why, without them.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { baseEnv, type DaemonHandle, PLANTER, startDaemon, tempHome } from "../harness.ts";
import { haveOpenssl, makePki, type TestPki, tokenFile } from "../tls-fixture.ts";

const tag = `${process.pid % 100_000}`;
const SRV = `pt18-srv-${tag}`;
const CLI = `pt18-cli-${tag}`;
const V4 = { srv: "10.250.18.1", cli: "10.250.18.2", prefix: 30 };
const V6 = { srv: "fd00:18::1", cli: "fd00:18::2", prefix: 64 };
const PORT = 8443;
const ID_UID = 65534;
const TOKEN = "a-token-for-the-far-identity-0123456789";

function run(argv: string[]): { code: number; out: string } {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: `${r.stdout.toString()}${r.stderr.toString()}` };
}

/** The host's own addresses and routes (the test compares them before and after). */
const hostNet = () =>
  ["addr", "route", "-6 route", "link"].map((w) => run(["ip", "-o", ...w.split(" ")]).out).join("\n");

/** Why this test cannot run here, or null. */
function unavailable(): string | null {
  if (process.getuid?.() !== 0) return "needs root (ip netns add)";
  if (!Bun.which("ip")) return "no `ip` (iproute2)";
  if (!haveOpenssl) return "no openssl (the test CA)";
  const r = run(["ip", "netns", "list"]);
  if (r.code !== 0) return `\`ip netns\` is unavailable: ${r.out.trim()}`;
  return null;
}
const why = unavailable();

/** Make the two namespaces and the veth between them; null when it worked, else what failed (and nothing is left). */
function makeNet(): string | null {
  const steps = [
    ["ip", "netns", "add", SRV],
    ["ip", "netns", "add", CLI],
    // Both ends made inside the namespaces: the host's namespace never holds them.
    ["ip", "-n", SRV, "link", "add", "pt18s", "type", "veth", "peer", "name", "pt18c", "netns", CLI],
    ["ip", "-n", SRV, "addr", "add", `${V4.srv}/${V4.prefix}`, "dev", "pt18s"],
    ["ip", "-n", SRV, "addr", "add", `${V6.srv}/${V6.prefix}`, "dev", "pt18s", "nodad"],
    ["ip", "-n", CLI, "addr", "add", `${V4.cli}/${V4.prefix}`, "dev", "pt18c"],
    ["ip", "-n", CLI, "addr", "add", `${V6.cli}/${V6.prefix}`, "dev", "pt18c", "nodad"],
    ...[SRV, CLI].flatMap((ns) => [
      ["ip", "-n", ns, "link", "set", "lo", "up"],
      ["ip", "-n", ns, "link", "set", ns === SRV ? "pt18s" : "pt18c", "up"],
    ]),
  ];
  for (const s of steps) {
    const r = run(s);
    if (r.code !== 0) {
      dropNet();
      return `${s.join(" ")}: ${r.out.trim()}`;
    }
  }
  return null;
}

/** Remove both namespaces (the veth goes with them); harmless when they are gone. */
function dropNet(): void {
  for (const ns of [SRV, CLI]) run(["ip", "netns", "del", ns]);
}

let pki: TestPki;
let d: DaemonHandle | undefined;
let clientHome: string;
let before = "";
let netError: string | null = null;

/** The CLI in the client's namespace. */
async function far(...args: string[]) {
  const proc = Bun.spawn(["ip", "netns", "exec", CLI, process.execPath, PLANTER, ...args], {
    env: baseEnv(clientHome),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

const tcp = (address: string, allowRemote: boolean) => `
[authz]
allowed_uids = [${ID_UID}]
[api.tcp]
address = "${address}"
cert = "${pki.serverCert}"
key = "${pki.serverKey}"
client_ca = "${pki.ca}"
${allowRemote ? "allow_remote = true" : ""}
[[api.tcp.identities]]
name = "far"
uid = ${ID_UID}
token_file = "${join(pki.dir, "server.token")}"
[[api.tcp.identities]]
name = "far-cert"
uid = ${ID_UID}
cert_cn = "ci"
`;

beforeAll(async () => {
  if (why) return;
  before = hostNet();
  netError = makeNet();
  if (netError) return;
  pki = makePki("ci", [V4.srv, V6.srv]);
  tokenFile(pki.dir, "server.token", TOKEN);
  tokenFile(pki.dir, "client.token", TOKEN);
  d = await startDaemon({ config: tcp(`${V4.srv}:${PORT}`, true), prefix: ["ip", "netns", "exec", SRV] });
  clientHome = tempHome("pt-far");
}, 60_000);

afterAll(async () => {
  if (why) return;
  try {
    await d?.stop();
  } finally {
    dropNet();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
    if (d) rmSync(d.home, { recursive: true, force: true });
    if (clientHome) rmSync(clientHome, { recursive: true, force: true });
  }
  // Whatever happened, the namespaces are gone, the host's network holds nothing of the test's,
  // and every address, route and link it had is still there (others may come and go meanwhile).
  const after = hostNet();
  expect(after).not.toMatch(/pt18|10\.250\.18\.|fd00:18:/);
  const still = new Set(after.split("\n"));
  expect(before.split("\n").filter((l) => !still.has(l))).toEqual([]);
  expect(run(["ip", "netns", "list"]).out).not.toContain("pt18-");
}, 30_000);

describe.skipIf(why !== null)(
  `[api.tcp] allow_remote on a network of namespaces${why ? ` (skipped: ${why})` : ""}`,
  () => {
    test("the namespaces exist only for the test; the host's namespace has neither end of the veth", () => {
      expect(netError).toBeNull();
      expect(run(["ip", "link", "show", "pt18s"]).code).not.toBe(0);
      expect(run(["ip", "-n", CLI, "-o", "addr"]).out).toContain(V4.cli);
      // The client cannot reach the server's address from the host: it is not the host's.
      expect(run(["ip", "-o", "addr"]).out).not.toContain(V4.srv);
    });

    test("a client in the other namespace reaches planterd's listener on 10.250.18.1 with a token and with a certificate", async () => {
      expect(d?.stderr()).toContain(`also on https://${V4.srv}:${PORT}`);
      const url = `https://${V4.srv}:${PORT}`;
      const add = async (...args: string[]) => expect((await far("target", "add", ...args)).code).toBe(0);
      await add("tok", url, "--ca", pki.ca, "--token-file", join(pki.dir, "client.token"));
      await add("cert", url, "--ca", pki.ca, "--cert", pki.clientCert, "--key", pki.clientKey);
      await add("none", url, "--ca", pki.ca);
      const check = await far("target", "check", "tok", "--json");
      expect(check.stderr).toBe("");
      expect((JSON.parse(check.stdout) as { health: string }).health).toBe("ok");
      const ran = await far("--target", "tok", "run", "--", "id", "-u");
      expect([ran.code, ran.stdout, ran.stderr]).toEqual([0, `${ID_UID}\n`, ""]);
      const jobs = await far("--target", "cert", "job", "ls", "--json");
      expect(jobs.stderr).toBe("");
      expect((JSON.parse(jobs.stdout) as { argv: string[] }[]).map((j) => j.argv)).toEqual([["id", "-u"]]);
      // The audit names the identity each came as.
      const created = (await d?.client.events({ kind: ["job.created"] })) ?? [];
      const ev: { data: Record<string, unknown> }[] = [];
      for await (const e of created) ev.push(e);
      expect(ev.map((e) => [e.data.identity, e.data.via])).toEqual([["far", "tcp"]]);
      // Without credentials: refused.
      const none = await far("--target", "none", "job", "ls");
      expect(none.code).toBe(1);
      expect(none.stderr).toContain("no credentials: a bearer token or a client certificate is required over TCP");
    }, 60_000);

    test("without allow_remote planterd does not start on the namespace's address (IPv4 and IPv6)", async () => {
      for (const address of [`${V4.srv}:${PORT + 1}`, `[${V6.srv}]:${PORT + 1}`]) {
        const h = tempHome("pt-far-no");
        writeFileSync(
          join(h, "config.toml"),
          `${tcp(address, false)}\n[sandbox]\nmode = "disabled"\n[agents]\ntmux_dirs = []\n`,
        );
        const proc = Bun.spawn(["ip", "netns", "exec", SRV, process.execPath, PLANTER, "daemon"], {
          env: baseEnv(h),
          stdin: "ignore",
          stdout: "ignore",
          stderr: "pipe",
        });
        const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
        rmSync(h, { recursive: true, force: true });
        expect(code).not.toBe(0);
        expect(stderr).toContain(`[api.tcp] address ${address} is not a loopback address`);
        expect(stderr).toContain("set allow_remote = true");
      }
      // With allow_remote the IPv6 address is taken too.
      const h = tempHome("pt-far-v6");
      const v6 = await startDaemon({
        home: h,
        config: tcp(`[${V6.srv}]:${PORT + 2}`, true),
        prefix: ["ip", "netns", "exec", SRV],
      });
      try {
        expect(v6.stderr()).toContain(`also on https://[${V6.srv}]:${PORT + 2}`);
        const url = `https://[${V6.srv}]:${PORT + 2}`;
        expect(
          (await far("target", "add", "six", url, "--ca", pki.ca, "--token-file", join(pki.dir, "client.token"))).code,
        ).toBe(0);
        const ls = await far("--target", "six", "job", "ls", "--json");
        expect([ls.code, ls.stderr, ls.stdout.trim()]).toEqual([0, "", "[]"]);
      } finally {
        await v6.stop();
        rmSync(h, { recursive: true, force: true });
      }
    }, 60_000);
  },
);
