/**
 * The caller's side of an interactive session, run by tty.test.ts on a PTY of its own (the
 * caller's terminal): attaches to the holder at argv[2] (detach keys argv[3], "ro" in argv[4]
 * for read-only), then prints how the session ended and the terminal's settings after it.
 */
import { parseDetachKeys, runSession } from "../lib/cli/session.ts";
import { HolderConnection } from "../lib/tty/controller.ts";

const [sock, keys, mode] = process.argv.slice(2) as [string, string | undefined, string | undefined];
const end = await runSession((events) => HolderConnection.connect(sock, events), {
  detachKeys: keys ? parseDetachKeys(keys) : undefined,
  readOnly: mode === "ro",
});
const stty = Bun.spawnSync(["stty", "-a"], { stdin: "inherit", stdout: "pipe" }).stdout.toString();
process.stdout.write(`\r\nSESSION ${JSON.stringify(end)}\r\nSTTY ${stty.replace(/\s+/g, " ")}\r\nBYE\r\n`);
process.exit(0);
