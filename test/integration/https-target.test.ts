/**
 * planterd's TLS listener on 127.0.0.1 and https:// targets: a token or a client certificate is an
 * identity of the same authz model as a socket peer (and shows in the audit); nothing is served
 * without one; planterd refuses to listen without identities, beyond loopback unless told, or with
 * a token file others can read; the client refuses a loose token file and a certificate its CA did
 * not sign. A test CA is made here with openssl.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { entryClient } from "../../lib/cli/target.ts";
import { readClientConfig } from "../../lib/targets/registry.ts";
import { baseEnv, cli, type DaemonHandle, hogTcp, PLANTER, startDaemon, tempHome, waitFor } from "../harness.ts";
import { freePort } from "../ssh-fixture.ts";
import { haveOpenssl, makePki, type TestPki, tokenFile } from "../tls-fixture.ts";

const asRoot = process.getuid?.() === 0;
/** The identity's uid: an unprivileged one (never 0 over TCP). As root, nobody, allowed by [authz]. */
const ID_UID = asRoot ? 65534 : (process.getuid?.() ?? 1000);
const TOKEN = "t0ken-for-the-ci-identity-0123456789";
const OUTSIDER_TOKEN = "another-token-for-a-uid-not-allowed";

let pki: TestPki;
let d: DaemonHandle;
let port: number;
let home: string;

const tcpConfig = (p: number, extra = "") => `
[authz]
allowed_uids = [${ID_UID}]
[api.tcp]
address = "127.0.0.1:${p}"
cert = "${pki.serverCert}"
key = "${pki.serverKey}"
client_ca = "${pki.ca}"
${extra}
[[api.tcp.identities]]
name = "ci"
uid = ${ID_UID}
token_file = "${join(pki.dir, "server-ci.token")}"
[[api.tcp.identities]]
name = "cert-ci"
uid = ${ID_UID}
cert_cn = "ci"
[[api.tcp.identities]]
name = "outsider"
uid = 1
token_file = "${join(pki.dir, "server-outsider.token")}"
`;

const planter = (...args: string[]) => cli(home, args);

beforeAll(async () => {
  if (!haveOpenssl) return;
  pki = makePki("ci");
  tokenFile(pki.dir, "server-ci.token", TOKEN);
  tokenFile(pki.dir, "server-outsider.token", OUTSIDER_TOKEN);
  tokenFile(pki.dir, "ci.token", TOKEN);
  tokenFile(pki.dir, "outsider.token", OUTSIDER_TOKEN);
  tokenFile(pki.dir, "wrong.token", "not-the-token-planterd-knows-at-all");
  port = freePort();
  d = await startDaemon({ config: tcpConfig(port) });
  home = d.home;
}, 60_000);

afterAll(async () => {
  if (!haveOpenssl) return;
  await d?.stop();
  rmSync(pki.dir, { recursive: true, force: true });
});

