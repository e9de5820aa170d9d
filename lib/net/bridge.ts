/**
 * A TCP→Unix bridge: listens on a loopback port and joins each connection to a Unix socket
 * (the job's egress proxy). Tools that speak to a proxy only over TCP (curl's -x, Bun's fetch,
 * git) reach the proxy through it; plans/design.md "Egress (#15)" weighs it as the in-sandbox side.
 */
import * as net from "node:net";

/** A listening bridge; `port` is the one bound (0 asks the kernel for a free one). */
export interface Bridge {
  port: number;
  close(): Promise<void>;
}

/** Listen on `host:port` and forward each connection, bytes both ways, to the socket at `path`. */
export async function bridge(path: string, host = "127.0.0.1", port = 0): Promise<Bridge> {
  const open = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (tcp) => {
    const unix = net.connect({ path, allowHalfOpen: true });
    for (const s of [tcp, unix]) {
      open.add(s);
      s.once("close", () => open.delete(s));
      s.on("error", () => {
        tcp.destroy();
        unix.destroy();
      });
    }
    tcp.pipe(unix);
    unix.pipe(tcp);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
