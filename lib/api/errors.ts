/** Stable error codes of the API, shared by daemon and client. */
export const ERROR_STATUS = {
  E_BAD_REQUEST: 400,
  E_NOT_FOUND: 404,
  E_CONFLICT: 409,
  /** An agent action named a runtime that is not (or no longer) the agent there. */
  E_RUNTIME_STALE: 409,
  /** An agent action's state guard failed: the agent's state changed since the caller looked. */
  E_STATE_CHANGED: 409,
  E_IDEMPOTENCY_CONFLICT: 409,
  E_UNAUTHORIZED_PEER: 403,
  E_PAYLOAD_TOO_LARGE: 413,
  /** More reports than planterd records for one uid (target health): try again later. */
  E_RATE_LIMITED: 429,
  E_SANDBOX_UNAVAILABLE: 503,
  E_CURSOR_INVALID: 400,
  E_CURSOR_EXPIRED: 410,
  E_UNAVAILABLE: 503,
  E_INTERNAL: 500,
  // Client-side only: never sent by the daemon.
  E_DAEMON_UNREACHABLE: 0,
  E_UNTRUSTED_DAEMON: 0,
  E_USAGE: 0,
  E_CONFIG: 0,
  E_STATE: 0,
} as const;

/** One of the stable error codes. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** Exit codes of every planter command (docs/usage.md "Exit codes"). */
export const EXIT = { ok: 0, error: 1, usage: 2, unreachable: 3, untrusted: 4, partial: 5, waitTimeout: 124 } as const;

/** The JSON error envelope's inner object. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

/** The one error type of planter: a stable code, a message, an optional hint and details. */
export class PlanterError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly details?: Record<string, unknown>;
  private exitOverride?: number;
  private readonly statusOverride?: number;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { hint?: string; details?: Record<string, unknown>; cause?: unknown; status?: number } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = "PlanterError";
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
    this.statusOverride = opts.status;
  }

  /** HTTP status for this error (its code's, unless the error names a finer one, such as 405). */
  get status(): number {
    return this.statusOverride ?? (ERROR_STATUS[this.code] || 500);
  }

  /** Use `code` as the CLI exit code (a job's own code, say). */
  withExit(code: number): this {
    this.exitOverride = code;
    return this;
  }

  /** Process exit code a CLI should use for this error. */
  get exitCode(): number {
    if (this.exitOverride !== undefined) return this.exitOverride;
    if (this.code === "E_USAGE") return EXIT.usage;
    if (this.code === "E_DAEMON_UNREACHABLE") return EXIT.unreachable;
    if (this.code === "E_UNTRUSTED_DAEMON") return EXIT.untrusted;
    return EXIT.error;
  }

  toBody(): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message };
    if (this.hint) body.hint = this.hint;
    if (this.details) body.details = this.details;
    return body;
  }

  /** The error a daemon sent; codes only the client uses (status 0) are not taken from it. */
  static fromBody(body: ErrorBody): PlanterError {
    const code = Object.hasOwn(ERROR_STATUS, body.code) && ERROR_STATUS[body.code] ? body.code : "E_INTERNAL";
    const hint = typeof body.hint === "string" ? body.hint : undefined;
    const details = body.details && typeof body.details === "object" ? body.details : undefined;
    return new PlanterError(code, String(body.message), { hint, details });
  }
}

/** Shorthand constructors for the common codes. */
export const badRequest = (message: string, hint?: string, details?: Record<string, unknown>) =>
  new PlanterError("E_BAD_REQUEST", message, { hint, details });
export const notFound = (message: string, hint?: string) => new PlanterError("E_NOT_FOUND", message, { hint });
export const conflict = (message: string, hint?: string, details?: Record<string, unknown>) =>
  new PlanterError("E_CONFLICT", message, { hint, details });
