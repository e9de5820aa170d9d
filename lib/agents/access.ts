/**
 * Who may see an agent and who may report on one. An agent belongs to the user whose tmux server
 * shows it (the server process's uid), or whose process it is (a hook's report of a pane planterd
 * does not read), or whose job it runs in. A user planterd serves its own user (and root): every
 * agent it sees is theirs. A root planterd shows each peer its own agents only (root sees all),
 * and takes a report from a peer only about processes of that peer: its agent process, its tmux
 * server, its job — checked against the kernel (pid and start time, then the process's uid).
 */
import { PlanterError } from "../api/errors.ts";
import type { Context } from "../daemon/context.ts";
import { daemonIsRoot, jobOwner } from "../daemon/launch.ts";
import type { Peer } from "../daemon/peer.ts";
import { getJob } from "../state/jobs.ts";
import { type AgentEventIn, runtimeId } from "./model.ts";
import type { CanSee } from "./observer.ts";
import { hostReader, type ProcReader, processOwner } from "./recognise.ts";

/** What `peer` may see: everything for a user planterd and for root, else the peer's own agents. */
export function canSee(peer: Peer | null, root = daemonIsRoot()): CanSee {
  if (!root) return () => true;
  if (!peer) return () => false;
  if (peer.uid === 0) return () => true;
  return (owner) => owner === peer.uid;
}

/**
 * Check that `peer` may report `event` (POST /v1/agents/events); returns the uid that owns the
 * runtime when it is new. Refuses poller events (planterd's own), runtimes whose processes are
 * gone or another's, and jobs of other users.
 */
export function checkReport(
  ctx: Context,
  peer: Peer | null,
  event: AgentEventIn,
  read: ProcReader = hostReader(),
): number | null {
  if (event.source === "poller") {
    throw new PlanterError("E_BAD_REQUEST", "poller events are planterd's own: report as a hook or notify", {
      hint: 'set "source" to "hook" (an agent\'s hooks) or "notify" (Codex\'s notify program)',
    });
  }
  if (!peer) {
    throw new PlanterError("E_UNAUTHORIZED_PEER", "planterd cannot tell who sent this report", {
      hint: "reports are taken only where planterd reads peer credentials",
    });
  }
  const root = peer.uid === 0;
  const owner = processOwner(event.runtime.process, read);
  if (owner === null) {
    throw new PlanterError(
      "E_CONFLICT",
      `runtime.process ${event.runtime.process} is not running (no such pid, or it started at another time)`,
      { hint: "report with the pid and start time (/proc/PID/stat field 22) of the agent's live process" },
    );
  }
  if (!root && owner !== peer.uid) {
    throw new PlanterError(
      "E_UNAUTHORIZED_PEER",
      `runtime.process ${event.runtime.process} is not a process of yours (uid ${peer.uid})`,
      { hint: "report only about your own agents" },
    );
  }
  if (event.runtime.server !== null) {
    const server = processOwner(event.runtime.server, read);
    if (server === null) {
      throw new PlanterError("E_CONFLICT", `runtime.server ${event.runtime.server} is not running`, {
        hint: "report with the tmux server's pid (#{pid}) and its start time",
      });
    }
    if (!root && server !== peer.uid) {
      throw new PlanterError(
        "E_UNAUTHORIZED_PEER",
        `runtime.server ${event.runtime.server} is not a tmux server of yours (uid ${peer.uid})`,
        { hint: "report only about panes of your own tmux servers" },
      );
    }
  }
  if (event.runtime.job_id !== null) {
    const job = getJob(ctx.db, event.runtime.job_id);
    if (!job) throw new PlanterError("E_NOT_FOUND", `no job ${event.runtime.job_id}`);
    if (!root && daemonIsRoot() && jobOwner(ctx, job) !== peer.uid) {
      throw new PlanterError("E_UNAUTHORIZED_PEER", `job ${job.id} is not yours (uid ${peer.uid})`, {
        hint: "report only about your own jobs",
      });
    }
    if (daemonIsRoot()) return jobOwner(ctx, job);
  }
  // A known runtime keeps its owner; a new one is the reporter's (root's reports: the process's user).
  const known = ctx.agents.record(runtimeId(event.runtime));
  if (known && !root && daemonIsRoot() && known.owner_uid !== peer.uid) {
    throw new PlanterError("E_UNAUTHORIZED_PEER", "this agent is not yours", {
      hint: "report only about your own agents",
    });
  }
  return known ? known.owner_uid : owner;
}
