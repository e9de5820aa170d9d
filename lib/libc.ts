/**
 * The C library that bun:ffi opens for planter's few libc calls: glibc's on Linux, libSystem on
 * macOS (where libc lives). One name for every caller.
 */
export const LIBC = process.platform === "darwin" ? "/usr/lib/libSystem.B.dylib" : "libc.so.6";
