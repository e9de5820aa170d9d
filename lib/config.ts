/** planterd configuration: a TOML file validated with valibot; every key has a default. */
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import * as v from "valibot";
import { Limits, SandboxMode, summarizeIssues } from "./api/contract.ts";
import { PlanterError } from "./api/errors.ts";
import { ClientSection, Target, TargetsSection } from "./cli/client-config.ts";
import { NetEntry, Policy } from "./sandbox/policy.ts";

export { ClientSection, Target };

/**
 * Limits every job has unless the config, its cell or the job sets another value: a log quota
 * (an unlimited `yes` fills a disk in minutes) and a process cap (a fork bomb takes a machine in
 * seconds). Memory has no default: machines differ too much; a job's private /tmp is capped by
 * `[sandbox] tmp_bytes`. Each can be raised (not removed) in the config, a cell or a job.
 */
export const DEFAULT_LIMITS = { max_log_bytes: 1024 ** 3, max_pids: 4096 } as const satisfies Limits;

/** The user a root peer's jobs run as unless `[jobs] root_peer_user` names another; install creates it. */
export const DEFAULT_ROOT_PEER_USER = "planter-job";

const AbsPath = v.pipe(v.string(), v.startsWith("/", "an absolute path"));
const int = (min: number, max: number) => v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max));

