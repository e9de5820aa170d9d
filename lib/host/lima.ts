/**
 * Lima: the VM template and its provision script rendered by pure functions (tested as literal
 * text), and the ELF check that guards the binary copied into the VM. The `limactl` wrapper and
 * `limactl list --json` are in limactl.ts (re-exported here).
 */
import { closeSync, lstatSync, openSync, readSync } from "node:fs";
import { DEFAULT_ROOT_PEER_USER } from "../config.ts";
import { DEFAULT_CONFIG } from "./default-config.ts";
import { jobUseraddArgs } from "./groups.ts";
import { guestPathOf, hostSocketPath, LIMA_VM, type LimaMount, limaHome } from "./lima-paths.ts";
import { renderServiceUnit, renderSocketUnit, renderTmpfiles, type UnitParams } from "./systemd.ts";

/** planterd's socket inside the guest (system mode). */
export const GUEST_SOCKET = "/run/planter/planterd.sock";
/** Where the installed binary lives in the guest. */
export const GUEST_BINARY = "/usr/local/bin/planter";
/** Where `limactl copy` puts a new binary for the provision script to install (the guest user can write there). */
export const GUEST_STAGED = "/tmp/planter.new";
/** Where `limactl copy` puts the provision script when install runs it again. */
export const GUEST_PROVISION = "/tmp/planter-provision.sh";
/** The layout sentinel `migrate lima` reads. */
export const LAYOUT_FILE = "/etc/planter/lima-layout";
export const LAYOUT = "socket-activated-v1";

/** Lima's names for the architectures planter ships for. */
export type LimaArch = "x86_64" | "aarch64";

/** ELF e_machine of each architecture. */
export const ELF_MACHINE: Record<LimaArch, number> = { x86_64: 62, aarch64: 183 };
/** Bun's target suffix and Ubuntu's image suffix for each architecture. */
export const BUN_ARCH: Record<LimaArch, string> = { x86_64: "x64", aarch64: "arm64" };
const UBUNTU_ARCH: Record<LimaArch, string> = { x86_64: "amd64", aarch64: "arm64" };

/** This host's architecture in Lima's words. */
export function hostLimaArch(a: string = process.arch): LimaArch {
  return a === "arm64" || a === "aarch64" ? "aarch64" : "x86_64";
}

/** Whether `p` exists, a dangling link (a forwarded socket Lima has not bound yet) included. */
export function lexists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Wait until `p` exists (see lexists), polling every 25 ms; false when it still does not after `ms`. */
export async function waitForPath(p: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!lexists(p)) {
    if (Date.now() > deadline) return false;
    await Bun.sleep(25);
  }
  return true;
}

export interface TemplateParams {
  name: string;
  cpus: number;
  /** e.g. "4GiB". */
  memory: string;
  /** e.g. "50GiB". */
  disk: string;
  /** Host directories mounted writable at the same path in the guest. */
  mounts: string[];
  arch: LimaArch;
  /** Lima's VM driver (see limaVmType). */
  vmType: LimaVmType;
}

/** Lima's VM drivers planter asks for. */
export type LimaVmType = "vz" | "qemu";

/**
 * The VM driver for a host: `vz` (Apple's Virtualization.framework) exists only on macOS, and runs
 * only the host's own architecture; everything else — a Linux host, or another architecture —
 * needs `qemu`.
 */
export function limaVmType(platform: string, hostArch: LimaArch, vmArch: LimaArch): LimaVmType {
  return platform === "darwin" && hostArch === vmArch ? "vz" : "qemu";
}

/** The Ubuntu LTS cloud image for an architecture. */
export function ubuntuImage(arch: LimaArch): string {
  return `https://cloud-images.ubuntu.com/releases/24.04/release/ubuntu-24.04-server-cloudimg-${UBUNTU_ARCH[arch]}.img`;
}

const q = (s: string) => JSON.stringify(s);
const indent = (text: string, n: number) =>
  text
    .split("\n")
    .map((l) => (l ? " ".repeat(n) + l : l))
    .join("\n");

/** The guest's systemd units: system mode, group planter, the binary at /usr/local/bin/planter. */
export const GUEST_UNITS: UnitParams = {
  mode: "system",
  binary: GUEST_BINARY,
  socketPath: GUEST_SOCKET,
  configPath: "/etc/planter/config.toml",
  stateDir: "/var/lib/planter",
  group: "planter",
};

