/** `planter target add|ls|rm|check`: the registry of targets in the user's config (lib/targets/registry.ts). */
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { defineCommand } from "citty";
import * as v from "valibot";
import type { ReadyInfo, VersionInfo } from "../../api/contract.ts";
import { EXIT, PlanterError } from "../../api/errors.ts";
import { ROUTES } from "../../api/routes.ts";
import { summarizeIssues } from "../../api/strings.ts";
import { resolvePaths } from "../../paths.ts";
import { failureJson, fanOut, targetTimeoutMs } from "../../targets/fanout.ts";
import { readClientConfig, saveTarget } from "../../targets/registry.ts";
import { type Endpoint, formatEndpoint, parseTargetUrl } from "../../targets/url.ts";
import { jsonArg, usage } from "../args.ts";
import { TargetEntry, TargetName } from "../client-config.ts";
import { examples } from "../help.ts";
import { printable as p, print, printJson, table, write } from "../output.ts";
import { clientOf } from "../target.ts";

const configPath = () => resolvePaths().configPath;

/** A file option: absolute, present, readable; a token file also 0600 (no bits for group or others) and the user's own. */
export function checkFile(option: string, path: string, secret = false): string {
  const abs = resolvePath(path);
  if (!existsSync(abs)) throw usage(`${option} ${path}: no such file`);
  const st = statSync(abs);
  if (!st.isFile()) throw usage(`${option} ${path}: not a regular file`);
  try {
    accessSync(abs, constants.R_OK);
  } catch {
    throw usage(`${option} ${path}: not readable by you`);
  }
  if (secret) {
    const me = process.getuid?.();
    if (me !== undefined && st.uid !== me)
      throw usage(
        `${option} ${path} is owned by uid ${st.uid}, not by you (uid ${me})`,
        `a token is yours alone: chown it, or copy it to a file of yours`,
      );
    if ((st.mode & 0o077) !== 0)
      throw usage(
        `${option} ${path} has mode ${(st.mode & 0o777).toString(8)}: a token file must be 0600 (others could read it)`,
        `chmod 600 ${abs}`,
      );
  }
  return abs;
}

const SSH_ONLY = ["identity", "known-hosts"] as const;
const HTTPS_ONLY = ["ca", "cert", "key", "token-file"] as const;

const targetAdd = defineCommand({
  meta: {
    name: "add",
    description:
      "Register a target: unix:///PATH, lima, ssh://[USER@]HOST[:PORT][?socket=PATH] or https://HOST[:PORT] (several https URLs, comma-separated: endpoints of one target). Nothing is contacted: `planter target check NAME` tries it",
  },
  args: {
    name: {
      type: "positional",
      description: "the target's name (lower-case letters, digits, - and _)",
      required: true,
    },
    url: { type: "positional", description: "where it is", required: true },
    ca: { type: "string", description: "https: the CA file that signed planterd's certificate", valueHint: "FILE" },
    cert: { type: "string", description: "https: a client certificate (with --key)", valueHint: "FILE" },
    key: { type: "string", description: "https: the client certificate's key", valueHint: "FILE" },
    "token-file": {
      type: "string",
      description: "https: a file holding a bearer token (mode 0600, yours; read at each use, never on a command line)",
      valueHint: "FILE",
    },
    identity: { type: "string", description: "ssh: the private key to log in with (ssh -i)", valueHint: "FILE" },
    "known-hosts": {
      type: "string",
      description:
        "ssh: the known_hosts file with the host's key (default: ssh's own); unknown keys are never accepted",
      valueHint: "FILE",
    },
    replace: { type: "boolean", description: "replace a target of that name" },
    ...jsonArg,
  },
  async run({ args }) {
    const name = v.safeParse(TargetName, args.name);
    if (!name.success) throw usage(`bad target name ${JSON.stringify(args.name)}: ${summarizeIssues(name.issues)}`);
    const endpoints: Endpoint[] = args.url.split(",").map((u) => parseTargetUrl(u.trim()));
    const kind = (endpoints[0] as Endpoint).kind;
    if (endpoints.length > 1 && endpoints.some((e) => e.kind !== "https"))
      throw usage("several URLs make one target only for https endpoints");
    const given = (o: string) => (args as Record<string, unknown>)[o] !== undefined;
    for (const o of SSH_ONLY) if (given(o) && kind !== "ssh") throw usage(`--${o} is for ssh:// targets only`);
    for (const o of HTTPS_ONLY) if (given(o) && kind !== "https") throw usage(`--${o} is for https:// targets only`);
    if (given("cert") !== given("key")) throw usage("--cert and --key go together");
    const entry: TargetEntry = { urls: endpoints.map(formatEndpoint) };
    if (args.ca) entry.ca = checkFile("--ca", args.ca);
    if (args.cert) entry.cert = checkFile("--cert", args.cert);
    if (args.key) entry.key = checkFile("--key", args.key, true);
    if (args["token-file"]) entry.token_file = checkFile("--token-file", args["token-file"], true);
    if (args.identity) entry.identity = checkFile("--identity", args.identity, true);
    if (args["known-hosts"]) entry.known_hosts = checkFile("--known-hosts", args["known-hosts"]);
    const checked = v.safeParse(TargetEntry, entry);
    if (!checked.success) throw usage(`bad target: ${summarizeIssues(checked.issues)}`);
    const path = configPath();
    const existing = readClientConfig(path, true).targets;
    if (Object.hasOwn(existing, name.output) && !args.replace)
      throw new PlanterError(
        "E_CONFLICT",
        `there is a target ${name.output} already (${existing[name.output]?.urls.join(",")})`,
        {
          hint: `--replace replaces it; planter target rm ${name.output} removes it`,
        },
      );
    saveTarget(path, name.output, checked.output);
    if (args.json) printJson({ name: name.output, ...checked.output });
    else
      print(
        `target ${name.output}: ${p(checked.output.urls.join(","))} (in ${p(path)}); try it: planter target check ${name.output}`,
      );
    return 0;
  },
});
examples(targetAdd, [
  "planter target add build1 ssh://dev@build1.example.com                    # planterd's system socket there",
  "planter target add mybox 'ssh://me@box:2222?socket=/run/user/1000/planter/planterd.sock'",
  "planter target add ci https://ci1:8443,https://ci2:8443 --ca ca.pem --token-file ~/.config/planter/ci.token",
  "planter target add other unix:///srv/planter/planterd.sock",
]);

