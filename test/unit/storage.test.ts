/** The state disk: faults recognised, the error users see, the reserve, writes kept for later, the status file. */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PlanterError } from "../../lib/api/errors.ts";
import { parseConfig } from "../../lib/config.ts";
import { Context } from "../../lib/daemon/context.ts";
import { prepareStatus, readStatus, recorderArgv, writeStatusInPlace } from "../../lib/jobs/recorder.ts";
import { openState, streamId } from "../../lib/state/db.ts";
import { reserveBytes, storageError, storageFault } from "../../lib/state/storage.ts";

const dir = mkdtempSync(join(tmpdir(), "planter-storage-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fault = (code: string) => Object.assign(new Error("database or disk is full"), { code });
const MiB = 1024 * 1024;

test("storage faults: full (SQLITE_FULL, ENOSPC, EDQUOT), I/O (SQLITE_IOERR_*, EIO), anything else is none", () => {
  expect(["SQLITE_FULL", "ENOSPC", "EDQUOT"].map((c) => storageFault(fault(c)))).toEqual(["full", "full", "full"]);
  expect(["SQLITE_IOERR", "SQLITE_IOERR_WRITE", "EIO"].map((c) => storageFault(fault(c)))).toEqual(["io", "io", "io"]);
  expect([fault("SQLITE_BUSY"), fault("EACCES"), new Error("x"), null, "text"].map(storageFault)).toEqual([
    null,
    null,
    null,
    null,
    null,
  ]);
});

test("a full disk is E_UNAVAILABLE naming the disk, its free space and what to do; a planter error passes through", () => {
  const e = storageError(fault("SQLITE_FULL"), dir) as PlanterError;
  expect(e.code).toBe("E_UNAVAILABLE");
  expect(e.status).toBe(503);
  expect(e.message).toMatch(/^planterd cannot write its state: the disk is full \(.+ free of .+ on \//);
  expect(e.hint).toContain("`planter job rm ID`");
  expect(e.details).toMatchObject({ fault: "disk_full", code: "SQLITE_FULL" });
  const io = storageError(fault("SQLITE_IOERR_WRITE"), dir) as PlanterError;
  expect(io.message).toContain("I/O error (SQLITE_IOERR_WRITE)");
  expect(io.hint).toContain("dmesg");
  expect(storageError(new PlanterError("E_CONFLICT", "x"), dir)).toBeNull();
  expect(storageError(fault("SQLITE_BUSY"), dir)).toBeNull();
});

test("the log reserve: the configured bytes, else 64 MiB or 5 % of a smaller disk; 0 is off", () => {
  expect(reserveBytes(undefined, 100 * 1024 * MiB)).toBe(64 * MiB);
  expect(reserveBytes(undefined, 100 * MiB)).toBe(5 * MiB);
  expect(reserveBytes(8 * MiB, 100 * MiB)).toBe(8 * MiB);
  expect(reserveBytes(0, 100 * MiB)).toBe(0);
  expect(parseConfig({ logs: { min_free_bytes: 1024 } }, "c.toml").logs.min_free_bytes).toBe(1024);
  expect(parseConfig({}, "c.toml").logs.min_free_bytes).toBeUndefined();
  expect(() => parseConfig({ logs: { min_free_bytes: -1 } }, "c.toml")).toThrow(/logs\.min_free_bytes/);
  expect(() => parseConfig({ logs: { min_free_bytes: "64M" } }, "c.toml")).toThrow(/logs\.min_free_bytes/);
});

function context(): Context {
  const db = openState(join(mkdtempSync(join(dir, "db-")), "planter.db"));
  const paths = { mode: "user" as const, stateDir: dir, socketPath: join(dir, "s"), configPath: join(dir, "c") };
  return new Context(db, parseConfig({}, "c.toml"), paths, streamId(db), "test");
}

test("writes the disk refuses wait in order, later ones behind them, and commit once it takes writes again", async () => {
  const ctx = context();
  let full = true;
  const committed: string[] = [];
  const write = (name: string) =>
    ctx.writeOrDefer(
      (ev) => {
        if (full) throw fault("SQLITE_FULL");
        ev.push({ kind: `test.${name}`, subject: "test", data: {} });
        return name;
      },
      (r) => committed.push(r),
    );
  expect(write("kill")).toBe(false);
  expect(ctx.storageFailure?.error.code).toBe("E_UNAVAILABLE");
  // Behind a waiting write, even a write that would succeed waits: order is kept.
  full = false;
  expect(write("end")).toBe(false);
  expect(ctx.deferredWrites).toBe(2);
  // A plain write that succeeds clears the failure and flushes the queue.
  ctx.write(() => undefined);
  expect(ctx.storageFailure).toBeNull();
  await new Promise((r) => setImmediate(r));
  expect(committed).toEqual(["kill", "end"]);
  expect(ctx.deferredWrites).toBe(0);
  const kinds = ctx.db.query("SELECT kind FROM events WHERE kind LIKE 'test.%' ORDER BY seq").all();
  expect(kinds).toEqual([{ kind: "test.kill" }, { kind: "test.end" }]);
  // With nothing waiting, a write goes straight through.
  expect(write("now")).toBe(true);
  expect(ctx.closeDeferred()).toBe(0);
  ctx.db.close();
});

test("a request's write on a full disk fails with E_UNAVAILABLE; a bug is not disguised as one", () => {
  const ctx = context();
  expect(() =>
    ctx.write(() => {
      throw fault("SQLITE_FULL");
    }),
  ).toThrow(/the disk is full/);
  expect(() =>
    ctx.write(() => {
      throw new TypeError("a bug");
    }),
  ).toThrow(TypeError);
  // At shutdown, what the disk still refuses is counted (planterd says so on stderr).
  expect(
    ctx.writeOrDefer(() => {
      throw fault("SQLITE_FULL");
    }),
  ).toBe(false);
  expect(ctx.closeDeferred()).toBe(1);
  ctx.db.close();
});

test("the status file: a placeholder that is no status, written over in place by the recorder and by planterd", async () => {
  const f = join(dir, "exit");
  prepareStatus(f);
  expect(readFileSync(f, "utf8")).toBe("-  \n");
  expect(readStatus(f)).toBeNull();
  const p = Bun.spawn(recorderArgv(f, ["sh", "-c", "exit 42"]), { stdio: ["ignore", "ignore", "ignore"] });
  expect(await p.exited).toBe(42);
  expect(readFileSync(f, "utf8")).toBe("42 \n");
  expect(readStatus(f)).toBe(42);
  prepareStatus(f);
  expect(writeStatusInPlace(f, 130)).toBe(true);
  expect([readFileSync(f, "utf8"), readStatus(f)]).toEqual(["130\n", 130]);
  // What earlier recorders wrote still reads; half a line does not.
  writeFileSync(f, "7\n");
  expect(readStatus(f)).toBe(7);
  writeFileSync(f, "7  ");
  expect(readStatus(f)).toBeNull();
  expect(writeStatusInPlace(join(dir, "none"), 1)).toBe(false);
});
