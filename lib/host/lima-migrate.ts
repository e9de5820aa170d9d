/**
 * migrate lima: move the VM `planter` from the older layout (an agent service that binds its own
 * socket, no sentinel, the socket with the daemon's own owner and mode, the guest user outside group
 * planter) to the socket-activated layout install --lima provisions. One probe of the guest, a pure
 * plan (planLimaMigration), then each step through the limactl wrapper; the sentinel is written
 * last, after a real API call through the forwarded host socket answered.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { describe } from "./exec.ts";
import {
  GUEST_BINARY,
  GUEST_SOCKET,
  GUEST_STAGED,
  GUEST_UNITS,
  hostSocketPath,
  LAYOUT,
  LAYOUT_FILE,
  LIMA_VM,
  type LimaArch,
  type LimaInstance,
  limactlWithin,
  waitForPath,
} from "./lima.ts";
import { findInstance, provisionGuest, vmBinary } from "./lima-install.ts";
import { waitReady } from "./planterd.ts";
import { renderServiceUnit, renderSocketUnit } from "./systemd.ts";
import { type Step, type StepEvent, type StepReport, Transaction } from "./transaction.ts";

/** The older layout's agent unit: a service that bound its own socket (no socket unit). */
export const OLD_AGENT_UNIT = "planter-agent.service";
const UNIT_DIR = "/etc/systemd/system";
/** The unit files the probe looks at. */
const PROBED_UNITS = [OLD_AGENT_UNIT, "planterd.service", "planterd.socket"] as const;
/** Where the sentinel is staged before it is installed (the guest user can write there). */
const GUEST_STAGED_LAYOUT = "/tmp/planter-lima-layout";

/** One unit file in the guest as the probe saw it. */
export interface UnitFact {
  name: string;
  /** `systemctl is-enabled` (enabled, disabled, static, …; empty when unknown). */
  enabled: string;
  /** `systemctl is-active` (active, inactive, failed, …). */
  active: string;
  /** The `Environment=PLANTER_SOCKET=` the unit sets (where a self-binding agent listens), or "". */
  socket: string;
  /** sha256 of the unit file. */
  sha256: string;
}

/** What migrate reads in the guest, in one `limactl shell` (see renderMigrateProbe). */
export interface LayoutFacts {
  layout: string;
  /** sha256 of the guest's planter binary, "" when there is none. */
  sha256: string;
  user: string;
  /** `getent group planter`, "" when there is no such group. */
  group: string;
  /** `stat -c %U:%G:%a` of the guest socket, "" when it does not exist. */
  socket: string;
  units: UnitFact[];
}

/** The probe: key=value lines; one `unit=NAME|ENABLED|ACTIVE|SOCKET|SHA256` line per unit file present. */
export function renderMigrateProbe(): string {
  return [
    `echo "layout=$(cat ${LAYOUT_FILE} 2>/dev/null)"`,
    `echo "sha256=$(sha256sum ${GUEST_BINARY} 2>/dev/null | cut -d' ' -f1)"`,
    `echo "user=$(id -un)"`,
    `echo "group=$(getent group planter)"`,
    `echo "socket=$(sudo stat -c %U:%G:%a ${GUEST_SOCKET} 2>/dev/null)"`,
    `for u in ${PROBED_UNITS.join(" ")}; do`,
    `  f=${UNIT_DIR}/$u`,
    `  [ -f "$f" ] || continue`,
    `  echo "unit=$u|$(systemctl is-enabled "$u" 2>/dev/null)|$(systemctl is-active "$u" 2>/dev/null)|$(sed -n 's/^Environment=PLANTER_SOCKET=//p' "$f" | tail -n 1)|$(sha256sum "$f" | cut -d' ' -f1)"`,
    "done",
  ].join("\n");
}