interface Row {
  name: string;
  urls: string[];
  builtin: boolean;
  default: boolean;
  [k: string]: unknown;
}

function rows(): Row[] {
  const cfg = readClientConfig(configPath(), true);
  const def = cfg.target ?? "local";
  return [
    { name: "local", urls: [`unix://${resolvePaths().socketPath}`], builtin: true, default: def === "local" },
    { name: "lima", urls: ["lima"], builtin: true, default: def === "lima" },
    ...Object.entries(cfg.targets)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, e]) => ({ name, ...e, builtin: false, default: def === name })),
  ];
}

const targetLs = defineCommand({
  meta: { name: "ls", description: "List the targets: local, lima and the registered ones (* marks the default)" },
  args: { ...jsonArg },
  async run({ args }) {
    const all = rows();
    if (args.json) printJson(all);
    else
      print(
        table(
          ["NAME", "URL", "OPTIONS"],
          all.map((r) => [
            `${r.name}${r.default ? " *" : ""}`,
            r.urls.join(","),
            ["ca", "cert", "token_file", "identity", "known_hosts"]
              .filter((k) => r[k] !== undefined)
              .map((k) => `${k}=${r[k]}`)
              .join(" ") || (r.builtin ? "built-in" : "-"),
          ]),
        ),
      );
    return 0;
  },
});

const targetRm = defineCommand({
  meta: { name: "rm", description: "Remove a registered target (and stop its ssh connection)" },
  args: { name: { type: "positional", description: "the target's name", required: true }, ...jsonArg },
  async run({ args }) {
    const path = configPath();
    const cfg = readClientConfig(path, true);
    if (!Object.hasOwn(cfg.targets, args.name))
      throw new PlanterError("E_NOT_FOUND", `there is no target ${JSON.stringify(args.name)} in ${path}`, {
        hint: "planter target ls lists them",
      });
    if (cfg.target === args.name)
      throw new PlanterError("E_CONFLICT", `target ${args.name} is the default ([client] target in ${path})`, {
        hint: `set [client] target to another one in ${path} first`,
      });
    const entry = cfg.targets[args.name] as TargetEntry;
    const first = parseTargetUrl(entry.urls[0] as string);
    saveTarget(path, args.name, null);
    let stopped = false;
    if (first.kind === "ssh") {
      const { stopForward } = await import("../../targets/ssh.ts");
      stopped = await stopForward({ name: args.name, endpoint: first, env: process.env }).catch(() => false);
    }
    if (args.json) printJson({ name: args.name, removed: true, ssh_stopped: stopped });
    else print(`removed target ${args.name}${stopped ? " (its ssh connection stopped)" : ""}`);
    return 0;
  },
});

/** A target's health: ok (answers and ready), degraded (answers, not ready, or some endpoints fail), down. */
export type Health = "ok" | "degraded" | "down";

/** What `target check` and `doctor` say of one target. */
export interface TargetCheck {
  target: string;
  urls: string[];
  health: Health;
  version: string | null;
  api: number | null;
  latency_ms: number;
  problems: string[];
  error?: { code: string; message: string; hint?: string };
}

