/** Lima: the template and provision script as literal text, the ELF check, list parsing, socket paths. */
import { describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  forwardedResult,
  guestGroupResult,
  guestServiceResult,
  guestSocketResult,
  layoutResult,
  limactlResult,
  vmRunningResult,
} from "../../lib/doctor/checks/lima.ts";
import {
  checkElf,
  elfMachine,
  type GuestFacts,
  hostSocketPath,
  limaVmType,
  parseGuestProbe,
  parseList,
  renderLimaTemplate,
  renderProvisionScript,
  renderReadinessProbe,
} from "../../lib/host/lima.ts";
import { cleanup } from "../harness.ts";

/** The provision script, literally, for guest user `user`. */
const PROVISION = (user: string) => `#!/bin/sh
# planter: the Linux agent in this VM (written by planter install --lima; safe to run again).
set -eu
user="${user}"
getent group planter >/dev/null || groupadd --system planter
# A root peer's jobs run as this user ([jobs] root_peer_user), never as root.
getent passwd planter-job >/dev/null || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin planter-job
# A staged binary is installed only when the guest user put it there (limactl copy runs as that user).
if [ -f /tmp/planter.new ] && [ "$(stat -c %U /tmp/planter.new)" = "$user" ]; then
  install -m 0755 -o root -g root /tmp/planter.new /usr/local/bin/planter.tmp
  mv -f /usr/local/bin/planter.tmp /usr/local/bin/planter
  rm -f /tmp/planter.new
fi
mkdir -p /etc/planter /etc/tmpfiles.d /etc/systemd/system
if [ ! -f /etc/planter/config.toml ]; then
cat > /etc/planter/config.toml.tmp <<'PLANTER_EOF'
# planterd configuration — every key is optional; see docs/install.md "Configuration".
[sandbox]
mode = "enforced"   # enforced (fail closed) | permissive | disabled

[authz]
strict = true
PLANTER_EOF
chmod 0644 /etc/planter/config.toml.tmp
mv -f /etc/planter/config.toml.tmp /etc/planter/config.toml
fi
cat > /etc/tmpfiles.d/planter.conf.tmp <<'PLANTER_EOF'
# planter: the socket directory, reachable by group planter only
d /run/planter 0750 root planter -
PLANTER_EOF
chmod 0644 /etc/tmpfiles.d/planter.conf.tmp
mv -f /etc/tmpfiles.d/planter.conf.tmp /etc/tmpfiles.d/planter.conf
cat > /etc/systemd/system/planterd.socket.tmp <<'PLANTER_EOF'
[Unit]
Description=planter daemon socket
Documentation=https://github.com/planter/planter

[Socket]
ListenStream=/run/planter/planterd.sock
SocketMode=0660
SocketUser=root
SocketGroup=planter
DirectoryMode=0750
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
PLANTER_EOF
chmod 0644 /etc/systemd/system/planterd.socket.tmp
mv -f /etc/systemd/system/planterd.socket.tmp /etc/systemd/system/planterd.socket
cat > /etc/systemd/system/planterd.service.tmp <<'PLANTER_EOF'
[Unit]
Description=planter daemon
Documentation=https://github.com/planter/planter
Requires=planterd.socket
After=planterd.socket

[Service]
Type=simple
ExecStart=/usr/local/bin/planter daemon --config /etc/planter/config.toml
Environment=PLANTER_MODE=system
StateDirectory=planter
StateDirectoryMode=0700
Environment=PLANTER_SOCKET=/run/planter/planterd.sock
Environment=PLANTER_STATE=/var/lib/planter
KillMode=process
Delegate=yes
Restart=on-failure
RestartSec=1s
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectClock=yes
LockPersonality=yes
RestrictRealtime=yes

[Install]
Also=planterd.socket
PLANTER_EOF
chmod 0644 /etc/systemd/system/planterd.service.tmp
mv -f /etc/systemd/system/planterd.service.tmp /etc/systemd/system/planterd.service
systemd-tmpfiles --create /etc/tmpfiles.d/planter.conf
systemctl daemon-reload
systemctl enable --now planterd.socket
id -nG "$user" | tr " " "\\n" | grep -qx planter || usermod -aG planter "$user"
printf '%s\\n' socket-activated-v1 > /etc/planter/lima-layout.tmp
mv -f /etc/planter/lima-layout.tmp /etc/planter/lima-layout
`;

