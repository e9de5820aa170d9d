/** migrate lima's plan: from what the guest probe saw to the steps (pure). */
import { describe, expect, test } from "bun:test";
import {
  forwardsGuestSocket,
  type LayoutFacts,
  type MigrateStep,
  parseMigrateProbe,
  planLimaMigration,
  renderMigrateProbe,
  type UnitFact,
  WANT_UNIT_SHA,
} from "../../lib/host/lima-migrate.ts";

const SHA = "a".repeat(64);
const OTHER = "b".repeat(64);
const want = { sha256: SHA, hostSocket: "/h/.lima/planter/sock/planterd.sock" };
const socketUnit: UnitFact = {
  name: "planterd.socket",
  enabled: "enabled",
  active: "active",
  socket: "",
  sha256: WANT_UNIT_SHA["planterd.socket"],
};
const serviceUnit: UnitFact = {
  name: "planterd.service",
  enabled: "static",
  active: "active",
  socket: "/run/planter/planterd.sock",
  sha256: WANT_UNIT_SHA["planterd.service"],
};
/** A VM install --lima provisioned with this binary. */
const migrated: LayoutFacts = {
  layout: "socket-activated-v1",
  sha256: SHA,
  user: "alice",
  group: "planter:x:995:alice",
  socket: "root:planter:660",
  units: [serviceUnit, socketUnit],
};
const tail: MigrateStep[] = [
  { id: "ready", description: "verify: a real API call (GET /v1/version) through /h/.lima/planter/sock/planterd.sock" },
  { id: "sentinel", description: "write /etc/planter/lima-layout = socket-activated-v1" },
];
const units = (extra = ""): MigrateStep => ({
  id: "units",
  description: `install the socket-activated units (planterd.socket: /run/planter/planterd.sock root:planter 0660; planterd.service), tmpfiles, group planter${extra}; enable and start planterd.socket`,
});
const ids = (s: MigrateStep[]) => s.map((x) => x.id);

