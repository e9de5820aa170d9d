/**
 * `--help` for people, in the shape docker, gh and cargo use: what the command does, a usage line
 * with the full command (`planter job kill [options] ID`, `planter run [options] -- COMMAND…`),
 * arguments, options with their values, subcommands, examples; wrapped at 100 columns (citty's own
 * renderer pads every line to the longest description). Also "did you mean" for a mistyped command.
 */
import type { ArgDef, ArgsDef, CommandDef } from "citty";

// biome-ignore lint/suspicious/noExplicitAny: commands of every argument shape are accepted.
type AnyCommand = CommandDef<any>;

const WIDTH = 100;
const examplesOf = new WeakMap<object, string[]>();

/** Examples shown under a command's help: whole command lines, optionally with `  # what it does`. */
export function examples<T extends AnyCommand>(cmd: T, lines: string[]): T {
  examplesOf.set(cmd, lines);
  return cmd;
}

const resolve = async <T>(v: T | Promise<T> | (() => T | Promise<T>)): Promise<T> =>
  typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;

const kebab = (s: string) => s.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();

/** Words of `text` on lines of at most `width - indent` characters, each line after the first indented. */
export function wrap(text: string, indent: number, width = WIDTH): string {
  const room = Math.max(20, width - indent);
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > room) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join(`\n${" ".repeat(indent)}`);
}

/** Two columns: names on the left (padded to the longest, at most 28), wrapped text on the right. */
function columns(rows: [string, string][]): string {
  const left = Math.min(28, Math.max(...rows.map(([l]) => l.length)));
  return rows
    .map(([l, r]) => {
      const head = `  ${l}`;
      if (!r) return head;
      if (l.length > left) return `${head}\n${" ".repeat(left + 4)}${wrap(r, left + 4)}`;
      return `${head.padEnd(left + 4)}${wrap(r, left + 4)}`;
    })
    .join("\n");
}

function optionRow(key: string, def: ArgDef): [string, string] {
  const alias = (def as { alias?: string | string[] }).alias;
  const aliases = alias === undefined ? [] : Array.isArray(alias) ? alias : [alias];
  const short = aliases.find((a) => a.length === 1);
  const long = `--${kebab(key)}`;
  const opts = (def as { options?: string[] }).options;
  const hint = (def as { valueHint?: string }).valueHint ?? (opts ? opts.join("|") : key.toUpperCase());
  const value = def.type === "boolean" ? "" : ` ${hint}`;
  const name = `${short ? `-${short}, ` : "    "}${long}${value}`;
  let text = def.description ?? "";
  const dflt = (def as { default?: unknown }).default;
  if (dflt !== undefined && dflt !== false && !/\(default/.test(text)) text += ` (default: ${String(dflt)})`;
  return [name, text];
}

/** The help text of `cmd`, reached as `path` (e.g. ["planter", "job", "kill"]). */
export async function renderHelp(
  cmd: AnyCommand,
  path: string[],
  takesRest: string | boolean | undefined,
): Promise<string> {
  const meta = (cmd.meta ? await resolve(cmd.meta) : {}) as { description?: string };
  const args: ArgsDef = cmd.args ? await resolve(cmd.args) : {};
  const subs = cmd.subCommands ? await resolve(cmd.subCommands) : undefined;
  const name = path.join(" ");
  const positionals = Object.entries(args).filter(([, d]) => d.type === "positional");
  const options = Object.entries(args).filter(([, d]) => d.type !== "positional");
  const out: string[] = [];
  if (meta.description) out.push(wrap(meta.description, 0));
  const usage = [name];
  if (options.length) usage.push("[options]");
  if (subs) usage.push(cmd.run ? "[COMMAND]" : "COMMAND");
  for (const [key, d] of positionals) {
    const n = ((d as { valueHint?: string }).valueHint ?? key).toUpperCase();
    usage.push((d as { required?: boolean }).required === false ? `[${n}]` : n);
  }
  if (takesRest) usage.push(`-- ${typeof takesRest === "string" ? takesRest : "COMMAND [ARGS…]"}`);
  out.push(`Usage: ${usage.join(" ")}`);
  if (positionals.length) {
    out.push(
      `Arguments:\n${columns(positionals.map(([k, d]) => [((d as { valueHint?: string }).valueHint ?? k).toUpperCase(), d.description ?? ""]))}`,
    );
  }
  if (subs) {
    const rows: [string, string][] = [];
    for (const [n, s] of Object.entries(subs)) {
      const sub = (await resolve(s)) as AnyCommand;
      const m = (sub.meta ? await resolve(sub.meta) : {}) as { description?: string };
      rows.push([n, m.description ?? ""]);
    }
    out.push(`Commands:\n${columns(rows)}`);
  }
  const optRows = options.map(([k, d]) => optionRow(k, d));
  optRows.push(["-h, --help", "show this help"]);
  out.push(`Options:\n${columns(optRows)}`);
  const ex = examplesOf.get(cmd);
  if (ex?.length) out.push(`Examples:\n${ex.map((l) => `  ${l}`).join("\n")}`);
  if (subs) out.push(`Run \`${name} COMMAND --help\` for a command's options.`);
  return out.join("\n\n");
}

/** Edit distance (insert, delete, substitute, swap of neighbours), for "did you mean". */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      const row = d[i] as number[];
      const up = d[i - 1] as number[];
      row[j] = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        row[j] = Math.min(row[j] as number, ((d[i - 2] as number[])[j - 2] as number) + 1);
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/** The known names closest to `name` (distance ≤ 2, or a prefix), best first. */
export function suggest(name: string, known: string[]): string[] {
  return known
    .map((k) => ({ k, d: k.startsWith(name) && name.length >= 2 ? 0.5 : distance(name, k) }))
    .filter((x) => x.d <= Math.min(2, Math.max(1, Math.floor(name.length / 2))))
    .sort((x, y) => x.d - y.d)
    .map((x) => x.k);
}
