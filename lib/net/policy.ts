/**
 * Egress rules: what a job's connections may reach. Pure: parsing entries, canonical hosts and
 * addresses, address classes, and the decisions the proxy makes (by name, then for every address
 * the name resolved to). No I/O here; the proxy (proxy.ts) resolves and connects.
 */

/** A network policy's list form, complete (lib/sandbox/policy.ts validates what users write). */
export interface NetRules {
  allow: string[];
  deny: string[];
  allow_local: boolean;
}

/** An IP address as a number: IPv4 in 32 bits, IPv6 in 128. IPv4-mapped IPv6 is stored as IPv4. */
export interface Addr {
  family: 4 | 6;
  value: bigint;
}

/** One parsed allow or deny entry. `text` is its canonical spelling (what records name). */
export type Rule =
  | { kind: "host"; name: string; port: number | null; text: string }
  | { kind: "wildcard"; suffix: string; port: number | null; text: string }
  | { kind: "cidr"; net: Addr; prefix: number; port: number | null; text: string };

/** A destination as a request names it: a canonical name, or an address. */
export type Host = { kind: "name"; name: string } | { kind: "ip"; addr: Addr };

/** What the proxy decided, the rule that decided it, and a sentence for people. */
export interface Verdict {
  decision: "allow" | "deny";
  /** The entry that matched (canonical), or a keyword: unlisted, local:CLASS, metadata, reserved, multicast. */
  rule: string;
  reason: string;
}

const MAX_NAME = 253;

// ---------- addresses ----------

/** Parse a strict dotted-quad IPv4 address (no leading zeros, which some read as octal). */
export function parseIPv4(s: string): bigint | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  let v = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

/** Parse an IPv6 address (with `::` and an optional IPv4 tail; no zone id). */
export function parseIPv6(s: string): bigint | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return null;
  let tail: bigint | null = null;
  let text = s;
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    tail = parseIPv4(s.slice(lastColon + 1));
    if (tail === null) return null;
    text = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0] as string);
  const rest = halves.length === 2 ? groups(halves[1] as string) : [];
  const total = head.length + rest.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const all = [...head, ...Array(8 - total).fill("0"), ...rest];
  let v = 0n;
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    v = (v << 16n) | BigInt(Number.parseInt(g, 16));
  }
  if (tail !== null) v = (v & ~0xffffffffn) | tail;
  return v;
}

/** An address from text (IPv4 or IPv6, brackets allowed); IPv4-mapped IPv6 becomes IPv4. */
export function parseAddr(s: string): Addr | null {
  const t = s.startsWith("[") && s.endsWith("]") ? s.slice(1, -1) : s;
  const v4 = parseIPv4(t);
  if (v4 !== null) return { family: 4, value: v4 };
  const v6 = parseIPv6(t);
  if (v6 === null) return null;
  return unmap({ family: 6, value: v6 });
}

/** `::ffff:a.b.c.d` is a.b.c.d: the kernel connects an AF_INET6 socket to it over IPv4. */
export function unmap(a: Addr): Addr {
  if (a.family === 6 && a.value >> 32n === 0xffffn) return { family: 4, value: a.value & 0xffffffffn };
  return a;
}