/** Parse renderMigrateProbe's output. */
export function parseMigrateProbe(stdout: string): LayoutFacts {
  const f: LayoutFacts = { layout: "", sha256: "", user: "", group: "", socket: "", units: [] };
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i <= 0) continue;
    const k = line.slice(0, i);
    const v = line.slice(i + 1).trim();
    if (k === "unit") {
      const [name = "", enabled = "", active = "", socket = "", sha256 = ""] = v.split("|");
      f.units.push({ name, enabled, active, socket, sha256 });
    } else if (k === "layout" || k === "sha256" || k === "user" || k === "group" || k === "socket") f[k] = v;
  }
  return f;
}

export type MigrateStepId =
  | "start"
  | "stop-old"
  | "copy"
  | "units"
  | "restart"
  | "socket"
  | "group"
  | "ready"
  | "sentinel";

export interface MigrateStep {
  id: MigrateStepId;
  description: string;
  /** stop-old: the unit to stop and disable; its socket file, when it bound one of its own. */
  unit?: string;
  socket?: string;
  /** stop-old: also remove the unit file (the old agent's name; planterd.service is rewritten by units). */
  remove_unit?: boolean;
}

const sha256Text = (text: string) => new Bun.CryptoHasher("sha256").update(text).digest("hex");
/** sha256 of the unit files provisioning writes, to tell a current unit from an older one. */
export const WANT_UNIT_SHA: Record<"planterd.socket" | "planterd.service", string> = {
  "planterd.socket": sha256Text(renderSocketUnit(GUEST_UNITS)),
  "planterd.service": sha256Text(renderServiceUnit(GUEST_UNITS)),
};
const short = (sha: string) => `${sha.slice(0, 12)}…`;

/**
 * The migration, from what the probe saw to the steps, in order (pure). Empty when the VM is
 * already in the socket-activated layout with this binary: nothing to do.
 */
export function planLimaMigration(facts: LayoutFacts, want: { sha256: string; hostSocket: string }): MigrateStep[] {
  const steps: MigrateStep[] = [];
  const unit = (n: string) => facts.units.find((u) => u.name === n) ?? null;
  const socketUnit = unit("planterd.socket");
  const service = unit("planterd.service");
  const agent = unit(OLD_AGENT_UNIT);

  // The older agents: each bound its own socket, which planterd.socket must now hold.
  const stale = (u: UnitFact) => u.socket || GUEST_SOCKET;
  // An active planterd.socket holds GUEST_SOCKET: that file is not the old agent's to remove.
  const removable = (path: string) => (path === GUEST_SOCKET && socketUnit?.active === "active" ? undefined : path);
  if (agent)
    steps.push({
      id: "stop-old",
      unit: agent.name,
      socket: removable(stale(agent)),
      remove_unit: true,
      description: `stop and disable ${agent.name} (${agent.active || "unknown"}, binds its own socket ${stale(agent)}), remove its unit file and that socket`,
    });
  if (service && !socketUnit)
    steps.push({
      id: "stop-old",
      unit: service.name,
      socket: removable(stale(service)),
      description: `stop and disable planterd.service (${service.active || "unknown"}, binds its own socket ${stale(service)}: there is no planterd.socket) and remove that socket`,
    });

  const stopsOld = steps.length > 0;
  const copy = facts.sha256 !== want.sha256;
  if (copy)
    steps.push({
      id: "copy",
      description: `copy this planter (Linux, sha256 ${short(want.sha256)}) to ${GUEST_BINARY} in the VM (${facts.sha256 ? `it has ${short(facts.sha256)}` : "it has none"})`,
    });

  const members = (facts.group.split(":")[3] ?? "").split(",").filter(Boolean);
  const inGroup = facts.user === "root" || members.includes(facts.user);
  const unitsCurrent =
    socketUnit?.sha256 === WANT_UNIT_SHA["planterd.socket"] && service?.sha256 === WANT_UNIT_SHA["planterd.service"];
  const socketUp = socketUnit?.enabled === "enabled" && socketUnit.active === "active";
  const layoutOk = facts.layout === LAYOUT;
  if (steps.length || !layoutOk || !unitsCurrent || !socketUp || !facts.group || !inGroup) {
    steps.push({
      id: "units",
      description: `install the socket-activated units (planterd.socket: ${GUEST_SOCKET} root:planter 0660; planterd.service), tmpfiles, group planter${copy ? ", the copied binary" : ""}; enable and start planterd.socket`,
    });
    // An active socket unit keeps its old settings and its planterd the old binary until restarted.
    if (socketUnit?.active === "active" && (copy || !unitsCurrent || stopsOld))
      steps.push({
        id: "restart",
        description:
          "restart planterd.socket: it binds afresh and its next planterd is the current binary (jobs keep running)",
      });
  }
  if (facts.socket && facts.socket !== "root:planter:660") {
    const [u, g, m] = facts.socket.split(":");
    steps.push({ id: "socket", description: `set ${GUEST_SOCKET} to root:planter 0660 (it is ${u}:${g} 0${m})` });
  }
  if (!inGroup)
    steps.push({
      id: "group",
      description: `add the guest user ${facts.user} to group planter (so commands in the VM reach planterd)`,
    });
  if (!steps.length) return steps;
  steps.push({ id: "ready", description: `verify: a real API call (GET /v1/version) through ${want.hostSocket}` });
  steps.push({ id: "sentinel", description: `write ${LAYOUT_FILE} = ${LAYOUT}` });
  return steps;
}

