/**
 * Helpers for the install tests' fake hosts (a throwaway home, a shim dir first on PATH, a call
 * log): the compiled binary, shared by every test file, running a program with exactly a given environment, and comparing
 * trees before and after.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { PLANTER, pidAlive, ROOT } from "./harness.ts";

export const SHIMS = join(ROOT, "test", "shims");

/** The commit the shared test binary is built with. */
export const TEST_COMMIT = "testcommit0";
/** The commit of a second build of the same sources: an "older" or "newer" planter beside TEST_COMMIT's. */
export const OTHER_COMMIT = "testcommit1";
const BUILD_INPUTS = ["scripts", "lib", "package.json", "bun.lock", ".ci/compile"];

/** A key for the sources a binary is built from: their paths and contents (tracked or not, ignored files aside). */
export function sourceKey(): string {
  const ls = Bun.spawnSync(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard", "--", ...BUILD_INPUTS], {
    cwd: ROOT,
    stderr: "pipe",
  });
  if (ls.exitCode !== 0) throw new Error(`git ls-files: ${ls.stderr.toString()}`);
  const hash = new Bun.CryptoHasher("sha256");
  for (const f of ls.stdout.toString().split("\0").filter(Boolean).sort()) {
    hash.update(`${f}\0`);
    // A file deleted but still listed (-c lists the index) counts as absent.
    if (existsSync(join(ROOT, f))) hash.update(readFileSync(join(ROOT, f)));
    hash.update("\0");
  }
  return hash.digest("hex").slice(0, 16);
}

/** Where the binaries built from these sources live: a dir under the temp dir, shared by test files and runs. */
export function binaryDir(key = sourceKey()): string {
  return join(process.env.PLANTER_TEST_BIN_CACHE || join(tmpdir(), "planter-test-bin"), key);
}

/** Wait until `lock` can be created (O_EXCL), taking it over from an owner that died; run `fn`; release. */
async function withLock<T>(lock: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: "wx" });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const owner = Number(readFileSync(lock, "utf8") || 0);
      if (owner && !pidAlive(owner)) rmSync(lock, { force: true });
      else if (Date.now() > deadline) throw new Error(`${lock} held by pid ${owner} for 5 minutes`);
      else await Bun.sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/**
 * planter compiled the release way (.ci/compile) with `commit`, once for a given content of its
 * sources and shared by every test file and run (`binaryDir`). Two commits are two builds that
 * differ only in their commit. (Not a copy with the commit's bytes replaced: a bytecode build
 * keeps the string's hash, and the copy's commit then compares unequal to the same text.)
 */
export async function planterBinary(commit = TEST_COMMIT): Promise<string> {
  const key = sourceKey();
  const dir = binaryDir(key);
  const out = join(dir, `planter-${commit}`);
  if (existsSync(out)) {
    utimesSync(dir, new Date(), new Date());
    return out;
  }
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Other uids run it (a daemon as nobody, a guest): the cache and its dirs are readable by all.
  chmodSync(dirname(dir), 0o755);
  chmodSync(dir, 0o755);
  await withLock(join(dir, `planter-${commit}.lock`), async () => {
    if (existsSync(out)) return;
    pruneBinaries(key);
    // Named planter as a release's is: the name is compiled in (the entry module's path).
    const tmp = join(dir, `build-${commit}.${process.pid}`);
    mkdirSync(tmp);
    const p = Bun.spawn([join(ROOT, ".ci", "compile"), join(tmp, "planter"), commit], {
      cwd: ROOT,
      stdout: "pipe",
      stderr: "pipe",
    });
    if ((await p.exited) !== 0) throw new Error(`.ci/compile failed: ${await new Response(p.stderr).text()}`);
    renameSync(join(tmp, "planter"), out);
    rmSync(tmp, { recursive: true, force: true });
  });
  return out;
}

/** Remove the build dirs of other sources (110 MB a binary) that no test has used for an hour. */
function pruneBinaries(keep: string): void {
  const root = dirname(binaryDir(keep));
  for (const e of readdirSync(root)) {
    const d = join(root, e);
    if (e !== keep && Date.now() - statSync(d).mtimeMs > 3_600_000) rmSync(d, { recursive: true, force: true });
  }
}

/** Run argv with exactly `env`; collect its output. */
export async function runWith(env: Record<string, string>, argv: string[], cwd?: string) {
  const p = Bun.spawn(argv, { env, cwd, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

/** planter from source with exactly `env`. */
export const planterWith = (env: Record<string, string>, ...args: string[]) =>
  runWith(env, [process.execPath, PLANTER, ...args]);

/** The lines the recording shims wrote to `log` so far (none while it does not exist). */
export const callLog = (log: string) => (): string[] =>
  existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").filter(Boolean) : [];

/** SIGKILL every process whose command line names `dir` (daemons a test started from there). */
export function killUnder(dir: string): void {
  for (const p of Bun.spawnSync(["pgrep", "-f", dir]).stdout.toString().trim().split("\n").filter(Boolean)) {
    try {
      process.kill(Number(p), "SIGKILL");
    } catch {}
  }
}

/** Every path under `dir` with its type and, for files, content hash and mode: to compare trees. */
export function tree(dir: string, skip: (rel: string) => boolean = () => false): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const rel = relative(dir, p);
      if (skip(rel)) continue;
      if (e.isDirectory()) {
        out.push(`${rel}/`);
        walk(p);
      } else if (e.isSymbolicLink()) out.push(`${rel} -> link`);
      else out.push(`${rel} ${Bun.hash(readFileSync(p)).toString(16)} ${(statSync(p).mode & 0o777).toString(8)}`);
    }
  };
  walk(dir);
  return out.sort();
}