/** The canonical text of an address (IPv6 compressed, lowercase, RFC 5952). */
export function formatAddr(a: Addr): string {
  if (a.family === 4) return [24n, 16n, 8n, 0n].map((s) => String((a.value >> s) & 0xffn)).join(".");
  const g = Array.from({ length: 8 }, (_, i) => Number((a.value >> BigInt(112 - 16 * i)) & 0xffffn));
  // The longest run of two or more zero groups becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

const bits = (a: Addr) => (a.family === 4 ? 32 : 128);

/** Whether `a` lies in `net/prefix` (same family). */
export function inCidr(a: Addr, net: Addr, prefix: number): boolean {
  if (a.family !== net.family) return false;
  const shift = BigInt(bits(a) - prefix);
  return a.value >> shift === net.value >> shift;
}

/** Address classes the proxy refuses after resolution unless a policy says otherwise. */
export type AddrClass =
  | "public"
  | "loopback"
  | "private"
  | "link-local"
  | "cgnat"
  | "unspecified"
  | "metadata"
  | "multicast"
  | "reserved";

/** Classes `allow_local: true` opens; metadata, multicast and reserved need an explicit IP rule. */
export const LOCAL_CLASSES: ReadonlySet<AddrClass> = new Set([
  "loopback",
  "private",
  "link-local",
  "cgnat",
  "unspecified",
]);

const cidr = (s: string): [Addr, number] => {
  const [a, p] = s.split("/") as [string, string];
  return [parseAddr(a) as Addr, Number(p)];
};
// Most specific first: the first match names the class.
const CLASSES: [AddrClass, [Addr, number]][] = [
  ["metadata", cidr("169.254.169.254/32")], // AWS, GCP, Azure, OpenStack, …
  ["metadata", cidr("169.254.170.2/32")], // ECS task credentials
  ["metadata", cidr("100.100.100.200/32")], // Alibaba Cloud
  ["metadata", cidr("fd00:ec2::254/128")], // AWS over IPv6
  ["unspecified", cidr("0.0.0.0/8")],
  ["private", cidr("10.0.0.0/8")],
  ["cgnat", cidr("100.64.0.0/10")],
  ["loopback", cidr("127.0.0.0/8")],
  ["link-local", cidr("169.254.0.0/16")],
  ["private", cidr("172.16.0.0/12")],
  ["reserved", cidr("192.0.0.0/24")],
  ["reserved", cidr("192.0.2.0/24")],
  ["private", cidr("192.168.0.0/16")],
  ["reserved", cidr("198.18.0.0/15")],
  ["reserved", cidr("198.51.100.0/24")],
  ["reserved", cidr("203.0.113.0/24")],
  ["multicast", cidr("224.0.0.0/4")],
  ["reserved", cidr("240.0.0.0/4")], // and 255.255.255.255
  ["unspecified", cidr("::/128")],
  ["loopback", cidr("::1/128")],
  ["reserved", cidr("::/96")], // IPv4-compatible (deprecated)
  ["reserved", cidr("100::/64")],
  ["private", cidr("64:ff9b:1::/48")], // local-use NAT64
  ["reserved", cidr("2001:db8::/32")],
  ["private", cidr("fc00::/7")],
  ["link-local", cidr("fe80::/10")],
  ["private", cidr("fec0::/10")], // site-local (deprecated)
  ["multicast", cidr("ff00::/8")],
];

/** The class of an address. NAT64 (64:ff9b::/96) and 6to4 (2002::/16) take their IPv4's class. */
export function classify(a: Addr): AddrClass {
  const x = unmap(a);
  if (x.family === 6) {
    const [nat64, n64] = cidr("64:ff9b::/96");
    if (inCidr(x, nat64, n64)) return classify({ family: 4, value: x.value & 0xffffffffn });
    const [sixto4, s4] = cidr("2002::/16");
    if (inCidr(x, sixto4, s4)) return classify({ family: 4, value: (x.value >> 80n) & 0xffffffffn });
  }
  for (const [cls, [net, prefix]] of CLASSES) if (inCidr(x, net, prefix)) return cls;
  return "public";
}

// ---------- names ----------

/** Names that reach a cloud metadata service without an address in sight. */
export const METADATA_NAMES: ReadonlySet<string> = new Set(["metadata.google.internal", "metadata.goog", "metadata"]);

/**
 * A request's host in canonical form: an address (IPv4 in any of the forms a URL parser accepts:
 * `0x7f.1`, `2130706433`, `0177.0.0.1` all mean 127.0.0.1) or a name (lowercase, punycode, no
 * trailing dot). A string is an error message.
 */
export function canonicalHost(raw: string): Host | string {
  if (raw.length === 0) return "empty host";
  if (raw.length > MAX_NAME + 2) return "host name too long";
  const inner = raw.startsWith("[") && raw.endsWith("]") ? raw.slice(1, -1) : raw;
  if (inner.includes(":")) {
    if (inner.includes("%")) return `${raw}: IPv6 zone ids are not accepted`;
    const v6 = parseIPv6(inner);
    return v6 === null ? `${raw} is not a valid IPv6 address` : { kind: "ip", addr: unmap({ family: 6, value: v6 }) };
  }
  // Characters a URL parser would treat as structure, or that no host name holds.
  if (/[\s/\\?#@[\]%<>^|"`{}]/.test(raw) || [...raw].some((ch) => ch.charCodeAt(0) < 0x20 || ch === "\x7f"))
    return `${JSON.stringify(raw)} is not a host name`;
  let host: string;
  try {
    host = new URL(`http://${raw}/`).hostname;
  } catch {
    return `${JSON.stringify(raw)} is not a host name`;
  }
  const addr = parseAddr(host);
  if (addr) return { kind: "ip", addr };
  if (host.endsWith(".")) host = host.slice(0, -1);
  const why = badName(host);
  return why ? `${JSON.stringify(raw)} ${why}` : { kind: "name", name: host };
}

/** Why a canonical (lowercase ASCII) name is not a DNS host name, or null. */
function badName(name: string): string | null {
  if (name.length === 0) return "is not a host name";
  if (name.length > MAX_NAME) return "is longer than 253 characters";
  for (const label of name.split(".")) {
    if (label.length === 0) return "has an empty label";
    if (label.length > 63) return "has a label longer than 63 characters";
    // Underscores appear in real names (service labels); a URL parser lets them through too.
    if (!/^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/.test(label)) return `has an invalid label ${JSON.stringify(label)}`;
  }
  // A name whose last label is numeric is an IPv4 form to URL parsers ("1.2.3" is 1.2.0.3).
  if (/^[0-9]+$/.test(name.split(".").pop() as string)) return "ends in a number but is no IPv4 address";
  return null;
}

// ---------- entries ----------

const HINT = "use host, *.domain, host:port, an IP address, [IPv6]:port or a CIDR such as 10.0.0.0/8";

/** Parse one allow or deny entry; a string is why it is not one. */
export function parseEntry(entry: string): Rule | string {
  if (typeof entry !== "string" || entry.length === 0) return "an empty entry";
  if (entry.length > 300) return "an entry longer than 300 characters";
  if (/\s/.test(entry)) return "whitespace in an entry";
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(entry)) return `a URL; name the host alone (${HINT})`;
  let hostPart = entry;
  let port: number | null = null;
  const bracket = /^\[([^\]]+)\](?::([^:]*))?$/.exec(entry);
  if (bracket) {
    hostPart = bracket[1] as string;
    if (bracket[2] !== undefined) {
      port = parsePort(bracket[2]);
      if (port === null) return `port ${JSON.stringify(bracket[2])} is not 1-65535`;
    }
    if (!hostPart.includes(":")) return `brackets are for IPv6 addresses (${HINT})`;
  } else if ((entry.match(/:/g) ?? []).length === 1) {
    const i = entry.indexOf(":");
    hostPart = entry.slice(0, i);
    port = parsePort(entry.slice(i + 1));
    if (port === null) return `port ${JSON.stringify(entry.slice(i + 1))} is not 1-65535`;
  }
  const slash = hostPart.indexOf("/");
  if (slash >= 0 || hostPart.includes(":") || parseAddr(hostPart)) return addrEntry(hostPart, port);
  return nameEntry(hostPart, port);
}

const withPort = (t: string, port: number | null) =>
  port === null ? t : t.includes(":") ? `[${t}]:${port}` : `${t}:${port}`;

/** An address or CIDR entry (its port already split off). */
function addrEntry(hostPart: string, port: number | null): Rule | string {
  const slash = hostPart.indexOf("/");
  const addrText = slash >= 0 ? hostPart.slice(0, slash) : hostPart;
  const addr = parseAddr(addrText);
  if (!addr) return `${JSON.stringify(addrText)} is not an IP address (IPv4 as four decimal numbers, IPv6 in hex)`;
  const max = addrText.includes(":") ? 128 : 32;
  const full = addr.family === 4 ? 32 : 128;
  let prefix = full;
  if (slash >= 0) {
    const p = hostPart.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) return `prefix /${p} is not 0-${max}`;
    // A mapped address's prefix counts the 96 bits it dropped.
    if (max === 128 && addr.family === 4 && Number(p) < 96)
      return `prefix /${p} is too short for an IPv4-mapped address`;
    prefix = Number(p) - (max - full);
  }
  const shift = BigInt(full - prefix);
  if ((addr.value >> shift) << shift !== addr.value) {
    const base = formatAddr({ family: addr.family, value: (addr.value >> shift) << shift });
    return `${hostPart} has bits set past its prefix; did you mean ${base}/${prefix}?`;
  }
  const text = withPort(prefix === full ? formatAddr(addr) : `${formatAddr(addr)}/${prefix}`, port);
  return { kind: "cidr", net: addr, prefix, port, text };
}