const PROBE = `#!/bin/sh
set -eu
if ! timeout 60 sh -c 'until sudo test -S /run/planter/planterd.sock; do sleep 1; done'; then
  echo >&2 "planterd.socket is not listening on /run/planter/planterd.sock"
  exit 1
fi
`;

const indent4 = (text: string) =>
  text
    .split("\n")
    .map((l) => (l ? `    ${l}` : l))
    .join("\n");

describe("renderers", () => {
  test("provision script", () => {
    expect(renderProvisionScript({ user: "alice" })).toBe(PROVISION("alice"));
  });

  test("readiness probe", () => {
    expect(renderReadinessProbe()).toBe(PROBE);
  });

  test("template: vz, Ubuntu LTS for the arch, sizes, writable mounts at the same path, provision, probe, socket forward", () => {
    const text = renderLimaTemplate({
      name: "planter",
      cpus: 6,
      memory: "8GiB",
      disk: "80GiB",
      mounts: ["/Users/alice/src", "/Users/alice/work dir"],
      arch: "aarch64",
      vmType: "vz",
    });
    expect(text).toBe(`# planter's Lima VM: planterd (Linux) behind a socket forwarded to the host.
# Written by \`planter install --lima\`; recreate the VM rather than editing it.
vmType: vz
arch: aarch64
cpus: 6
memory: "8GiB"
disk: "80GiB"
images:
- location: "https://cloud-images.ubuntu.com/releases/24.04/release/ubuntu-24.04-server-cloudimg-arm64.img"
  arch: aarch64
mounts:
- location: "/Users/alice/src"
  writable: true
- location: "/Users/alice/work dir"
  writable: true
containerd:
  system: false
  user: false
provision:
- mode: system
  script: |
${indent4(PROVISION("{{.User}}"))}
probes:
- mode: readiness
  description: planterd.socket listening in the guest
  script: |
${indent4(PROBE)}
  hint: see \`limactl shell planter sudo journalctl -u planterd.socket -u planterd.service\`
portForwards:
- guestSocket: "/run/planter/planterd.sock"
  hostSocket: "{{.Dir}}/sock/planterd.sock"
`);
    // And it is YAML that says what Lima will read.
    const y = Bun.YAML.parse(text) as Record<string, unknown>;
    expect(y.portForwards).toEqual([
      { guestSocket: "/run/planter/planterd.sock", hostSocket: "{{.Dir}}/sock/planterd.sock" },
    ]);
    expect((y.provision as { script: string }[])[0]?.script).toBe(PROVISION("{{.User}}"));
    expect((y.probes as { script: string }[])[0]?.script).toBe(PROBE);
  });

  test("vmType: vz only on macOS for the host's own architecture; qemu on Linux and across architectures", () => {
    expect([
      limaVmType("darwin", "aarch64", "aarch64"),
      limaVmType("darwin", "aarch64", "x86_64"),
      limaVmType("linux", "x86_64", "x86_64"),
      limaVmType("linux", "aarch64", "aarch64"),
      limaVmType("linux", "x86_64", "aarch64"),
    ]).toEqual(["vz", "qemu", "qemu", "qemu", "qemu"]);
    const y = (vmType: "vz" | "qemu") =>
      (
        Bun.YAML.parse(
          renderLimaTemplate({
            name: "planter",
            cpus: 1,
            memory: "1GiB",
            disk: "1GiB",
            mounts: [],
            arch: "x86_64",
            vmType,
          }),
        ) as { vmType: string }
      ).vmType;
    expect([y("vz"), y("qemu")]).toEqual(["vz", "qemu"]);
  });

  test("x86_64 gets the amd64 image; no mounts is an empty list", () => {
    const y = Bun.YAML.parse(
      renderLimaTemplate({
        name: "planter",
        cpus: 1,
        memory: "1GiB",
        disk: "10GiB",
        mounts: [],
        arch: "x86_64",
        vmType: "qemu",
      }),
    ) as { images: { location: string; arch: string }[]; mounts: unknown[] };
    expect(y.images).toEqual([
      {
        location: "https://cloud-images.ubuntu.com/releases/24.04/release/ubuntu-24.04-server-cloudimg-amd64.img",
        arch: "x86_64",
      },
    ]);
    expect(y.mounts).toEqual([]);
  });

  test("the provision script is valid sh", () => {
    const dir = mkdtempSync("/tmp/pt-limau-");
    try {
      const f = join(dir, "provision.sh");
      writeFileSync(f, renderProvisionScript({ user: "alice" }));
      const r = Bun.spawnSync(["sh", "-n", f], { stderr: "pipe" });
      expect([r.exitCode, r.stderr.toString()]).toEqual([0, ""]);
    } finally {
      cleanup(dir);
    }
  });

  // Required in CI (.ci/run installs shellcheck); skipped on a machine without it.
  test.skipIf(!Bun.which("shellcheck") && !process.env.CI)(
    "the provision script and probe are shellcheck-clean",
    () => {
      for (const text of [renderProvisionScript({ user: "alice" }), renderReadinessProbe()]) {
        const r = Bun.spawnSync(["shellcheck", "-s", "sh", "-"], {
          stdin: new TextEncoder().encode(text),
          stdout: "pipe",
        });
        expect([r.exitCode, r.stdout.toString()]).toEqual([0, ""]);
      }
    },
  );
});

