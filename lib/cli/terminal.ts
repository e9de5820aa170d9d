/**
 * What of a job's output may reach the user's terminal. A job's bytes are written to the
 * terminal of the person who ran `planter run` / `planter logs`, so a hostile job could write
 * their clipboard (OSC 52), retitle their window, or make the terminal answer a query — and an
 * answer lands in their input, as if typed into the shell once the job is over. TerminalFilter
 * keeps text, colours, cursor movement and a few display modes, and drops everything else.
 *
 * Dropped sequences vanish rather than being shown as text (`^[]52;…`): jobs emit harmless
 * titles and capability probes all the time, and printing them would garble ordinary output
 * with payloads the job chose; the stored log keeps every byte (`planter logs --raw | cat -v`).
 *
 * The filter parses the stream as a terminal does (ECMA-48 / the DEC VT500 parser) and emits
 * only bytes it has classified: text, the C0 controls that move the cursor, and whole
 * sequences from an allow-list. A sequence is held until its final byte and written in one
 * piece, so output of another stream (stderr beside stdout) never lands inside one.
 *
 * UTF-8: a terminal in UTF-8 mode decodes first, and takes U+0080–U+009F as C1 controls
 * (U+009B is CSI). Bytes 0x80–0x9F are C1 controls only where they are not part of a valid
 * UTF-8 sequence (8-bit terminals, stray bytes). Every such stray byte is dropped, so no byte
 * in 0x80–0x9F ever leaves the filter outside a valid character — which also means no
 * overlong encoding of a control (they all need one) can be assembled from what it emits.
 */

/** The longest sequence held in memory; a longer one is dropped and skipped to its end. */
export const MAX_SEQUENCE = 4096;

const GROUND = 0;
/** After ESC, collecting intermediates (0x20–0x2F). */
const ESCAPE = 1;
/** After ESC [, collecting parameters and intermediates. */
const CSI = 2;
/** Skipping a sequence that will be dropped, up to its final byte (no memory held). */
const IGNORE = 3;
/** Inside OSC, DCS, SOS, PM or APC: skipped, up to ST (or BEL for OSC). */
const STRING = 4;

const BEL = 0x07;
const ESC = 0x1b;
const CAN = 0x18;
const SUB = 0x1a;
const DEL = 0x7f;
/** C1 String Terminator. */
const ST = 0x9c;

/**
 * Bytes the ground state writes as they are: printable ASCII, and BEL BS HT LF VT FF CR SO SI,
 * which ring, move the cursor or shift charsets. The other C0 controls go: ENQ makes a
 * terminal send its answerback, and none of them prints anything.
 */
const PASS = new Uint8Array(256);
for (let b = 0x20; b < DEL; b++) PASS[b] = 1;
for (let b = BEL; b <= 0x0f; b++) PASS[b] = 1;

/** ESC + final with no intermediates kept: DECSC DECRC, keypad modes, IND NEL RI (cursor moves). */
const ESC_FINALS = new Set([..."78=>DEM"].map((c) => c.charCodeAt(0)));
/** First intermediates of charset designation (G0–G3, 94- and 96-character sets): `ESC ( B`. */
const CHARSET = new Set([..."()*+-./"].map((c) => c.charCodeAt(0)));
/**
 * CSI finals kept (no private marker, no intermediates): SGR, and the cursor, erase, insert,
 * delete, scroll and tab controls — ICH CUU CUD CUF CUB CNL CPL CHA CUP CHT ED EL IL DL DCH SU
 * SD ECH CBT HPA HPR REP VPA VPR HVP TBC DECSTBM, and `s` (save cursor). They only draw.
 */
const CSI_FINALS = new Set([..."m@ABCDEFGHIJKLMPSXZ`abdefgrs"].map((c) => c.charCodeAt(0)));
/**
 * DEC private modes kept (`CSI ? N h/l`): they change only how the screen is drawn — cursor
 * visible (25) and blinking (12), autowrap (7), alternate screen (47 1047 1048 1049), bracketed
 * paste (2004, the shell's own mode) and synchronized output (2026). Mouse and focus reporting
 * (1000–1006, 1015, 1016, 1004) and alternate scroll (1007) make the terminal emit input; they go.
 */
const SAFE_PRIVATE_MODES = new Set(["7", "12", "25", "47", "1047", "1048", "1049", "2004", "2026"]);

/**
 * For an attached interactive job (`planter run -it`, `planter attach`), whose input is the
 * caller's keyboard: also application cursor keys (1) and mouse and focus reporting (1000 1002
 * 1003 1004 1006), which make the terminal send input — to the job, which asked for it. The
 * session resets them when it ends (`lib/cli/session.ts`), so no report reaches the shell after.
 * Queries (DSR, DA, OSC) stay dropped: their answers would be input the job did not type (the
 * terminal holder's emulator answers them, lib/tty/screen.ts).
 */