export interface LimaMigrateOptions {
  dryRun: boolean;
  /** Start a stopped VM first (else a stopped VM is refused). */
  start: boolean;
  /** The Linux binary to copy in (default: as install --lima finds it). */
  binary?: string;
  /** Readiness wait. */
  waitMs?: number;
  env?: Record<string, string | undefined>;
  progress?: (line: string) => void;
  /** Called at every point of the step engine (tests stop a run there). */
  observe?: (e: StepEvent) => void;
}

export interface LimaMigrateResult {
  dry_run: boolean;
  vm: string;
  /** "nothing_to_do", "planned" (dry run) or "migrated". */
  outcome: "nothing_to_do" | "planned" | "migrated";
  /** The plan; after a run, each step with what the run did (`outcome`). */
  steps: (MigrateStep & { outcome?: StepReport["outcome"] })[];
  host_socket: string;
  /** The VM was started by this run. */
  started: boolean;
  version: string | null;
}

const STEP_MS = 120_000;
const START_MS = 600_000;

const READY_HINT =
  `see \`limactl shell ${LIMA_VM} sudo journalctl -u planterd.socket -u planterd.service\`; when the guest user just joined ` +
  `group planter, Lima's forward may still use its old groups: \`limactl stop ${LIMA_VM} && limactl start ${LIMA_VM}\`, then migrate lima again`;

function stepFail(step: MigrateStepId, message: string, hint?: string): never {
  throw new PlanterError("E_UNAVAILABLE", `migrate lima: ${step}: ${message}`, {
    hint:
      hint ??
      `nothing after this step ran; fix the cause and run migrate lima again (it resumes: the plan is computed afresh)`,
    details: { step },
  });
}

async function must(step: MigrateStepId, ms: number, ...args: string[]): Promise<string> {
  const r = await limactlWithin(ms, ...args);
  if (r.code !== 0) stepFail(step, describe("limactl", args, r));
  return r.stdout;
}
const shell = (step: MigrateStepId, ...cmd: string[]) =>
  must(step, STEP_MS, "shell", "--workdir", "/", LIMA_VM, ...cmd);

/** Whether the VM's template forwards the guest socket (read from `<dir>/lima.yaml`; null when it cannot be read). */
export function forwardsGuestSocket(yaml: string): boolean | null {
  try {
    const t = Bun.YAML.parse(yaml) as { portForwards?: { guestSocket?: string }[] } | null;
    return (t?.portForwards ?? []).some((f) => f?.guestSocket === GUEST_SOCKET);
  } catch {
    return null;
  }
}

function readTemplate(inst: LimaInstance): string | null {
  try {
    return readFileSync(join(inst.dir, "lima.yaml"), "utf8");
  } catch {
    return null;
  }
}

