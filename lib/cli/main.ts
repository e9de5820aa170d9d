/**
 * Run a citty command tree with planter's conventions: `--help` only before `--`, unknown
 * options refused, errors printed as message + hint (a stack only with --verbose), and exit
 * codes 0 ok, 1 error, 2 usage, 3 daemon unreachable (or what the command returns).
 */
import { type ArgsDef, type CommandDef, runCommand } from "citty";
import { EXIT, PlanterError } from "../api/errors.ts";
import { asksVersion } from "../version.ts";
import { exitAfterOutput, printable, write } from "./output.ts";

/** Commands that take free arguments (a command line to run) beyond their positionals. */
const restCommands = new WeakMap<object, string>();

// biome-ignore lint/suspicious/noExplicitAny: commands of every argument shape are accepted.
type AnyCommand = CommandDef<any>;

/**
 * Options of the root that mean something of their own when written before the command: each is
 * handed to the command under another spelling (`planter --all job ls` is `job ls --all-targets`,
 * while `job ls --all` stays the command's own `--all`), and a command that does not take that
 * spelling is refused with `refuse`'s error rather than "unknown option".
 */
export interface BeforeCommand {
  renames: Record<string, string>;
  refuse: (flag: string, command: string) => PlanterError;
}
const beforeCommand = new WeakMap<object, BeforeCommand>();

/** Declare `cmd`'s options that are renamed when written before its subcommand (see BeforeCommand). */
export function optionsBeforeCommand<T extends AnyCommand>(cmd: T, spec: BeforeCommand): T {
  beforeCommand.set(cmd, spec);
  return cmd;
}

/** The flags of `cmd` that mean something else after the command than before it (`--all`), for completions. */
export function renamedBeforeCommand(cmd: object): string[] {
  const spec = beforeCommand.get(cmd);
  return spec ? Object.entries(spec.renames).flatMap(([from, to]) => (from === to ? [] : [from])) : [];
}

/** Mark a command as taking trailing free arguments. */
export function allowRest<T extends AnyCommand>(cmd: T, label = "COMMAND [ARGS…]"): T {
  restCommands.set(cmd, label);
  return cmd;
}

const resolve = async <T>(v: T | Promise<T> | (() => T | Promise<T>)): Promise<T> =>
  typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;

interface Resolved {
  cmd: AnyCommand;
  parent?: AnyCommand;
  path: string[];
  rest: string[];
  /** Options written before the command that the leaf must take under their new spelling. */
  renamed: { flag: string; as: string; refuse: BeforeCommand["refuse"] }[];
}

async function findLeaf(root: AnyCommand, args: string[], rootName: string): Promise<Resolved> {
  let cmd = root;
  let parent: AnyCommand | undefined;
  const path: string[] = [];
  let rest = args;
  const renamed: Resolved["renamed"] = [];
  const takesValue = new Set<string>();
  for (;;) {
    const subs = cmd.subCommands ? await resolve(cmd.subCommands) : undefined;
    if (!subs) break;
    // Options a group declares (`planter --target lima run …`) may come before the subcommand;
    // their values are not subcommand names. They stay in `rest` for the leaf to parse.
    // Options stay in `rest` down to the leaf: those of every group above take their values too.
    for (const f of flagsOf(cmd.args ? await resolve(cmd.args) : {}).takesValue) takesValue.add(f);
    const i = subcommandAt(rest, takesValue);
    if (i < 0) break;
    const spec = path.length === 0 ? beforeCommand.get(cmd) : undefined;
    if (spec) rest = renameBeforeCommand(rest, i, spec, takesValue, renamed);
    const name = rest[i] as string;
    const sub = subs[name];
    if (!sub) throw await unknownCommand(name, Object.keys(subs), path, rootName);
    parent = cmd;
    cmd = await resolve(sub);
    path.push(name);
    rest = [...rest.slice(0, i), ...rest.slice(i + 1)];
  }
  return { cmd, parent, path, rest, renamed };
}