describe.skipIf(!haveOpenssl)("https:// targets against planterd's TLS listener", () => {
  test("a token is an identity: check, run, logs, job ls; the audit names the identity and its uid", async () => {
    expect(d.stderr()).toContain(`also on https://127.0.0.1:${port} (TLS; identities ci (uid ${ID_UID})`);
    const url = `https://127.0.0.1:${port}`;
    const add = await planter("target", "add", "ci", url, "--ca", pki.ca, "--token-file", join(pki.dir, "ci.token"));
    expect(add.code).toBe(0);
    const check = await planter("target", "check", "ci", "--json");
    expect(check.stderr).toBe("");
    expect((JSON.parse(check.stdout) as { health: string }).health).toBe("ok");
    const run = await planter("--target", "ci", "run", "--", "sh", "-c", "echo via tcp; id -u");
    expect(run.stderr).toBe("");
    expect(run.stdout).toBe(`via tcp\n${ID_UID}\n`);
    expect(run.code).toBe(0);
    const jobs = JSON.parse((await planter("--target", "ci", "job", "ls", "--json")).stdout) as { id: string }[];
    expect(jobs).toHaveLength(1);
    const id = jobs[0]?.id as string;
    expect((await planter("--target", "ci", "logs", id)).stdout).toBe(`via tcp\n${ID_UID}\n`);
    // No descriptor goes over TCP: the file route says so (the CLI above read the bytes).
    const fd = await fetch(`${url}/v1/jobs/${id}/logs/fd`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      tls: { ca: readFileSync(pki.ca, "utf8") },
    });
    expect([fd.status, ((await fd.json()) as { error: { message: string } }).error.message]).toEqual([
      400,
      "a file descriptor is passed only on planterd's Unix socket, on Linux",
    ]);
    const events = JSON.parse(
      `[${(await planter("events", "--kind", "job.created", "--json")).stdout.trim().split("\n").join(",")}]`,
    ) as { subject: string; data: Record<string, unknown> }[];
    const created = events.find((e) => e.subject === `job/${id}`);
    expect(created?.data).toMatchObject({ peer_uid: ID_UID, peer_pid: null, identity: "ci", via: "tcp" });
  }, 60_000);

  test("two endpoints, one refusing: reads go on through the other; target check says degraded, naming it", async () => {
    const down = `https://127.0.0.1:${freePort()}`;
    const url = `https://127.0.0.1:${port}`;
    await planter("target", "add", "pair", `${down},${url}`, "--ca", pki.ca, "--token-file", join(pki.dir, "ci.token"));
    for (let i = 0; i < 3; i++) {
      const r = await planter("--target", "pair", "job", "ls", "--json");
      expect([r.code, r.stderr]).toEqual([0, ""]);
    }
    const check = await planter("target", "check", "pair", "--json");
    expect(check.code).toBe(0);
    const c = JSON.parse(check.stdout) as { health: string; problems: string[] };
    expect(c.health).toBe("degraded");
    expect(c.problems.join("\n")).toContain(`endpoint ${down}: cannot reach target pair`);
  }, 30_000);

  test("a client certificate from the CA is an identity; one from another CA is not", async () => {
    const url = `https://127.0.0.1:${port}`;
    await planter("target", "add", "cert", url, "--ca", pki.ca, "--cert", pki.clientCert, "--key", pki.clientKey);
    const ok = await planter("--target", "cert", "job", "ls", "--json");
    expect(ok.stderr).toBe("");
    expect(JSON.parse(ok.stdout)).toHaveLength(1);
    await planter(
      "target",
      "add",
      "stranger",
      url,
      "--ca",
      pki.ca,
      "--cert",
      pki.strangerCert,
      "--key",
      pki.strangerKey,
    );
    const no = await planter("--target", "stranger", "job", "ls");
    expect(no.code).toBe(1);
    expect(no.stderr).toContain("no credentials: a bearer token or a client certificate is required over TCP");
  }, 30_000);

  test("refused over TCP as over the socket: a wrong token, no credentials, a uid the policy refuses", async () => {
    const url = `https://127.0.0.1:${port}`;
    await planter("target", "add", "wrong", url, "--ca", pki.ca, "--token-file", join(pki.dir, "wrong.token"));
    await planter("target", "add", "none", url, "--ca", pki.ca);
    await planter("target", "add", "outsider", url, "--ca", pki.ca, "--token-file", join(pki.dir, "outsider.token"));
    const cases: [string, string][] = [
      ["wrong", "the bearer token is not one planterd knows"],
      ["none", "no credentials"],
      ["outsider", "uid 1 is not allowed to use planterd"],
    ];
    for (const [name, text] of cases) {
      const r = await planter("--target", name, "run", "--", "true");
      expect([name, r.code]).toEqual([name, 1]);
      expect(r.stderr).toContain(text);
    }
    // Only the one job of the first test was ever created.
    expect((await d.client.listJobs({})).jobs).toHaveLength(1);
  }, 30_000);

  test("the client refuses a server certificate its CA did not sign (exit 4) and a token file others can read", async () => {
    const url = `https://127.0.0.1:${port}`;
    await planter("target", "add", "otherca", url, "--ca", pki.otherCa, "--token-file", join(pki.dir, "ci.token"));
    const r = await planter("--target", "otherca", "job", "ls");
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("its TLS certificate does not check out");
    const loose = tokenFile(pki.dir, "loose.token", TOKEN);
    await planter("target", "add", "loose", url, "--ca", pki.ca, "--token-file", loose);
    Bun.spawnSync(["chmod", "644", loose]);
    const l = await planter("--target", "loose", "job", "ls");
    expect(l.code).toBe(1);
    expect(l.stderr).toContain(`refusing the token file ${loose}: mode 644 lets others read it`);
  }, 30_000);
  test("a terminal job attached over wss://, with the token: its output comes back", async () => {
    const entry = readClientConfig(join(home, "config.toml"), true).targets.ci;
    if (!entry) throw new Error("target ci is registered by the first test");
    const c = entryClient("ci", entry, { ...process.env, PLANTER_HOME: home });
    const job = await c.createJob({
      cell: "default",
      argv: ["sh", "-c", "while :; do echo over-wss; sleep 0.2; done"],
      tty: { cols: 80, rows: 24 },
    });
    const ws = await c.attach(job.id, {});
    let text = "";
    const seen: { first: { job?: { id: string } } | null } = { first: null };
    ws.onmessage = (m) => {
      if (typeof m.data === "string") seen.first ??= JSON.parse(m.data);
      else text += new TextDecoder().decode(m.data as ArrayBuffer);
    };
    try {
      await waitFor(() => text.includes("over-wss"), "the job's output over the WebSocket");
      expect(seen.first?.job?.id).toBe(job.id);
    } finally {
      ws.close();
      await c.killJob(job.id, { force: true });
    }
  }, 30_000);

  test("planter mcp --target: MCP over the TLS listener as the token's identity, under the MCP ceiling", async () => {
    const mcp = new McpClient({ name: "planter-test-https", version: "1" });
    await mcp.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [PLANTER, "mcp", "--target", "ci"],
        env: baseEnv(home),
        stderr: "pipe",
      }),
    );
    try {
      const listed = (await mcp.callTool({ name: "job_list", arguments: { limit: 5 } })) as {
        structuredContent?: { jobs: unknown[] };
      };
      expect(Array.isArray(listed.structuredContent?.jobs)).toBe(true);
      // This daemon runs jobs unsandboxed: the MCP ceiling (min_mode enforced) refuses them, over TLS too.
      const run = (await mcp.callTool({ name: "run", arguments: { command: "true" } })) as {
        isError?: boolean;
        content: { text?: string }[];
      };
      expect(run.isError).toBe(true);
      expect(run.content[0]?.text).toContain("beyond the MCP ceiling");
      // The identity is in the audit of what MCP did: its refused cell, say.
      const cell = (await mcp.callTool({
        name: "cell_create",
        arguments: { name: "via-mcp-tls", mode: "enforced" },
      })) as {
        isError?: boolean;
      };
      expect(cell.isError).toBeFalsy();
      const created = [];
      for await (const e of d.client.events({ kind: ["cell.created"], subject: "cell/via-mcp-tls" })) created.push(e);
      expect(created[0]?.data).toMatchObject({ via: "mcp", mcp_transport: "tls", identity: "ci", peer_uid: ID_UID });
    } finally {
      await mcp.close();
    }
  }, 60_000);
});