/** Migrate the VM `planter` to the socket-activated layout (or print the plan). */
export async function migrateLima(opts: LimaMigrateOptions): Promise<LimaMigrateResult> {
  const env = { ...process.env, ...opts.env };
  const hostSocket = hostSocketPath(env);
  const tx = new Transaction({ root: "/", dryRun: opts.dryRun, progress: opts.progress, observe: opts.observe });
  const result: LimaMigrateResult = {
    dry_run: opts.dryRun,
    vm: LIMA_VM,
    outcome: "nothing_to_do",
    steps: [],
    host_socket: hostSocket,
    started: false,
    version: null,
  };
  const inst = await findInstance();
  refuseBeforeAnyChange(inst, opts);
  if (inst.status !== "Running") {
    // The guest cannot be probed before it runs: a dry run plans the start only.
    const describe = `start VM ${LIMA_VM}; the rest of the plan is decided once it runs (the guest is probed then)`;
    const start = await tx.run([
      {
        id: "start",
        describe,
        apply: async () => {
          tx.progress(`starting VM ${LIMA_VM}`);
          await must("start", START_MS, "start", "--tty=false", LIMA_VM);
        },
      },
    ]);
    if (opts.dryRun) {
      result.outcome = "planned";
      result.steps = [{ id: "start", description: describe }];
      return result;
    }
    result.started = true;
    result.steps = start.map((s) => ({ ...s, id: "start", description: `start VM ${LIMA_VM}` }));
  }

  // The binary this planter would put in the VM: an ELF of the VM's architecture.
  const arch = (inst.arch === "aarch64" ? "aarch64" : "x86_64") as LimaArch;
  const { binary, sha256 } = await vmBinary(opts.binary, arch, tx.progress, "migrate lima", { step: "copy" });
  const facts = await probeLayout();
  const plan = planLimaMigration(facts, { sha256, hostSocket });
  const ran = await tx.run(plan.map((step) => migrateStep(step, { tx, opts, facts, binary, hostSocket, result })));
  result.steps.push(...plan.map((step, i) => ({ ...step, ...(ran[i]?.outcome ? { outcome: ran[i].outcome } : {}) })));
  if (opts.dryRun) result.outcome = result.steps.length ? "planned" : "nothing_to_do";
  else if (plan.length) result.outcome = "migrated";
  return result;
}

/** No VM, a template that does not forward the guest socket, a stopped VM without --start: refused before anything changes. */
function refuseBeforeAnyChange(inst: LimaInstance | null, opts: LimaMigrateOptions): asserts inst is LimaInstance {
  if (!inst)
    throw new PlanterError("E_NOT_FOUND", `there is no Lima VM ${LIMA_VM} to migrate`, {
      hint: "create and provision one with: planter install --lima",
    });
  const template = readTemplate(inst);
  if (template !== null && forwardsGuestSocket(template) === false)
    throw new PlanterError("E_CONFLICT", `VM ${LIMA_VM} does not forward ${GUEST_SOCKET} to the host`, {
      hint: `add the forward, then run migrate lima again: limactl edit ${LIMA_VM} --set '.portForwards += [{"guestSocket": "${GUEST_SOCKET}", "hostSocket": "{{.Dir}}/sock/planterd.sock"}]'`,
    });
  if (inst.status !== "Running" && !opts.start)
    throw new PlanterError("E_CONFLICT", `VM ${LIMA_VM} is ${inst.status}: migrate lima needs it running`, {
      hint: `start it with \`limactl start ${LIMA_VM}\`, or run: planter migrate lima --start`,
    });
}

/** One read-only `limactl shell` of renderMigrateProbe(). */
async function probeLayout(): Promise<LayoutFacts> {
  const probe = await limactlWithin(30_000, "shell", "--workdir", "/", LIMA_VM, "sh", "-c", renderMigrateProbe());
  if (probe.code !== 0)
    throw new PlanterError(
      "E_UNAVAILABLE",
      `cannot read the VM's layout: ${describe("limactl", ["shell", LIMA_VM], probe)}`,
      { hint: `check that \`limactl shell ${LIMA_VM} true\` works` },
    );
  return parseMigrateProbe(probe.stdout);
}

