/** systemd: how install sets up the units, and whether a service manager answers, from literal systemctl output. */
import { describe, expect, test } from "bun:test";
import { startHint } from "../../lib/api/client.ts";
import { managerAnswers, unitSetup, wantsLink } from "../../lib/host/systemd.ts";

describe("unitSetup", () => {
  const all = (staged: boolean, running: boolean) =>
    (["auto", "yes", "no"] as const).map((systemd) => unitSetup({ systemd, staged, running }));

  test("a staging root gets units enabled offline (auto and yes), none with no; whatever this host runs", () => {
    expect(all(true, false)).toEqual(["offline", "offline", null]);
    expect(all(true, true)).toEqual(["offline", "offline", null]);
  });

  test("this host: live units where a manager answers; without one, yes enables offline and auto starts planterd directly", () => {
    expect(all(false, true)).toEqual(["live", "live", null]);
    expect(all(false, false)).toEqual([null, "offline", null]);
  });

  test("the wants link is the one `systemctl enable` makes for WantedBy=sockets.target", () => {
    expect(wantsLink("/etc/systemd/system")).toEqual({
      path: "/etc/systemd/system/sockets.target.wants/planterd.socket",
      target: "/etc/systemd/system/planterd.socket",
    });
  });
});

describe("managerAnswers (systemctl is-system-running)", () => {
  const r = (code: number, stdout: string, stderr = "") => managerAnswers({ code, stdout, stderr });
  test("a manager in any working state answers, degraded and starting included", () => {
    expect([r(0, "running\n"), r(1, "degraded\n"), r(1, "starting\n"), r(1, "initializing\n")]).toEqual([
      true,
      true,
      true,
      true,
    ]);
  });
  test("offline, unknown, a bus error or no systemctl mean no manager", () => {
    expect([
      r(1, "offline\n"),
      r(1, "unknown\n"),
      r(1, "", "Failed to connect to bus: No such file or directory\n"),
      r(127, "", "systemctl: not found"),
    ]).toEqual([false, false, false, false]);
  });
});

describe("the client's hint when planterd does not answer", () => {
  test("says systemctl --user only to a user-mode client where systemd runs", () => {
    expect(startHint({ mode: "user", uid: 1000, systemd: true })).toStartWith(
      "start it with `systemctl --user start planterd.socket` once installed, or run `planter daemon`",
    );
    expect(startHint({ mode: "system", uid: 1000, systemd: true })).toStartWith(
      "start it with `sudo systemctl start planterd.socket` once installed, or run `sudo planter daemon`",
    );
    expect(startHint({ mode: "system", uid: 0, systemd: true })).toStartWith(
      "start it with `systemctl start planterd.socket` once installed, or run `planter daemon`",
    );
  });
  test("without systemd: start planterd directly, as root for a system install", () => {
    const root = startHint({ mode: "system", uid: 0, systemd: false });
    expect(root).toStartWith("no systemd runs here: start it in the background with `planter daemon &`");
    expect(root).not.toContain("systemctl");
    expect(startHint({ mode: "system", uid: 1000, systemd: false })).toContain("`sudo planter daemon &`");
    expect(startHint({ mode: "user", uid: 1000, systemd: false })).toContain("`planter daemon &`");
    expect(startHint({ mode: "user", uid: 1000, systemd: false })).not.toContain("systemctl");
  });
});
