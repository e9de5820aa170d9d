/**
 * Actions on an observed agent (#16): `send` (text or keys), `view-output` (the last lines or the
 * screen), `kill`, `attach`. Each is fail-closed: it names the runtime it means (`if_runtime`) and
 * may name the state it expects (`if_state`, or a `state_version`) and how fresh that must be
 * (`if_updated_within`); when the agent is no longer that runtime, or its state changed, nothing
 * is done and the answer says so (E_RUNTIME_STALE, E_STATE_CHANGED). Each carries an `action_id`
 * that its events carry, and may carry a `request_ref` (the same request again answers the first
 * action's result, never acts twice).
 */
import * as v from "valibot";
import { PlanterError } from "../api/errors.ts";
import { AGENT_STATES, type Agent } from "./model.ts";

export const ACTION_TYPES = ["send", "view-output", "kill", "attach"] as const;
export type ActionType = (typeof ACTION_TYPES)[number];

/** Keys `send` may name (tmux's names; a job's terminal gets their bytes). */
export const KEYS: Record<string, string> = {
  Enter: "\r",
  Escape: "\u001b",
  Tab: "\t",
  BSpace: "\u007f",
  Up: "\u001b[A",
  Down: "\u001b[B",
  Right: "\u001b[C",
  Left: "\u001b[D",
  "C-c": "\u0003",
  "C-d": "\u0004",
};

/** The guards every action may carry. */
export const Guards = v.strictObject({
  /** The runtime the caller means (from `agents ls`): another agent in that pane is refused. */
  if_runtime: v.optional(v.pipe(v.string(), v.regex(/^rt-[0-9a-f]{16}$/))),
  /** The state (or states) the caller saw: any other is refused. */
  if_state: v.optional(v.union([v.picklist(AGENT_STATES), v.array(v.picklist(AGENT_STATES))])),
  /** The state_version the caller saw: any change since is refused. */
  if_state_version: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  /** The agent's state must have been confirmed within this many ms. */
  if_updated_within: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(86_400_000))),
});
export type Guards = v.InferOutput<typeof Guards>;

const RequestRef = v.pipe(v.string(), v.minLength(1), v.maxLength(128), v.regex(/^[A-Za-z0-9._:-]+$/));

export const SendBody = v.strictObject({
  ...Guards.entries,
  /** Text typed as it is. */
  text: v.optional(v.pipe(v.string(), v.maxLength(64 * 1024))),
  /** Keys after the text, by name (Enter, Escape, C-c, …). */
  keys: v.optional(v.pipe(v.array(v.picklist(Object.keys(KEYS) as [string, ...string[]])), v.maxLength(64))),
  request_ref: v.optional(RequestRef),
});
export type SendBody = v.InferOutput<typeof SendBody>;

export const KillBody = v.strictObject({
  ...Guards.entries,
  force: v.optional(v.boolean()),
  request_ref: v.optional(RequestRef),
});
export type KillBody = v.InferOutput<typeof KillBody>;

/**
 * Check the guards against the agent as it is now. Throws E_RUNTIME_STALE (another runtime, or
 * the agent gone) or E_STATE_CHANGED (another state or version, or not confirmed recently), with
 * what is there now in `details`.
 */
export function checkGuards(agent: Agent | null, g: Guards, now: number, asked: string): Agent {
  if (!agent) {
    throw new PlanterError("E_RUNTIME_STALE", `agent ${asked} is gone`, {
      hint: "list the agents again (planter agents ls) and act on what is there now",
    });
  }
  const details = { runtime_id: agent.runtime_id, state: agent.state, state_version: agent.state_version };
  if (g.if_runtime && g.if_runtime !== agent.runtime_id) {
    throw new PlanterError(
      "E_RUNTIME_STALE",
      `${asked} is now runtime ${agent.runtime_id}, not ${g.if_runtime}: another agent (or a restart) took its place`,
      { hint: "list the agents again and act on the runtime that is there now", details },
    );
  }
  const states = g.if_state === undefined ? null : Array.isArray(g.if_state) ? g.if_state : [g.if_state];
  if (states && !states.includes(agent.state)) {
    throw new PlanterError(
      "E_STATE_CHANGED",
      `agent ${agent.runtime_id} is ${agent.state}, not ${states.join(" or ")}`,
      {
        hint: "look at it again before acting",
        details,
      },
    );
  }
  if (g.if_state_version !== undefined && g.if_state_version !== agent.state_version) {
    throw new PlanterError(
      "E_STATE_CHANGED",
      `agent ${agent.runtime_id}'s state changed since version ${g.if_state_version} (now ${agent.state_version}: ${agent.state})`,
      { hint: "look at it again before acting", details },
    );
  }
  if (g.if_updated_within !== undefined && now - agent.updated_at > g.if_updated_within) {
    throw new PlanterError(
      "E_STATE_CHANGED",
      `agent ${agent.runtime_id}'s state was last confirmed ${now - agent.updated_at} ms ago, more than ${g.if_updated_within}`,
      { hint: "wait for a fresh state (planter agents watch), or ask for a longer if_updated_within", details },
    );
  }
  return agent;
}

/** The bytes `send` types: the text, then the keys. */
export function sendBytes(b: Pick<SendBody, "text" | "keys">): string {
  return (b.text ?? "") + (b.keys ?? []).map((k) => KEYS[k] ?? "").join("");
}

/** A new action id: `act-` and 16 random hex digits. */
export function actionId(): string {
  return `act-${Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString("hex")}`;
}

/** What an action answers: its id (its events carry it), the runtime, and what it did. */
export interface ActionResult {
  action_id: string;
  runtime_id: string;
  type: ActionType;
  /** The same request_ref again: the first action's id, nothing done twice. */
  replayed: boolean;
  /** send: bytes typed. */
  written?: number;
  /** view-output: the last lines of the pane or the job's screen. */
  lines?: string[];
}