/** The config file's schema; unknown keys are refused. */
export const ConfigSchema = v.strictObject({
  client: v.optional(ClientSection, {}),
  /** Registered targets (`planter target add`): read by client commands; planterd accepts and ignores them. */
  targets: v.optional(TargetsSection, {}),
  daemon: v.optional(
    v.strictObject({
      socket: v.optional(v.pipe(v.string(), v.minLength(1))),
      state_dir: v.optional(v.pipe(v.string(), v.minLength(1))),
    }),
    {},
  ),
  jobs: v.optional(
    v.strictObject({
      kill_grace_ms: v.optional(int(0, 3_600_000), 5000),
      default_cell: v.optional(v.string(), "default"),
      /** Names of the daemon's variables that jobs inherit (the documented minimal set). */
      env_pass: v.optional(v.array(v.string()), ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TERM"]),
      adopt_poll_ms: v.optional(int(10, 60_000), 500),
      /** Who a root peer's jobs run as when planterd is root (install creates this user); never uid 0. */
      root_peer_user: v.optional(v.pipe(v.string(), v.minLength(1)), DEFAULT_ROOT_PEER_USER),
      /** Jobs pending or running that one uid may have at once (0: no limit): one user cannot take the host. */
      max_running_per_uid: v.optional(int(0, 1_000_000), 256),
    }),
    {},
  ),
  logs: v.optional(
    v.strictObject({
      max_chunk_bytes: v.optional(int(1, 16 * 1024 * 1024), 1024 * 1024),
      max_wait_ms: v.optional(int(0, 600_000), 60_000),
      poll_ms: v.optional(int(5, 10_000), 100),
      /**
       * Free space kept on the state dir's disk for planter's own state: below it, a job whose
       * output grows is stopped (reason disk_full). Unset: 64 MiB, or 5 % of a smaller disk; 0: off.
       */
      min_free_bytes: v.optional(int(0, 2 ** 50)),
    }),
    {},
  ),
  events: v.optional(
    v.strictObject({
      retain: v.optional(int(100, 100_000_000), 100_000),
    }),
    {},
  ),
  api: v.optional(
    v.strictObject({
      max_body_bytes: v.optional(int(1024, 64 * 1024 * 1024), 1024 * 1024),
      /** A cell's env, limits and policy (as JSON) are kept to this: every cell ls reads them all. */
      max_cell_bytes: v.optional(int(1024, 64 * 1024 * 1024), 64 * 1024),
      /** Cells one uid may own (0: no limit): every cell ls answers them all. */
      max_cells_per_uid: v.optional(int(0, 10_000_000), 1000),
      /** A connection must finish sending a request's headers within this. */
      header_timeout_ms: v.optional(int(100, 600_000), 10_000),
      /** A request body must arrive within this. */
      body_timeout_ms: v.optional(int(100, 600_000), 30_000),
      /** An idle keep-alive connection is closed after this. */
      idle_timeout_ms: v.optional(int(100, 3_600_000), 30_000),
      /** Open connections of every uid but planterd's own and root's, together; and of each of those two. */
      max_connections: v.optional(int(1, 100_000), 512),
      /** Open connections of any one uid but planterd's own and root's. */
      max_connections_per_uid: v.optional(int(1, 100_000), 64),
      /**
       * A TLS listener on TCP besides the socket (https:// targets; lib/daemon/tcp.ts): never
       * without identities, loopback unless allow_remote, each identity an unprivileged uid proven
       * by a token file (0600) or a client certificate's CN under client_ca.
       */
      tcp: v.optional(
        v.strictObject({
          address: v.pipe(v.string(), v.minLength(1)),
          cert: AbsPath,
          key: AbsPath,
          client_ca: v.optional(AbsPath),
          allow_remote: v.optional(v.boolean(), false),
          identities: v.optional(
            v.array(
              v.strictObject({
                name: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]{1,64}$/, "letters, digits, . _ - (at most 64)")),
                uid: int(0, 2 ** 32 - 1),
                token_file: v.optional(AbsPath),
                cert_cn: v.optional(v.pipe(v.string(), v.minLength(1))),
              }),
            ),
            [],
          ),
        }),
      ),
    }),
    {},
  ),
  authz: v.optional(
    v.strictObject({
      /** Uids allowed besides the defaults (user mode: the daemon's own uid and root; system mode: root). */
      allowed_uids: v.optional(v.array(int(0, 2 ** 32 - 1)), []),
      /** Groups (names, or gids as numbers or digit strings) whose members are allowed (system mode adds `planter`). */
      allowed_groups: v.optional(
        v.array(v.union([v.pipe(v.string(), v.minLength(1)), v.pipe(int(0, 2 ** 32 - 1), v.transform(String))])),
        [],
      ),
      /**
       * System mode's group: the socket is root:GROUP 0660 in a 0750 dir, and its members are
       * allowed. "" means none (root only). PLANTER_GROUP overrides it (see systemGroup).
       */
      group: v.optional(
        v.pipe(v.string(), v.regex(/^([A-Za-z_][A-Za-z0-9_.-]{0,31})?$/, 'a group name, or "" for none')),
        "planter",
      ),
      /** false: serve refused peers anyway, with a warning event (local development only). */
      strict: v.optional(v.boolean(), true),
    }),
    {},
  ),
  /** Limits of every job, key by key under a cell's and a job's; the defaults protect disk and machine. */
  limits: v.pipe(
    v.optional(Limits, {}),
    v.transform((l): Limits => ({ ...DEFAULT_LIMITS, ...l })),
  ),
  monitor: v.optional(
    v.strictObject({
      /** How often running jobs with limits are sampled (one /proc scan for all of them). */
      interval_ms: v.optional(int(10, 60_000), 250),
      /** SIGTERM → SIGKILL grace of a limit kill; unset: jobs.kill_grace_ms. */
      grace_ms: v.optional(int(0, 3_600_000)),
      /** Check log sizes on every write (inotify) as well as every sample. */
      log_watch: v.optional(v.boolean(), true),
      /** "auto": cgroups per job where planterd can make them (a delegated v2 subtree, or v1 as root); "off": monitor only. */
      cgroup: v.optional(v.picklist(["auto", "off"]), "auto"),
      /** pids.max of a job's cgroup when no max_pids applies (cgroup enforcement only). */
      cgroup_pids_max: v.optional(int(1, 4_194_304), 8192),
    }),
    {},
  ),
  sandbox: v.optional(
    v.strictObject({
      /** Mode for jobs whose cell and request name none. */
      mode: v.optional(SandboxMode, "enforced"),
      /** Modes a cell or job may ask for. */
      allowed_modes: v.optional(v.pipe(v.array(SandboxMode), v.minLength(1)), ["disabled", "permissive", "enforced"]),
      /** Policy of cells that name none. */
      policy: v.optional(Policy, {}),
      /** Size of a job's private /tmp when it has no memory limit (with one, the limit). */
      tmp_bytes: v.optional(int(1024 * 1024, 2 ** 50)),
      /** More tool-config names the workspace review protects (docs/sandbox.md). */
      workspace_config_extra: v.optional(v.array(v.pipe(v.string(), v.minLength(1))), []),
      /** The most entries a job's writable tree may hold for its snapshot (its review walks twice as many). */
      workspace_max_entries: v.optional(int(1000, 1_000_000_000), 1_000_000),
      /**
       * How long a sandbox made ahead for the next job of a cell waits for it, ms (0: none is
       * made). plans/design.md "Warm sandboxes".
       */
      warm_ms: v.optional(int(0, 3_600_000), 5000),
    }),
    {},
  ),
  /** The vm backend (docs/sandbox.md "VM jobs"): where its kernel and initramfs are kept, and how QEMU runs. */
  vm: v.optional(
    v.strictObject({
      /** Where the guest kernel and initramfs are kept (unset: STATE/vm); daemons may share one. */
      cache_dir: v.optional(v.pipe(v.string(), v.startsWith("/", "an absolute path"))),
      /** "kvm", or "tcg" (emulation for hosts without KVM: seconds per boot). */
      accel: v.optional(v.picklist(["kvm", "tcg"]), "kvm"),
    }),
    {},
  ),
  /** The agent observer (#16, plans/agents.md): which tmux servers it reads and how often. */
  agents: v.optional(
    v.strictObject({
      /** Read tmux servers for agents (false: only reports from hooks and jobs). */
      observe: v.optional(v.boolean(), true),
      /** Dirs whose sockets are tmux servers to read; unset: tmux's own (every user's `/tmp/tmux-UID` as root). */
      tmux_dirs: v.optional(v.array(v.pipe(v.string(), v.startsWith("/", "an absolute path"))), undefined),
      /** More tmux sockets to read (a server started with -S). */
      tmux_sockets: v.optional(v.array(v.pipe(v.string(), v.startsWith("/", "an absolute path"))), []),
      /** How often an agent's screen is read while it changes (faster after a change of state, slower when still). */
      poll_ms: v.optional(int(50, 60_000), 1000),
    }),
    {},
  ),
  /**
   * The MCP server (#17, docs/mcp.md): `/mcp` on planterd's socket, an optional loopback TCP
   * listener with a bearer token, and the ceiling no MCP caller can widen.
   */
  mcp: v.optional(
    v.strictObject({
      /** Serve `/mcp` at all (the socket, and TCP when `listen` is set). */
      enabled: v.optional(v.boolean(), true),
      /** The lowest sandbox mode an MCP caller's jobs may have (its cells' and its own asks). */
      min_mode: v.optional(SandboxMode, "enforced"),
      /** "read_only": jobs run with their cell dir read-only, whatever the cell says (files_write is refused). */
      fs_mode: v.optional(v.picklist(["writable", "read_only"]), "writable"),
      /** The network ceiling of MCP callers' jobs and cells (the `[network]` ceiling's keys). */
      network: v.optional(
        v.strictObject({
          allow_host: v.optional(v.boolean(), false),
          allow: v.optional(v.pipe(v.array(NetEntry), v.maxLength(1024))),
          deny: v.optional(v.pipe(v.array(NetEntry), v.maxLength(1024)), []),
          allow_local: v.optional(v.boolean(), false),
        }),
        {},
      ),
      /** Whether an MCP caller's jobs may connect to Unix sockets their cell allows. */
      unix_sockets: v.optional(v.boolean(), false),
      /** The most an MCP caller's job may have of each limit; a job that asks for none gets these. */
      limits: v.optional(Limits, { timeout_ms: 3_600_000 }),
      /** Bytes of each stream a `run` answers with (head and tail; the rest stays in the log). */
      max_output_bytes: v.optional(int(256, 1024 * 1024), 16 * 1024),
      /** A loopback TCP address to serve `/mcp` on too ("127.0.0.1:8377", "[::1]:8377"); needs token_file. */
      listen: v.optional(v.pipe(v.string(), v.minLength(1))),
      /** The bearer token of the TCP listener: a file of the daemon's user, mode 0600. */
      token_file: v.optional(v.pipe(v.string(), v.startsWith("/", "an absolute path"))),
      /** Who a TCP caller acts as (a user name); unset: the daemon's own user in user mode, required in system mode. */
      as_user: v.optional(v.pipe(v.string(), v.minLength(1))),
    }),
    {},
  ),
  /**
   * The ceiling of every cell's and job's network (docs/sandbox.md "Network"): whether `host` may
   * be used at all, the entries a list's `allow` must lie within (unset: any), deny entries added to
   * every list, and whether a list may set `allow_local`.
   */
  network: v.optional(
    v.pipe(
      v.strictObject({
        allow_host: v.optional(v.boolean(), true),
        allow: v.optional(v.pipe(v.array(NetEntry), v.maxLength(1024))),
        deny: v.optional(v.pipe(v.array(NetEntry), v.maxLength(1024)), []),
        allow_local: v.optional(v.boolean(), true),
        /**
         * Connections the egress proxies hold open at once for all the jobs of one user together
         * (each job also at most 256): what a user's jobs can make planterd hold (descriptors,
         * socket buffers charged to planterd, not to the jobs).
         */
        proxy_connections_per_uid: v.optional(int(1, 1_000_000), 1024),
        /**
         * Names the egress proxy answers before DNS, like /etc/hosts for jobs' proxies only (tests
         * reach loopback servers by name; a pinned host): `"name" = ["address", …]`. The answer is
         * still checked as DNS's would be (a loopback address needs allow_local or an IP rule).
         */
        hosts: v.optional(
          v.pipe(
            v.record(
              v.pipe(
                v.string(),
                v.regex(
                  /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/,
                  "a lowercase host name",
                ),
              ),
              v.pipe(
                v.array(
                  v.pipe(
                    v.string(),
                    v.check((a) => isIP(a) !== 0, "an IPv4 or IPv6 address"),
                  ),
                ),
                v.minLength(1),
                v.maxLength(64),
              ),
            ),
            v.check((h) => Object.keys(h).length <= 4096, "at most 4096 names"),
          ),
          {},
        ),
      }),
    ),
    {},
  ),
});
export type Config = v.InferOutput<typeof ConfigSchema>;