/**
 * The root's options written before the command, renamed as `spec` says (`--all` before the
 * command is `--all-targets`); each renaming is noted in `renamed`. `i` is the command's index.
 */
function renameBeforeCommand(
  args: string[],
  i: number,
  spec: BeforeCommand,
  takesValue: Set<string>,
  renamed: Resolved["renamed"],
): string[] {
  let rest = args;
  for (let k = 0; k < i; k++) {
    const a = rest[k] as string;
    const flag = a.includes("=") ? a.slice(0, a.indexOf("=")) : a;
    const negated = flag.startsWith("--no-") ? `--${flag.slice(5)}` : null;
    const as = spec.renames[negated ?? flag];
    if (as !== undefined) {
      const spelled = negated ? `--no-${as.slice(2)}` : as;
      rest = [...rest.slice(0, k), spelled + a.slice(flag.length), ...rest.slice(k + 1)];
      renamed.push({ flag, as, refuse: spec.refuse });
    }
    if (takesValue.has(a)) k++;
  }
  return rest;
}

/** Where the first word that is not an option (nor an option's value) is in `args`, before `--`; -1 if none. */
function subcommandAt(args: string[], takesValue: Set<string>): number {
  for (let k = 0; k < args.length; k++) {
    const a = args[k] as string;
    if (a === "--") return -1;
    if (!a.startsWith("-")) return k;
    if (takesValue.has(a)) k++;
  }
  return -1;
}

/** The usage error for a command `name` that `path` does not have, with the closest names as "did you mean". */
async function unknownCommand(name: string, names: string[], path: string[], rootName: string): Promise<PlanterError> {
  const { suggest } = await import("./help.ts");
  const close = suggest(name, names);
  const didYouMean = close.length
    ? `did you mean ${close.map((c) => `\`${[rootName, ...path, c].join(" ")}\``).join(" or ")}? `
    : "";
  return new PlanterError(
    "E_USAGE",
    `unknown command ${JSON.stringify(name)}${path.length ? ` for ${path.join(" ")}` : ""}`,
    {
      hint: `${didYouMean}commands: ${names.join(", ")}`,
    },
  );
}

function kebab(s: string): string {
  return s.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
}

/** The flags a command defines, those that take a value, and how many positionals it has. */
function flagsOf(argsDef: ArgsDef): { known: Set<string>; takesValue: Set<string>; positionals: number } {
  const known = new Set<string>(["--help", "-h"]);
  const takesValue = new Set<string>();
  let positionals = 0;
  for (const [key, def] of Object.entries(argsDef)) {
    if (def.type === "positional") {
      positionals++;
      continue;
    }
    const names = [key, kebab(key)];
    const alias = (def as { alias?: string | string[] }).alias;
    const aliases = alias === undefined ? [] : Array.isArray(alias) ? alias : [alias];
    for (const n of [...names, ...aliases]) {
      const flag = n.length === 1 ? `-${n}` : `--${n}`;
      known.add(flag);
      if (def.type === "boolean") known.add(`--no-${n}`);
      else takesValue.add(flag);
    }
  }
  return { known, takesValue, positionals };
}

/**
 * Bundled short flags, as docker and every getopt take them: `-it` is `-i -t` when each letter is
 * a flag the command defines that takes no value (before `--` only; anything else is left as it is).
 */
export function unbundle(argsDef: ArgsDef, tokens: string[]): string[] {
  const { known, takesValue } = flagsOf(argsDef);
  const out: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t === "--") return [...out, ...tokens.slice(i)];
    const letters = /^-([A-Za-z]{2,})$/.exec(t)?.[1];
    const flags = letters ? [...letters].map((l) => `-${l}`) : [];
    if (flags.length && flags.every((f) => known.has(f) && !takesValue.has(f))) out.push(...flags);
    else out.push(t);
    // An option's value is never read as flags.
    if (takesValue.has(t) && i + 1 < tokens.length) out.push(tokens[++i] as string);
  }
  return out;
}

/** Refuse options the command does not define, and extra positionals. */
function checkArgs(cmd: AnyCommand, argsDef: ArgsDef, tokens: string[], name: string): void {
  const { known, takesValue, positionals } = flagsOf(argsDef);
  let free = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t === "--") break;
    if (t.startsWith("-") && t !== "-") {
      const flag = t.includes("=") ? t.slice(0, t.indexOf("=")) : t;
      if (!known.has(flag)) {
        throw new PlanterError("E_USAGE", `unknown option ${flag} for ${name}`, { hint: `see \`${name} --help\`` });
      }
      if (takesValue.has(flag) && !t.includes("=")) {
        if (tokens[i + 1] === undefined)
          throw new PlanterError("E_USAGE", `${flag} needs a value`, { hint: `see \`${name} --help\`` });
        i++;
      }
      continue;
    }
    free++;
  }
  if (free > positionals && !restCommands.has(cmd)) {
    throw new PlanterError("E_USAGE", `too many arguments for ${name}`, { hint: `see \`${name} --help\`` });
  }
}

