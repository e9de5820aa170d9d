/**
 * The Lima VM agent (install --lima): lima.limactl, lima.vm-exists, lima.vm-running, lima.layout,
 * lima.socket-forwarded (a real API call through the forwarded socket), lima.guest-service,
 * lima.guest-socket-perms, lima.guest-group, lima.version-match. Every verdict is a pure function
 * of what the probes saw; they skip on hosts where no VM was recorded and limactl is absent.
 */
import { Client } from "../../api/client.ts";
import type { VersionInfo } from "../../api/contract.ts";
import {
  GUEST_SOCKET,
  type GuestFacts,
  hostSocketPath,
  LAYOUT,
  LAYOUT_FILE,
  LIMA_VM,
  type LimaInstance,
  lexists,
  limactlWithin,
  parseGuestProbe,
  parseList,
  renderGuestProbe,
} from "../../host/lima.ts";
import { type Check, fail, type Linked, ok, type Result, skip } from "../check.ts";
import type { DoctorContext } from "../context.ts";
import { versionResult } from "./daemon.ts";

type Ctx = DoctorContext & Linked;

/** lima.limactl's message where Lima is not used at all: the table then shows the area as one line. */
export const LIMA_UNUSED = "Lima is not used here (no VM recorded by install --lima, no limactl)";

/** The VM install recorded, if any. */
function recorded(ctx: DoctorContext) {
  return ctx.install.found && "state" in ctx.install ? (ctx.install.state.vm ?? null) : null;
}
const vmName = (ctx: DoctorContext) => recorded(ctx)?.name ?? LIMA_VM;
const hostSocket = (ctx: DoctorContext) => recorded(ctx)?.host_socket ?? hostSocketPath(ctx.env);
const inVm = (ctx: DoctorContext, cmd: string) => `limactl shell ${vmName(ctx)} ${cmd}`;

/** `limactl list --json`, once per run: the instances, or why not. */
const listProbe = (ctx: Ctx) =>
  ctx.once("lima.list", async (): Promise<{ found: false; why: string } | { found: true; vms: LimaInstance[] }> => {
    const r = await limactlWithin(10_000, "list", "--json");
    if (r.code !== 0) return { found: false, why: r.code === 127 ? "not found" : r.stderr.trim() || `exit ${r.code}` };
    return { found: true, vms: parseList(r.stdout) };
  });

/** The guest's facts, once per run (one `limactl shell`). */
const guestProbe = (ctx: Ctx) =>
  ctx.once("lima.guest", async (): Promise<GuestFacts | string> => {
    const r = await limactlWithin(20_000, "shell", "--workdir", "/", vmName(ctx), "sh", "-c", renderGuestProbe());
    return r.code === 0 ? parseGuestProbe(r.stdout) : r.stderr.trim() || `exit ${r.code}`;
  });

/** planterd's version through the forwarded socket, once per run. */
const apiProbe = (ctx: Ctx) =>
  ctx.once("lima.api", async (): Promise<VersionInfo | string> => {
    try {
      return await new Client(hostSocket(ctx)).version();
    } catch (e) {
      return (e as Error).message;
    }
  });

/** Skip unless the VM runs (each guest check depends on it). */
async function needRunning(ctx: Ctx): Promise<Result | null> {
  const r = await ctx.result("lima.vm-running");
  return r.status === "ok" ? null : skip(`VM ${vmName(ctx)} is not running`, "see lima.vm-running");
}

/** lima.limactl */
export function limactlResult(o: { recorded: boolean; list: { found: boolean; why?: string } }): Result {
  if (o.list.found) return ok("limactl answers");
  if (!o.recorded) return skip(LIMA_UNUSED);
  return fail(
    `limactl ${o.list.why === "not found" ? "is not on PATH" : `fails: ${o.list.why}`}, but install --lima set up a VM`,
    "the Lima VM agent cannot be started or reached without Lima",
    "brew install lima",
  );
}

