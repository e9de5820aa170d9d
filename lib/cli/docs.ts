/**
 * Shell completions (bash, zsh, fish) and the man page planter(1), generated from the command
 * tree (lib/cli/commands.ts): the same names, options and descriptions `--help` shows. Loads every
 * command's module, so only `planter completion` and `planter manpage` import it.
 */
import type { ArgDef, ArgsDef, CommandDef } from "citty";
import { renamedBeforeCommand } from "./main.ts";

// biome-ignore lint/suspicious/noExplicitAny: commands of every argument shape are accepted.
type AnyCommand = CommandDef<any>;

/** One option of a command. */
export interface Opt {
  long: string;
  short: string | null;
  description: string;
  /** null: a flag; else what the value is (its hint) and, for enums, its choices. */
  value: { hint: string; choices: string[] | null; path: boolean } | null;
}

/** One command of the tree, every subcommand resolved. */
export interface Node {
  path: string[];
  description: string;
  options: Opt[];
  positionals: { name: string; description: string }[];
  subs: Node[];
  /** Options that mean what they say here only, before the subcommand (the root's --all). */
  beforeOnly: string[];
}

const resolve = async <T>(v: T | Promise<T> | (() => T | Promise<T>)): Promise<T> =>
  typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;

const kebab = (s: string) => s.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
const PATH_HINTS = /^(FILE|DIR|PATH|SOCKET)$/;

function option(key: string, d: ArgDef): Opt {
  const alias = (d as { alias?: string | string[] }).alias;
  const aliases = alias === undefined ? [] : Array.isArray(alias) ? alias : [alias];
  const choices = (d as { options?: string[] }).options ?? null;
  const hint = (d as { valueHint?: string }).valueHint ?? (choices ? choices.join("|") : key.toUpperCase());
  return {
    long: kebab(key),
    short: aliases.find((a) => a.length === 1) ?? null,
    description: (d.description ?? "").replace(/\s+/g, " "),
    value: d.type === "boolean" ? null : { hint, choices, path: PATH_HINTS.test(hint) },
  };
}

/** The whole tree under `cmd`. */
export async function commandTree(cmd: AnyCommand, path: string[]): Promise<Node> {
  const meta = (cmd.meta ? await resolve(cmd.meta) : {}) as { description?: string };
  const args: ArgsDef = cmd.args ? await resolve(cmd.args) : {};
  const subs = cmd.subCommands ? await resolve(cmd.subCommands) : {};
  const node: Node = {
    path,
    description: (meta.description ?? "").replace(/\s+/g, " "),
    options: [],
    positionals: [],
    subs: [],
    beforeOnly: renamedBeforeCommand(cmd).map((f) => f.slice(2)),
  };
  for (const [key, d] of Object.entries(args)) {
    if (d.type === "positional")
      node.positionals.push({
        name: ((d as { valueHint?: string }).valueHint ?? key).toUpperCase(),
        description: d.description ?? "",
      });
    else node.options.push(option(key, d));
  }
  node.options.push({ long: "help", short: "h", description: "show help", value: null });
  for (const [name, sub] of Object.entries(subs))
    node.subs.push(await commandTree(await resolve(sub), [...path, name]));
  return node;
}

/** Every node, depth first. */
function nodes(n: Node): Node[] {
  return [n, ...n.subs.flatMap(nodes)];
}

/**
 * Options that may be written at `n`: a command's own (every option, wherever written, is parsed
 * by the command that runs); at a group, also those of the groups above it (`planter --target lima
 * run`), but not an option that means what it says only before the subcommand (the root's --all).
 */
function reachable(root: Node, n: Node): Opt[] {
  if (!n.subs.length) return n.options;
  const out = new Map<string, Opt>();
  for (let i = 0; i <= n.path.length; i++) {
    const up = nodes(root).find((m) => m.path.join(" ") === n.path.slice(0, i).join(" "));
    for (const o of up?.options ?? []) if (up === n || !up?.beforeOnly.includes(o.long)) out.set(o.long, o);
  }
  return [...out.values()];
}

/** `path|flag` of every option that takes a value, where it is accepted. */
function valuedAt(root: Node): string[] {
  const out: string[] = [];
  for (const n of nodes(root))
    for (const o of reachable(root, n)) if (o.value) for (const f of flagNames(o)) out.push(`${key(n)}|${f}`);
  return out;
}

const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const key = (n: Node) => n.path.join(" ");

/** An option's spellings: `--long` and, where it has one, `-s`. */
const flagNames = (o: Opt) => [`--${o.long}`, ...(o.short ? [`-${o.short}`] : [])];