/** A 64-bit little-endian ELF header for `machine`. */
function elfHeader(machine: number, cls = 2, data = 1): Uint8Array {
  const h = new Uint8Array(64);
  h.set([0x7f, 0x45, 0x4c, 0x46, cls, data, 1]);
  h[16] = 2; // ET_EXEC
  h[18] = machine & 0xff;
  h[19] = machine >> 8;
  return h;
}

describe("ELF check", () => {
  test("header parsing: machine, or why not", () => {
    expect(elfMachine(elfHeader(62))).toEqual({ machine: 62 });
    expect(elfMachine(elfHeader(183))).toEqual({ machine: 183 });
    expect(elfMachine(new TextEncoder().encode("#!/bin/sh\necho hi\n"))).toEqual({
      error: "not an ELF binary (a Linux binary is needed in the VM)",
    });
    expect(elfMachine(elfHeader(62, 1))).toEqual({ error: "a 32-bit ELF binary (a 64-bit Linux binary is needed)" });
    expect(elfMachine(elfHeader(62, 2, 2))).toEqual({ error: "a big-endian ELF binary" });
    expect(elfMachine(new Uint8Array([0x7f, 0x45]))).toEqual({
      error: "not an ELF binary (a Linux binary is needed in the VM)",
    });
  });

  test("files: the right arch passes; another arch, a script, a Mach-O, a missing file are refused", () => {
    const dir = mkdtempSync("/tmp/pt-limau-");
    try {
      const x64 = join(dir, "x64");
      const arm = join(dir, "arm");
      const script = join(dir, "script");
      const macho = join(dir, "macho");
      writeFileSync(x64, elfHeader(62));
      writeFileSync(arm, elfHeader(183));
      writeFileSync(script, "#!/bin/sh\nexit 0\n");
      writeFileSync(macho, new Uint8Array([0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 1, ...new Array(56).fill(0)]));
      chmodSync(script, 0o755);
      expect(checkElf(x64, "x86_64")).toBeNull();
      expect(checkElf(arm, "aarch64")).toBeNull();
      expect(checkElf(x64, "aarch64")).toBe(`${x64} is a Linux binary for x86_64, but the VM is aarch64`);
      expect(checkElf(arm, "x86_64")).toBe(`${arm} is a Linux binary for aarch64, but the VM is x86_64`);
      expect(checkElf(script, "x86_64")).toBe(`${script} is not an ELF binary (a Linux binary is needed in the VM)`);
      expect(checkElf(macho, "aarch64")).toBe(`${macho} is not an ELF binary (a Linux binary is needed in the VM)`);
      expect(checkElf(join(dir, "none"), "x86_64")).toStartWith(`cannot read ${join(dir, "none")}: `);
      // This very runtime is a real ELF of this host.
      if (process.platform === "linux")
        expect(checkElf(process.execPath, process.arch === "arm64" ? "aarch64" : "x86_64")).toBeNull();
    } finally {
      cleanup(dir);
    }
  });
});

