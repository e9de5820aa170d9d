/**
 * The README's first command as a user who may not write npm's global prefix: `make deps` puts bun
 * into ~/.local and uses it from there. npm is a recording shim (the registry is not asked); make,
 * bash and the Makefile are the real ones, run as uid 65534.
 */
import { afterAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..", "..");
const work = mkdtempSync("/tmp/pt-setup-");
chmodSync(work, 0o755);
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** npm: `root -g` names a root-owned dir; `install -g [--prefix P] bun` records and makes a bun that records. */
const NPM = `#!/bin/bash
echo "npm $*" >> "$LOG"
if [ "$1 $2" = "root -g" ]; then echo "$GLOBAL/lib/node_modules"; exit 0; fi
prefix="$GLOBAL"
if [ "$3" = "--prefix" ]; then prefix=$4; fi
mkdir -p "$prefix/bin" || exit 1
printf '#!/bin/bash\\necho "bun $*" >> "$LOG"\\n' > "$prefix/bin/bun" && chmod 755 "$prefix/bin/bun"
`;

describe.skipIf(process.getuid?.() !== 0)("make deps as a user", () => {
  test("npm's global prefix not writable: bun goes to ~/.local and make uses it", async () => {
    const repo = join(work, "repo");
    const home = join(work, "home");
    const shims = join(work, "shims");
    const global = join(work, "global");
    for (const d of [repo, home, shims, join(global, "lib", "node_modules")]) mkdirSync(d, { recursive: true });
    for (const f of ["Makefile", "package.json"]) copyFileSync(join(ROOT, f), join(repo, f));
    writeFileSync(join(shims, "npm"), NPM, { mode: 0o755 });
    // A PATH with what a fresh machine has (this one has bun in /usr/bin: it must not be found).
    for (const tool of ["make", "bash", "sh", "env", "node", "git", "dirname", "mkdir", "chmod", "cat", "grep", "sed"])
      symlinkSync(Bun.which(tool) as string, join(shims, tool));
    const log = join(work, "log");
    writeFileSync(log, "");
    chmodSync(log, 0o666);
    Bun.spawnSync(["chown", "-R", "65534:65534", home]);
    const p = Bun.spawn(
      [
        Bun.which("setpriv") as string,
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "make",
        "-s",
        "-C",
        repo,
        "deps",
      ],
      {
        env: { PATH: shims, HOME: home, LOG: log, GLOBAL: global },
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    const [out, err, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    expect([code, err]).toEqual([0, ""]);
    expect(out).toContain("installing bun into ~/.local");
    expect(readFileSync(log, "utf8")).toBe(
      `npm root -g\nnpm install -g --prefix ${home}/.local bun\nbun install --frozen-lockfile\n`,
    );
    expect(existsSync(join(home, ".local", "bin", "bun"))).toBe(true);
  });
});