/** A host or `*.domain` entry (its port already split off). */
function nameEntry(hostPart: string, port: number | null): Rule | string {
  const wildcard = hostPart.startsWith("*.");
  const name = wildcard ? hostPart.slice(2) : hostPart;
  if (name.includes("*")) return `"*" only as a whole first label, as in *.example.com (${HINT})`;
  if (name === "") return `an empty host (${HINT})`;
  const host = canonicalHost(name);
  if (typeof host === "string") return `${host} (${HINT})`;
  if (host.kind === "ip") return `${JSON.stringify(name)} reads as the address ${formatAddr(host.addr)}; write it so`;
  return wildcard
    ? { kind: "wildcard", suffix: host.name, port, text: withPort(`*.${host.name}`, port) }
    : { kind: "host", name: host.name, port, text: withPort(host.name, port) };
}

function parsePort(s: string): number | null {
  if (!/^[1-9][0-9]{0,4}$/.test(s)) return null;
  const n = Number(s);
  return n <= 65535 ? n : null;
}

/** An entry's canonical spelling (throws on an invalid one: validate first). */
export function canonicalEntry(entry: string): string {
  return rule(entry).text;
}

function rule(entry: string): Rule {
  const r = parseEntry(entry);
  if (typeof r === "string") throw new Error(`invalid network entry ${JSON.stringify(entry)}: ${r}`);
  return r;
}

