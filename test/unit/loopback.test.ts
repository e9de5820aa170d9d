/** The uid of a loopback TCP peer, from the kernel's sock_diag: the request's layout and real connections. */
import { expect, test } from "bun:test";
import { connect, createServer, type Socket } from "node:net";
import { addressBytes, diagRequest, diagUid, loopbackPeerUid } from "../../lib/daemon/loopback.ts";

test("addresses as sock_diag takes them: IPv4, IPv6, an IPv4-mapped IPv6 as its IPv4; names and zones are none", () => {
  expect(addressBytes("127.0.0.1")).toEqual({ family: 2, bytes: [127, 0, 0, 1] });
  expect(addressBytes("::ffff:127.0.0.1")).toEqual({ family: 2, bytes: [127, 0, 0, 1] });
  expect(addressBytes("::1")).toEqual({ family: 10, bytes: [...Array(15).fill(0), 1] });
  expect(addressBytes("fe80::1:2")?.bytes).toEqual([0xfe, 0x80, ...Array(10).fill(0), 0, 1, 0, 2]);
  expect(addressBytes("localhost")).toBeNull();
  expect(addressBytes("fe80::1%lo")).toBeNull();
});

test("the request names the client's end as source, planterd's as destination; mixed families ask nothing", () => {
  const req = diagRequest({
    localAddress: "127.0.0.1",
    localPort: 8443,
    remoteAddress: "127.0.0.2",
    remotePort: 50000,
  });
  expect(req?.length).toBe(72);
  expect([req?.[16], req?.[17], req?.readUInt16BE(24), req?.readUInt16BE(26)]).toEqual([2, 6, 50000, 8443]);
  expect([...(req?.subarray(28, 32) ?? [])]).toEqual([127, 0, 0, 2]);
  expect([...(req?.subarray(44, 48) ?? [])]).toEqual([127, 0, 0, 1]);
  expect(diagRequest({ localAddress: "::1", localPort: 1, remoteAddress: "127.0.0.1", remotePort: 2 })).toBeNull();
});

test("an answer's uid; TIME_WAIT (uid 0 in the kernel's answer), an error or a short answer are no one, never root", () => {
  const answer = (state: number, uid: number, type = 20) => {
    const b = Buffer.alloc(124);
    b.writeUInt16LE(type, 4);
    b[17] = state;
    b.writeUInt32LE(uid, 80);
    return b;
  };
  expect(diagUid(answer(1, 1234))).toBe(1234);
  expect(diagUid(answer(8, 1234))).toBe(1234); // CLOSE_WAIT: still its owner's
  expect(diagUid(answer(6, 0))).toBeNull();
  expect(diagUid(answer(1, 0, 2))).toBeNull(); // NLMSG_ERROR: no such socket
  expect(diagUid(Buffer.alloc(20))).toBeNull();
});

/** The server's end of one loopback connection made by `client` (a function that connects to the port). */
async function accepted(host: string, client: (port: number) => void): Promise<Socket> {
  return await new Promise<Socket>((resolve) => {
    const server = createServer((s) => {
      resolve(s);
      server.close();
    });
    server.listen(0, host, () => client((server.address() as { port: number }).port));
  });
}

test.skipIf(process.platform !== "linux")(
  "a real loopback connection: the uid of the process that opened it (IPv4, IPv6)",
  async () => {
    for (const host of ["127.0.0.1", "::1"]) {
      let c: Socket | undefined;
      const s = await accepted(host, (port) => {
        c = connect(port, host);
        c.on("error", () => undefined);
      });
      expect([host, loopbackPeerUid(s)]).toEqual([host, process.getuid?.() ?? -1]);
      s.destroy();
      c?.destroy();
    }
  },
);

test.skipIf(process.platform !== "linux" || process.getuid?.() !== 0)(
  "a connection of another uid (12345, through setpriv) is that uid's",
  async () => {
    let p: ReturnType<typeof Bun.spawn> | undefined;
    const s = await accepted("127.0.0.1", (port) => {
      p = Bun.spawn(
        [
          "setpriv",
          "--reuid=12345",
          "--regid=12345",
          "--clear-groups",
          "perl",
          "-e",
          'use IO::Socket::INET; my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0]) or die; sleep 30',
          String(port),
        ],
        { stdout: "ignore", stderr: "inherit" },
      );
    });
    try {
      expect(loopbackPeerUid(s)).toBe(12345);
    } finally {
      s.destroy();
      p?.kill();
      await p?.exited;
    }
  },
);
