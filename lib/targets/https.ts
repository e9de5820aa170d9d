/** An `https://` target's transport (not yet built). */
import type { RemoteTransport } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import type { TargetEntry } from "../cli/client-config.ts";
import type { Endpoint } from "./url.ts";

export async function httpsTransport(
  name: string,
  _endpoints: Extract<Endpoint, { kind: "https" }>[],
  _entry: TargetEntry,
): Promise<RemoteTransport> {
  throw new PlanterError("E_UNAVAILABLE", `https targets are not built yet (${name})`);
}
