import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { summarizeIssues } from "../../lib/api/strings.ts";
import { parseConfig } from "../../lib/config.ts";
import {
  type Addr,
  canonicalHost,
  checkAddress,
  checkHost,
  checkName,
  classify,
  compile,
  covers,
  describeNetwork,
  formatAddr,
  type NetRules,
  parseAddr,
  parseEntry,
  type Rule,
} from "../../lib/net/policy.ts";
import {
  capNetwork,
  complete,
  isWidening,
  narrow,
  narrowNetwork,
  Policy,
  unsafePolicy,
} from "../../lib/sandbox/policy.ts";

const rules = (allow: string[], deny: string[] = [], allow_local = false): NetRules => ({ allow, deny, allow_local });
const addr = (s: string) => parseAddr(s) as Addr;
const entry = (s: string) => parseEntry(s) as Rule;
const host = (s: string) => {
  const h = canonicalHost(s);
  if (typeof h === "string") return h;
  return h.kind === "name" ? `name ${h.name}` : `ip ${formatAddr(h.addr)}`;
};

describe("canonical hosts", () => {
  test("case, trailing dots, IDN in punycode", () => {
    expect(host("Example.COM")).toBe("name example.com");
    expect(host("example.com.")).toBe("name example.com");
    expect(host("bücher.example")).toBe("name xn--bcher-kva.example");
    expect(host("BÜCHER.example.")).toBe("name xn--bcher-kva.example");
    expect(host("xn--bcher-kva.example")).toBe("name xn--bcher-kva.example");
    // Full-width letters fold as a URL parser folds them: the same name the resolver would see.
    expect(host("ｅｘａｍｐｌｅ.com")).toBe("name example.com");
  });

  test("every IPv4 form a URL parser accepts is the address it means", () => {
    for (const f of ["127.0.0.1", "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.1", "0x7F.0.0.1"]) {
      expect(host(f)).toBe("ip 127.0.0.1");
    }
    expect(host("[::1]")).toBe("ip ::1");
    expect(host("::FFFF:127.0.0.1")).toBe("ip 127.0.0.1");
    expect(host("[::ffff:7f00:1]")).toBe("ip 127.0.0.1");
    expect(host("0:0:0:0:0:0:0:1")).toBe("ip ::1");
  });

  test("what is no host is an error", () => {
    for (const bad of [
      "",
      "a b",
      "a/b",
      "user@host",
      "a..b",
      ".a",
      "-a.com",
      "a%2eb",
      "fe80::1%eth0",
      "1.2.3.4.5",
      "a.123",
      "[::1",
      `${"x".repeat(64)}.com`,
    ]) {
      expect(typeof canonicalHost(bad)).toBe("string");
    }
  });
});

describe("entries", () => {
  test("canonical spellings", () => {
    const t = (s: string) => (parseEntry(s) as Rule).text;
    expect(t("Example.COM.")).toBe("example.com");
    expect(t("*.Example.com:443")).toBe("*.example.com:443");
    expect(t("bücher.example")).toBe("xn--bcher-kva.example");
    expect(t("10.0.0.0/8")).toBe("10.0.0.0/8");
    expect(t("1.2.3.4:8080")).toBe("1.2.3.4:8080");
    expect(t("[2001:DB8:0:0::1]:443")).toBe("[2001:db8::1]:443");
    expect(t("2001:db8::/32")).toBe("2001:db8::/32");
    expect(t("::ffff:10.0.0.0/104")).toBe("10.0.0.0/8");
    expect(t("127.0.0.1/32")).toBe("127.0.0.1");
  });

  test("bad entries say what is wrong", () => {
    const why = (s: string) => parseEntry(s) as string;
    expect(why("10.0.0.1/8")).toContain("did you mean 10.0.0.0/8");
    expect(why("host:0")).toContain('port "0" is not 1-65535');
    expect(why("host:99999")).toContain("is not 1-65535");
    expect(why("a.*.com")).toContain('"*" only as a whole first label');
    expect(why("*")).toContain('"*" only as a whole first label');
    expect(why("https://x.com")).toContain("a URL");
    expect(why("010.0.0.1")).toContain("reads as the address 8.0.0.1");
    expect(why("1.2.3.4/33")).toContain("prefix /33 is not 0-32");
    expect(why("[host]:80")).toContain("brackets are for IPv6");
    expect(why("")).toBe("an empty entry");
  });

  test("the schema names the bad entry and where it is", () => {
    const r = v.safeParse(Policy, { network: { allow: ["ok.com", "10.0.0.1/8"] } });
    expect(r.success).toBe(false);
    if (!r.success)
      expect(summarizeIssues(r.issues)).toBe(
        '× "10.0.0.1/8" is not a network entry: 10.0.0.1/8 has bits set past its prefix; did you mean 10.0.0.0/8? → at network.allow.1',
      );
    const s = v.safeParse(Policy, { network: "hosts" });
    if (!s.success) expect(summarizeIssues(s.issues)).toContain('network is "none", "host" or {allow');
    expect(v.safeParse(Policy, { network: { allow: ["a.com"], deny: ["b.a.com"], allow_local: true } }).success).toBe(
      true,
    );
    expect(v.safeParse(Policy, { network: { allow: ["a.com"], extra: 1 } }).success).toBe(false);
  });
});

