/**
 * OpenSSH's client, the one wrapper for `ssh` (through exec(): an argv, never a shell line). What
 * planter asks of it for an `ssh://` target: a ControlMaster that stays (ControlPersist) with a
 * Unix-socket forward to the remote planterd's socket, checks and stops of that master, and one
 * remote command to read the remote socket's owner. Host keys are always checked
 * (StrictHostKeyChecking=yes, BatchMode: never a prompt, never accept-new). The argument lists and
 * the reading of ssh's failures are pure functions, tested on literal text.
 */
import { PlanterError } from "../api/errors.ts";
import { exec, type Run } from "./exec.ts";

/** What one ssh target needs on ssh's command line. */
export interface SshPlan {
  user: string | null;
  host: string;
  port: number | null;
  /** ssh -i (with IdentitiesOnly), else ssh's own configuration. */
  identity?: string;
  /** UserKnownHostsFile, else ssh's defaults. */
  knownHosts?: string;
  /** The master's control socket. */
  control: string;
  /** Seconds to connect (ConnectTimeout). */
  connectTimeoutS: number;
  /** Seconds an idle master stays (ControlPersist). */
  persistS: number;
}

/** The options every call carries: host keys checked, no prompt, bounded connect, the master's socket. */
export function commonArgs(p: SshPlan): string[] {
  const args = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `ConnectTimeout=${p.connectTimeoutS}`,
    "-o",
    `ControlPath=${p.control}`,
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=2",
  ];
  if (p.knownHosts) args.push("-o", `UserKnownHostsFile=${p.knownHosts}`, "-o", "GlobalKnownHostsFile=/dev/null");
  if (p.identity) args.push("-i", p.identity, "-o", "IdentitiesOnly=yes");
  if (p.port) args.push("-p", String(p.port));
  if (p.user) args.push("-l", p.user);
  return args;
}

/**
 * Start a master in the background once authenticated (-f) with the forward in place
 * (ExitOnForwardFailure): its exit code says whether both worked. The forward's socket is made
 * 0600 (StreamLocalBindMask) and replaces a stale one (StreamLocalBindUnlink).
 */
export function masterArgs(p: SshPlan, localSocket: string, remoteSocket: string): string[] {
  return [
    "-M",
    "-f",
    "-N",
    ...commonArgs(p),
    "-o",
    `ControlPersist=${p.persistS}`,
    "-o",
    "ExitOnForwardFailure=yes",
    "-o",
    "StreamLocalBindUnlink=yes",
    "-o",
    "StreamLocalBindMask=0177",
    "-L",
    `${localSocket}:${remoteSocket}`,
    "--",
    p.host,
  ];
}

/** `ssh -O check|exit` of the master (its exit code answers). */
export function controlArgs(p: SshPlan, op: "check" | "exit"): string[] {
  return ["-O", op, ...commonArgs(p), "--", p.host];
}

/** A remote command through the master (the host's login shell reads `command`: callers pass only checked text). */
export function remoteArgs(p: SshPlan, command: string): string[] {
  return ["-T", ...commonArgs(p), "--", p.host, command];
}

/** The target's address as people write it, for messages. */
export function sshWhere(p: Pick<SshPlan, "user" | "host" | "port">): string {
  return `${p.user ? `${p.user}@` : ""}${p.host}${p.port ? `:${p.port}` : ""}`;
}

/** Run ssh with `args` (never throws: the caller reads the code and stderr). */
export function ssh(args: readonly string[], timeoutMs: number): Promise<Run> {
  return exec("ssh", args, { nothrow: true, timeoutMs, env: { SSH_ASKPASS: undefined, DISPLAY: undefined } });
}

/** The known_hosts file ssh checks for `p`, for hints. */
function knownHostsOf(p: Pick<SshPlan, "knownHosts">): string {
  return p.knownHosts ?? "~/.ssh/known_hosts";
}

/**
 * What a failed ssh call means, as a PlanterError: the host key unknown or changed (exit 4, as an
 * untrusted socket: nothing was sent), authentication refused, the host unreachable. Pure.
 */
export function sshFailure(p: SshPlan, target: string, r: Run): PlanterError {
  const where = sshWhere(p);
  const err = r.stderr.trim();
  const said = err
    .split("\n")
    .filter((l) => l && !l.startsWith("@"))
    .slice(-3)
    .join("; ");
  const hostName = p.port ? `[${p.host}]:${p.port}` : p.host;
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed/.test(err))
    return new PlanterError(
      "E_UNTRUSTED_DAEMON",
      `refusing target ${target} (ssh ${where}): its host key is not the one in ${knownHostsOf(p)} (changed, or someone is in between)`,
      {
        hint: `find out why the key changed before anything else; if the new key is right, remove the old one with \`ssh-keygen -f ${knownHostsOf(p)} -R '${hostName}'\` and add the new one after checking its fingerprint out of band`,
        details: { target, ssh: said },
      },
    );
  if (/No [A-Z0-9-]+ host key is known|Host key verification failed/.test(err))
    return new PlanterError(
      "E_UNTRUSTED_DAEMON",
      `refusing target ${target} (ssh ${where}): its host key is not in ${knownHostsOf(p)} and planter never accepts an unknown key`,
      {
        hint: `check the key's fingerprint out of band, then add it: \`ssh-keyscan ${p.port ? `-p ${p.port} ` : ""}${p.host} >> ${knownHostsOf(p)}\` (or log in once with plain ssh and answer yes), then \`planter target check ${target}\``,
        details: { target, ssh: said },
      },
    );
  if (/Permission denied/.test(err))
    return new PlanterError("E_DAEMON_UNREACHABLE", `cannot log in to target ${target} (ssh ${where}): ${said}`, {
      hint: `ssh ${where} must work without a prompt: load your key in an agent, or name it with \`planter target add ${target} URL --identity FILE --replace\``,
      details: { target, ssh: said },
    });
  if (r.code === 124 || /timed out/i.test(err))
    return new PlanterError(
      "E_DAEMON_UNREACHABLE",
      `target ${target} (ssh ${where}) did not answer within ${p.connectTimeoutS} s: ${said || "timed out"}`,
      { hint: `check that ${p.host} is up and reachable (ssh ${where} true)`, details: { target, ssh: said } },
    );
  if (r.code === 127)
    return new PlanterError("E_UNAVAILABLE", `ssh target ${target} needs the OpenSSH client (ssh), not found on PATH`, {
      hint: "install it (Debian/Ubuntu: apt-get install openssh-client)",
    });
  return new PlanterError(
    "E_DAEMON_UNREACHABLE",
    `cannot reach target ${target} (ssh ${where}): ${said || `ssh exited ${r.code}`}`,
    {
      hint: `try \`ssh ${where} true\`; \`planter target check ${target}\` says more`,
      details: { target, ssh: said },
    },
  );
}
