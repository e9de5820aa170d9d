/** The TCP listener's address rule, token files and identities (lib/daemon/tcp.ts), without a listener. */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import { isLoopback, loadTcp, parseAddress, readTokenFile, tokenIdentity } from "../../lib/daemon/tcp.ts";

const dir = mkdtempSync("/tmp/pt-tcp-unit-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const me = process.getuid?.() ?? 0;

function file(name: string, text: string, mode = 0o600): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
}
const message = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as PlanterError).message;
  }
  return null;
};
const peerOf = (uid: number) => ({ pid: null, uid, gid: uid, groups: [uid] });

describe("[api.tcp]", () => {
  test("addresses: HOST:PORT and [V6]:PORT; loopback is 127/8, ::1 and localhost", () => {
    expect(parseAddress("127.0.0.1:8443")).toEqual({ host: "127.0.0.1", port: 8443 });
    expect(parseAddress("[::1]:0")).toEqual({ host: "::1", port: 0 });
    expect(message(() => parseAddress("8443"))).toContain("is not HOST:PORT");
    expect(message(() => parseAddress("h:99999"))).toContain("is not HOST:PORT");
    for (const h of ["127.0.0.1", "127.9.9.9", "::1", "localhost"]) expect(isLoopback(h)).toBe(true);
    for (const h of ["0.0.0.0", "10.0.0.1", "::", "example.com", "128.0.0.1"]) expect(isLoopback(h)).toBe(false);
  });

  test("token files: 0600, planterd's or root's, 16 characters at least", () => {
    expect(readTokenFile(file("ok", "0123456789abcdef\n"), me)).toBe("0123456789abcdef");
    expect(message(() => readTokenFile(file("loose", "0123456789abcdef", 0o640), me))).toContain("mode 640");
    expect(message(() => readTokenFile(file("short", "short"), me))).toContain("at least 16");
    expect(message(() => readTokenFile(join(dir, "none"), me))).toContain("no such file");
    if (me === 0) expect(readTokenFile(file("rootown", "0123456789abcdef"), 1234)).toBe("0123456789abcdef");
  });

  test("identities: none, uid 0, twice the same name, cert_cn without client_ca, a non-loopback address are refused", () => {
    const tok = file("t", "0123456789abcdef0123");
    const base = { address: "127.0.0.1:1", cert: tok, key: tok, allow_remote: false };
    const id = { name: "ci", uid: 1000, token_file: tok };
    expect(message(() => loadTcp({ ...base, identities: [] }, me, peerOf))).toContain("names no identities");
    expect(message(() => loadTcp({ ...base, identities: [{ ...id, uid: 0 }] }, me, peerOf))).toContain(
      "root is never an identity over TCP",
    );
    expect(message(() => loadTcp({ ...base, identities: [id, id] }, me, peerOf))).toContain("named twice");
    expect(
      message(() => loadTcp({ ...base, identities: [{ name: "c", uid: 1000, cert_cn: "c" }] }, me, peerOf)),
    ).toContain("has no client_ca");
    expect(message(() => loadTcp({ ...base, identities: [{ name: "n", uid: 1000 }] }, me, peerOf))).toContain(
      "neither token_file nor cert_cn",
    );
    expect(message(() => loadTcp({ ...base, address: "0.0.0.0:1", identities: [id] }, me, peerOf))).toContain(
      "is not a loopback address",
    );
    expect(loadTcp({ ...base, address: "0.0.0.0:1", allow_remote: true, identities: [id] }, me, peerOf).host).toBe(
      "0.0.0.0",
    );
  });

  test("a bearer token names its identity; anything else names none", () => {
    const a = file("a", "token-of-identity-a-000");
    const b = file("b", "token-of-identity-b-000");
    const setup = loadTcp(
      {
        address: "127.0.0.1:1",
        cert: a,
        key: a,
        allow_remote: false,
        identities: [
          { name: "a", uid: 1001, token_file: a },
          { name: "b", uid: 1002, token_file: b },
        ],
      },
      me,
      peerOf,
    );
    expect(tokenIdentity("Bearer token-of-identity-b-000", setup.identities)?.name).toBe("b");
    expect(tokenIdentity("Bearer token-of-identity-a-000", setup.identities)?.peer.uid).toBe(1001);
    for (const h of [
      undefined,
      "",
      "Bearer ",
      "bearer token-of-identity-a-000",
      "Bearer token-of-identity-a-00",
      "Basic x",
    ])
      expect(tokenIdentity(h, setup.identities)).toBeNull();
  });
});