/** lima.vm-exists */
export function vmExistsResult(o: {
  name: string;
  recorded: boolean;
  vm: LimaInstance | null;
  planter: string;
}): Result {
  if (o.vm) return ok(`VM ${o.name} exists (${o.vm.arch}, ${o.vm.dir})`);
  if (!o.recorded) return skip(`no VM ${o.name} (install --lima creates it)`);
  return fail(
    `VM ${o.name} does not exist, but install --lima recorded it`,
    "it was deleted outside planter; install --lima creates and provisions it again",
    `${o.planter} install --lima`,
  );
}

/** lima.vm-running */
export function vmRunningResult(name: string, vm: LimaInstance): Result {
  if (vm.status === "Running") return ok(`VM ${name} is running`);
  return fail(`VM ${name} is ${vm.status}`, "jobs for the VM agent need it running", `limactl start ${name}`);
}

/** lima.layout */
export function layoutResult(name: string, facts: GuestFacts, planter: string): Result {
  if (facts.layout === LAYOUT) return ok(`${LAYOUT_FILE} says ${LAYOUT}`);
  return fail(
    facts.layout ? `${LAYOUT_FILE} says ${facts.layout}, not ${LAYOUT}` : `no ${LAYOUT_FILE} in VM ${name}`,
    "the VM is in an older layout (or was not provisioned by this planter): migrate lima moves it to the socket-activated units",
    `${planter} migrate lima`,
  );
}

/** lima.socket-forwarded */
export function forwardedResult(
  name: string,
  socket: string,
  api: VersionInfo | string,
  socketExists: boolean,
): Result {
  if (typeof api !== "string") return ok(`planterd ${api.version} answers through ${socket}`);
  if (!socketExists)
    return fail(
      `${socket} does not exist: Lima is not forwarding planterd's socket`,
      "Lima sets up the portForwards when the VM starts",
      `limactl stop ${name} && limactl start ${name}`,
    );
  return fail(
    `no answer through ${socket}: ${api}`,
    "the forward exists but planterd in the VM does not answer: its socket unit is stopped or it fails to start",
    `limactl shell ${name} sudo systemctl restart planterd.socket`,
  );
}

/** lima.guest-service */
export function guestServiceResult(name: string, facts: GuestFacts): Result {
  if (facts.enabled === "enabled" && facts.active === "active")
    return ok("planterd.socket is enabled and listening in the VM");
  return fail(
    `planterd.socket in VM ${name} is ${facts.enabled || "unknown"} and ${facts.active || "unknown"}`,
    "systemd in the VM starts planterd on the first connection only while planterd.socket is enabled and active",
    `limactl shell ${name} sudo systemctl enable --now planterd.socket`,
  );
}

/** lima.guest-socket-perms */
export function guestSocketResult(name: string, facts: GuestFacts): Result {
  if (facts.socket === "root:planter:660") return ok(`${GUEST_SOCKET} is root:planter 0660`);
  if (!facts.socket)
    return fail(
      `${GUEST_SOCKET} does not exist in VM ${name}`,
      "planterd.socket is not listening",
      `limactl shell ${name} sudo systemctl restart planterd.socket`,
    );
  const [u, g, m] = facts.socket.split(":");
  return fail(
    `${GUEST_SOCKET} is ${u}:${g} 0${m}, not root:planter 0660`,
    "only root and group planter may reach planterd",
    `limactl shell ${name} sudo sh -c 'chown root:planter ${GUEST_SOCKET} && chmod 0660 ${GUEST_SOCKET}'`,
  );
}

/** lima.guest-group */
export function guestGroupResult(name: string, facts: GuestFacts, planter: string): Result {
  if (!facts.group)
    return fail(`no group planter in VM ${name}`, "provisioning creates it", `${planter} install --lima`);
  const members = (facts.group.split(":")[3] ?? "").split(",").filter(Boolean);
  if (facts.user === "root" || members.includes(facts.user)) return ok(`${facts.user} is in group planter in the VM`);
  return fail(
    `${facts.user} is not in group planter in VM ${name}`,
    "commands run in the VM as that user cannot reach planterd",
    `limactl shell ${name} sudo usermod -aG planter ${facts.user}`,
  );
}

