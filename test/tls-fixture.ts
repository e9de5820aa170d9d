/**
 * A test CA made here with openssl: a server certificate for 127.0.0.1 and localhost, a client
 * certificate (CN given), another CA's certificate (what a wrong CA looks like), and token files.
 */
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const haveOpenssl = Bun.which("openssl") !== null;

function openssl(args: string[], cwd: string): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr.toString()}`);
}

export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate from another CA (with the same CN). */
  strangerCert: string;
  strangerKey: string;
  /** Another CA, which did not sign the server's certificate. */
  otherCa: string;
}

/** Make a CA and its certificates in a new directory (P-256 keys: quick to make); `ips`: more addresses of the server's. */
export function makePki(clientCn = "ci", ips: string[] = []): TestPki {
  const dir = mkdtempSync("/tmp/pt-pki-");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const ca = (name: string) =>
    openssl(
      ["req", "-x509", ...ec, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${name}`],
      dir,
    );
  ca("ca");
  ca("other-ca");
  const leaf = (name: string, cn: string, signer: string, ext?: string) => {
    openssl(["req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`], dir);
    const extArgs = ext ? (writeFileSync(join(dir, `${name}.ext`), ext), ["-extfile", `${name}.ext`]) : [];
    openssl(
      [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${signer}.pem`,
        "-CAkey",
        `${signer}.key`,
        "-CAcreateserial",
        "-out",
        `${name}.pem`,
        "-days",
        "2",
        ...extArgs,
      ],
      dir,
    );
    chmodSync(join(dir, `${name}.key`), 0o600);
  };
  leaf(
    "server",
    "localhost",
    "ca",
    `subjectAltName=${["127.0.0.1", ...ips].map((ip) => `IP:${ip}`).join(",")},DNS:localhost\n`,
  );
  leaf("client", clientCn, "ca");
  leaf("stranger", clientCn, "other-ca");
  const f = (n: string) => join(dir, n);
  return {
    dir,
    ca: f("ca.pem"),
    serverCert: f("server.pem"),
    serverKey: f("server.key"),
    clientCert: f("client.pem"),
    clientKey: f("client.key"),
    strangerCert: f("stranger.pem"),
    strangerKey: f("stranger.key"),
    otherCa: f("other-ca.pem"),
  };
}

/** A token file (0600) holding `token`. */
export function tokenFile(dir: string, name: string, token: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, `${token}\n`);
  chmodSync(path, mode);
  return path;
}

/** A TCP proxy on 127.0.0.1 to `port` that can be told to refuse connections (its listener closed) and to pass them again. */
export interface Switch {
  url: string;
  refuse(): Promise<void>;
  pass(): Promise<void>;
  close(): Promise<void>;
}

/** A switchable proxy in front of a TLS listener (bytes pass as they are: the TLS is the listener's). */
export async function tcpSwitch(port: number): Promise<Switch> {
  const { createConnection, createServer } = await import("node:net");
  const open = new Set<import("node:net").Socket>();
  const server = createServer((socket) => {
    const up = createConnection({ host: "127.0.0.1", port });
    for (const s of [socket, up]) {
      open.add(s);
      s.on("close", () => open.delete(s));
      s.on("error", () => undefined);
    }
    socket.pipe(up).pipe(socket);
  });
  const listen = (p: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(p, "127.0.0.1", () => {
        server.off("error", reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  const own = await listen(0);
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of open) s.destroy();
      if (!server.listening) return resolve();
      server.close(() => resolve());
    });
  return {
    url: `https://127.0.0.1:${own}`,
    refuse: stop,
    async pass() {
      if (!server.listening) await listen(own);
    },
    close: stop,
  };
}
