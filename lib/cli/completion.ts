/** `planter completion bash|zsh|fish` and `planter manpage`: documents generated from the command tree (lib/cli/docs.ts). */
import { defineCommand } from "citty";
import { BUILD } from "../version.ts";
import { usage } from "./args.ts";
import { examples } from "./help.ts";
import { write } from "./output.ts";

const SHELLS = ["bash", "zsh", "fish"] as const;

/** The whole tree, every command's module loaded. */
async function tree() {
  const [{ planter }, { commandTree }] = await Promise.all([import("./commands.ts"), import("./docs.ts")]);
  return commandTree(planter, ["planter"]);
}

/** A shell's completion script. */
export async function completionScript(shell: (typeof SHELLS)[number]): Promise<string> {
  const docs = await import("./docs.ts");
  const root = await tree();
  return shell === "bash"
    ? docs.bashCompletion(root)
    : shell === "zsh"
      ? docs.zshCompletion(root)
      : docs.fishCompletion(root);
}

/** planter(1) in roff, dated by the build (or today for a source checkout). */
export async function manPageText(): Promise<string> {
  const { manPage } = await import("./docs.ts");
  return manPage(await tree(), BUILD.version, new Date().toISOString().slice(0, 10));
}

export const completion = examples(
  defineCommand({
    meta: {
      name: "completion",
      description:
        "Print the shell completion script for bash, zsh or fish (install puts them where each shell looks; this is for other setups)",
    },
    args: { shell: { type: "positional", description: "bash, zsh or fish", required: true, valueHint: "SHELL" } },
    async run({ args }) {
      if (!(SHELLS as readonly string[]).includes(args.shell))
        throw usage(`unknown shell ${JSON.stringify(args.shell)}`, "planter completion bash|zsh|fish");
      write(1, await completionScript(args.shell as (typeof SHELLS)[number]));
      return 0;
    },
  }),
  [
    "source <(planter completion bash)                  # in ~/.bashrc",
    "planter completion zsh > ~/.zfunc/_planter          # with fpath+=(~/.zfunc) before compinit",
    "planter completion fish > ~/.config/fish/completions/planter.fish",
  ],
);

export const manpage = examples(
  defineCommand({
    meta: { name: "manpage", description: "Print the man page planter(1) in roff (install puts it in the man path)" },
    args: {},
    async run() {
      write(1, await manPageText());
      return 0;
    },
  }),
  ["planter manpage | man -l -"],
);
