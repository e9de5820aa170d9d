/** Backend selection per platform. */
import type { Backend, Probe } from "./backend.ts";
import { BwrapBackend } from "./bwrap.ts";
import { SeatbeltBackend } from "./seatbelt.ts";

/** The sandboxing backend of this platform, or null when planter has none for it. */
export function platformBackend(platform = process.platform): Backend | null {
  if (platform === "linux") return new BwrapBackend();
  if (platform === "darwin") return new SeatbeltBackend();
  return null;
}

/** A backend by name (for `sandbox render --backend`). */
export function backendByName(name: string): Backend | null {
  if (name === "bwrap") return new BwrapBackend(Bun.which("bwrap") ?? "bwrap");
  if (name === "seatbelt") return new SeatbeltBackend();
  return null;
}

/** Probe the platform backend. */
export async function probePlatform(): Promise<{ backend: Backend | null; probe: Probe }> {
  const backend = platformBackend();
  if (!backend) {
    return {
      backend,
      probe: {
        ok: false,
        message: `no sandbox backend for ${process.platform}`,
        hint: "run with sandbox mode disabled or permissive (config [sandbox] mode)",
      },
    };
  }
  return { backend, probe: await backend.probe() };
}
