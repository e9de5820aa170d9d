import { describe, expect, test } from "bun:test";
import { ConnectionSlots, UNKNOWN_PEER } from "../../lib/daemon/slots.ts";

describe("connection slots", () => {
  const slots = () => new ConnectionSlots(() => ({ shared: 3, perUid: 2, owner: 1000 }));

  test("one uid gets perUid slots, and its refusal names it", () => {
    const s = slots();
    expect(s.take(2000)).toBeNull();
    expect(s.take(2000)).toBeNull();
    expect(s.take(2000)?.message).toBe(
      "planterd already has 2 open connections from uid 2000 (the most one uid may hold)",
    );
    s.release(2000);
    expect(s.take(2000)).toBeNull();
  });

  test("other uids share the shared slots; the owner and root each have as many of their own", () => {
    const s = slots();
    for (const uid of [2000, 2000, 3000]) expect(s.take(uid)).toBeNull();
    expect(s.take(4000)?.message).toBe("planterd has too many open connections");
    expect(s.take(UNKNOWN_PEER)?.message).toBe("planterd has too many open connections");
    // The shared slots are full: the owner and root are still served, each up to `shared`.
    for (let i = 0; i < 3; i++) expect(s.take(1000)).toBeNull();
    for (let i = 0; i < 3; i++) expect(s.take(0)).toBeNull();
    expect(s.take(0)?.message).toBe(
      "planterd already has 3 open connections from uid 0 (the most its own uid and root each may hold)",
    );
    expect(s.take(1000)?.hint).toBe("close idle connections and retry; config [api] max_connections");
    // Their release gives nothing to the shared slots; another uid's does.
    s.release(1000);
    expect(s.take(4000)?.message).toBe("planterd has too many open connections");
    s.release(3000);
    expect(s.take(4000)).toBeNull();
    expect(s.held(2000)).toBe(2);
  });

  test("peers of unknown uid are one bucket", () => {
    const s = slots();
    expect(s.take(UNKNOWN_PEER)).toBeNull();
    expect(s.take(UNKNOWN_PEER)).toBeNull();
    expect(s.take(UNKNOWN_PEER)?.message).toContain("2 open connections from peers of unknown uid");
  });
});
