/**
 * The Lima names and paths client commands need (the VM's name, the forwarded socket, guest paths
 * of host paths), apart from lib/host/lima.ts so that a client command does not load the
 * installer and Lima's templates to find a socket.
 */
import { homedir } from "node:os";
import { join } from "node:path";

/** The VM's name. */
export const LIMA_VM = "planter";

export function limaHome(env: Record<string, string | undefined> = process.env): string {
  return env.LIMA_HOME || join(env.HOME || homedir(), ".lima");
}

/** The host end of the forwarded socket: `<LIMA_HOME>/planter/sock/planterd.sock` (the template's `{{.Dir}}/sock/planterd.sock`). */
export function hostSocketPath(env: Record<string, string | undefined> = process.env, name = LIMA_VM): string {
  return join(limaHome(env), name, "sock", "planterd.sock");
}

export interface LimaMount {
  location: string;
  mountPoint: string;
  writable: boolean;
}

/**
 * Where the guest sees the absolute, normalised `hostPath`: under the deepest mount that holds it
 * (mountPoint plus the rest of the path), or null when no mount holds it.
 */
export function guestPathOf(hostPath: string, mounts: LimaMount[]): string | null {
  let best: LimaMount | null = null;
  for (const m of mounts) {
    const loc = m.location.length > 1 ? m.location.replace(/\/+$/, "") : m.location;
    const inside = hostPath === loc || hostPath.startsWith(loc === "/" ? "/" : `${loc}/`);
    if (inside && (!best || loc.length > best.location.length)) best = { ...m, location: loc };
  }
  if (!best) return null;
  const rest = hostPath.slice(best.location.length).replace(/^\/+/, "");
  return rest ? join(best.mountPoint, rest) : best.mountPoint;
}
