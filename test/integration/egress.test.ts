/**
 * Network allow lists for real (issue #15): planterd as root with bwrap, origins on loopback only
 * (HTTP on 127.0.0.1, HTTPS with a CA made here), names from the config's `[network.hosts]`, jobs
 * whose tools reach them through the proxy planterd serves in their own network namespace.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { cleanup, type DaemonHandle, raw, startDaemon, tempHome, waitFor } from "../harness.ts";

const work = mkdtempSync("/tmp/pt-egress-");

/** A CA and a certificate for `names` signed by it (EC keys: fast). */
function testCerts(names: string[]): { ca: string; cert: string; key: string } {
  const f = (n: string) => join(work, n);
  const ssl = (...args: string[]) => {
    const r = Bun.spawnSync(["openssl", ...args], { stderr: "pipe", stdout: "pipe" });
    if (r.exitCode !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr.toString()}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  ssl("req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-subj", "/CN=planter test CA", "-days", "2");
  ssl("req", ...ec, "-keyout", f("leaf.key"), "-out", f("leaf.csr"), "-subj", `/CN=${names[0]}`);
  writeFileSync(f("leaf.ext"), `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}\n`);
  ssl(
    "x509",
    "-req",
    "-in",
    f("leaf.csr"),
    "-CA",
    f("ca.pem"),
    "-CAkey",
    f("ca.key"),
    "-CAcreateserial",
    "-out",
    f("leaf.pem"),
    "-days",
    "2",
    "-extfile",
    f("leaf.ext"),
  );
  return {
    ca: readFileSync(f("ca.pem"), "utf8"),
    cert: readFileSync(f("leaf.pem"), "utf8"),
    key: readFileSync(f("leaf.key"), "utf8"),
  };
}

let d: DaemonHandle;
let sandboxed = false;
let http: ReturnType<typeof Bun.serve>;
let other: ReturnType<typeof Bun.serve>;
let https: ReturnType<typeof Bun.serve>;
let certs: ReturnType<typeof testCerts>;
const repo = join(work, "repo.git");
/** A real wheel pip installs (made with Python's zipfile); null where Debian's pip is missing. */
let wheel: string | null = null;
const havePip = Bun.spawnSync(["/usr/bin/python3", "-m", "pip", "--version"], { stderr: "ignore" }).exitCode === 0;

/** An origin that says who it is and what it was asked. */
const answer = (name: string) => (req: Request) => {
  const u = new URL(req.url);
  if (u.pathname.startsWith("/git/")) {
    const file = join(repo, u.pathname.slice(5));
    try {
      return new Response(readFileSync(file));
    } catch {
      return new Response("no", { status: 404 });
    }
  }
  // A package index (PEP 503) and its one wheel, for pip.
  if (u.pathname === "/simple/planter-fake/") {
    return new Response(
      '<!DOCTYPE html><html><body><a href="/wheels/planter_fake-1.2.3-py3-none-any.whl">planter_fake-1.2.3-py3-none-any.whl</a></body></html>',
      { headers: { "content-type": "text/html" } },
    );
  }
  if (u.pathname === "/wheels/planter_fake-1.2.3-py3-none-any.whl" && wheel) return new Response(readFileSync(wheel));
  // A registry's package document, for npm.
  if (u.pathname === "/npm/planter-fake") {
    return Response.json({
      name: "planter-fake",
      "dist-tags": { latest: "1.2.3" },
      versions: { "1.2.3": { name: "planter-fake", version: "1.2.3", dist: { tarball: "http://api.test/x.tgz" } } },
    });
  }
  return new Response(`${name} ${req.method} ${u.pathname} host=${req.headers.get("host")}\n`);
};

beforeAll(async () => {
  certs = testCerts(["secure.test"]);
  http = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: answer("HTTP") });
  other = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: answer("OTHER") });
  https = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: certs.cert, key: certs.key },
    fetch: answer("TLS"),
  });
  // A repository served the dumb way (plain files), for git over http through the proxy.
  const src = join(work, "src");
  mkdirSync(src);
  const git = (cwd: string, ...args: string[]) =>
    Bun.spawnSync(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args], {
      cwd,
      env: { PATH: "/usr/bin:/bin", HOME: work, GIT_CONFIG_NOSYSTEM: "1" },
    });
  writeFileSync(join(src, "README"), "from the test origin\n");
  git(src, "init", "-q");
  git(src, "add", "README");
  git(src, "commit", "-qm", "one");
  git(work, "clone", "-q", "--bare", src, repo);
  git(repo, "update-server-info");
  if (havePip) {
    wheel = join(work, "planter_fake-1.2.3-py3-none-any.whl");
    const made = Bun.spawnSync([
      "/usr/bin/python3",
      "-c",
      `import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("planter_fake/__init__.py", "VALUE = 'from the wheel'\\n")
    d = "planter_fake-1.2.3.dist-info/"
    z.writestr(d + "METADATA", "Metadata-Version: 2.1\\nName: planter-fake\\nVersion: 1.2.3\\n")
    z.writestr(d + "WHEEL", "Wheel-Version: 1.0\\nGenerator: planter-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
    z.writestr(d + "RECORD", "planter_fake/__init__.py,,\\n" + d + "METADATA,,\\n" + d + "WHEEL,,\\n" + d + "RECORD,,\\n")`,
      wheel,
    ]);
    if (made.exitCode !== 0) throw new Error(`cannot make the test wheel: ${made.stderr.toString()}`);
  }
  const hosts = ["api.test", "other.test", "loop.test", "secure.test", "deny.pkg.test", "a.pkg.test", "ceiling.test"];
  d = await startDaemon({
    home: tempHome("pt-eg"),
    config: [
      "[sandbox]",
      'mode = "enforced"',
      "[network]",
      'deny = ["ceiling.test"]',
      "[network.hosts]",
      ...hosts.map((h) => `"${h}" = ["127.0.0.1"]`),
      "",
    ].join("\n"),
  });
  const ready = (await raw(d.socket, "GET", "/v1/ready")).json as { sandbox: { backend: string; ok: boolean } };
  sandboxed = ready.sandbox.backend === "bwrap" && ready.sandbox.ok;
  if (!sandboxed) return;
  const cell = (name: string, network: unknown) =>
    d.client.createCell({ name, sandbox: { policy: { network } } } as never);
  await cell("web", {
    allow: ["api.test", "secure.test", "*.pkg.test", `other.test:${other.port}`, "ceiling.test"],
    deny: ["deny.pkg.test"],
    allow_local: true,
  });
  await cell("strict", { allow: ["loop.test"] });
});