export const INTERACTIVE_PRIVATE_MODES = new Set([
  ...SAFE_PRIVATE_MODES,
  ...["1", "1000", "1002", "1003", "1004", "1006"],
]);

/** Neutralises dangerous terminal sequences in a byte stream; keeps colours and cursor movement. */
export class TerminalFilter {
  /** DEC private modes let through (`CSI ? N h/l`); INTERACTIVE_PRIVATE_MODES for an attached session. */
  constructor(private readonly modes: ReadonlySet<string> = SAFE_PRIVATE_MODES) {}

  private readonly keepCsi = (s: Uint8Array, start: number, end: number) => keepCsi(s, start, end, this.modes);

  private state = GROUND;
  /** The sequence being collected (ESCAPE, CSI), from its ESC. */
  private readonly seq = new Uint8Array(MAX_SEQUENCE);
  private seqLen = 0;
  /** In IGNORE, the lowest final byte: 0x40 after CSI, 0x30 after ESC. */
  private ignoreFrom = 0x40;
  /** In STRING: OSC, which BEL also ends. */
  private osc = false;
  /** A UTF-8 sequence being collected, its length when whole and the range of its next byte. */
  private readonly utf8 = new Uint8Array(4);
  private utf8Len = 0;
  private utf8Need = 0;
  private utf8Lo = 0x80;
  private utf8Hi = 0xbf;
  private out = new Uint8Array(0);
  private o = 0;

  /** The bytes of `chunk` that may be written now; a sequence or character cut by the chunk's end waits for the next. */
  push(chunk: Uint8Array): Uint8Array {
    const n = chunk.length;
    let i = 0;
    if (this.state === GROUND && this.utf8Len === 0) {
      i = plainRun(chunk, 0, this.modes);
      if (i === n) return chunk;
    }
    // Output is never longer than the input plus what earlier chunks left pending.
    this.out = new Uint8Array(n + this.seqLen + this.utf8Len);
    this.out.set(chunk.subarray(0, i));
    this.o = i;
    while (i < n) {
      if (this.utf8Len === 0) {
        const next = this.bulk(chunk, i);
        if (next > i) {
          i = next;
          continue;
        }
      }
      this.byte(chunk[i++] as number);
    }
    return this.out.subarray(0, this.o);
  }

  /**
   * Past the bytes from `i` that need no byte-by-byte parsing: in GROUND a run of text and kept
   * sequences (copied) or a whole dropped CSI sequence (skipped), in STRING the string's body;
   * `i` when the next byte needs the parser. The parser gives the same result, slower.
   */
  private bulk(chunk: Uint8Array, i: number): number {
    if (this.state === GROUND) {
      const end = plainRun(chunk, i, this.modes);
      if (end === i) return i + csiLength(chunk, i);
      this.out.set(chunk.subarray(i, end), this.o);
      this.o += end - i;
      return end;
    }
    return this.state === STRING ? stringBody(chunk, i) : i;
  }

  /** What is still held at the end of the stream: a cut character's bytes (as they are); a cut sequence is dropped. */
  end(): Uint8Array {
    this.out = new Uint8Array(this.utf8Len);
    this.o = 0;
    if (this.utf8Len) this.invalidUtf8();
    this.state = GROUND;
    this.seqLen = 0;
    return this.out.subarray(0, this.o);
  }

  /** UTF-8 decoding, ahead of the parser as in a terminal. */
  private byte(b: number): void {
    if (this.utf8Len > 0) {
      if (b >= this.utf8Lo && b <= this.utf8Hi) {
        this.continueUtf8(b);
        return;
      }
      this.invalidUtf8();
    }
    if (b < 0x80) this.ascii(b);
    else if (b <= 0x9f) this.c1(b);
    else if (b <= 0xc1 || b >= 0xf5) this.text1(b);
    else this.startUtf8(b);
  }

  /** A lead byte; the ranges of the second byte exclude overlongs, surrogates and > U+10FFFF. */
  private startUtf8(b: number): void {
    this.utf8[0] = b;
    this.utf8Len = 1;
    this.utf8Need = b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    this.utf8Lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80;
    this.utf8Hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf;
  }

  /** A valid continuation byte: held until the character is whole, then written (or taken as a C1 control). */
  private continueUtf8(b: number): void {
    this.utf8[this.utf8Len++] = b;
    this.utf8Lo = 0x80;
    this.utf8Hi = 0xbf;
    if (this.utf8Len < this.utf8Need) return;
    const len = this.utf8Len;
    this.utf8Len = 0;
    // C2 80–C2 9F encode U+0080–U+009F: C1 controls to a UTF-8 terminal.
    if (len === 2 && this.utf8[0] === 0xc2 && b <= 0x9f) this.c1(b);
    else this.text(this.utf8, len);
  }

