/**
 * The egress wiring's pieces (lib/net/listen.ts, lib/jobs/egress.ts, the bwrap plan's pipes):
 * what refuses, and the per-job cap on records. The whole path runs in
 * test/integration/egress.test.ts and the escape suite.
 */
import { describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PendingEvent } from "../../lib/daemon/context.ts";
import { Egress, RECORDS_PER_SECOND, resolverOf } from "../../lib/jobs/egress.ts";
import { pipe, readChildPid, takeListeners } from "../../lib/net/listen.ts";
import type { ConnectRecord } from "../../lib/net/proxy.ts";
import type { PlanRequest } from "../../lib/sandbox/backend.ts";
import { bwrapPlan, renderArgs } from "../../lib/sandbox/bwrap.ts";
import { openInputs } from "../../lib/sandbox/inputs.ts";
import { complete } from "../../lib/sandbox/policy.ts";
import { selfArgv } from "../../lib/self.ts";

const linux = process.platform === "linux";

describe.skipIf(!linux)("the listeners' set-up refuses", () => {
  const helper = selfArgv("net-listen");

  test("a process in planterd's own network namespace (it would listen on the host)", async () => {
    await expect(takeListeners(process.pid, null, helper)).rejects.toThrow(
      `the job's egress proxy could not be set up: process ${process.pid} is in planterd's network namespace`,
    );
  });

  test("a sandbox that is gone, or whose pid another process holds now", async () => {
    const p = Bun.spawn(["true"]);
    await p.exited;
    await expect(takeListeners(p.pid, null, helper)).rejects.toThrow(`the sandbox (pid ${p.pid}) is gone`);
    // A live pid with another start time is another process.
    await expect(takeListeners(process.pid, "1", helper)).rejects.toThrow(`the sandbox (pid ${process.pid}) is gone`);
  });

  test("the info pipe: the child's pid, or null when it ends or says something else", async () => {
    const said = async (text: string | null) => {
      const [r, w] = pipe();
      if (text !== null) writeSync(w, text);
      closeSync(w);
      return readChildPid(r);
    };
    expect(await said('{\n    "child-pid": 4242,\n    "net-namespace": 1\n}\n')).toBe(4242);
    expect(await said(null)).toBeNull();
    expect(await said('{"pid": 1}')).toBeNull();
  });
});