/**
 * The provision script (runs as root at every boot, and again from install after a copy): group
 * planter, the staged binary installed, config, tmpfiles entry, units, the socket enabled, the
 * guest user in the group, the layout sentinel. Idempotent. `user` is the guest user: Lima's
 * `{{.User}}` in the template, the real name when install runs it through `limactl shell`.
 */
export function renderProvisionScript(p: { user: string; sentinel?: boolean }): string {
  const heredoc = (path: string, text: string, mode: string) => [
    `cat > ${path}.tmp <<'PLANTER_EOF'`,
    text.replace(/\n$/, ""),
    "PLANTER_EOF",
    `chmod ${mode} ${path}.tmp`,
    `mv -f ${path}.tmp ${path}`,
  ];
  return [
    "#!/bin/sh",
    "# planter: the Linux agent in this VM (written by planter install --lima; safe to run again).",
    "set -eu",
    `user=${q(p.user)}`,
    "getent group planter >/dev/null || groupadd --system planter",
    "# A root peer's jobs run as this user ([jobs] root_peer_user), never as root.",
    `getent passwd ${DEFAULT_ROOT_PEER_USER} >/dev/null || useradd ${jobUseraddArgs(DEFAULT_ROOT_PEER_USER, "/usr/sbin/nologin").join(" ")}`,
    `# A staged binary is installed only when the guest user put it there (limactl copy runs as that user).`,
    `if [ -f ${GUEST_STAGED} ] && [ "$(stat -c %U ${GUEST_STAGED})" = "$user" ]; then`,
    `  install -m 0755 -o root -g root ${GUEST_STAGED} ${GUEST_BINARY}.tmp`,
    `  mv -f ${GUEST_BINARY}.tmp ${GUEST_BINARY}`,
    `  rm -f ${GUEST_STAGED}`,
    "fi",
    "mkdir -p /etc/planter /etc/tmpfiles.d /etc/systemd/system",
    "if [ ! -f /etc/planter/config.toml ]; then",
    ...heredoc("/etc/planter/config.toml", DEFAULT_CONFIG, "0644"),
    "fi",
    ...heredoc("/etc/tmpfiles.d/planter.conf", renderTmpfiles("/run/planter", "planter"), "0644"),
    ...heredoc("/etc/systemd/system/planterd.socket", renderSocketUnit(GUEST_UNITS), "0644"),
    ...heredoc("/etc/systemd/system/planterd.service", renderServiceUnit(GUEST_UNITS), "0644"),
    "systemd-tmpfiles --create /etc/tmpfiles.d/planter.conf",
    "systemctl daemon-reload",
    "systemctl enable --now planterd.socket",
    'id -nG "$user" | tr " " "\\n" | grep -qx planter || usermod -aG planter "$user"',
    ...(p.sentinel === false ? [] : sentinelLines()),
    "",
  ].join("\n");
}

/** Shell lines that write the layout sentinel (tmp file renamed into place). */
export function sentinelLines(): string[] {
  return [`printf '%s\\n' ${LAYOUT} > ${LAYOUT_FILE}.tmp`, `mv -f ${LAYOUT_FILE}.tmp ${LAYOUT_FILE}`];
}

/** The readiness probe: Lima's `limactl start` returns once planterd.socket listens in the guest. */
export function renderReadinessProbe(): string {
  return [
    "#!/bin/sh",
    "set -eu",
    `if ! timeout 60 sh -c 'until sudo test -S ${GUEST_SOCKET}; do sleep 1; done'; then`,
    `  echo >&2 "planterd.socket is not listening on ${GUEST_SOCKET}"`,
    "  exit 1",
    "fi",
    "",
  ].join("\n");
}

