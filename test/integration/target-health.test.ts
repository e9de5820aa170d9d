/**
 * Target health as events: a client reports what it saw of its targets to its local planterd,
 * which stores each change as a `target.health` event under the reporter's uid. An https target
 * of two endpoints, each behind a proxy this test can make refuse, goes ok → degraded (one
 * endpoint refuses) → down (both) → ok; seeing the same again stores nothing. A peer of another
 * uid (a TCP identity) writes only in its own name space, cannot name another uid, and is held to
 * its budget of changes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { Client } from "../../lib/api/client.ts";
import { ROUTES } from "../../lib/api/routes.ts";
import { observe } from "../../lib/cli/health.ts";
import { baseEnv, cli, type DaemonHandle, startDaemon, waitFor } from "../harness.ts";
import { freePort } from "../ssh-fixture.ts";
import { haveOpenssl, makePki, type Switch, type TestPki, tcpSwitch, tokenFile } from "../tls-fixture.ts";

const asRoot = process.getuid?.() === 0;
const ME = process.getuid?.() ?? 0;
/** The TCP identity's uid: another than the reporter's (as root: nobody). */
const ID_UID = 65534;
const TOKEN = "a-token-for-the-hostile-identity-0123456789";

let pki: TestPki;
let d: DaemonHandle;
let port: number;
let p1: Switch;
let p2: Switch;
const env = { PLANTER_RETRY: "initial=20,max=40,total=100,timeout=3000", PLANTER_TARGET_TIMEOUT_MS: "8000" };
const planter = (...args: string[]) => cli(d.home, args, { env });

interface HealthEvent {
  subject: string;
  kind: string;
  data: {
    target: string;
    uid: number;
    from: string;
    to: string;
    endpoint?: string;
    error?: { code: string; message: string };
    refused?: number;
    identity?: string;
  };
}

async function healthEvents(): Promise<HealthEvent[]> {
  const r = await planter("events", "--kind", "target", "--json");
  expect(r.code).toBe(0);
  return r.stdout
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as HealthEvent);
}

/** One report over TCP as the identity (uid ID_UID). */
function hostile(body: unknown): Promise<Response> {
  return fetch(`https://127.0.0.1:${port}/v1/targets/health`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    tls: { ca: Bun.file(pki.ca) },
  } as RequestInit);
}

beforeAll(async () => {
  if (!haveOpenssl || !asRoot) return;
  pki = makePki("ci");
  tokenFile(pki.dir, "server.token", TOKEN);
  tokenFile(pki.dir, "client.token", TOKEN);
  port = freePort();
  d = await startDaemon({
    config: `
[authz]
allowed_uids = [${ID_UID}]
[api.tcp]
address = "127.0.0.1:${port}"
cert = "${pki.serverCert}"
key = "${pki.serverKey}"
[[api.tcp.identities]]
name = "other"
uid = ${ID_UID}
token_file = "${join(pki.dir, "server.token")}"
`,
  });
  p1 = await tcpSwitch(port);
  p2 = await tcpSwitch(port);
  const add = await planter(
    "target",
    "add",
    "ci",
    `${p1.url},${p2.url}`,
    "--ca",
    pki.ca,
    "--token-file",
    join(pki.dir, "client.token"),
  );
  expect(add.code).toBe(0);
}, 60_000);

afterAll(async () => {
  if (!haveOpenssl || !asRoot) return;
  await p1?.close();
  await p2?.close();
  await d?.stop();
  rmSync(pki.dir, { recursive: true, force: true });
});

