/** Opening a plan's inputs as the fds (3, 4, …) its program receives. */
import { dlopen, FFIType } from "bun:ffi";
import { chownSync, closeSync, constants, fchownSync, openSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { pipe } from "../net/listen.ts";
import type { PipeEnds, PipeKind, PlanInput } from "./backend.ts";
import type { Identity } from "./identity.ts";
import { openChecked } from "./paths.ts";

let serial = 0;

const MFD_CLOEXEC = 1;
const MEMFD_NAME = new TextEncoder().encode("planter-input\0");
let memfdCreate: ((name: Uint8Array, flags: number) => number) | null | undefined;

/**
 * The bytes in an anonymous memory file (Linux memfd_create), its offset at 0; null where there
 * is none. A file in the job dir costs a create and an unlink, each ~0.7 ms of CPU on an ext4
 * state disk here (bench launch); a memfd costs ~25 µs and is never on disk.
 */
function memfd(data: Uint8Array): number | null {
  if (memfdCreate === undefined) {
    try {
      memfdCreate =
        process.platform === "linux"
          ? (dlopen("libc.so.6", { memfd_create: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 } }).symbols
              .memfd_create as (name: Uint8Array, flags: number) => number)
          : null;
    } catch {
      memfdCreate = null;
    }
  }
  if (!memfdCreate) return null;
  const fd = memfdCreate(MEMFD_NAME, MFD_CLOEXEC);
  if (fd < 0) return null;
  try {
    // pwrite from 0: the fd's own offset stays at the start, where its reader begins.
    for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done, done);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** A pipe for the plan's program: its end returned, planterd's in `ends` (and `kept`). */
function openPipe(kind: PipeKind, ends: PipeEnds | undefined, kept: number[]): number {
  if (!ends) throw new Error(`the plan has a ${kind} pipe and nobody to hold its other end`);
  // A second write end of the block pipe, for the program itself (bwrap's --sync-fd: its init
  // keeps it, the job's process closes it): the pipe never ends while the sandbox waits, so a
  // planterd gone meanwhile leaves it waiting instead of letting it go on unchecked.
  if (kind === "hold") {
    if (ends.block === undefined) throw new Error("the plan holds a block pipe it does not have");
    return openSync(`/proc/self/fd/${ends.block}`, constants.O_WRONLY);
  }
  const [r, w] = pipe();
  const [theirs, ours] = kind === "info" ? [w, r] : [r, w];
  kept.push(ours);
  ends[kind] = ours;
  return theirs;
}

/**
 * Open every input: bytes in a memfd (Linux) or else through a file written in `privateDir`
 * (mode 0600) and unlinked at once, so only the fd holds them; paths through `openChecked`. On
 * failure nothing stays open. `owner` owns the bytes: a shell that reads its input as `/dev/fd/N`
 * reopens it as that user. A pipe's other end goes to `ends` (required when the plan has pipes).
 */
export function openInputs(
  inputs: PlanInput[],
  privateDir: string,
  owner: Identity | null = null,
  ends?: PipeEnds,
): number[] {
  const fds: number[] = [];
  const kept: number[] = [];
  try {
    for (const input of inputs) {
      if ("pipe" in input) {
        fds.push(openPipe(input.pipe, ends, kept));
        continue;
      }
      if ("path" in input) {
        fds.push(openChecked(input.path));
        continue;
      }
      const mem = memfd(input.data);
      if (mem !== null) {
        fds.push(mem);
        if (owner) fchownSync(mem, owner.uid, owner.gid);
        continue;
      }
      const file = join(privateDir, `.input-${process.pid}-${++serial}`);
      writeFileSync(file, input.data, { mode: 0o600 });
      if (owner) chownSync(file, owner.uid, owner.gid);
      try {
        fds.push(openSync(file, "r"));
      } finally {
        unlinkSync(file);
      }
    }
    return fds;
  } catch (e) {
    for (const fd of [...fds, ...kept]) closeSync(fd);
    if (ends) for (const k of Object.keys(ends) as (keyof PipeEnds)[]) delete ends[k];
    throw e;
  }
}