describe("addresses", () => {
  test("classes, IPv4-mapped IPv6 and CIDR edges", () => {
    const cls = (s: string) => classify(addr(s));
    expect(cls("127.0.0.1")).toBe("loopback");
    expect(cls("127.255.255.255")).toBe("loopback");
    expect(cls("128.0.0.0")).toBe("public");
    expect(cls("10.255.255.255")).toBe("private");
    expect(cls("11.0.0.0")).toBe("public");
    expect(cls("172.15.255.255")).toBe("public");
    expect(cls("172.16.0.0")).toBe("private");
    expect(cls("172.31.255.255")).toBe("private");
    expect(cls("172.32.0.0")).toBe("public");
    expect(cls("100.63.255.255")).toBe("public");
    expect(cls("100.64.0.0")).toBe("cgnat");
    expect(cls("100.127.255.255")).toBe("cgnat");
    expect(cls("169.254.169.254")).toBe("metadata");
    expect(cls("169.254.169.253")).toBe("link-local");
    expect(cls("0.0.0.0")).toBe("unspecified");
    expect(cls("224.0.0.1")).toBe("multicast");
    expect(cls("255.255.255.255")).toBe("reserved");
    expect(cls("::")).toBe("unspecified");
    expect(cls("::1")).toBe("loopback");
    expect(cls("::ffff:127.0.0.1")).toBe("loopback");
    expect(cls("::ffff:169.254.169.254")).toBe("metadata");
    expect(cls("fd00:ec2::254")).toBe("metadata");
    expect(cls("fd00::1")).toBe("private");
    expect(cls("fc00::")).toBe("private");
    expect(cls("fe80::1")).toBe("link-local");
    expect(cls("febf:ffff::")).toBe("link-local");
    expect(cls("ff02::1")).toBe("multicast");
    expect(cls("64:ff9b::a00:1")).toBe("private"); // NAT64 of 10.0.0.1
    expect(cls("2002:7f00:1::")).toBe("loopback"); // 6to4 of 127.0.0.1
    expect(cls("2606:4700::1111")).toBe("public");
    expect(cls("1.1.1.1")).toBe("public");
  });

  test("formatting is RFC 5952", () => {
    expect(formatAddr(addr("2001:0db8:0000:0000:0001:0000:0000:0001"))).toBe("2001:db8::1:0:0:1");
    expect(formatAddr(addr("::"))).toBe("::");
    expect(formatAddr(addr("1:0:0:0:0:0:0:0"))).toBe("1::");
    expect(formatAddr(addr("1:2:3:4:5:6:7:8"))).toBe("1:2:3:4:5:6:7:8");
    expect(parseAddr("1:2:3:4:5:6:7:8:9")).toBeNull();
    expect(parseAddr("1::2::3")).toBeNull();
  });
});