interface MigrateCtx {
  tx: Transaction;
  opts: LimaMigrateOptions;
  facts: LayoutFacts;
  binary: string;
  hostSocket: string;
  result: LimaMigrateResult;
}

/** A planned step as the engine runs it: each change an argv through `limactl shell`, without shell syntax. */
function migrateStep(step: MigrateStep, c: MigrateCtx): Step {
  return { id: step.id, describe: step.description, apply: () => MIGRATE_APPLY[step.id](step, c) };
}

const MIGRATE_APPLY: Record<MigrateStepId, (step: MigrateStep, c: MigrateCtx) => Promise<void>> = {
  start: async () => undefined,
  "stop-old": async (step, c) => {
    const u = step.unit as string;
    await shell("stop-old", "sudo", "systemctl", "disable", "--now", u);
    if (step.remove_unit) {
      await shell("stop-old", "sudo", "rm", "-f", `${UNIT_DIR}/${u}`);
      await shell("stop-old", "sudo", "systemctl", "daemon-reload");
    }
    // The agent's own socket file: stale now, and in the way when it is the path planterd.socket binds.
    if (step.socket) await shell("stop-old", "sudo", "rm", "-f", step.socket);
    c.tx.progress(`stopped and disabled ${u}`);
  },
  copy: async (_step, c) => {
    await must("copy", STEP_MS, "copy", c.binary, `${LIMA_VM}:${GUEST_STAGED}`);
    c.tx.progress(`copied ${c.binary} into the VM`);
  },
  units: async (_step, c) => {
    await provisionGuest(STEP_MS, { sentinel: false });
    c.tx.progress("installed planterd.socket and planterd.service in the VM");
  },
  restart: async (_step, c) => {
    await shell("restart", "sudo", "systemctl", "restart", "planterd.socket");
    c.tx.progress("restarted planterd.socket in the VM");
  },
  socket: async (_step, c) => {
    await shell("socket", "sudo", "chown", "root:planter", GUEST_SOCKET);
    await shell("socket", "sudo", "chmod", "0660", GUEST_SOCKET);
    c.tx.progress(`${GUEST_SOCKET} is root:planter 0660`);
  },
  group: async (_step, c) => {
    await shell("group", "sudo", "usermod", "-aG", "planter", c.facts.user);
    c.tx.progress(`${c.facts.user} is in group planter in the VM`);
  },
  ready: async (_step, c) => {
    if (!(await waitForPath(c.hostSocket, 30_000)))
      stepFail("ready", `${c.hostSocket} does not exist: Lima is not forwarding planterd's socket`, READY_HINT);
    if (!(await waitReady(c.hostSocket, c.opts.waitMs ?? 30_000)))
      stepFail("ready", `planterd in the VM did not answer through ${c.hostSocket}`, READY_HINT);
    const { Client } = await import("../api/client.ts");
    c.result.version = (await new Client(c.hostSocket).version()).version;
    c.tx.progress(`planterd ${c.result.version} answers through ${c.hostSocket}`);
  },
  sentinel: async (_step, c) => {
    // Copied and installed rather than written with a shell redirect: `limactl shell` re-parses its arguments.
    const tmp = mkdtempSync(join(tmpdir(), "planter-lima-"));
    try {
      const file = join(tmp, "lima-layout");
      writeFileSync(file, `${LAYOUT}\n`);
      await must("sentinel", STEP_MS, "copy", file, `${LIMA_VM}:${GUEST_STAGED_LAYOUT}`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    await shell("sentinel", "sudo", "install", "-m", "0644", GUEST_STAGED_LAYOUT, LAYOUT_FILE);
    await shell("sentinel", "rm", "-f", GUEST_STAGED_LAYOUT);
    c.tx.progress(`${LAYOUT_FILE} says ${LAYOUT}`);
  },
};