describe("limactl output and paths", () => {
  test("list --json is one object per line", () => {
    expect(
      parseList(
        '{"name":"default","status":"Stopped","dir":"/h/.lima/default","arch":"aarch64"}\n{"name":"planter","status":"Running","dir":"/h/.lima/planter","arch":"aarch64","cpus":4}\n',
      ),
    ).toEqual([
      { name: "default", status: "Stopped", dir: "/h/.lima/default", arch: "aarch64" },
      { name: "planter", status: "Running", dir: "/h/.lima/planter", arch: "aarch64", cpus: 4 } as never,
    ]);
    expect(parseList("")).toEqual([]);
  });

  test("host socket: ~/.lima/planter/sock/planterd.sock, LIMA_HOME overrides", () => {
    expect(hostSocketPath({ HOME: "/Users/alice" })).toBe("/Users/alice/.lima/planter/sock/planterd.sock");
    expect(hostSocketPath({ HOME: "/Users/alice", LIMA_HOME: "/opt/lima" })).toBe(
      "/opt/lima/planter/sock/planterd.sock",
    );
  });
});

describe("doctor lima verdicts", () => {
  const facts = (o: Partial<GuestFacts> = {}): GuestFacts => ({
    layout: "socket-activated-v1",
    sha256: "ab",
    enabled: "enabled",
    active: "active",
    socket: "root:planter:660",
    user: "alice",
    group: "planter:x:995:alice",
    ...o,
  });

  test("the guest probe's output is parsed key by key; missing keys are empty", () => {
    expect(
      parseGuestProbe(
        "layout=socket-activated-v1\nsocket=root:planter:660\nuser=alice\ngroup=planter:x:995:alice,bob\n",
      ),
    ).toEqual({ ...facts({ sha256: "", enabled: "", active: "" }), group: "planter:x:995:alice,bob" });
  });

  test("limactl: skipped where Lima is not used, failed where install recorded a VM", () => {
    expect(limactlResult({ recorded: false, list: { found: false, why: "not found" } }).status).toBe("skip");
    expect(limactlResult({ recorded: true, list: { found: false, why: "not found" } })).toEqual({
      status: "fail",
      message: "limactl is not on PATH, but install --lima set up a VM",
      hint: "the Lima VM agent cannot be started or reached without Lima",
      fix: "brew install lima",
    });
  });

  test("guest verdicts name the fix for this VM", () => {
    expect(layoutResult("planter", facts({ layout: "" }), "planter").fix).toBe("planter migrate lima");
    expect(guestServiceResult("planter", facts({ active: "inactive" })).fix).toBe(
      "limactl shell planter sudo systemctl enable --now planterd.socket",
    );
    expect(guestSocketResult("planter", facts({ socket: "root:root:666" }))).toEqual({
      status: "fail",
      message: "/run/planter/planterd.sock is root:root 0666, not root:planter 0660",
      hint: "only root and group planter may reach planterd",
      fix: "limactl shell planter sudo sh -c 'chown root:planter /run/planter/planterd.sock && chmod 0660 /run/planter/planterd.sock'",
    });
    expect(guestGroupResult("planter", facts({ group: "planter:x:995:bob" }), "planter").fix).toBe(
      "limactl shell planter sudo usermod -aG planter alice",
    );
    expect(guestGroupResult("planter", facts(), "planter").status).toBe("ok");
    expect(vmRunningResult("planter", { name: "planter", status: "Stopped", arch: "aarch64", dir: "/d" }).fix).toBe(
      "limactl start planter",
    );
    expect(forwardedResult("planter", "/h/sock", "refused", false).fix).toBe(
      "limactl stop planter && limactl start planter",
    );
    expect(forwardedResult("planter", "/h/sock", "refused", true).fix).toBe(
      "limactl shell planter sudo systemctl restart planterd.socket",
    );
  });
});