// ---------- matching ----------

const portOk = (r: Rule, port: number) => r.port === null || r.port === port;

function nameMatches(r: Rule, name: string, port: number): boolean {
  if (!portOk(r, port)) return false;
  if (r.kind === "host") return r.name === name;
  if (r.kind === "wildcard") return name.endsWith(`.${r.suffix}`);
  return false;
}

function addrMatches(r: Rule, a: Addr, port: number): boolean {
  return r.kind === "cidr" && portOk(r, port) && inCidr(a, r.net, r.prefix);
}

/** Rules parsed once for a job's proxy. */
export interface Compiled {
  allow: Rule[];
  deny: Rule[];
  allowLocal: boolean;
}

/** Parse a complete list policy (entries already validated). */
export function compile(rules: NetRules): Compiled {
  return { allow: rules.allow.map(rule), deny: rules.deny.map(rule), allowLocal: rules.allow_local };
}

const deny = (rule: string, reason: string): Verdict => ({ decision: "deny", rule, reason });
const allow = (rule: string, reason: string): Verdict => ({ decision: "allow", rule, reason });
const dest = (h: string, port: number) => (h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`);

/**
 * The decision on a name, before it is resolved: deny rules first, then the metadata names, then
 * allow rules (an exact host before a wildcard). An allowed name still has each of its addresses
 * checked (`checkAddress`).
 */
export function checkName(c: Compiled, name: string, port: number): Verdict {
  const d = dest(name, port);
  const denied = c.deny.find((r) => nameMatches(r, name, port));
  if (denied) return deny(denied.text, `${d} is denied by "${denied.text}"`);
  const exact = c.allow.find((r) => r.kind === "host" && nameMatches(r, name, port));
  if (METADATA_NAMES.has(name) && !exact)
    return deny("metadata", `${d} is a cloud metadata service; only an allow entry naming it exactly opens it`);
  const allowed = exact ?? c.allow.find((r) => nameMatches(r, name, port));
  if (allowed) return allow(allowed.text, `${d} is allowed by "${allowed.text}"`);
  const other = c.allow.find((r) => nameMatches({ ...r, port: null } as Rule, name, port));
  if (other) return deny("unlisted", `${d}: "${other.text}" allows another port only`);
  return deny("unlisted", `${d} is not in the allow list`);
}

/**
 * The decision on one address, for an address the request named (`byName` null) or one its
 * allowed name resolved to. IP deny rules win; an IP allow rule opens any address (a metadata
 * address only when the rule names that one address); otherwise an address literal is unlisted,
 * and a resolved one is refused when it is local (unless `allow_local`), metadata, multicast or
 * reserved.
 */
export function checkAddress(c: Compiled, a: Addr, port: number, byName: Verdict | null, name?: string): Verdict {
  const x = unmap(a);
  const d = dest(formatAddr(x), port);
  const denied = c.deny.find((r) => addrMatches(r, x, port));
  if (denied) return deny(denied.text, `${d} is denied by "${denied.text}"`);
  const cls = classify(x);
  const exactBits = x.family === 4 ? 32 : 128;
  const allowed = c.allow.find(
    (r) => addrMatches(r, x, port) && (cls !== "metadata" || (r.kind === "cidr" && r.prefix === exactBits)),
  );
  if (allowed) return allow(allowed.text, `${d} is allowed by "${allowed.text}"`);
  if (!byName) {
    if (cls === "metadata")
      return deny("metadata", `${d} is a cloud metadata address; only an entry naming it opens it`);
    return deny("unlisted", `${d} is not in the allow list`);
  }
  if (byName.decision === "deny") return byName;
  if (cls === "public" || (LOCAL_CLASSES.has(cls) && c.allowLocal)) return byName;
  const why =
    cls === "metadata"
      ? "a cloud metadata address"
      : LOCAL_CLASSES.has(cls)
        ? `a ${cls} address (allow_local is off)`
        : `a ${cls} address`;
  const rule = LOCAL_CLASSES.has(cls) ? `local:${cls}` : cls;
  return deny(rule, `${name ? dest(name, port) : d} resolved to ${formatAddr(x)}, ${why}`);
}

/** The decision on a request's destination when no resolution is needed (an address). */
export function checkHost(c: Compiled, h: Host, port: number): Verdict {
  return h.kind === "name" ? checkName(c, h.name, port) : checkAddress(c, h.addr, port, null);
}

// ---------- narrowing ----------

/**
 * Whether `outer` allows everything `inner` allows: the same or a wider name (`*.b.com` covers
 * `a.b.com` and `*.a.b.com`), the same or a wider address range, and any port or the same one.
 */
export function covers(outer: Rule, inner: Rule): boolean {
  if (outer.port !== null && outer.port !== inner.port) return false;
  if (inner.kind === "cidr")
    return outer.kind === "cidr" && outer.prefix <= inner.prefix && inCidr(inner.net, outer.net, outer.prefix);
  const name = inner.kind === "host" ? inner.name : inner.suffix;
  if (outer.kind === "host") return inner.kind === "host" && outer.name === name;
  if (outer.kind === "wildcard")
    return name.endsWith(`.${outer.suffix}`) || (inner.kind === "wildcard" && name === outer.suffix);
  return false;
}

/** The entries of `inner` that no entry of `outer` covers (canonical spellings). */
export function uncovered(outer: string[], inner: string[]): string[] {
  const o = outer.map(rule);
  return inner
    .map(rule)
    .filter((r) => !o.some((x) => covers(x, r)))
    .map((r) => r.text);
}

/** A list policy in canonical form: entries spelled canonically, duplicates dropped. */
export function canonicalRules(r: { allow?: string[]; deny?: string[]; allow_local?: boolean }): NetRules {
  return {
    allow: [...new Set((r.allow ?? []).map(canonicalEntry))],
    deny: [...new Set((r.deny ?? []).map(canonicalEntry))],
    allow_local: r.allow_local ?? false,
  };
}

/** One line for people: `none`, `host`, or `allow a, b; deny c; local allowed`. */
export function describeNetwork(n: "none" | "host" | NetRules): string {
  if (typeof n === "string") return n;
  const parts = [n.allow.length ? `allow ${n.allow.join(",")}` : "allow nothing"];
  if (n.deny.length) parts.push(`deny ${n.deny.join(",")}`);
  if (n.allow_local) parts.push("local allowed");
  return parts.join("; ");
}
