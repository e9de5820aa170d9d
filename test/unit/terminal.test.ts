/** TerminalFilter on literal bytes: what reaches a terminal from a job's output. */
import { describe, expect, test } from "bun:test";
import { MAX_SEQUENCE, TerminalFilter } from "../../lib/cli/terminal.ts";

/** Bytes written as a string of char codes 0–255 (escapes such as "\x9b" are one byte). */
const bytes = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));
const utf8 = (s: string) => new Uint8Array(Buffer.from(s, "utf8"));
const text = (b: Uint8Array) => Buffer.from(b).toString("latin1");

/** The whole output of one filter fed `chunks` in turn, then ended. */
function filter(...chunks: Uint8Array[]): Uint8Array {
  const f = new TerminalFilter();
  const parts = [...chunks.map((c) => f.push(c)), f.end()];
  return new Uint8Array(Buffer.concat(parts));
}

describe("kept byte for byte", () => {
  const kept: Record<string, string[]> = {
    "text and the controls that move the cursor": [
      "plain text, punctuation ~!@#$%^&*()_+{}|:<>?",
      "tab\there\r\nnext line\bback",
      "\x07",
      "\x0b\x0c",
      "\x0e\x0f",
    ],
    SGR: [
      "\x1b[31mred\x1b[0m",
      "\x1b[m",
      "\x1b[1;4;7;9m",
      "\x1b[38;5;208mamber\x1b[39m",
      "\x1b[48;2;10;20;30m",
      "\x1b[38:2::255:128:0m",
      "\x1b[4:3m",
    ],
    "cursor, erase, insert, delete, scroll": [
      "\x1b[A\x1b[2B\x1b[3C\x1b[4D\x1b[E\x1b[2F\x1b[10G",
      "\x1b[H\x1b[5;10H\x1b[5;10f",
      "\x1b[J\x1b[2J\x1b[3J\x1b[K\x1b[2K",
      "\x1b[3L\x1b[3M\x1b[2@\x1b[2P\x1b[2S\x1b[2T\x1b[5X",
      "\x1b[12d\x1b[40`\x1b[2I\x1b[Z\x1b[3b",
      "\x1b[2;20r\x1b[r",
      "\x1b7\x1b8\x1b[s\x1b[u",
      "\x1bM\x1bD\x1bE",
      "\x1b[4h\x1b[4l",
    ],
    "DEC private modes that only change drawing": [
      "\x1b[?25l\x1b[?25h",
      "\x1b[?1049h\x1b[?1049l\x1b[?47h\x1b[?1047l\x1b[?1048h",
      "\x1b[?2004h\x1b[?2004l",
      "\x1b[?7l\x1b[?7h\x1b[?12h",
      "\x1b[?2026h\x1b[?2026l",
      "\x1b[?25;1049h",
    ],
    "cursor style, charsets, keypad": ["\x1b[2 q\x1b[ q", "\x1b(B\x1b(0\x1b)0\x1b*A\x1b+B\x1b-A\x1b(%5", "\x1b=\x1b>"],
  };
  for (const [what, samples] of Object.entries(kept)) {
    test(what, () => {
      for (const s of samples) expect(text(filter(bytes(s)))).toBe(s);
    });
  }

  test("UTF-8, including characters whose continuation bytes are in the C1 range", () => {
    // ě = C4 9B, ğ = C4 9F, Ŝ = C5 9C, ț = C8 9B, 日 = E6 97 A5, 🎉 = F0 9F 8E 89, U+00A0 = C2 A0.
    const s = utf8("héllo wörld — ě ğ Ŝ ț 日本語 🎉\u00a0ÿ");
    expect(s).toContain(0x9b);
    expect(filter(s)).toEqual(s);
  });

  test("a chunk with nothing to change comes back as it is", () => {
    const s = bytes("ascii only\r\n");
    expect(new TerminalFilter().push(s)).toBe(s);
  });
});