/** Check targets in parallel: version and readiness of each, each https endpoint on its own. */
export async function checkTargets(names: string[], timeoutMs = targetTimeoutMs()): Promise<TargetCheck[]> {
  const cfg = readClientConfig(configPath());
  const urlsOf = (n: string) =>
    n === "local" ? [`unix://${resolvePaths().socketPath}`] : n === "lima" ? ["lima"] : (cfg.targets[n]?.urls ?? []);
  const results = await fanOut(
    names,
    clientOf,
    async (c, name, signal) => {
      const version: VersionInfo = await c.call(ROUTES.version, {}, signal);
      const ready: ReadyInfo = await c.call(ROUTES.ready, {}, signal);
      const problems: string[] = ready.ready
        ? []
        : ["planterd answers but is not ready (planter doctor there says why)"];
      const entry = cfg.targets[name];
      let endpoint: string | undefined;
      if (entry && entry.urls.length > 1) {
        // Each endpoint alone, one attempt each (no backoff rounds): one that fails makes the target degraded.
        const { HttpsTransport, boundsFrom } = await import("../../targets/https.ts");
        const bounds = { ...boundsFrom(process.env.PLANTER_RETRY), total: 0, timeout: Math.floor(timeoutMs / 2) };
        const each = await Promise.all(
          entry.urls.map((u) =>
            new HttpsTransport(name, [u], entry, bounds).fetch("GET", "/v1/health", undefined, {}, signal, true).then(
              () => null,
              (e: Error) => ({ url: u, text: `endpoint ${u}: ${e.message}` }),
            ),
          ),
        );
        const failed = each.filter((x) => x !== null);
        endpoint = failed[0]?.url;
        problems.push(...failed.map((f) => f.text));
      } else {
        // One way there: an answer that came only after a failure (an ssh retry) is degraded.
        const t = c.trouble();
        if (t) {
          problems.push(`answered after a failure: ${t.error}`);
          endpoint = t.endpoint ?? entry?.urls[0];
        }
      }
      return { version, problems, endpoint };
    },
    timeoutMs,
  );
  const checks: TargetCheck[] = results.map((r) =>
    r.ok
      ? {
          target: r.target,
          urls: urlsOf(r.target),
          health: r.value.problems.length ? "degraded" : "ok",
          version: r.value.version.version,
          api: r.value.version.api,
          latency_ms: Math.round(r.ms),
          problems: r.value.problems,
        }
      : {
          target: r.target,
          urls: urlsOf(r.target),
          health: "down",
          version: null,
          api: null,
          latency_ms: Math.round(r.ms),
          problems: [r.error.message],
          error: failureJson(r).error,
        },
  );
  // What was seen is reported (when it changed) to the local planterd: target.health events.
  const { reportHealth } = await import("../health.ts");
  await reportHealth(
    checks.map((c, i) => {
      const r = results[i];
      const endpoint = r?.ok ? r.value.endpoint : cfg.targets[c.target]?.urls.length === 1 ? c.urls[0] : undefined;
      const error = c.error
        ? { code: c.error.code, message: c.error.message }
        : c.problems.length
          ? { code: "E_UNAVAILABLE", message: c.problems.join("; ").slice(0, 1024) }
          : undefined;
      return {
        target: c.target,
        health: c.health,
        complete: true,
        ...(error ? { error } : {}),
        ...(endpoint ? { endpoint } : {}),
      };
    }),
  );
  return checks;
}

const targetCheck = defineCommand({
  meta: {
    name: "check",
    description:
      "Reach a target (or local and every registered one) and say its health: ok, degraded (answers but not ready, or an endpoint fails) or down. Exit 0 when none is down; one target down: its error's code; several checked and some down: 5",
  },
  args: {
    name: { type: "positional", description: "the target (default: local and every registered one)", required: false },
    ...jsonArg,
  },
  async run({ args }) {
    const names = args.name ? [args.name] : ["local", ...Object.keys(readClientConfig(configPath()).targets).sort()];
    if (args.name) clientOf(args.name); // an unknown name is a usage error, not a target that is down
    const checks = await checkTargets(names);
    if (args.json) printJson(args.name ? checks[0] : checks);
    else {
      print(
        table(
          ["TARGET", "HEALTH", "VERSION", "LATENCY", "URL"],
          checks.map((c) => [c.target, c.health, c.version ?? "-", `${c.latency_ms} ms`, c.urls.join(",")]),
        ),
      );
      for (const c of checks)
        for (const pr of c.problems)
          write(2, `planter: ${c.target}: ${p(pr)}${c.error?.hint ? `\nhint: ${p(c.error.hint)}` : ""}\n`);
    }
    const down = checks.filter((c) => c.health === "down");
    if (!down.length) return 0;
    if (args.name || down.length === checks.length) {
      const e = down[0]?.error;
      return new PlanterError((e?.code ?? "E_DAEMON_UNREACHABLE") as never, "").exitCode;
    }
    return EXIT.partial;
  },
});
examples(targetCheck, ["planter target check            # every target", "planter target check build1 --json"]);

export const target = defineCommand({
  meta: {
    name: "target",
    description: "Register the planterd hosts client commands can reach (--target NAME, --targets a,b)",
  },
  subCommands: { add: targetAdd, ls: targetLs, rm: targetRm, check: targetCheck },
});