describe.skipIf(!haveOpenssl || !asRoot)("the TLS listener under a flood of another local user's connections", () => {
  test("connections that never finish a handshake hold at most that uid's slots and close after header_timeout_ms; the identity is served meanwhile", async () => {
    const p2 = freePort();
    await using d2 = await startDaemon({
      config: `[api]\nmax_connections_per_uid = 8\nheader_timeout_ms = 1500\n${tcpConfig(p2)}`,
    });
    const h = await hogTcp(p2, 40, 8);
    try {
      // Beyond its 8 slots, uid 12345's connections are closed at once, before any TLS.
      expect(h.open).toBe(8);
      // The identity's client (here of root's uid) gets in while they are held.
      const url = `https://127.0.0.1:${p2}`;
      const add = await cli(d2.home, [
        "target",
        "add",
        "flood",
        url,
        "--ca",
        pki.ca,
        "--token-file",
        join(pki.dir, "ci.token"),
      ]);
      expect(add.code).toBe(0);
      const ls = await cli(d2.home, ["--target", "flood", "job", "ls", "--json"]);
      expect([ls.code, ls.stderr]).toEqual([0, ""]);
      // A handshake that never comes is bounded like a request's headers.
      expect(await h.allClosed(10_000)).toBe(true);
    } finally {
      await h.release();
    }
  }, 60_000);
});

describe.skipIf(!haveOpenssl)("planterd refuses to listen on TCP", () => {
  const start = async (config: string) => {
    const h = tempHome();
    writeFileSync(join(h, "config.toml"), `${config}\n[sandbox]\nmode = "disabled"\n[agents]\ntmux_dirs = []\n`);
    const proc = Bun.spawn([process.execPath, PLANTER, "daemon"], {
      env: baseEnv(h),
      stdin: "ignore",
      stdout: "ignore",
      stderr: "pipe",
    });
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    rmSync(h, { recursive: true, force: true });
    return { code, stderr };
  };
  const base = (address: string, more = "") =>
    `[api.tcp]\naddress = "${address}"\ncert = "${pki.serverCert}"\nkey = "${pki.serverKey}"\n${more}`;
  test("without identities, beyond loopback unless allow_remote, with uid 0, with a token file others can read", async () => {
    const loose = tokenFile(pki.dir, "loose-server.token", TOKEN, 0o644);
    const cases: [string, string][] = [
      [base("127.0.0.1:1"), "names no identities: planterd does not listen on TCP without authentication"],
      [
        base(
          "0.0.0.0:1",
          `[[api.tcp.identities]]\nname = "a"\nuid = ${ID_UID}\ntoken_file = "${join(pki.dir, "server-ci.token")}"\n`,
        ),
        "is not a loopback address",
      ],
      [
        base(
          "127.0.0.1:1",
          `[[api.tcp.identities]]\nname = "r"\nuid = 0\ntoken_file = "${join(pki.dir, "server-ci.token")}"\n`,
        ),
        "root is never an identity over TCP",
      ],
      [
        base("127.0.0.1:1", `[[api.tcp.identities]]\nname = "l"\nuid = ${ID_UID}\ntoken_file = "${loose}"\n`),
        "mode 644",
      ],
      [base("127.0.0.1:1", `[[api.tcp.identities]]\nname = "c"\nuid = ${ID_UID}\ncert_cn = "x"\n`), "has no client_ca"],
    ];
    for (const [config, text] of cases) {
      const r = await start(config);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(text);
    }
  }, 60_000);
});
