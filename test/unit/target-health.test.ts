/** planterd's ledger of target health: the budget of changes per uid (a token bucket) and the last health of a subject. */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { HealthLedger } from "../../lib/daemon/target-health.ts";

describe("HealthLedger", () => {
  test("a burst, then one change per refill; refused ones counted into the next taken", () => {
    const l = new HealthLedger(3, 1000);
    const t = 1_000_000;
    expect([l.take(7, t), l.take(7, t), l.take(7, t)]).toEqual([0, 0, 0]);
    expect(l.take(7, t + 10)).toBeNull();
    expect(l.take(7, t + 500)).toBeNull();
    expect(l.waitMs(7)).toBeGreaterThan(0);
    // Another uid has a budget of its own.
    expect(l.take(8, t + 500)).toBe(0);
    // One second after the burst: one more, saying two were refused.
    expect(l.take(7, t + 1000)).toBe(2);
    expect(l.take(7, t + 1000)).toBeNull();
    // A long quiet refills to the burst, never beyond.
    expect([1, 2, 3, 4].map(() => l.take(7, t + 60_000))).toEqual([1, 0, 0, null]);
  });

  test("the last health: remembered, else the newest stored event's, else ok", () => {
    const db = new Database(":memory:");
    db.run(
      "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER, kind TEXT, subject TEXT, data TEXT)",
    );
    const add = (subject: string, to: string) =>
      db
        .query("INSERT INTO events (at, kind, subject, data) VALUES (0, 'target.health', ?, ?)")
        .run(subject, JSON.stringify({ to }));
    add("target/1/a", "degraded");
    add("target/1/a", "down");
    add("target/2/a", "degraded");
    db.query("INSERT INTO events (at, kind, subject, data) VALUES (0, 'target.health', 'target/1/b', '{bad')").run();
    const l = new HealthLedger();
    expect(l.current(db, "target/1/a")).toBe("down");
    expect(l.current(db, "target/2/a")).toBe("degraded");
    expect(l.current(db, "target/1/b")).toBe("ok");
    expect(l.current(db, "target/3/a")).toBe("ok");
    l.remember("target/1/a", "ok");
    expect(l.current(db, "target/1/a")).toBe("ok");
  });
});