describe("planLimaMigration", () => {
  test("the socket-activated layout with this binary: nothing to do", () => {
    expect(planLimaMigration(migrated, want)).toEqual([]);
    // root needs no group membership (doctor's lima.guest-group agrees).
    expect(planLimaMigration({ ...migrated, user: "root", group: "planter:x:995:" }, want)).toEqual([]);
  });

  test("the older agent binding its own socket: every step, in order", () => {
    const older: LayoutFacts = {
      layout: "",
      sha256: OTHER,
      user: "alice",
      group: "",
      socket: "",
      units: [
        {
          name: "planter-agent.service",
          enabled: "enabled",
          active: "active",
          socket: "/run/planter-agent/agent.sock",
          sha256: "c".repeat(64),
        },
      ],
    };
    expect(planLimaMigration(older, want)).toEqual([
      {
        id: "stop-old",
        unit: "planter-agent.service",
        socket: "/run/planter-agent/agent.sock",
        remove_unit: true,
        description:
          "stop and disable planter-agent.service (active, binds its own socket /run/planter-agent/agent.sock), remove its unit file and that socket",
      },
      {
        id: "copy",
        description:
          "copy this planter (Linux, sha256 aaaaaaaaaaaa…) to /usr/local/bin/planter in the VM (it has bbbbbbbbbbbb…)",
      },
      units(", the copied binary"),
      { id: "group", description: "add the guest user alice to group planter (so commands in the VM reach planterd)" },
      ...tail,
    ]);
  });

  test("planterd.service without planterd.socket: stopped and disabled; its default socket removed", () => {
    const facts: LayoutFacts = {
      ...migrated,
      layout: "",
      socket: "root:root:600",
      units: [{ name: "planterd.service", enabled: "enabled", active: "active", socket: "", sha256: "d".repeat(64) }],
    };
    const steps = planLimaMigration(facts, want);
    expect(steps[0]).toEqual({
      id: "stop-old",
      unit: "planterd.service",
      socket: "/run/planter/planterd.sock",
      description:
        "stop and disable planterd.service (active, binds its own socket /run/planter/planterd.sock: there is no planterd.socket) and remove that socket",
    });
    expect(ids(steps)).toEqual(["stop-old", "units", "socket", "ready", "sentinel"]);
    expect(steps[2]?.description).toBe("set /run/planter/planterd.sock to root:planter 0660 (it is root:root 0600)");
  });

  test("an old agent beside an active planterd.socket: the socket file is not removed, the socket unit restarts", () => {
    const agent: UnitFact = {
      name: "planter-agent.service",
      enabled: "enabled",
      active: "failed",
      socket: "",
      sha256: OTHER,
    };
    const steps = planLimaMigration({ ...migrated, units: [agent, serviceUnit, socketUnit] }, want);
    expect(steps[0]).toEqual(
      expect.objectContaining({ id: "stop-old", unit: "planter-agent.service", socket: undefined }),
    );
    expect(ids(steps)).toEqual(["stop-old", "units", "restart", "ready", "sentinel"]);
  });

  test("one thing off at a time", () => {
    // Only the sentinel is missing: provisioning again (it is idempotent), then the sentinel.
    expect(ids(planLimaMigration({ ...migrated, layout: "" }, want))).toEqual(["units", "ready", "sentinel"]);
    // Another binary in the current layout: copy, provision, restart so that the new binary serves.
    expect(ids(planLimaMigration({ ...migrated, sha256: OTHER }, want))).toEqual([
      "copy",
      "units",
      "restart",
      "ready",
      "sentinel",
    ]);
    // No binary at all (and so no running planterd): no restart.
    const bare = { ...migrated, sha256: "", units: [serviceUnit, { ...socketUnit, active: "inactive" }] };
    expect(ids(planLimaMigration(bare, want))).toEqual(["copy", "units", "ready", "sentinel"]);
    // Older unit text: rewritten and the socket restarted to take it.
    const oldSocketUnit = { ...socketUnit, sha256: OTHER };
    expect(ids(planLimaMigration({ ...migrated, units: [serviceUnit, oldSocketUnit] }, want))).toEqual([
      "units",
      "restart",
      "ready",
      "sentinel",
    ]);
    // Wrong mode only.
    expect(ids(planLimaMigration({ ...migrated, socket: "root:planter:666" }, want))).toEqual([
      "socket",
      "ready",
      "sentinel",
    ]);
    // The guest user left the group.
    expect(ids(planLimaMigration({ ...migrated, group: "planter:x:995:bob" }, want))).toEqual([
      "units",
      "group",
      "ready",
      "sentinel",
    ]);
    // The socket unit disabled.
    const disabled = { ...socketUnit, enabled: "disabled" };
    expect(ids(planLimaMigration({ ...migrated, units: [serviceUnit, disabled] }, want))).toEqual([
      "units",
      "ready",
      "sentinel",
    ]);
  });
});

describe("the guest probe", () => {
  test("parse: key=value lines, one unit line per unit file", () => {
    const out = [
      "layout=",
      `sha256=${OTHER}`,
      "user=alice",
      "group=",
      "socket=",
      `unit=planter-agent.service|enabled|active|/run/planter-agent/agent.sock|${"c".repeat(64)}`,
      `unit=planterd.service|||| `,
      "",
    ].join("\n");
    expect(parseMigrateProbe(out)).toEqual({
      layout: "",
      sha256: OTHER,
      user: "alice",
      group: "",
      socket: "",
      units: [
        {
          name: "planter-agent.service",
          enabled: "enabled",
          active: "active",
          socket: "/run/planter-agent/agent.sock",
          sha256: "c".repeat(64),
        },
        { name: "planterd.service", enabled: "", active: "", socket: "", sha256: "" },
      ],
    });
  });

  test("the probe reads only: no redirect into a file, no systemctl verb that changes state", () => {
    const probe = renderMigrateProbe();
    expect(probe.replaceAll("2>/dev/null", "")).not.toContain(">");
    expect(probe).not.toMatch(/systemctl (start|stop|enable|disable|restart|daemon-reload)/);
    expect(probe).toContain("for u in planter-agent.service planterd.service planterd.socket; do");
  });

  test("the VM's template must forward the guest socket", () => {
    const yaml = (guest: string) =>
      `vmType: vz\nportForwards:\n- guestSocket: "${guest}"\n  hostSocket: "{{.Dir}}/sock/planterd.sock"\n`;
    expect(forwardsGuestSocket(yaml("/run/planter/planterd.sock"))).toBe(true);
    expect(forwardsGuestSocket(yaml("/run/planter-agent/agent.sock"))).toBe(false);
    expect(forwardsGuestSocket("vmType: vz\n")).toBe(false);
    expect(forwardsGuestSocket("portForwards: [\n")).toBe(null);
  });
});