  /** A cut or malformed UTF-8 sequence: its bytes are stray bytes, those in 0x80–0x9F C1 controls. */
  private invalidUtf8(): void {
    const len = this.utf8Len;
    this.utf8Len = 0;
    // Replaying never starts a new sequence (only the first byte is a lead), so utf8 stays intact.
    this.text1(this.utf8[0] as number);
    for (let k = 1; k < len; k++) {
      const b = this.utf8[k] as number;
      if (b <= 0x9f) this.c1(b);
      else this.text1(b);
    }
  }

  private ascii(b: number): void {
    const state = this.state;
    if (state === GROUND) {
      if (b === ESC) this.startEscape();
      else if (PASS[b]) this.emit(b);
    } else if (state === STRING) {
      if (b === ESC) this.startEscape();
      else if (b === CAN || b === SUB || (b === BEL && this.osc)) this.ground();
    } else if (b < 0x20 || b === DEL) this.control(b);
    else if (state === IGNORE) {
      if (b >= this.ignoreFrom) this.ground();
    } else if (state === ESCAPE) this.escapeByte(b);
    else if (b < 0x40) this.collect(b, 0x40);
    else this.finish(b, this.keepCsi);
  }

  /** A byte from 0x20 to 0x7E after ESC: an intermediate, the start of CSI or of a string, or a final. */
  private escapeByte(b: number): void {
    if (b < 0x30) this.collect(b, 0x30);
    else if (this.seqLen > 1) this.finish(b, keepEscape);
    else if (b === 0x5b /* [ */) this.collect(b, 0x40, CSI);
    else if (b === 0x5d /* ] */) this.startString(true);
    // DCS, SOS, PM, APC.
    else if (b === 0x50 || b === 0x58 || b === 0x5e || b === 0x5f) this.startString(false);
    else this.finish(b, keepEscape);
  }

  /** The final byte: write the sequence if it is allowed and whole (within MAX_SEQUENCE). */
  private finish(b: number, keep: (s: Uint8Array, start: number, end: number) => boolean): void {
    if (this.seqLen < MAX_SEQUENCE) {
      this.seq[this.seqLen++] = b;
      if (keep(this.seq, 0, this.seqLen)) this.emitSequence();
    }
    this.ground();
  }

  /** A C0 control or DEL inside a sequence: as in a terminal, ESC restarts, CAN and SUB cancel, others act at once. */
  private control(b: number): void {
    if (b === ESC) this.startEscape();
    else if (b === CAN || b === SUB) this.ground();
    else if (PASS[b]) this.emit(b);
  }

  /** A C1 control, 8-bit or UTF-8 encoded. Every sequence it introduces is dropped: no program needs them. */
  private c1(b: number): void {
    if (this.state === STRING) {
      if (b === ST) this.ground();
      return;
    }
    // Inside ESC or CSI a C1 control aborts the sequence.
    this.ground();
    if (b === 0x9b) this.ignore(0x40);
    else if (b === 0x9d) this.startString(true);
    // DCS, SOS, PM, APC.
    else if (b === 0x90 || b === 0x98 || b === 0x9e || b === 0x9f) this.startString(false);
  }

  /** Text beyond ASCII: a whole UTF-8 character. */
  private text(bytes: Uint8Array, len: number): void {
    if (this.state === STRING) return;
    // A character inside ESC or CSI makes the sequence malformed: drop it, keep the character.
    if (this.state !== GROUND) this.ground();
    this.out.set(bytes.subarray(0, len), this.o);
    this.o += len;
  }

  /** A byte in 0xA0–0xFF outside valid UTF-8: Latin-1 text to an 8-bit terminal, a replacement character to a UTF-8 one. */
  private text1(b: number): void {
    if (this.state === STRING) return;
    if (this.state !== GROUND) this.ground();
    this.emit(b);
  }

  private startEscape(): void {
    this.state = ESCAPE;
    this.seq[0] = ESC;
    this.seqLen = 1;
  }

  private startString(osc: boolean): void {
    this.state = STRING;
    this.osc = osc;
    this.seqLen = 0;
  }

  /** Add a byte to the held sequence; at MAX_SEQUENCE, let go of it and skip to its final byte. */
  private collect(b: number, finalFrom: number, next = this.state): void {
    if (this.seqLen === MAX_SEQUENCE) this.ignore(finalFrom);
    else {
      this.seq[this.seqLen++] = b;
      this.state = next;
    }
  }

