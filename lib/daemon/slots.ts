/**
 * Connection slots: who may hold how many open connections to planterd. Every uid but the
 * daemon's owner and root has at most `perUid`, and they all share `shared` slots; the owner and
 * root never take from those: each has `shared` slots of its own, so no other uid, nor all of
 * them together, can lock them out, and a busy client of theirs is not held to `perUid`.
 */
/** The bucket of a connection whose peer credentials could not be read. */
export const UNKNOWN_PEER = -1;

export interface SlotLimits {
  /** Connections of all uids but the owner and root, together; and of the owner, and of root. */
  shared: number;
  /** Connections of any one uid but the owner and root. */
  perUid: number;
  /** The daemon's own uid. */
  owner: number;
}

/** Why a connection is refused, for the 503 body. */
export interface SlotRefusal {
  message: string;
  hint: string;
}

export class ConnectionSlots {
  private readonly byUid = new Map<number, number>();
  private sharedUsed = 0;

  constructor(private readonly limits: () => SlotLimits) {}

  /** Whether `uid` holds a reserved slot (not counted against the shared ones). */
  private reserved(uid: number): boolean {
    return uid === 0 || uid === this.limits().owner;
  }

  /** Take a slot for `uid`; a refusal when it has none left. Pair every success with `release`. */
  take(uid: number): SlotRefusal | null {
    const { shared, perUid } = this.limits();
    const mine = this.byUid.get(uid) ?? 0;
    const reserved = this.reserved(uid);
    if (reserved ? mine >= shared : mine >= perUid) {
      const who = uid === UNKNOWN_PEER ? "peers of unknown uid" : `uid ${uid}`;
      return {
        message: `planterd already has ${mine} open connections from ${who} (the most ${reserved ? "its own uid and root each" : "one uid"} may hold)`,
        hint: `close idle connections and retry; config [api] ${reserved ? "max_connections" : "max_connections_per_uid"}`,
      };
    }
    if (!reserved && this.sharedUsed >= shared) {
      return {
        message: "planterd has too many open connections",
        hint: "retry shortly; config [api] max_connections",
      };
    }
    this.byUid.set(uid, mine + 1);
    if (!reserved) this.sharedUsed++;
    return null;
  }

  /** Give back a slot `take` granted. */
  release(uid: number): void {
    const mine = this.byUid.get(uid) ?? 0;
    if (mine <= 1) this.byUid.delete(uid);
    else this.byUid.set(uid, mine - 1);
    if (!this.reserved(uid)) this.sharedUsed = Math.max(0, this.sharedUsed - 1);
  }

  /** Open connections of `uid`. */
  held(uid: number): number {
    return this.byUid.get(uid) ?? 0;
  }
}