/** bash and zsh: the `case "$cmdpath|$w"` arms that step from a command to its subcommand. */
const shSteps = (all: Node[]) =>
  all
    .flatMap((n) => n.subs.map((s) => `      ${sq(`${key(n)}|${s.path.at(-1)}`)}) cmdpath=${sq(key(s))} ;;`))
    .join("\n");

/** bash and zsh: the `case "$cmdpath|$prev"` arms that complete an option's value with `what`. */
function shValueCases(root: Node, what: (v: NonNullable<Opt["value"]>) => string): string {
  return nodes(root)
    .flatMap((n) =>
      reachable(root, n).flatMap((o) =>
        o.value
          ? flagNames(o).map(
              (f) => `    ${sq(`${key(n)}|${f}`)}) ${what(o.value as NonNullable<Opt["value"]>)}; return ;;`,
            )
          : [],
      ),
    )
    .join("\n");
}

/** bash: `complete -F`; the command path is found by skipping options and their values. */
export function bashCompletion(root: Node, prog = "planter"): string {
  const all = nodes(root);
  const valued = valuedAt(root);
  const steps = shSteps(all);
  const values = shValueCases(root, (v) =>
    v.choices
      ? `COMPREPLY=($(compgen -W ${sq(v.choices.join(" "))} -- "$cur"))`
      : v.path
        ? `COMPREPLY=($(compgen -f -- "$cur"))`
        : "COMPREPLY=()",
  );
  const words = all
    .map((n) => {
      const w = [...n.subs.map((s) => s.path.at(-1) as string), ...reachable(root, n).map((o) => `--${o.long}`)];
      return `    ${sq(key(n))}) words=${sq(w.join(" "))} ;;`;
    })
    .join("\n");
  return `# bash completion for ${prog} (generated by \`${prog} completion bash\`)
_${prog}() {
  local cur prev cmdpath=${sq(key(root))} i w words="" skip=0
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    # After --: the job's own command line.
    if [[ $w == -- ]]; then COMPREPLY=($(compgen -c -- "$cur")); return; fi
    if ((skip)); then skip=0; continue; fi
    case "$cmdpath|$w" in
      ${valued.map(sq).join("|")}) skip=1; continue ;;
    esac
    [[ $w == -* ]] && continue
    case "$cmdpath|$w" in
${steps}
    esac
  done
  case "$cmdpath|$prev" in
${values}
  esac
  case "$cmdpath" in
${words}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _${prog} ${prog}
`;
}

/** zsh: a `#compdef` function with descriptions for commands and options. */
export function zshCompletion(root: Node, prog = "planter"): string {
  const all = nodes(root);
  const valued = valuedAt(root);
  // _describe's items are NAME:DESCRIPTION; a colon inside either is escaped.
  const zq = (name: string, text: string) => sq(`${name.replace(/:/g, "\\:")}:${text.replace(/:/g, "\\:")}`);
  const steps = shSteps(all);
  const values = shValueCases(root, (v) =>
    v.choices ? `compadd -- ${v.choices.map(sq).join(" ")}` : v.path ? "_files" : `_message ${sq(v.hint)}`,
  );
  const lists = all
    .map((n) => {
      const subs = n.subs.map((s) => zq(s.path.at(-1) as string, s.description));
      const opts = reachable(root, n).map((o) => zq(`--${o.long}`, o.description));
      return `    ${sq(key(n))}) subs=(${subs.join(" ")}); opts=(${opts.join(" ")}) ;;`;
    })
    .join("\n");
  return `#compdef ${prog}
# zsh completion for ${prog} (generated by \`${prog} completion zsh\`)
_${prog}() {
  local cmdpath=${sq(key(root))} w prev="\${words[CURRENT-1]}" skip=0 i
  local -a subs opts
  for ((i = 2; i < CURRENT; i++)); do
    w="\${words[i]}"
    if [[ $w == -- ]]; then _command_names; return; fi
    if ((skip)); then skip=0; continue; fi
    case "$cmdpath|$w" in
      ${valued.map(sq).join("|")}) skip=1; continue ;;
    esac
    [[ $w == -* ]] && continue
    case "$cmdpath|$w" in
${steps}
    esac
  done
  case "$cmdpath|$prev" in
${values}
  esac
  case "$cmdpath" in
${lists}
  esac
  if [[ \${words[CURRENT]} == -* ]]; then _describe -t options option opts; else _describe -t commands command subs; fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _${prog} "$@"; else compdef _${prog} ${prog}; fi
`;
}