describe("the bwrap plan of a list job", () => {
  const req = (over: Partial<PlanRequest>): PlanRequest => ({
    argv: ["curl", "x"],
    env: {},
    cwd: "/work/cell",
    cellDir: "/work/cell",
    policy: complete({ network: { allow: ["a.test"] } }),
    protect: [],
    home: "/work/cell",
    hiddenHomes: [],
    credentialHomes: [],
    otherCells: [],
    workspaceReadOnly: [],
    tmpBytes: 1 << 20,
    jobDir: "/j",
    scratch: "/s",
    identity: null,
    ...over,
  });

  test("reports its pid and waits on pipes to planterd (every bwrap plan does: its gate, lib/sandbox/gate.ts)", () => {
    const text = (r: PlanRequest) => renderArgs(bwrapPlan(r, "bwrap", () => null)).join(" ");
    const gate =
      "--info-fd 6=<pipe to planterd> --block-fd 7=<pipe to planterd> --sync-fd 8=<pipe to planterd> --clearenv";
    expect(text(req({ egress: true }))).toContain("--unshare-net");
    expect(text(req({ egress: true }))).toContain(gate);
    expect(text(req({}))).toContain(gate);
    expect(text(req({ egress: true, policy: complete({ network: "host" }) }))).toContain(gate);
  });

  test("openInputs hands the program one end of each pipe and planterd the other", () => {
    const dir = mkdtempSync(join(tmpdir(), "pt-in-"));
    try {
      const ends: Partial<Record<"info" | "block", number>> = {};
      const fds = openInputs([{ pipe: "info" }, { pipe: "block" }], dir, null, ends);
      expect(fds.length).toBe(2);
      expect(ends.info).toBeNumber();
      expect(ends.block).toBeNumber();
      for (const fd of [...fds, ends.info as number, ends.block as number]) closeSync(fd);
      expect(() => openInputs([{ pipe: "info" }], dir)).toThrow("nobody to hold its other end");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("records", () => {
  const rec = (host: string): ConnectRecord => ({
    host,
    port: 80,
    decision: "deny",
    rule: "unlisted",
    protocol: "http",
    bytes_out: 0,
    bytes_in: 0,
    duration_ms: 0,
  });

  test(`at most ${RECORDS_PER_SECOND} per job per second; the rest counted in one net.suppressed`, () => {
    const written: PendingEvent[] = [];
    const egress = new Egress({ write: (fn) => fn(written), hosts: {}, helper: [] });
    const served = { proxy: { close: async () => {} }, servers: [], window: 0, inWindow: 0, suppressed: 0 };
    // The job's served state as `serve` makes it (no listener needed to count records).
    (egress as unknown as { served: Map<string, unknown> }).served.set("j-1", served);
    const record = (egress as unknown as { record: (id: string, s: unknown, r: ConnectRecord) => void }).record.bind(
      egress,
    );
    const now = Date.now;
    Date.now = () => 1_000_000;
    try {
      for (let i = 0; i < RECORDS_PER_SECOND + 70; i++) record("j-1", served, rec(`h${i}.test`));
    } finally {
      Date.now = now;
    }
    egress.stop("j-1");
    egress.flush();
    const kinds = written.map((e) => e.kind);
    expect(kinds.filter((k) => k === "net.connect").length).toBe(RECORDS_PER_SECOND);
    expect(written.at(-1)).toEqual({
      kind: "net.suppressed",
      subject: "job/j-1",
      data: { job: "j-1", count: 70, per_second: RECORDS_PER_SECOND },
    });
    expect(written[0]?.data).toMatchObject({ job: "j-1", host: "h0.test" });
  });

  test("the config's names answer before DNS, lower-cased", async () => {
    const resolve = resolverOf({ "api.test": ["127.0.0.1", "::1"] });
    expect(await resolve("API.test")).toEqual([{ address: "127.0.0.1" }, { address: "::1" }]);
  });
});

describe("Seatbelt's proxy on a host loopback port", () => {
  test("serves the job's list on the port it picked, saves it, and listens there again after a restart", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pt-eg-"));
    const origin = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("origin\n") });
    const written: PendingEvent[] = [];
    const rules = { allow: ["127.0.0.1"], deny: [], allow_local: false };
    const ask = (port: number, target: string) =>
      fetch(`http://${target}/`, { proxy: `http://127.0.0.1:${port}` } as RequestInit).then(
        async (r) => `${r.status} ${await r.text()}`,
      );
    try {
      const one = new Egress({ write: (fn) => fn(written), hosts: {}, helper: [] });
      const port = await one.listenLocal("j-1", rules, dir, 1000);
      expect(JSON.parse(readFileSync(join(dir, "egress.json"), "utf8"))).toEqual({ port });
      expect(await ask(port, `127.0.0.1:${origin.port}`)).toBe("200 origin\n");
      expect(await ask(port, `localhost:${origin.port}`)).toStartWith("403 ");
      one.stop("j-1");
      one.flush();
      expect(
        written.filter((e) => e.kind === "net.connect").map((e) => (e.data as unknown as ConnectRecord).decision),
      ).toEqual(["allow", "deny"]);
      // A restarted planterd: the same port from the saved file.
      const two = new Egress({ write: (fn) => fn(written), hosts: {}, helper: [] });
      await two.adopt("j-1", rules, dir, 1000);
      expect(await ask(port, `127.0.0.1:${origin.port}`)).toBe("200 origin\n");
      // The port taken meanwhile: a clear refusal, nothing served.
      const three = new Egress({ write: (fn) => fn(written), hosts: {}, helper: [] });
      await expect(three.adopt("j-1", rules, dir, 1000)).rejects.toThrow(`could not listen on 127.0.0.1:${port}`);
      expect(three.serving("j-1")).toBe(false);
      two.close();
    } finally {
      origin.stop(true);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
