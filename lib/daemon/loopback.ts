/**
 * The uid of a loopback TCP peer, as the kernel records it: the owner of the client's socket in
 * /proc/net/tcp (or tcp6), found by the connection's two ends. A TCP peer sends no credentials,
 * but on this host's loopback its socket is in planterd's own network namespace, and the kernel
 * says whose it is (as identd does). Used for connection slots only, never for authorization: a
 * token or certificate still says who a request is.
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";

/** The ends of an accepted TCP connection, as node:net gives them (planterd's side is `local`). */
export interface TcpEnds {
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
}

/** An address as /proc/net/tcp{,6} spells it: each 32-bit word in host (little-endian) byte order, hex. */
export function procAddress(address: string): { table: "tcp" | "tcp6"; hex: string } | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const v4 = (a: string) => a.split(".").map(Number);
  let bytes: number[];
  let table: "tcp" | "tcp6";
  if (isIP(address) === 4) {
    bytes = v4(address);
    table = "tcp";
  } else if (mapped) {
    bytes = [...Array(10).fill(0), 0xff, 0xff, ...v4(mapped[1] as string)];
    table = "tcp6";
  } else if (isIP(address) === 6) {
    bytes = expand6(address);
    table = "tcp6";
  } else return null;
  let hex = "";
  for (let w = 0; w < bytes.length; w += 4)
    for (let b = 3; b >= 0; b--) hex += (bytes[w + b] as number).toString(16).padStart(2, "0");
  return { table, hex: hex.toUpperCase() };
}

/** An IPv6 literal (no zone, no embedded IPv4 but the mapped form above) as its 16 bytes. */
function expand6(address: string): number[] {
  const [head = "", tail] = address.split("::");
  const words = (s: string) => (s ? s.split(":").map((h) => Number.parseInt(h, 16)) : []);
  const h = words(head);
  const t = tail === undefined ? [] : words(tail);
  const all = [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
  return all.flatMap((w) => [(w >> 8) & 0xff, w & 0xff]);
}

const TIME_WAIT = "06";
const LISTEN = "0A";

/**
 * The uid owning the client end of a loopback connection planterd accepted, or null when it
 * cannot be told (not loopback, already gone, a table that cannot be read). A connection in
 * TIME_WAIT has no owner any more (the kernel shows uid 0 there): null, never root.
 */
export function loopbackPeerUid(ends: TcpEnds, read: (table: string) => string = readTable): number | null {
  const { localAddress, localPort, remoteAddress, remotePort } = ends;
  if (!localAddress || !remoteAddress || !localPort || !remotePort) return null;
  const client = procAddress(remoteAddress);
  const server = procAddress(localAddress);
  if (!client || !server || client.table !== server.table) return null;
  const hexPort = (p: number) => p.toString(16).toUpperCase().padStart(4, "0");
  const want = `${client.hex}:${hexPort(remotePort)} ${server.hex}:${hexPort(localPort)}`;
  let text: string;
  try {
    text = read(client.table);
  } catch {
    return null;
  }
  for (const line of text.split("\n")) {
    if (!line.includes(want)) continue;
    const f = line.trim().split(/\s+/);
    // sl local rem st tx:rx tr:when retrnsmt uid …
    if (`${f[1]} ${f[2]}` !== want || f[3] === TIME_WAIT || f[3] === LISTEN) continue;
    const uid = Number(f[7]);
    return Number.isInteger(uid) && uid >= 0 ? uid : null;
  }
  return null;
}

function readTable(table: string): string {
  return readFileSync(`/proc/net/${table}`, "latin1");
}