describe("dropped", () => {
  const dropped: Record<string, string[]> = {
    "OSC: clipboard, titles, colour queries, hyperlinks' escapes": [
      "\x1b]52;c;SGVsbG8=\x07",
      "\x1b]52;c;SGVsbG8=\x1b\\",
      "\x1b]52;c;?\x07",
      "\x1b]0;a title\x07",
      "\x1b]2;a title\x1b\\",
      "\x1b]10;?\x07",
      "\x1b]11;?\x1b\\",
      "\x1b]4;1;?\x07",
      "\x1b]1337;SetUserVar=x=eA==\x07",
    ],
    "DCS, APC, PM, SOS": [
      "\x1bP$qm\x1b\\",
      "\x1bP+q544e\x1b\\",
      "\x1bP1$r0m\x07still inside\x1b\\",
      "\x1b_Gf=100;AAAA\x1b\\",
      "\x1b^private\x1b\\",
      "\x1bXstring\x1b\\",
    ],
    "8-bit C1 forms": [
      "\x9d52;c;SGVsbG8=\x07",
      "\x9d0;title\x9c",
      "\x9b6n",
      "\x9b31m",
      "\x90$qm\x9c",
      "\x98sos\x9c",
      "\x9epm\x9c",
      "\x9fapc\x9c",
      "\x85\x84\x8d\x9c",
    ],
    "UTF-8 encoded C1 forms": [
      "\xc2\x9b6n",
      "\xc2\x9d52;c;SGVsbG8=\x07",
      "\xc2\x9d0;title\xc2\x9c",
      "\xc2\x90$qm\xc2\x9c",
      "\xc2\x85",
    ],
    "queries and reports": [
      "\x1b[c",
      "\x1b[0c",
      "\x1b[>c",
      "\x1b[>0c",
      "\x1b[=c",
      "\x1b[5n",
      "\x1b[6n",
      "\x1b[?6n",
      "\x1b[?996n",
      "\x1b[?2004$p",
      "\x1b[4$p",
      "\x1b[>q",
      "\x1b[>0q",
      "\x1b[?u",
      "\x1b[x",
      "\x1bZ",
      "\x1b[?1$p",
    ],
    "window operations": ["\x1b[18t", "\x1b[14t", "\x1b[21t", "\x1b[8;100;200t", "\x1b[3;0;0t", "\x1b[22;0t"],
    "modes that make the terminal send input or change what keys send": [
      "\x1b[?1000h",
      "\x1b[?1001h",
      "\x1b[?1002h",
      "\x1b[?1003h",
      "\x1b[?1004h",
      "\x1b[?1005h",
      "\x1b[?1006h",
      "\x1b[?1007h",
      "\x1b[?1015h",
      "\x1b[?1016h",
      "\x1b[?25;1000h",
      "\x1b[?h",
      "\x1b[>1u",
      "\x1b[=1;1u",
      "\x1b[<u",
      "\x1b[1u",
      "\x1b[>4;2m",
      "\x1b[2h",
      "\x1b[12l",
      "\x1b[20h",
      "\x1b[1;2;3;4;5T",
    ],
    "resets, encoding and conformance switches, printing": [
      "\x1bc",
      "\x1b%@",
      "\x1b%G",
      "\x1b G",
      '\x1b[62;1"p',
      "\x1b[!p",
      "\x1b#8",
      "\x1b[5i",
      "\x1b[?5i",
    ],
    "C0 controls that print nothing": ["\x00", "\x05", "\x01\x02\x03\x04\x06", "\x10\x11\x1c\x1f", "\x7f"],
    "malformed or cancelled sequences": ["\x1b[1?m", "\x1b[ 1m", "\x1b[31\x18", "\x1b]0;t\x1a", "\x1b[3\x1a"],
  };
  for (const [what, samples] of Object.entries(dropped)) {
    test(what, () => {
      for (const s of samples) expect([s, text(filter(bytes(`<${s}>`)))]).toEqual([s, "<>"]);
    });
  }

  test("an unterminated string swallows the rest, as in a terminal", () => {
    expect(text(filter(bytes("before\x1b]52;c;SGVsbG8= after")))).toBe("before");
  });

  test("an OSC 8 hyperlink keeps its text", () => {
    expect(text(filter(bytes("see \x1b]8;;https://example.com/\x1b\\the docs\x1b]8;;\x1b\\.")))).toBe("see the docs.");
  });

  test("a control inside a sequence acts as in a terminal: ESC restarts, newline goes through", () => {
    expect(text(filter(bytes("\x1b[31\x1b[32mgreen")))).toBe("\x1b[32mgreen");
    expect(text(filter(bytes("\x1b[3\n1m")))).toBe("\n\x1b[31m");
    expect(text(filter(bytes("\x1b]0;title\x1b[1mbold")))).toBe("\x1b[1mbold");
  });

  test("a character inside a sequence ends it and is kept", () => {
    expect(text(filter(utf8("\x1b[3é1m")))).toBe(text(utf8("é1m")));
  });
});