/** Print an error for people (or as the JSON envelope with --json) and return its exit code. */
export function reportError(e: unknown, opts: { json?: boolean; verbose?: boolean } = {}): number {
  if (e instanceof PlanterError) {
    if (opts.json) write(2, `${JSON.stringify({ error: e.toBody() })}\n`);
    else {
      // A message and hint may come from planterd: never raw to the terminal.
      write(2, `planter: ${printable(e.message)}\n`);
      if (e.hint) write(2, `hint: ${printable(e.hint)}\n`);
    }
    if (opts.verbose && e.stack) write(2, `${e.stack}\n`);
    return e.exitCode;
  }
  const err = e as Error;
  if (err?.name === "CLIError") {
    write(2, `planter: ${printable(err.message)}\n`);
    return EXIT.usage;
  }
  write(2, `planter: internal error: ${printable(err?.message ?? String(e))}\n`);
  if (opts.verbose && err?.stack) write(2, `${err.stack}\n`);
  else write(2, "hint: run again with --verbose for details\n");
  return EXIT.error;
}

/** Run `root` with `argv` and exit the process with the right code. */
export async function runCli(root: AnyCommand, argv: string[], name: string, version?: () => string): Promise<never> {
  const before = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv;
  const json = before.includes("--json");
  const verbose = before.includes("--verbose");
  let code: number = EXIT.ok;
  try {
    if (version && asksVersion(before)) {
      write(1, `${version()}\n`);
      return await exitAfterOutput(EXIT.ok);
    }
    const leaf = await findLeaf(root, argv, name);
    const fullName = [name, ...leaf.path].join(" ");
    const leafBefore = leaf.rest.includes("--") ? leaf.rest.slice(0, leaf.rest.indexOf("--")) : leaf.rest;
    if (leafBefore.includes("--help") || leafBefore.includes("-h") || (leaf.cmd.subCommands && !leaf.cmd.run)) {
      const { renderHelp } = await import("./help.ts");
      const text = await renderHelp(leaf.cmd, fullName.split(" "), restCommands.get(leaf.cmd));
      const asked = leafBefore.includes("--help") || leafBefore.includes("-h");
      write(asked ? 1 : 2, `${text}\n`);
      return await exitAfterOutput(asked ? EXIT.ok : EXIT.usage);
    }
    const argsDef = leaf.cmd.args ? await resolve(leaf.cmd.args) : {};
    if (leaf.path.length) {
      const { known } = flagsOf(argsDef);
      for (const r of leaf.renamed) if (!known.has(r.as)) throw r.refuse(r.flag, fullName);
    }
    const rest = unbundle(argsDef, leaf.rest);
    checkArgs(leaf.cmd, argsDef, rest, fullName);
    const { result } = await runCommand(leaf.cmd, { rawArgs: rest });
    if (typeof result === "number") code = result;
  } catch (e) {
    code = reportError(e, { json, verbose });
  }
  return await exitAfterOutput(code);
}