/** fish: one `complete` line per command and option, under a condition on the command path. */
export function fishCompletion(root: Node, prog = "planter"): string {
  const all = nodes(root);
  const valued = valuedAt(root);
  const steps = all
    .flatMap((n) =>
      n.subs.map((s) => `      case ${sq(`${key(n)}|${s.path.at(-1)}`)}\n        set cmdpath ${sq(key(s))}`),
    )
    .join("\n");
  const lines: string[] = [];
  for (const n of all) {
    const cond = `-n ${sq(`__${prog}_is ${sq(key(n))}`)}`;
    for (const s of n.subs)
      lines.push(`complete -c ${prog} ${cond} -f -a ${sq(s.path.at(-1) as string)} -d ${sq(s.description)}`);
    for (const o of reachable(root, n)) {
      const parts = [`complete -c ${prog} ${cond}`, `-l ${o.long}`];
      if (o.short) parts.push(`-s ${o.short}`);
      if (o.value) parts.push(o.value.path ? "-r -F" : "-r -f");
      if (o.value?.choices) parts.push(`-a ${sq(o.value.choices.join(" "))}`);
      parts.push(`-d ${sq(o.description)}`);
      lines.push(parts.join(" "));
    }
  }
  return `# fish completion for ${prog} (generated by \`${prog} completion fish\`)
function __${prog}_path
  set -l cmdpath ${sq(key(root))}
  set -l skip 0
  for w in (commandline -opc)[2..-1]
    if test $skip = 1
      set skip 0
      continue
    end
    switch "$cmdpath|$w"
      case ${valued.map(sq).join(" ")}
        set skip 1
        continue
    end
    if string match -q -- '-*' $w
      continue
    end
    switch "$cmdpath|$w"
${steps}
    end
  end
  echo $cmdpath
end
function __${prog}_is
  set -l p (__${prog}_path)
  test "$p" = "$argv[1]"
end
complete -c ${prog} -f
${lines.join("\n")}
`;
}

/** roff-escaped text: backslashes, and a leading dot or quote that would read as a request. */
const roff = (s: string) =>
  s
    .replace(/\\/g, "\\e")
    .replace(/-/g, "\\-")
    .replace(/^([.'])/gm, "\\&$1");

/** An option as the man page's tagged paragraph names it: `-s, --long VALUE`. */
const roffFlag = (o: Opt) =>
  `${o.short ? `\\-${o.short}, ` : ""}\\-\\-${roff(o.long)}${o.value ? ` \\fI${roff(o.value.hint)}\\fR` : ""}`;

/** The man page planter(1): every command with its usage, description and options. */
export function manPage(root: Node, version: string, date: string): string {
  const out = [
    `.TH PLANTER 1 "${date}" "planter ${version}" "planter manual"`,
    ".SH NAME",
    `planter \\- ${roff(root.description)}`,
    ".SH SYNOPSIS",
    ".B planter",
    "[\\fIoptions\\fR] \\fICOMMAND\\fR ...",
    ".SH DESCRIPTION",
    roff(
      "planter runs untrusted commands in sandboxed cells and keeps every job observable and under control: status, logs, limits, kill, audit. planterd serves its API on a Unix socket; planter is its client. Every command has --help; read commands take --json.",
    ),
    ".SH OPTIONS",
    roff("Written before the command; each is passed to the command, which takes it or refuses it."),
  ];
  for (const o of root.options) {
    if (o.long === "help") continue;
    out.push(".TP", `.B ${roffFlag(o)}`, roff(o.description));
  }
  out.push(".SH COMMANDS");
  for (const n of nodes(root).slice(1)) {
    if (n.subs.length && !n.options.some((o) => o.long !== "help") && !n.positionals.length) continue;
    const usage = [n.path.join(" ")];
    if (n.options.length > 1) usage.push("[options]");
    for (const p of n.positionals) usage.push(p.name);
    out.push(".SS", `.B ${roff(usage.join(" "))}`, ".PP", roff(n.description));
    for (const o of n.options) {
      if (o.long === "help") continue;
      out.push(".TP", `.B ${roffFlag(o)}`, roff(o.description));
    }
  }
  out.push(
    ".SH ENVIRONMENT",
    ".TP",
    ".B PLANTER_SOCKET",
    roff("the planterd socket to use"),
    ".TP",
    ".B PLANTER_HOME",
    roff("moves every path of planter (state, socket, config) under one directory"),
    ".TP",
    ".B PLANTER_TARGET",
    roff("local or lima: where client commands send their requests"),
    ".SH EXIT STATUS",
    roff(
      "0 ok; 1 an error; 2 a usage error; 3 planterd unreachable; 4 an untrusted planterd socket; 124 a wait that timed out; planter run exits with the job's code (128+N when signal N ended it).",
    ),
    ".SH SEE ALSO",
    roff("planterd(8) is `planter daemon`; the README and docs/api.md of the release."),
  );
  return `${out.join("\n")}\n`;
}