describe("decisions", () => {
  const c = compile(
    rules(
      ["example.com", "*.github.com", "api.openai.com:443", "10.1.2.3", "192.168.0.0/16:5432", "[::1]:8080"],
      ["evil.github.com", "10.1.2.0/24:22"],
    ),
  );

  test("names: exact, wildcard (not its apex), ports, deny wins, unlisted", () => {
    expect(checkName(c, "example.com", 80)).toMatchObject({ decision: "allow", rule: "example.com" });
    expect(checkName(c, "www.example.com", 80)).toMatchObject({ decision: "deny", rule: "unlisted" });
    expect(checkName(c, "github.com", 443)).toMatchObject({ decision: "deny", rule: "unlisted" });
    expect(checkName(c, "api.github.com", 443)).toMatchObject({ decision: "allow", rule: "*.github.com" });
    expect(checkName(c, "a.b.github.com", 22)).toMatchObject({ decision: "allow", rule: "*.github.com" });
    expect(checkName(c, "evil.github.com", 443)).toMatchObject({ decision: "deny", rule: "evil.github.com" });
    expect(checkName(c, "xgithub.com", 443)).toMatchObject({ decision: "deny", rule: "unlisted" });
    expect(checkName(c, "api.openai.com", 443)).toMatchObject({ decision: "allow", rule: "api.openai.com:443" });
    const port = checkName(c, "api.openai.com", 80);
    expect(port).toMatchObject({ decision: "deny", rule: "unlisted" });
    expect(port.reason).toContain('"api.openai.com:443" allows another port only');
  });

  test("address literals: only IP rules, deny wins, ports", () => {
    const at = (s: string, port: number) => checkHost(c, canonicalHost(s) as never, port);
    expect(at("10.1.2.3", 443)).toMatchObject({ decision: "allow", rule: "10.1.2.3" });
    expect(at("10.1.2.3", 22)).toMatchObject({ decision: "deny", rule: "10.1.2.0/24:22" });
    expect(at("192.168.7.7", 5432)).toMatchObject({ decision: "allow", rule: "192.168.0.0/16:5432" });
    expect(at("192.168.7.7", 5433)).toMatchObject({ decision: "deny", rule: "unlisted" });
    expect(at("[::1]", 8080)).toMatchObject({ decision: "allow", rule: "[::1]:8080" });
    expect(at("::ffff:10.1.2.3", 443)).toMatchObject({ decision: "allow", rule: "10.1.2.3" });
    expect(at("0x0a010203", 443)).toMatchObject({ decision: "allow", rule: "10.1.2.3" });
    expect(at("127.0.0.1", 80)).toMatchObject({ decision: "deny", rule: "unlisted" });
    expect(at("2130706433", 80)).toMatchObject({ decision: "deny", rule: "unlisted" });
    expect(at("1.1.1.1", 443)).toMatchObject({ decision: "deny", rule: "unlisted" });
  });

  test("resolved addresses: local classes refused unless allow_local or an IP rule", () => {
    const byName = checkName(c, "example.com", 443);
    const resolved = (s: string, cc = c) => checkAddress(cc, addr(s), 443, byName, "example.com");
    expect(resolved("93.184.216.34")).toMatchObject({ decision: "allow", rule: "example.com" });
    for (const [a, rule] of [
      ["127.0.0.1", "local:loopback"],
      ["::1", "local:loopback"],
      ["::ffff:127.0.0.1", "local:loopback"],
      ["192.168.1.1", "local:private"],
      ["fd12::1", "local:private"],
      ["169.254.1.1", "local:link-local"],
      ["100.64.1.1", "local:cgnat"],
      ["0.0.0.0", "local:unspecified"],
      ["169.254.169.254", "metadata"],
      ["fd00:ec2::254", "metadata"],
      ["239.1.1.1", "multicast"],
      ["240.0.0.1", "reserved"],
    ] as const) {
      const got = resolved(a);
      expect({ a, ...got }).toMatchObject({ a, decision: "deny", rule });
    }
    expect(resolved("127.0.0.1").reason).toBe(
      "example.com:443 resolved to 127.0.0.1, a loopback address (allow_local is off)",
    );
    const local = compile(rules(["example.com"], [], true));
    expect(resolved("127.0.0.1", local)).toMatchObject({ decision: "allow", rule: "example.com" });
    expect(resolved("192.168.1.1", local)).toMatchObject({ decision: "allow" });
    // allow_local never opens metadata, multicast or reserved addresses.
    expect(resolved("169.254.169.254", local)).toMatchObject({ decision: "deny", rule: "metadata" });
    expect(resolved("224.0.0.1", local)).toMatchObject({ decision: "deny", rule: "multicast" });
    // An explicit IP rule opens a local address a listed name resolves to.
    expect(resolved("10.1.2.3")).toMatchObject({ decision: "allow", rule: "10.1.2.3" });
    // An IP deny rule wins over the name's allow.
    expect(checkAddress(c, addr("10.1.2.9"), 22, checkName(c, "a.github.com", 22))).toMatchObject({
      decision: "deny",
      rule: "10.1.2.0/24:22",
    });
  });

  test("metadata: only entries naming it exactly", () => {
    const wide = compile(rules(["*.internal", "169.254.0.0/16", "metadata.goog"]));
    expect(checkName(wide, "metadata.google.internal", 80)).toMatchObject({ decision: "deny", rule: "metadata" });
    expect(checkName(wide, "metadata.goog", 80)).toMatchObject({ decision: "allow", rule: "metadata.goog" });
    expect(checkAddress(wide, addr("169.254.169.254"), 80, null)).toMatchObject({ decision: "deny", rule: "metadata" });
    expect(checkAddress(wide, addr("169.254.1.1"), 80, null)).toMatchObject({ decision: "allow" });
    const exact = compile(rules(["169.254.169.254"]));
    expect(checkAddress(exact, addr("169.254.169.254"), 80, null)).toMatchObject({ decision: "allow" });
  });

  test("nothing listed, nothing allowed", () => {
    const none = compile(rules([]));
    expect(checkName(none, "example.com", 443).decision).toBe("deny");
    expect(checkAddress(none, addr("1.1.1.1"), 443, null).decision).toBe("deny");
  });
});