afterAll(async () => {
  await d?.stop();
  http?.stop(true);
  other?.stop(true);
  https?.stop(true);
  if (d) cleanup(d.home);
  rmSync(work, { recursive: true, force: true });
});

/** Run `script` in `cell`; its end, stdout and stderr. */
async function run(cell: string, script: string, extra: Record<string, unknown> = {}) {
  const job = await d.client.createJob({ cell, argv: ["/bin/sh", "-c", script], ...extra } as never);
  const end = (await d.client.waitJob(job.id, 60_000)).job as Job;
  const dir = join(d.home, "state", "jobs", job.id);
  return {
    job: end,
    out: readFileSync(join(dir, "stdout"), "utf8"),
    err: readFileSync(join(dir, "stderr"), "utf8"),
  };
}

/** The job's `net.connect` records, once `n` are written (they are batched). */
async function records(id: string, n: number) {
  return await waitFor(async () => {
    const found: Record<string, unknown>[] = [];
    for await (const e of d.client.events({ limit: 10_000 })) {
      const ev = e as { kind: string; subject: string; data: Record<string, unknown> };
      if (ev.kind === "net.connect" && ev.subject === `job/${id}`) found.push(ev.data);
    }
    return found.length >= n ? found : null;
  }, `${n} net.connect records of job ${id}`);
}