// The identity over TCP must be another uid than the reporter's: as root, nobody.
describe.skipIf(!haveOpenssl || !asRoot)("target health as events", () => {
  test("ok → degraded (one endpoint refuses) → down (both) → ok, each change one event of the reporter's; the same again none", async () => {
    const check = async (want: string) => {
      const r = await planter("target", "check", "ci", "--json");
      expect((JSON.parse(r.stdout) as { health: string }).health).toBe(want);
      return r;
    };
    await check("ok");
    expect(await healthEvents()).toEqual([]);

    await p1.refuse();
    expect((await check("degraded")).code).toBe(0);
    await p2.refuse();
    // A fan-out read sees it down (partial: local answered).
    const ls = await planter("job", "ls", "--targets", "local,ci", "--json");
    expect(ls.code).toBe(5);
    expect((JSON.parse(ls.stdout) as { errors: { target: string }[] }).errors.map((e) => e.target)).toEqual(["ci"]);
    await p1.pass();
    await p2.pass();
    await check("ok");

    const events = await healthEvents();
    expect(events.map((e) => [e.subject, e.data.target, e.data.uid, e.data.from, e.data.to])).toEqual([
      [`target/${ME}/ci`, "ci", ME, "ok", "degraded"],
      [`target/${ME}/ci`, "ci", ME, "degraded", "down"],
      [`target/${ME}/ci`, "ci", ME, "down", "ok"],
    ]);
    const [degraded, down] = events;
    expect(degraded?.data.endpoint).toBe(p1.url);
    expect(degraded?.data.error?.message).toContain(`endpoint ${p1.url}`);
    expect(down?.data.error?.code).toBe("E_DAEMON_UNREACHABLE");

    // Seen again: nothing sent (the client's record says ok); and with that record gone, planterd records nothing twice.
    await check("ok");
    rmSync(join(d.home, "targets", "health.json"));
    await check("ok");
    expect(await healthEvents()).toHaveLength(3);
  }, 60_000);

  test("one way there (an ssh forward): an answer only after a retry is degraded, one at the first try ok", async () => {
    const retry = { timeoutMs: 3000, retries: 2, backoffMs: 10 };
    let n = 0;
    const flaky = new Client(d.socket, undefined, [], {
      prepare: async () => {
        if (n++ === 0) throw new Error("the forward was not up yet");
      },
      retry,
    });
    const steady = new Client(d.socket, undefined, [], { prepare: async () => undefined, retry });
    for (const c of [flaky, steady]) await c.call(ROUTES.version, {});
    expect(flaky.trouble()?.error).toContain("the forward was not up yet");
    expect(steady.trouble()).toBeNull();
    const e = baseEnv(d.home);
    const answered = (target: string) => ({ target, ok: true as const, value: null, ms: 1 });
    expect(observe(answered("box"), flaky, e)).toMatchObject({ target: "box", health: "degraded", complete: true });
    expect(observe(answered("box"), steady, e)).toEqual({ target: "box", health: "ok", complete: true });
    // One request to a target of several endpoints does not see them all; local is never observed.
    expect(observe(answered("ci"), steady, e)).toEqual({ target: "ci", health: "ok", complete: false });
    expect(observe(answered("local"), flaky, e)).toBeNull();
  });

  test("another uid writes only its own: its report is under its uid, it cannot name another, bad input changes nothing", async () => {
    const before = (await healthEvents()).length;
    const r = await hostile({ target: "ci", health: "down", error: { code: "E_UNAVAILABLE", message: "forged" } });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ recorded: true, target: "ci", from: "ok", to: "down" });
    for (const body of [
      { target: "ci", health: "ok", uid: ME },
      { target: "ci", health: "down", subject: `target/${ME}/ci` },
      { target: "../x", health: "down" },
      { target: "ci", health: "gone" },
      { target: "ci", health: "down", error: { code: "nope", message: "x" } },
      { target: "ci", health: "down", endpoint: "x".repeat(600) },
    ]) {
      const bad = await hostile(body);
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: { code: string } }).error.code).toBe("E_BAD_REQUEST");
    }
    const events = await healthEvents();
    expect(events).toHaveLength(before + 1);
    const forged = events.at(-1);
    expect(forged?.subject).toBe(`target/${ID_UID}/ci`);
    expect(forged?.data).toMatchObject({ uid: ID_UID, from: "ok", to: "down", identity: "other" });
    // The reporter's own target is as it was: its last change still down → ok.
    expect(events.filter((e) => e.subject === `target/${ME}/ci`).at(-1)?.data.to).toBe("ok");
  }, 30_000);

  test("the rate is bounded: a peer flapping its health gets a burst of events, then 429s; others are not held up", async () => {
    const before = (await healthEvents()).filter((e) => e.data.uid === ID_UID).length;
    const t0 = Date.now();
    const statuses: number[] = [];
    let recorded = 0;
    for (let i = 0; i < 60; i++) {
      const r = await hostile({ target: "flap", health: i % 2 ? "ok" : "down" });
      statuses.push(r.status);
      if (r.status === 429) expect(((await r.json()) as { error: { code: string } }).error.code).toBe("E_RATE_LIMITED");
      // A 200 after a refusal may be "no change" (the refused change was never recorded).
      else if (((await r.json()) as { recorded: boolean }).recorded) recorded++;
    }
    const elapsed = Date.now() - t0;
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    // The burst (20, one already spent by the forged report) and one more per 3 s elapsed.
    expect(recorded).toBeGreaterThanOrEqual(15);
    expect(recorded).toBeLessThanOrEqual(19 + Math.ceil(elapsed / 3000));
    const mine = (await healthEvents()).filter((e) => e.data.uid === ID_UID);
    expect(mine.length - before).toBe(recorded);
    // The reporter's budget is its own: its change is recorded at once.
    await p1.refuse();
    const r = await planter("target", "check", "ci", "--json");
    expect((JSON.parse(r.stdout) as { health: string }).health).toBe("degraded");
    await p1.pass();
    const last = (await healthEvents()).filter((e) => e.data.uid === ME).at(-1);
    expect([last?.data.from, last?.data.to]).toEqual(["ok", "degraded"]);
    // Once the budget has room again, the next change says how many were refused meanwhile.
    const next = await waitFor(
      async () => {
        const r = await hostile({ target: "flap2", health: "down" });
        if (r.status === 200) return (await r.json()) as { recorded: boolean };
        await r.arrayBuffer();
        return null;
      },
      "a change recorded again",
      10_000,
    );
    expect(next.recorded).toBe(true);
    const again = (await healthEvents()).filter((e) => e.data.uid === ID_UID).at(-1);
    expect(again?.data.target).toBe("flap2");
    expect(again?.data.refused).toBeGreaterThan(0);
  }, 60_000);
});
