/** Backend selection per platform. */
import type { Backend, Probe } from "./backend.ts";

/**
 * The sandboxing backend of this platform, or null when this build has none for it.
 * bubblewrap (Linux) and Seatbelt (macOS) plug in here.
 */
export function platformBackend(): Backend | null {
  return null;
}

/** Probe the platform backend (cached per daemon life by the caller). */
export async function probePlatform(): Promise<{ backend: Backend | null; probe: Probe }> {
  const backend = platformBackend();
  if (!backend) {
    return {
      backend,
      probe: {
        ok: false,
        message: `no sandbox backend for ${process.platform} in this build`,
        hint: "run with sandbox mode disabled or permissive (config [sandbox] mode), or use a build with sandbox support",
      },
    };
  }
  return { backend, probe: await backend.probe() };
}