  private ignore(finalFrom: number): void {
    this.state = IGNORE;
    this.ignoreFrom = finalFrom;
    this.seqLen = 0;
  }

  private ground(): void {
    this.state = GROUND;
    this.seqLen = 0;
  }

  private emit(b: number): void {
    this.out[this.o++] = b;
  }

  private emitSequence(): void {
    this.out.set(this.seq.subarray(0, this.seqLen), this.o);
    this.o += this.seqLen;
  }
}

/** Whether the whole ESC sequence s[start, end) (ESC intermediates final) is on the allow-list. */
function keepEscape(s: Uint8Array, start: number, end: number): boolean {
  if (end - start === 2) return ESC_FINALS.has(s[start + 1] as number);
  return CHARSET.has(s[start + 1] as number);
}

/**
 * Where the run of bytes from `i` that the ground state writes unchanged ends: text, whole
 * UTF-8 characters other than C1 controls, and whole CSI sequences on the allow-list.
 */
function plainRun(s: Uint8Array, i: number, modes: ReadonlySet<string>): number {
  const n = s.length;
  while (i < n) {
    const b = s[i] as number;
    if (PASS[b]) i++;
    else if (b >= 0xc2) {
      const len = utf8Length(s, i);
      if (!len) break;
      i += len;
    } else if (b === ESC) {
      const len = csiLength(s, i);
      if (!len || !keepCsi(s, i, i + len, modes)) break;
      i += len;
    } else break;
  }
  return i;
}

/** Where the body of an OSC, DCS, SOS, PM or APC string from `i` meets a byte that may end it (ESC BEL CAN SUB, or any byte ≥ 0x80), or `s.length`. */
function stringBody(s: Uint8Array, i: number): number {
  const n = s.length;
  while (i < n) {
    const b = s[i] as number;
    if (b >= 0x80 || b === ESC || b === BEL || b === CAN || b === SUB) break;
    i++;
  }
  return i;
}

/** The length of the valid UTF-8 character at `i`, whole in `s` and not a C1 control; else 0. */
function utf8Length(s: Uint8Array, i: number): number {
  const b = s[i] as number;
  if (b < 0xc2 || b > 0xf4) return 0;
  const len = b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
  if (i + len > s.length) return 0;
  const c = s[i + 1] as number;
  if (c < (b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : b === 0xc2 ? 0xa0 : 0x80)) return 0;
  if (c > (b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf)) return 0;
  for (let k = 2; k < len; k++) if (((s[i + k] as number) & 0xc0) !== 0x80) return 0;
  return len;
}

/** The length of the CSI sequence at `i` when it is whole in `s`, of plain bytes and at most MAX_SEQUENCE long; else 0. */
function csiLength(s: Uint8Array, i: number): number {
  if (s[i] !== ESC || s[i + 1] !== 0x5b) return 0;
  const n = Math.min(s.length, i + MAX_SEQUENCE);
  for (let j = i + 2; j < n; j++) {
    const b = s[j] as number;
    if (b >= 0x20 && b <= 0x3f) continue;
    return b >= 0x40 && b <= 0x7e ? j + 1 - i : 0;
  }
  return 0;
}

/** Whether the whole CSI sequence s[start, end) (ESC [ parameters intermediates final) is on the allow-list. */
function keepCsi(s: Uint8Array, start: number, end: number, modes: ReadonlySet<string>): boolean {
  const last = end - 1;
  const final = s[last] as number;
  let i = start + 2;
  const marker = i < last && (s[i] as number) >= 0x3c ? (s[i++] as number) : 0;
  const from = i;
  while (i < last && (s[i] as number) >= 0x30 && (s[i] as number) <= 0x3b) i++;
  const to = i;
  while (i < last && (s[i] as number) <= 0x2f) i++;
  // A marker byte after the first, or a parameter after an intermediate: malformed.
  if (i !== last) return false;
  if (i > to) return marker === 0 && i - to === 1 && s[to] === 0x20 && final === 0x71; // DECSCUSR
  const params = () => String.fromCharCode(...s.subarray(from, to));
  if (marker === 0x3f /* ? */) {
    return (
      (final === 0x68 || final === 0x6c) &&
      params()
        .split(";")
        .every((p) => modes.has(p))
    );
  }
  // Every other marker (> = <) is a query or a keyboard/reporting setting.
  if (marker) return false;
  switch (final) {
    case 0x68: // SM
    case 0x6c: // RM: insert mode only; the others lock the keyboard, echo locally or change what Enter sends
      return params() === "4";
    case 0x54: // SD; with more parameters it starts xterm's mouse highlight tracking
      return !params().includes(";");
    case 0x75: // SCORC; with parameters it is a keyboard protocol setting
      return from === to;
    default:
      return CSI_FINALS.has(final);
  }
}
