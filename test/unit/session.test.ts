import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PlanterError } from "../../lib/api/errors.ts";
import { DetachScanner, parseDetachKeys } from "../../lib/cli/session.ts";
import { FrameReader, frame, KIND, parseResize, resizeFrame } from "../../lib/tty/protocol.ts";

const bytes = (...b: number[]) => new Uint8Array(b);

describe("detach keys", () => {
  test("docker's format", () => {
    expect(parseDetachKeys("ctrl-p,ctrl-q")).toEqual(bytes(0x10, 0x11));
    expect(parseDetachKeys("ctrl-a,d")).toEqual(bytes(0x01, 0x64));
    expect(parseDetachKeys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_")).toEqual(bytes(0, 27, 28, 29, 30, 31));
    expect(parseDetachKeys("CTRL-X")).toEqual(bytes(0x18));
  });

  test("refusals say what is wrong", () => {
    for (const bad of ["", "ctrl-p,", "ctrl-1", "ab", "ctrl-p,ctrl-", "é"]) {
      let err: unknown = null;
      try {
        parseDetachKeys(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PlanterError);
      expect((err as PlanterError).code).toBe("E_USAGE");
      expect((err as PlanterError).message).toContain("--detach-keys");
    }
  });

  test("the scanner takes the sequence out, across chunks, and passes partial matches on", () => {
    const s = new DetachScanner(bytes(0x10, 0x11));
    expect(s.push(bytes(0x61, 0x10))).toEqual({ forward: bytes(0x61), detach: false });
    expect(s.push(bytes(0x62))).toEqual({ forward: bytes(0x10, 0x62), detach: false });
    expect(s.push(bytes(0x10, 0x10))).toEqual({ forward: bytes(0x10), detach: false });
    expect(s.push(bytes(0x11, 0x63))).toEqual({ forward: bytes(), detach: true });
    const one = new DetachScanner(bytes(0x1d));
    expect(one.push(bytes(0x61, 0x1d, 0x62))).toEqual({ forward: bytes(0x61), detach: true });
    const none = new DetachScanner(bytes());
    expect(none.push(bytes(0x10, 0x11))).toEqual({ forward: bytes(0x10, 0x11), detach: false });
  });
});

describe("holder frames", () => {
  test("split and joined in any pieces", () => {
    const stream = new Uint8Array([...frame(KIND.input, "abc"), ...resizeFrame(132, 43), ...frame(KIND.eof)]);
    for (const cut of [1, 2, 5, 7, stream.length]) {
      const r = new FrameReader();
      const got = [];
      for (let at = 0; at < stream.length; at += cut) got.push(...r.push(stream.subarray(at, at + cut)));
      expect(got.map((f) => f.kind)).toEqual([KIND.input, KIND.resize, KIND.eof]);
      expect(new TextDecoder().decode(got[0]?.payload)).toBe("abc");
      expect(parseResize(got[1]?.payload as Uint8Array)).toEqual({ cols: 132, rows: 43 });
    }
  });

  test("a zero size, a short resize and an oversized frame are refused", () => {
    expect(parseResize(bytes(0, 0, 0, 24))).toBeNull();
    expect(parseResize(bytes(0, 80))).toBeNull();
    expect(() => new FrameReader().push(bytes(0x69, 0xff, 0xff, 0xff, 0xff))).toThrow("a frame of");
  });
});

describe("screen of a log", () => {
  test("renderScreen draws what a terminal would show", async () => {
    const { renderScreen } = await import("../../lib/tty/screen.ts");
    const log = new TextEncoder().encode(
      "old text\r\n\x1b[?1049h\x1b[H\x1b[2Jtop line\x1b[3;5Hthird\x1b[1;31m red\x1b[0m\r\n\x1b]0;title\x07after",
    );
    const s = await renderScreen(log, 20, 5);
    expect(s.lines).toEqual(["top line", "", "    third red", "after", ""]);
    expect(s.cursor).toEqual({ x: 5, y: 3 });
    expect(s.skipped_bytes).toBe(0);
    expect(s.ansi).toContain("third");
  });

  test("screenOfLog renders the tail of a long log", async () => {
    const { screenOfLog, MAX_PENDING } = await import("../../lib/tty/screen.ts");
    const dir = mkdtempSync(join(tmpdir(), "screen-"));
    const path = join(dir, "stdout");
    const lines = Array.from({ length: 200_000 }, (_, i) => `line ${i}`).join("\r\n");
    writeFileSync(path, lines);
    const s = await screenOfLog(path, 40, 3);
    expect(s.lines).toEqual(["line 199997", "line 199998", "line 199999"]);
    expect(s.skipped_bytes).toBe(Buffer.byteLength(lines) - MAX_PENDING);
    rmSync(dir, { recursive: true });
  });
});