describe("UTF-8 and C1", () => {
  test("a byte in 0x80–0x9F outside a valid character is a C1 control; other invalid bytes pass", () => {
    // C4 then ASCII: C4 is a cut character (passes as it is), then text.
    expect(text(filter(bytes("\xc4A")))).toBe("\xc4A");
    // E2 9B cut by "6": 9B is not part of a character, so it is CSI and "6n" is its end.
    expect(text(filter(bytes("\xe2\x9b6nok")))).toBe("\xe2ok");
    // An overlong ESC (C0 9B) is never assembled: C0 passes, 9B is CSI.
    expect(text(filter(bytes("\xc0\x9b6nok")))).toBe("\xc0ok");
    // E0 80 (overlong) and ED A0 (surrogate) are not characters.
    expect(text(filter(bytes("\xe0\x80\x9b6n\xed\xa0\x80")))).toBe("\xe0\xed\xa0");
    // Stray continuation bytes above 0x9F and bytes never valid in UTF-8.
    expect(text(filter(bytes("\xa0\xbf\xc1\xf5\xff")))).toBe("\xa0\xbf\xc1\xf5\xff");
  });

  test("a character cut at the end of the stream is written as it is", () => {
    const e = utf8("€");
    expect(filter(e.subarray(0, 2))).toEqual(e.subarray(0, 1));
    expect(filter(e.subarray(0, 1))).toEqual(e.subarray(0, 1));
  });

  test("a C1-range byte inside an OSC title ends it only when it is ST, not inside a character", () => {
    expect(text(filter(utf8("\x1b]0;Ŝ title\x07after")))).toBe("after");
  });
});

