/**
 * The target registry: `[targets.NAME]` tables in the user's config file (the one `[client]` is
 * in). Read with valibot (a bad entry fails closed, never silently local); written by editing the
 * file's text — only the named table is replaced or removed, so comments and the other sections
 * stay as the user wrote them — then parsed again and compared before it atomically replaces the
 * file (temp file in the same directory, fsync, rename). An edit that would not read back as
 * intended changes nothing.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import * as v from "valibot";
import { PlanterError } from "../api/errors.ts";
import { summarizeIssues } from "../api/strings.ts";
import { ClientSection, type TargetEntry, TargetsSection } from "../cli/client-config.ts";

/** What a client reads of the config file. */
export interface ClientConfig {
  target?: string;
  targets: TargetsSection;
}

const ClientPart = v.looseObject({
  client: v.optional(ClientSection),
  targets: v.optional(TargetsSection),
});

const cache = new Map<string, ClientConfig>();

/** The config file's `[client]` and `[targets]` (empty when the file is absent), read once per process. */
export function readClientConfig(path: string, fresh = false): ClientConfig {
  const known = fresh ? undefined : cache.get(path);
  if (known) return known;
  const cfg = parseClientConfig(path, existsSync(path) ? readText(path) : "");
  cache.set(path, cfg);
  return cfg;
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new PlanterError("E_CONFIG", `cannot read config ${path}: ${(e as Error).message}`, {
      hint: `check ${path}'s owner and mode`,
    });
  }
}

/** `[client]` and `[targets]` of a config file's text; E_CONFIG naming the key when either is bad. */
export function parseClientConfig(path: string, text: string): ClientConfig {
  let raw: unknown;
  try {
    raw = Bun.TOML.parse(text);
  } catch (e) {
    throw new PlanterError("E_CONFIG", `cannot read the client target from config ${path}: ${(e as Error).message}`, {
      hint: `fix ${path}, or name the target with --target or PLANTER_TARGET`,
    });
  }
  const r = v.safeParse(ClientPart, raw);
  if (!r.success)
    throw new PlanterError("E_CONFIG", `invalid config ${path}: ${summarizeIssues(r.issues)}`, {
      hint: `[client] target is "local", "lima" or a registered target; [targets.NAME] as \`planter target add\` writes it; fix ${path}, or name the target with --target or PLANTER_TARGET`,
    });
  const targets = r.output.targets ?? {};
  const target = r.output.client?.target;
  if (target !== undefined && target !== "local" && target !== "lima" && !Object.hasOwn(targets, target))
    throw new PlanterError(
      "E_CONFIG",
      `invalid config ${path}: client.target: ${JSON.stringify(target)} is not a target (local, lima${Object.keys(targets).length ? `, ${Object.keys(targets).join(", ")}` : ""})`,
      { hint: `add it with \`planter target add ${target} URL\`, or fix ${path}` },
    );
  return { target, targets };
}

/** One target as the TOML table `target add` writes. Pure. */
export function renderTargetTable(name: string, entry: TargetEntry): string {
  const lines = [`[targets.${name}]`, `urls = [${entry.urls.map((u) => JSON.stringify(u)).join(", ")}]`];
  for (const key of ["ca", "cert", "key", "token_file", "identity", "known_hosts"] as const) {
    const value = entry[key];
    if (value !== undefined) lines.push(`${key} = ${JSON.stringify(value)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** The header line of `[targets.NAME]` (also quoted, spaced or commented). */
function isHeaderOf(line: string, name: string): boolean {
  const m = /^\s*\[\s*targets\s*\.\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*\]\s*(?:#.*)?$/.exec(line);
  return m !== null && (m[1] ?? m[2] ?? m[3]) === name;
}

/**
 * `text` with the table of `name` removed and, unless `entry` is null, the new table appended.
 * Pure; the caller checks the result reads back as intended.
 */
export function editTargets(text: string, name: string, entry: TargetEntry | null): string {
  const lines = text.split("\n");
  const out: string[] = [];
  let skipping = false;
  for (const line of lines) {
    if (skipping && /^\s*\[/.test(line)) skipping = false;
    if (!skipping && isHeaderOf(line, name)) {
      skipping = true;
      continue;
    }
    if (!skipping) out.push(line);
  }
  const kept = out.join("\n").replace(/\n*$/, "");
  if (entry) return `${kept}${kept ? "\n\n" : ""}${renderTargetTable(name, entry)}`;
  return kept ? `${kept}\n` : "";
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Put `entry` under `name` (null: remove it) in the config file at `path`, atomically. The new
 * text must parse, and read back with that one target changed and the rest as it was; otherwise
 * the file is left untouched and the error says to edit it by hand.
 */
export function saveTarget(path: string, name: string, entry: TargetEntry | null): void {
  const before = existsSync(path) ? readText(path) : "";
  const old = parseClientConfig(path, before);
  const text = editTargets(before, name, entry);
  let now: ClientConfig;
  try {
    now = parseClientConfig(path, text);
  } catch (e) {
    throw manual(path, name, (e as Error).message);
  }
  const expected: TargetsSection = { ...old.targets };
  if (entry) expected[name] = entry;
  else delete expected[name];
  const sorted = (t: TargetsSection) => Object.fromEntries(Object.entries(t).sort(([a], [b]) => a.localeCompare(b)));
  if (!same(sorted(now.targets), sorted(expected)) || now.target !== old.target)
    throw manual(path, name, "the edited file would not read back as intended");
  writeAtomic(path, text);
  cache.delete(path);
}

function manual(path: string, name: string, why: string): PlanterError {
  return new PlanterError("E_CONFIG", `cannot edit the target ${name} in ${path}: ${why}; nothing was changed`, {
    hint: `the file holds [targets] in a form planter does not edit (inline tables or dotted keys): edit ${path} by hand`,
  });
}

/** Replace `path` with `text`: a temp file beside it (the old file's mode, else 0600), synced, renamed over it. */
export function writeAtomic(path: string, text: string): void {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const mode = existsSync(path) ? statSync(path).mode & 0o777 : 0o600;
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "wx", mode);
  let written = false;
  try {
    writeSync(fd, text);
    fsyncSync(fd);
    written = true;
  } finally {
    closeSync(fd);
    if (!written) unlinkSync(tmp);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    unlinkSync(tmp);
    throw e;
  }
}