/**
 * The job's `job.egress_failed` event's data, once it is written. Asked for by kind and subject:
 * this daemon has written thousands of events by then (net.connect records, more of them the
 * slower the host), and a read from the oldest stops at its limit before the newest.
 */
function egressFailed(id: string) {
  return waitFor(async () => {
    for await (const e of d.client.events({ kind: ["job.egress_failed"], subject: `job/${id}` })) {
      return (e as { data: Record<string, unknown> }).data;
    }
    return null;
  }, `job.egress_failed of ${id}`);
}

describe("network allow lists (bwrap, planterd as root)", () => {
  test("the job's tools find the proxy; an allowed name answers, an unlisted one is refused with a reason", async () => {
    if (!sandboxed) return;
    const r = await run(
      "web",
      `env | grep -i _proxy | sort
curl -sS http://api.test:${http.port}/hello; echo "rc=$?"
curl -sS http://nowhere.test:${http.port}/; echo "rc=$?"
curl -sSf http://nowhere.test:${http.port}/ 2>&1; echo "rc=$?"`,
    );
    expect(r.job.state).toBe("exited");
    expect(r.out).toBe(
      [
        "ALL_PROXY=socks5h://127.0.0.1:3128",
        "HTTPS_PROXY=http://127.0.0.1:3128",
        "HTTP_PROXY=http://127.0.0.1:3128",
        "NODE_USE_ENV_PROXY=1",
        "NO_PROXY=localhost,127.0.0.1,::1",
        "all_proxy=socks5h://127.0.0.1:3128",
        "http_proxy=http://127.0.0.1:3128",
        "https_proxy=http://127.0.0.1:3128",
        "no_proxy=localhost,127.0.0.1,::1",
        `HTTP GET /hello host=api.test:${http.port}`,
        "rc=0",
        `planter: nowhere.test:${http.port} is not in the allow list`,
        "rc=0",
        "curl: (22) The requested URL returned error: 403",
        "rc=22",
        "",
      ].join("\n"),
    );
    const recs = await records(r.job.id, 3);
    expect(recs[0]).toMatchObject({
      job: r.job.id,
      host: "api.test",
      port: http.port,
      decision: "allow",
      rule: "api.test",
      address: "127.0.0.1",
      protocol: "http",
    });
    expect(recs[0]?.bytes_in).toBeGreaterThan(0);
    expect(recs[1]).toMatchObject({ host: "nowhere.test", decision: "deny", rule: "unlisted", protocol: "http" });
  });

  test("HTTPS through CONNECT with the origin's own certificate; a denied name's tunnel is refused", async () => {
    if (!sandboxed) return;
    const r = await run(
      "web",
      `printf '%s' "$CA" > /tmp/ca.pem
curl -sS --cacert /tmp/ca.pem https://secure.test:${https.port}/tls; echo "rc=$?"
curl -sS --cacert /tmp/ca.pem https://deny.pkg.test:${https.port}/ 2>&1; echo "rc=$?"`,
      { env: { CA: certs.ca } },
    );
    expect(r.out).toBe(
      [
        `TLS GET /tls host=secure.test:${https.port}`,
        "rc=0",
        "curl: (56) CONNECT tunnel failed, response 403",
        "rc=56",
        "",
      ].join("\n"),
    );
    // A tunnel's record is written when it closes: the refused one may come first.
    const recs = await records(r.job.id, 2);
    expect(recs.find((x) => x.host === "secure.test")).toMatchObject({ decision: "allow", protocol: "connect" });
    expect(recs.find((x) => x.host === "deny.pkg.test")).toMatchObject({ decision: "deny", rule: "deny.pkg.test" });
  });

  test("wildcards, ports and the config's ceiling: *.pkg.test, other.test on its port only, ceiling.test denied", async () => {
    if (!sandboxed) return;
    const r = await run(
      "web",
      `curl -sS http://a.pkg.test:${http.port}/w; echo "rc=$?"
curl -sS http://pkg.test:${http.port}/apex; echo "rc=$?"
curl -sS http://other.test:${other.port}/p; echo "rc=$?"
curl -sS http://other.test:${http.port}/p; echo "rc=$?"
curl -sS http://ceiling.test:${http.port}/c; echo "rc=$?"
curl -sS https://other.test:${https.port}/ 2>&1; echo "rc=$?"`,
    );
    expect(r.out).toBe(
      [
        `HTTP GET /w host=a.pkg.test:${http.port}`,
        "rc=0",
        `planter: pkg.test:${http.port} is not in the allow list`,
        "rc=0",
        `OTHER GET /p host=other.test:${other.port}`,
        "rc=0",
        `planter: other.test:${http.port}: "other.test:${other.port}" allows another port only`,
        "rc=0",
        `planter: ceiling.test:${http.port} is denied by "ceiling.test"`,
        "rc=0",
        // CONNECT to the port the entry does not name.
        "curl: (56) CONNECT tunnel failed, response 403",
        "rc=56",
        "",
      ].join("\n"),
    );
  });

  test("bypasses fail closed: IP literals in every spelling, [::1], a direct connection, SOCKS to an unlisted name", async () => {
    if (!sandboxed) return;
    const p = http.port;
    const forms = [`2130706433:${p}`, `0x7f.1:${p}`, `0177.0.0.1:${p}`, `127.1:${p}`, `127.0.0.1:${p}`, `[::1]:${p}`];
    // NO_PROXY sends loopback literals direct, where nothing answers; through the proxy itself
    // each is refused (an address passes only by an IP rule).
    const code = (f: string, via: string) => `curl -s -o /dev/null -w '%{http_code}\\n' ${via} http://${f}/`;
    const r = await run(
      "web",
      `${forms.map((f) => code(f, "")).join("\n")}
${forms.map((f) => code(f, "--noproxy '' -x http://127.0.0.1:3128")).join("\n")}
curl -sS --noproxy '*' --max-time 20 http://127.0.0.1:${p}/ 2>&1; echo "direct rc=$?"
env -u http_proxy -u HTTP_PROXY -u ALL_PROXY -u all_proxy curl -sS --max-time 20 http://api.test:${p}/ 2>&1; echo "unset rc=$?"
curl -sS -x socks5h://127.0.0.1:3128 http://nowhere.test:${p}/ 2>&1; echo "socks rc=$?"
curl -sS -x socks5h://127.0.0.1:3128 http://api.test:${p}/socks; echo "socks rc=$?"`,
    );
    const lines = r.out.split("\n");
    expect(lines.slice(0, forms.length)).toEqual(forms.map(() => "000"));
    expect(lines.slice(forms.length, 2 * forms.length)).toEqual(forms.map(() => "403"));
    expect(r.out).toContain(`Failed to connect to 127.0.0.1 port ${p}`);
    expect(r.out).toContain("direct rc=7\n");
    // Without the variables there is no route, and no resolver: the name does not resolve.
    expect(r.out).toMatch(/unset rc=(6|7)\n/);
    expect(r.out).toContain("socks rc=97\n");
    expect(r.out).toContain(`HTTP GET /socks host=api.test:${p}\nsocks rc=0\n`);
  });

  test("a name that resolves to loopback is refused without allow_local; a job narrows, never widens", async () => {
    if (!sandboxed) return;
    const strict = await run("strict", `curl -sS http://loop.test:${http.port}/; echo "rc=$?"`);
    expect(strict.out).toBe(
      `planter: loop.test:${http.port} resolved to 127.0.0.1, a loopback address (allow_local is off)\nrc=0\n`,
    );
    const recs = await records(strict.job.id, 1);
    expect(recs[0]).toMatchObject({ host: "loop.test", decision: "deny", rule: "local:loopback" });
    // Narrowed to api.test: secure.test (the cell's) is refused for this job.
    const narrowed = await run(
      "web",
      `curl -sS http://api.test:${http.port}/n; echo "rc=$?"; curl -sS http://secure.test:${http.port}/n; echo "rc=$?"`,
      { sandbox: { policy: { network: { allow: ["api.test"] } } } },
    );
    expect(narrowed.out).toBe(
      `HTTP GET /n host=api.test:${http.port}\nrc=0\nplanter: secure.test:${http.port} is not in the allow list\nrc=0\n`,
    );
    const wider = await raw(
      d.socket,
      "POST",
      "/v1/jobs",
      JSON.stringify({ cell: "strict", argv: ["true"], sandbox: { policy: { network: { allow: ["api.test"] } } } }),
    );
    expect(wider.status).toBe(400);
    expect(wider.json.error?.message).toContain("widens its cell's");
    const host = await raw(
      d.socket,
      "POST",
      "/v1/jobs",
      JSON.stringify({ cell: "strict", argv: ["true"], sandbox: { policy: { network: "host" } } }),
    );
    expect(host.status).toBe(400);
  });

  test("git clone over http, Bun's fetch and npm go through the proxy", async () => {
    if (!sandboxed) return;
    const npm = Bun.which("npm");
    const r = await run(
      "web",
      `cd /tmp && git clone -q http://api.test:${http.port}/git/ repo 2>&1 && cat repo/README
${process.execPath} -e 'const r = await fetch("http://api.test:${http.port}/fetch"); console.log(r.status, await r.text())' 2>&1
${npm ? `npm view planter-fake version --registry http://api.test:${http.port}/npm/ 2>&1` : "echo 1.2.3"}`,
    );
    expect(r.out).toBe(`from the test origin\n200 HTTP GET /fetch host=api.test:${http.port}\n\n1.2.3\n`);
  });

  test("pip installs from an index through the proxy (Debian's pip, the job's own home for its cache)", async () => {
    if (!sandboxed || !havePip) return;
    const r = await run(
      "web",
      `/usr/bin/python3 -m pip install -q --disable-pip-version-check --no-deps --target /tmp/t --trusted-host api.test --index-url http://api.test:${http.port}/simple/ planter-fake 2>&1; echo "rc=$?"
PYTHONPATH=/tmp/t /usr/bin/python3 -c 'import planter_fake; print(planter_fake.VALUE)'`,
    );
    expect(r.out).toBe("rc=0\nfrom the wheel\n");
    const recs = await records(r.job.id, 2);
    expect(recs.every((x) => x.host === "api.test" && x.decision === "allow")).toBe(true);
  });

  test("a terminal job reaches its proxy too", async () => {
    if (!sandboxed) return;
    const job = await d.client.createJob({
      cell: "web",
      argv: ["/bin/sh", "-c", `curl -sS http://api.test:${http.port}/tty`],
      tty: { cols: 100, rows: 10 },
    } as never);
    const end = (await d.client.waitJob(job.id, 60_000)).job as Job;
    expect(end.exit_code).toBe(0);
    // A terminal job's log is its holder's: its end is recorded once the log is whole.
    expect(readFileSync(join(d.home, "state", "jobs", job.id, "stdout"), "utf8")).toContain(
      `HTTP GET /tty host=api.test:${http.port}`,
    );
  });

  test("after a planterd restart the adopted job's proxy is made again", async () => {
    if (!sandboxed) return;
    const cellDir = (await d.client.getCell("web")).dir;
    rmSync(join(cellDir, "go"), { force: true });
    const job = await d.client.createJob({
      cell: "web",
      argv: [
        "/bin/sh",
        "-c",
        `curl -sS http://api.test:${http.port}/before; while [ ! -e go ]; do sleep 0.05; done
i=0; until curl -sS http://api.test:${http.port}/after 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05; done`,
      ],
    } as never);
    const out = join(d.home, "state", "jobs", job.id, "stdout");
    await waitFor(() => readFileSync(out, "utf8").includes("/before"), "the job's first answer");
    await d.kill9();
    d = await startDaemon({ home: d.home });
    writeFileSync(join(cellDir, "go"), "");
    const end = (await d.client.waitJob(job.id, 60_000)).job as Job;
    expect(end.exit_code).toBe(0);
    expect(readFileSync(out, "utf8")).toBe(
      `HTTP GET /before host=api.test:${http.port}\nHTTP GET /after host=api.test:${http.port}\n`,
    );
  });

  test("a job that took the proxy's port while planterd was down keeps only its own loopback; the event says why", async () => {
    if (!sandboxed) return;
    const cellDir = (await d.client.getCell("web")).dir;
    for (const f of ["down", "up"]) rmSync(join(cellDir, f), { force: true });
    const listen = `${process.execPath} -e 'require("net").createServer((c) => c.end("HTTP/1.0 200 OK\\r\\n\\r\\nmine\\n")).listen(3128, "127.0.0.1", () => console.log("bound"))'`;
    const job = await d.client.createJob({
      cell: "web",
      argv: [
        "/bin/sh",
        "-c",
        `echo started; while [ ! -e down ]; do sleep 0.05; done; ${listen} &
while [ ! -e up ]; do sleep 0.05; done; curl -sS --max-time 20 http://api.test:${http.port}/x; kill $!`,
      ],
    } as never);
    const out = join(d.home, "state", "jobs", job.id, "stdout");
    await waitFor(() => readFileSync(out, "utf8").includes("started"), "the job to start");
    await d.kill9();
    writeFileSync(join(cellDir, "down"), "");
    await waitFor(() => readFileSync(out, "utf8").includes("bound"), "the job's own listener on 3128");
    d = await startDaemon({ home: d.home });
    const failed = await egressFailed(job.id);
    expect(failed.stopped).toBe(false);
    expect(String(failed.message)).toContain("EADDRINUSE");
    writeFileSync(join(cellDir, "up"), "");
    const end = (await d.client.waitJob(job.id, 60_000)).job as Job;
    expect(end.state).not.toBe("running");
    // Its curl met its own listener: nothing of the host answered.
    expect(readFileSync(out, "utf8")).toBe("started\nbound\nmine\n");
  });

  test("a job whose proxy cannot be made is stopped before its program runs (sandbox_error, the helper's reason)", async () => {
    if (!sandboxed) return;
    // A real fault, no hook of planter's: planterd runs in a mount namespace of its own where
    // util-linux's nsenter (what enters the job's namespace to make the listeners) fails.
    const fake = join(work, "nsenter-fails");
    writeFileSync(
      fake,
      "#!/bin/sh\necho 'nsenter: reassociate to namespace failed: Operation not permitted' >&2\nexit 1\n",
      {
        mode: 0o755,
      },
    );
    const cellDir = (await d.client.getCell("strict")).dir;
    const marker = join(cellDir, "ran");
    rmSync(marker, { force: true });
    await d.stop();
    const mountNs = [
      "unshare",
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      'mount --bind "$0" /usr/bin/nsenter && exec "$@"',
      fake,
    ];
    d = await startDaemon({ home: d.home, prefix: mountNs });
    try {
      const job = await d.client.createJob({ cell: "strict", argv: ["/bin/sh", "-c", "touch ran; echo ran"] } as never);
      const end = (await d.client.waitJob(job.id, 60_000)).job as Job;
      expect({ state: end.state, reason: end.reason }).toEqual({ state: "killed", reason: "sandbox_error" });
      expect(existsSync(marker)).toBe(false);
      expect(readFileSync(join(d.home, "state", "jobs", job.id, "stdout"), "utf8")).toBe("");
      const failed = await egressFailed(job.id);
      expect(failed.stopped).toBe(true);
      expect(String(failed.message)).toContain("reassociate to namespace failed");
    } finally {
      await d.stop();
      d = await startDaemon({ home: d.home });
    }
  });
});