describe("chunks", () => {
  const sample = utf8(
    "plain ě \x1b[1;38;2;255;0;0mbold red\x1b[0m 日本 \x1b]52;c;SGVsbG8=\x07 \x1b[c\x1b[6n \x1bP$qm\x1b\\ " +
      "\x1b]8;;https://x/\x1b\\link\x1b]8;;\x1b\\ \u009b6n \x1b[?25l\x1b[?1000h 🎉 \x1b(0q\x1b(B \x1b[2 q Ŝ\r\n",
  );
  const whole = filter(sample);

  test("the sample's expected output", () => {
    expect(Buffer.from(whole).toString("utf8")).toBe(
      "plain ě \x1b[1;38;2;255;0;0mbold red\x1b[0m 日本    link  \x1b[?25l 🎉 \x1b(0q\x1b(B \x1b[2 q Ŝ\r\n",
    );
  });

  test("a split at every byte position gives the output of one push", () => {
    for (let k = 0; k <= sample.length; k++) {
      const got = filter(sample.subarray(0, k), sample.subarray(k));
      if (!Buffer.from(got).equals(Buffer.from(whole))) throw new Error(`split at byte ${k} changed the output`);
    }
  });

  test("one byte per push gives the output of one push", () => {
    expect(filter(...Array.from(sample, (b) => Uint8Array.of(b)))).toEqual(whole);
  });

  test("random streams: the output does not depend on how they are cut", () => {
    // Fragments that meet at every kind of boundary: sequences kept and dropped, C0 and C1
    // controls, valid and broken UTF-8, string terminators.
    const parts = [
      "a",
      " ",
      "\n",
      "\x1b",
      "[",
      "]",
      "P",
      "\\",
      "31",
      ";",
      "?",
      "25",
      "1000",
      "h",
      "m",
      "c",
      "6n",
      " q",
      "(",
      "B",
      "\x07",
      "\x18",
      "\x05",
      "\x7f",
      "\x9b",
      "\x9c",
      "\x9d",
      "\xc2",
      "\xc4",
      "\xe2",
      "\xe6\x97",
      "\x80",
      "\x9f",
      "\xa5",
      "\xf0\x9f",
      "\xff",
      ">",
      "52;c;SGVsbG8=",
    ].map(bytes);
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const sample = new Uint8Array(
        Buffer.concat(Array.from({ length: 5 + random(60) }, () => parts[random(parts.length)] as Uint8Array)),
      );
      const whole = filter(sample);
      const cuts: Uint8Array[] = [];
      for (let at = 0; at < sample.length; ) {
        const len = 1 + random(8);
        cuts.push(sample.subarray(at, at + len));
        at += len;
      }
      if (!Buffer.from(filter(...cuts)).equals(Buffer.from(whole)))
        throw new Error(`cutting changed the output of ${JSON.stringify(text(sample))}`);
    }
  });

  test("a sequence cut by a chunk is written whole with the chunk that completes it", () => {
    const f = new TerminalFilter();
    expect(text(f.push(bytes("red: \x1b[3")))).toBe("red: ");
    expect(text(f.push(bytes("1mred")))).toBe("\x1b[31mred");
    expect(text(f.push(bytes("\x1b")))).toBe("");
    expect(text(f.end())).toBe("");
  });
});

describe("bounded memory", () => {
  test(`a sequence longer than ${MAX_SEQUENCE} bytes is dropped whole, even one that would be kept`, () => {
    const sgr = (len: number) => `\x1b[${"1".repeat(len - 3)}m`;
    const charset = (len: number) => `\x1b${"(".repeat(len - 2)}B`;
    expect([sgr(MAX_SEQUENCE).length, charset(MAX_SEQUENCE).length]).toEqual([MAX_SEQUENCE, MAX_SEQUENCE]);
    // In one push (whole sequences are taken in bulk) and a byte per push (the parser's own buffer).
    for (const feed of [
      (s: string) => filter(bytes(s)),
      (s: string) => filter(...Array.from(bytes(s), (b) => Uint8Array.of(b))),
    ]) {
      expect(text(feed(`<${sgr(MAX_SEQUENCE)}>`))).toBe(`<${sgr(MAX_SEQUENCE)}>`);
      expect(text(feed(`<${sgr(MAX_SEQUENCE + 1)}>`))).toBe("<>");
      expect(text(feed(`<${sgr(3 * MAX_SEQUENCE)}>`))).toBe("<>");
      expect(text(feed(`<${charset(MAX_SEQUENCE)}>`))).toBe(`<${charset(MAX_SEQUENCE)}>`);
      expect(text(feed(`<${charset(MAX_SEQUENCE + 1)}>`))).toBe("<>");
    }
  });

  test("an endless sequence holds nothing: every push of it writes nothing, and its end lets text through", () => {
    const f = new TerminalFilter();
    const csi = bytes("1;".repeat(32 * 1024));
    const osc = bytes("A".repeat(64 * 1024));
    expect(f.push(bytes("\x1b["))).toEqual(new Uint8Array(0));
    for (let i = 0; i < 64; i++) expect(f.push(csi).length).toBe(0);
    expect(text(f.push(bytes("m\x1b]52;c;")))).toBe("");
    for (let i = 0; i < 64; i++) expect(f.push(osc).length).toBe(0);
    expect(text(f.push(bytes("\x07after")))).toBe("after");
  });
});