/** Validate a parsed config object; `source` names the file in errors. */
export function parseConfig(input: unknown, source: string): Config {
  const r = v.safeParse(ConfigSchema, input);
  if (r.success) return r.output;
  throw new PlanterError("E_CONFIG", `invalid config ${source}: ${summarizeIssues(r.issues)}`, {
    hint: `fix ${source} (see docs/install.md "Configuration"), or move it aside to use the defaults`,
  });
}

/**
 * The secrets a config names, wherever they lie: the MCP listener's token file, `[api.tcp]`'s TLS
 * key and its identities' token files, and each target's token file, client key and ssh key. A
 * token opens a planterd over TCP, a key speaks as its owner: every sandbox hides them (a user's
 * planterd runs its jobs as the user who owns them, and the same file holds the user's targets).
 */
export function configSecrets(c: Config): string[] {
  const targets = Object.values(c.targets).flatMap((t) => [t.token_file, t.key, t.identity]);
  return [...daemonSecrets(c), ...targets].filter((f): f is string => typeof f === "string" && f.length > 0);
}

/** planterd's own secrets among them (MCP and `[api.tcp]`): no cell dir may hold one either. */
export function daemonSecrets(c: Config): string[] {
  const tcp = c.api.tcp;
  return [c.mcp.token_file, tcp?.key, ...(tcp?.identities ?? []).map((i) => i.token_file)].filter(
    (f): f is string => typeof f === "string" && f.length > 0,
  );
}

/** Read and validate the config file; a missing file means all defaults. */
export function loadConfig(path: string): Config {
  if (!existsSync(path)) return parseConfig({}, path);
  let raw: unknown;
  try {
    raw = Bun.TOML.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new PlanterError("E_CONFIG", `cannot parse config ${path}: ${(e as Error).message}`, {
      hint: `fix the TOML syntax in ${path}`,
    });
  }
  return parseConfig(raw, path);
}