const guestCheck = (
  id: string,
  description: string,
  verdict: (ctx: Ctx, facts: GuestFacts) => Result,
): Check<DoctorContext> => ({
  id,
  description,
  async run(ctx) {
    const not = await needRunning(ctx);
    if (not) return not;
    const facts = await guestProbe(ctx);
    if (typeof facts === "string")
      return fail(`cannot run a command in VM ${vmName(ctx)}: ${facts}`, "limactl shell fails", inVm(ctx, "true"));
    return verdict(ctx, facts);
  },
});

export const limaChecks: Check<DoctorContext>[] = [
  {
    id: "lima.limactl",
    description: "limactl is installed (when install --lima set up a VM)",
    async run(ctx) {
      return limactlResult({ recorded: recorded(ctx) !== null, list: await listProbe(ctx) });
    },
  },
  {
    id: "lima.vm-exists",
    description: "the VM planter exists",
    async run(ctx) {
      if ((await ctx.result("lima.limactl")).status !== "ok") return skip("limactl is not available");
      const list = await listProbe(ctx);
      const vm = list.found ? (list.vms.find((v) => v.name === vmName(ctx)) ?? null) : null;
      return vmExistsResult({ name: vmName(ctx), recorded: recorded(ctx) !== null, vm, planter: ctx.commands.planter });
    },
  },
  {
    id: "lima.vm-running",
    description: "the VM planter is running",
    async run(ctx) {
      if ((await ctx.result("lima.vm-exists")).status !== "ok") return skip(`no VM ${vmName(ctx)}`);
      const list = await listProbe(ctx);
      const vm = list.found ? list.vms.find((v) => v.name === vmName(ctx)) : undefined;
      return vm ? vmRunningResult(vmName(ctx), vm) : skip(`no VM ${vmName(ctx)}`);
    },
  },
  guestCheck("lima.layout", `the layout sentinel ${LAYOUT_FILE} says ${LAYOUT}`, (ctx, f) =>
    layoutResult(vmName(ctx), f, ctx.commands.planter),
  ),
  {
    id: "lima.socket-forwarded",
    description: "a real API call through the forwarded host socket succeeds",
    async run(ctx) {
      const not = await needRunning(ctx);
      if (not) return not;
      const socket = hostSocket(ctx);
      return forwardedResult(vmName(ctx), socket, await apiProbe(ctx), lexists(socket));
    },
  },
  guestCheck("lima.guest-service", "planterd.socket is enabled and active in the VM", (ctx, f) =>
    guestServiceResult(vmName(ctx), f),
  ),
  guestCheck("lima.guest-socket-perms", `${GUEST_SOCKET} is root:planter 0660 in the VM`, (ctx, f) =>
    guestSocketResult(vmName(ctx), f),
  ),
  guestCheck("lima.guest-group", "the VM's user is in group planter", (ctx, f) =>
    guestGroupResult(vmName(ctx), f, ctx.commands.planter),
  ),
  {
    id: "lima.version-match",
    description: "planterd in the VM runs the same version as this binary",
    async run(ctx) {
      if ((await ctx.result("lima.socket-forwarded")).status !== "ok")
        return skip("planterd in the VM does not answer");
      const api = await apiProbe(ctx);
      if (typeof api === "string") return skip("planterd in the VM does not answer");
      const r = versionResult(api, ctx.expected, `${ctx.commands.planter} install --lima --upgrade`);
      if (r.status === "ok") return { ...r, message: `VM: ${r.message}` };
      const hint =
        "the VM runs another planter than this host: --upgrade copies this one in and restarts planterd.socket there";
      return { ...r, message: `VM: ${r.message}`, hint };
    },
  },
];