/** The Lima template for the planter VM (YAML). */
export function renderLimaTemplate(p: TemplateParams): string {
  const lines = [
    "# planter's Lima VM: planterd (Linux) behind a socket forwarded to the host.",
    "# Written by `planter install --lima`; recreate the VM rather than editing it.",
    `vmType: ${p.vmType}`,
    `arch: ${p.arch}`,
    `cpus: ${p.cpus}`,
    `memory: ${q(p.memory)}`,
    `disk: ${q(p.disk)}`,
    "images:",
    `- location: ${q(ubuntuImage(p.arch))}`,
    `  arch: ${p.arch}`,
    ...(p.mounts.length
      ? ["mounts:", ...p.mounts.flatMap((m) => [`- location: ${q(m)}`, "  writable: true"])]
      : ["mounts: []"]),
    "containerd:",
    "  system: false",
    "  user: false",
    "provision:",
    "- mode: system",
    "  script: |",
    indent(renderProvisionScript({ user: "{{.User}}" }), 4),
    "probes:",
    "- mode: readiness",
    "  description: planterd.socket listening in the guest",
    "  script: |",
    indent(renderReadinessProbe(), 4),
    `  hint: see \`limactl shell ${p.name} sudo journalctl -u planterd.socket -u planterd.service\``,
    "portForwards:",
    `- guestSocket: ${q(GUEST_SOCKET)}`,
    `  hostSocket: ${q("{{.Dir}}/sock/planterd.sock")}`,
    "",
  ];
  return lines.join("\n");
}

/** What an ELF header says: its architecture, or why it is not a binary for the VM. */
export function elfMachine(header: Uint8Array): { machine: number } | { error: string } {
  if (header.length < 20 || header[0] !== 0x7f || header[1] !== 0x45 || header[2] !== 0x4c || header[3] !== 0x46)
    return { error: "not an ELF binary (a Linux binary is needed in the VM)" };
  if (header[4] !== 2) return { error: "a 32-bit ELF binary (a 64-bit Linux binary is needed)" };
  if (header[5] !== 1) return { error: "a big-endian ELF binary" };
  return { machine: (header[18] as number) | ((header[19] as number) << 8) };
}

/** Refuse a file that is not a 64-bit little-endian ELF for `arch`; returns null when it fits, else the reason. */
export function checkElf(path: string, arch: LimaArch): string | null {
  const header = new Uint8Array(20);
  let n = 0;
  try {
    const fd = openSync(path, "r");
    try {
      n = readSync(fd, header, 0, 20, 0);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    return `cannot read ${path}: ${(e as Error).message}`;
  }
  const r = elfMachine(header.subarray(0, n));
  if ("error" in r) return `${path} is ${r.error}`;
  if (r.machine !== ELF_MACHINE[arch]) {
    const name = Object.entries(ELF_MACHINE).find(([, m]) => m === r.machine)?.[0] ?? `e_machine ${r.machine}`;
    return `${path} is a Linux binary for ${name}, but the VM is ${arch}`;
  }
  return null;
}

/** What doctor reads in the guest, in one `limactl shell` call: key=value lines (see parseGuestProbe). */
export function renderGuestProbe(): string {
  return [
    `echo "layout=$(cat ${LAYOUT_FILE} 2>/dev/null)"`,
    `echo "sha256=$(sha256sum ${GUEST_BINARY} 2>/dev/null | cut -d' ' -f1)"`,
    `echo "enabled=$(systemctl is-enabled planterd.socket 2>/dev/null)"`,
    `echo "active=$(systemctl is-active planterd.socket 2>/dev/null)"`,
    `echo "socket=$(sudo stat -c %U:%G:%a ${GUEST_SOCKET} 2>/dev/null)"`,
    `echo "user=$(id -un)"`,
    `echo "group=$(getent group planter)"`,
  ].join("\n");
}

/** The guest's answers to renderGuestProbe (missing keys are empty). */
export interface GuestFacts {
  layout: string;
  sha256: string;
  enabled: string;
  active: string;
  socket: string;
  user: string;
  group: string;
}

/** Parse renderGuestProbe's output. */
export function parseGuestProbe(stdout: string): GuestFacts {
  const facts: GuestFacts = { layout: "", sha256: "", enabled: "", active: "", socket: "", user: "", group: "" };
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    const k = line.slice(0, i) as keyof GuestFacts;
    if (i > 0 && k in facts) facts[k] = line.slice(i + 1).trim();
  }
  return facts;
}

export { instanceMounts, LimaInstance, limactl, limactlWithin, parseList } from "./limactl.ts";
export { guestPathOf, hostSocketPath, LIMA_VM, type LimaMount, limaHome };
