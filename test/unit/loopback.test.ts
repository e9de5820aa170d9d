/** The uid of a loopback TCP peer from /proc/net/tcp{,6}: the spelling of addresses, and a real connection. */
import { expect, test } from "bun:test";
import { connect, createServer, type Socket } from "node:net";
import { loopbackPeerUid, procAddress } from "../../lib/daemon/loopback.ts";

test("addresses as /proc/net spells them: IPv4, IPv6, IPv4-mapped", () => {
  expect(procAddress("127.0.0.1")).toEqual({ table: "tcp", hex: "0100007F" });
  expect(procAddress("10.1.2.3")).toEqual({ table: "tcp", hex: "0302010A" });
  expect(procAddress("::1")).toEqual({ table: "tcp6", hex: "00000000000000000000000001000000" });
  expect(procAddress("::ffff:127.0.0.1")).toEqual({ table: "tcp6", hex: "0000000000000000FFFF00000100007F" });
  expect(procAddress("fe80::1:2")).toEqual({ table: "tcp6", hex: "000080FE000000000000000002000100" });
  expect(procAddress("localhost")).toBeNull();
});

const TABLE = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1234        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C351 0100007F:1F90 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0000000000000000
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
`;

test("the client end's owner, by both ends; TIME_WAIT (uid 0 in the table) and unknown ends are no one, never root", () => {
  const read = () => TABLE;
  const ends = (remotePort: number) => ({
    localAddress: "127.0.0.1",
    localPort: 8080,
    remoteAddress: "127.0.0.1",
    remotePort,
  });
  expect(loopbackPeerUid(ends(50000), read)).toBe(1234);
  expect(loopbackPeerUid(ends(50001), read)).toBeNull();
  expect(loopbackPeerUid(ends(50002), read)).toBeNull();
  expect(loopbackPeerUid({ ...ends(50000), remoteAddress: "::1" }, read)).toBeNull();
  expect(
    loopbackPeerUid(ends(50000), () => {
      throw new Error("EACCES");
    }),
  ).toBeNull();
});

test.skipIf(process.platform !== "linux")(
  "a real loopback connection: the uid of the process that opened it",
  async () => {
    const accepted = new Promise<Socket>((resolve) => {
      const server = createServer((s) => {
        resolve(s);
        server.close();
      });
      server.listen(0, "127.0.0.1", () => {
        const c = connect((server.address() as { port: number }).port, "127.0.0.1");
        c.on("error", () => undefined);
        accepted.then(() => c.destroy());
      });
    });
    const s = await accepted;
    expect(loopbackPeerUid(s)).toBe(process.getuid?.() ?? -1);
    s.destroy();
  },
);
