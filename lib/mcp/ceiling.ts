/**
 * The MCP ceiling (config `[mcp]`, docs/mcp.md "Ceiling"): what no MCP caller can widen — the
 * lowest sandbox mode, the network, Unix sockets, a read-only cell dir, and each limit's most.
 * planterd applies it in the handlers themselves (jobs and cells) to every request that came
 * through `/mcp`, whichever way it came (stdio bridge, the socket, TCP): the caller cannot leave it
 * out. Pure functions over the effective values, so the rules are tested apart from planterd.
 */
import type { Limits, SandboxMode } from "../api/contract.ts";
import { PlanterError } from "../api/errors.ts";
import type { Config } from "../config.ts";
import { capNetwork, type EffectivePolicy, isWidening, type Network } from "../sandbox/policy.ts";

export type McpCeiling = Config["mcp"];

const RANK: Record<SandboxMode, number> = { disabled: 0, permissive: 1, enforced: 2 };

/** A refusal by the ceiling: 403, with what to ask for instead. */
export function beyondCeiling(what: string, hint: string): PlanterError {
  return new PlanterError("E_BAD_REQUEST", `${what}: beyond the MCP ceiling (config [mcp])`, {
    status: 403,
    hint,
    details: { ceiling: "mcp" },
  });
}

/** Refuse a sandbox mode below the ceiling's `min_mode`. */
export function checkCeilingMode(c: McpCeiling, mode: SandboxMode, where: string): void {
  if (RANK[mode] >= RANK[c.min_mode]) return;
  throw beyondCeiling(
    `sandbox mode ${mode} (${where}) is below ${c.min_mode}`,
    `MCP jobs run with sandbox mode ${c.min_mode} or stricter: ask for mode "${c.min_mode}", or use a cell with it`,
  );
}

/** A network under the ceiling's, or its refusal. */
export function ceilingNetwork(c: McpCeiling, n: Network): Network {
  const capped = capNetwork(
    {
      allow_host: c.network.allow_host,
      allow: c.network.allow,
      deny: c.network.deny,
      allow_local: c.network.allow_local,
    },
    n,
  );
  if (!isWidening(capped)) return capped;
  throw beyondCeiling(
    capped.what.replace("the config's [network] ceiling", "what MCP callers may have"),
    `${capped.hint}; or narrow the job's network (policy.network: "none" or an allow list)`,
  );
}

/**
 * A job's effective policy under the ceiling: the network checked (deny entries added), Unix
 * sockets refused unless allowed, and the cell dir made read-only when the ceiling says so (a
 * narrowing that is always possible, so it is applied rather than refused).
 */
export function ceilingPolicy(c: McpCeiling, p: EffectivePolicy): EffectivePolicy {
  if (p.unix_sockets.length && !c.unix_sockets) {
    throw beyondCeiling(
      `unix_sockets ${p.unix_sockets.join(", ")}`,
      "MCP jobs connect to no Unix socket: narrow the job's policy with unix_sockets = [] or use a cell without them",
    );
  }
  return {
    ...p,
    network: ceilingNetwork(c, p.network),
    fs_mode: c.fs_mode === "read_only" ? "read_only" : p.fs_mode,
    read_write: c.fs_mode === "read_only" ? [] : p.read_write,
  };
}

const LIMIT_KEYS = ["timeout_ms", "max_rss_bytes", "max_log_bytes", "max_pids"] as const;

/**
 * A job's limits under the ceiling. `asked` are the job's own (refused beyond the ceiling: the
 * caller said so); `inherited` come from the config and the cell (lowered to the ceiling, as is
 * a limit nobody set).
 */
export function ceilingLimits(c: McpCeiling, asked: Limits | undefined, inherited: Limits): Limits {
  const out: Limits = { ...inherited, ...asked };
  for (const k of LIMIT_KEYS) {
    const most = c.limits[k];
    if (most === undefined) continue;
    const a = asked?.[k];
    if (a !== undefined && a > most) {
      throw beyondCeiling(`${k} ${a} is more than ${most}`, `ask for ${k} of at most ${most}, or leave it out`);
    }
    const v = out[k];
    if (v === undefined || v > most) out[k] = most;
  }
  return out;
}