describe("narrowing and the ceiling", () => {
  test("covers: names, wildcards, CIDRs, ports", () => {
    const cov = (o: string, i: string) => covers(entry(o), entry(i));
    expect(cov("*.b.com", "a.b.com")).toBe(true);
    expect(cov("*.b.com", "*.a.b.com")).toBe(true);
    expect(cov("*.b.com", "*.b.com:443")).toBe(true);
    expect(cov("*.b.com", "b.com")).toBe(false);
    expect(cov("*.a.b.com", "*.b.com")).toBe(false);
    expect(cov("a.b.com", "a.b.com:443")).toBe(true);
    expect(cov("a.b.com:443", "a.b.com")).toBe(false);
    expect(cov("a.b.com:443", "a.b.com:80")).toBe(false);
    expect(cov("10.0.0.0/8", "10.1.0.0/16")).toBe(true);
    expect(cov("10.0.0.0/8", "10.1.2.3")).toBe(true);
    expect(cov("10.1.0.0/16", "10.0.0.0/8")).toBe(false);
    expect(cov("10.0.0.0/8", "11.0.0.0/8")).toBe(false);
    expect(cov("::/0", "10.0.0.0/8")).toBe(false);
    expect(cov("a.com", "1.2.3.4")).toBe(false);
  });

  const cell = rules(["*.github.com", "registry.npmjs.org", "10.0.0.0/8"], ["gist.github.com"]);

  test("a job may remove allows and add denies, never widen", () => {
    expect(narrowNetwork(cell, { allow: ["api.github.com:443"], deny: ["x.github.com"] })).toEqual({
      allow: ["api.github.com:443"],
      deny: ["gist.github.com", "x.github.com"],
      allow_local: false,
    });
    // A job list without allow keeps the cell's allow and always its deny.
    expect(narrowNetwork(cell, { deny: ["evil.github.com"] })).toEqual({
      ...cell,
      deny: ["gist.github.com", "evil.github.com"],
    });
    expect(narrowNetwork(cell, "none")).toBe("none");
    const w = (x: unknown) => {
      const r = narrowNetwork(cell, x as never);
      return isWidening(r) ? r.what : "narrowed";
    };
    expect(w({ allow: ["github.com"] })).toBe("network allow github.com is not allowed by the cell");
    expect(w({ allow: ["example.com", "api.github.com"] })).toBe(
      "network allow example.com is not allowed by the cell",
    );
    expect(w({ allow: ["11.0.0.1"] })).toBe("network allow 11.0.0.1 is not allowed by the cell");
    expect(w({ allow_local: true })).toBe("network allow_local on a cell without it");
    expect(w("host")).toBe("network host on a cell with an allow list");
    expect(isWidening(narrowNetwork("none", { allow: ["a.com"] }))).toBe(true);
    expect(narrowNetwork("host", { allow: ["a.com"] })).toEqual(rules(["a.com"]));
    expect(narrowNetwork("host", { deny: ["a.com"] })).toEqual(rules([], ["a.com"]));
  });

  test("narrow(): the existing message for host on a cell without network, and a list narrowed", () => {
    const closed = complete({ network: "none" });
    expect(() => narrow(closed, { network: "host" }, "/cell")).toThrow(
      "the job's sandbox policy widens its cell's: network host on a cell without network",
    );
    const open = complete({ network: { allow: ["*.Example.com."] } });
    expect(open.network).toEqual(rules(["*.example.com"]));
    expect(narrow(open, { network: { allow: ["a.example.com"] } }, "/cell").network).toEqual(rules(["a.example.com"]));
    expect(() => narrow(open, { network: { allow: ["example.com"] } }, "/cell")).toThrow(
      "network allow example.com is not allowed by the cell",
    );
  });

  test("the config ceiling: host, allow entries, allow_local, denies added", () => {
    const ceiling = { allow_host: false, allow: ["*.example.com"], deny: ["bad.example.com"], allow_local: false };
    const cap = (n: unknown) => {
      const r = capNetwork(ceiling, n as never);
      return isWidening(r) ? r.what : r;
    };
    expect(cap("none")).toBe("none");
    expect(cap("host")).toBe("network host is beyond the config's [network] ceiling (allow_host = false)");
    expect(cap(rules(["a.example.com"]))).toEqual(rules(["a.example.com"], ["bad.example.com"]));
    expect(cap(rules(["a.example.org"]))).toBe("network allow a.example.org is beyond the config's [network] ceiling");
    expect(cap(rules(["a.example.com"], [], true))).toBe(
      "network allow_local is beyond the config's [network] ceiling (allow_local = false)",
    );
    const open = parseConfig({}, "t");
    expect(open.network).toEqual({
      allow_host: true,
      deny: [],
      allow_local: true,
      proxy_connections_per_uid: 1024,
      hosts: {},
    });
    expect(capNetwork(open.network, "host")).toBe("host");
    expect(() => parseConfig({ network: { allow: ["bad entry"] } }, "t")).toThrow('"bad entry" is not a network entry');
    expect(parseConfig({ network: { allow_host: false } }, "t").network.allow_host).toBe(false);
    // The proxy's own name map: lowercase names, addresses only.
    expect(parseConfig({ network: { hosts: { "api.test": ["127.0.0.1", "::1"] } } }, "t").network.hosts).toEqual({
      "api.test": ["127.0.0.1", "::1"],
    });
    expect(() => parseConfig({ network: { hosts: { "API.test": ["127.0.0.1"] } } }, "t")).toThrow(
      "a lowercase host name",
    );
    expect(() => parseConfig({ network: { hosts: { "a.test": ["localhost"] } } }, "t")).toThrow(
      "an IPv4 or IPv6 address",
    );
    expect(() => parseConfig({ network: { hosts: { "a.test": [] } } }, "t")).toThrow();
    expect(parseConfig({ network: { allow_host: true } }, "t").network.allow_host).toBe(true);
  });

  test("job status's line for each form", () => {
    expect(describeNetwork("none")).toBe("none");
    expect(describeNetwork("host")).toBe("host");
    expect(describeNetwork(rules([]))).toBe("allow nothing");
    expect(describeNetwork(rules(["a.com", "*.b.com:443"], ["c.b.com"], true))).toBe(
      "allow a.com,*.b.com:443; deny c.b.com; local allowed",
    );
  });

  test("a list policy is a policy like the others now the launch runs its proxy", () => {
    expect(unsafePolicy(complete({ network: { allow: ["a.com"] } }), [])).toBeNull();
    expect(unsafePolicy(complete({ network: "host" }), [])).toBeNull();
  });
});
