import { describe, expect, test } from "bun:test";
import { defineCommand } from "citty";
import { distance, examples, renderHelp, suggest, wrap } from "../../lib/cli/help.ts";

describe("help", () => {
  test("a leaf command: its full usage line, arguments, options with values, examples", async () => {
    const cmd = examples(
      defineCommand({
        meta: { name: "kill", description: "Stop a job" },
        args: {
          id: { type: "positional", description: "job id", valueHint: "job" },
          signal: { type: "string", alias: "s", description: "signal to send", valueHint: "SIG", default: "TERM" },
          force: { type: "boolean", alias: "f", description: "SIGKILL at once" },
        },
      }),
      ["planter job kill j-1", "planter job kill -f j-1   # SIGKILL now"],
    );
    expect(await renderHelp(cmd, ["planter", "job", "kill"], false)).toBe(
      [
        "Stop a job",
        "",
        "Usage: planter job kill [options] JOB",
        "",
        "Arguments:",
        "  JOB  job id",
        "",
        "Options:",
        "  -s, --signal SIG  signal to send (default: TERM)",
        "  -f, --force       SIGKILL at once",
        "  -h, --help        show this help",
        "",
        "Examples:",
        "  planter job kill j-1",
        "  planter job kill -f j-1   # SIGKILL now",
      ].join("\n"),
    );
  });

  test("a command taking a command line says so in its usage", async () => {
    const cmd = defineCommand({ meta: { name: "run", description: "Run" }, args: {} });
    expect(await renderHelp(cmd, ["planter", "run"], true)).toContain("Usage: planter run -- COMMAND [ARGS…]");
  });

  test("long text wraps under its column, no line past 100 columns", () => {
    const text = wrap("word ".repeat(60), 10);
    for (const line of text.split("\n")) expect(line.length).toBeLessThanOrEqual(100);
    expect(text.split("\n")[1]?.startsWith(" ".repeat(10))).toBe(true);
  });

  test("did you mean: typos, swaps and prefixes; nothing for what is far from every name", () => {
    const names = ["daemon", "run", "cell", "job", "logs", "events", "sandbox", "doctor"];
    expect(suggest("jbo", names)).toEqual(["job"]);
    expect(suggest("evnets", names)).toEqual(["events"]);
    expect(suggest("doc", names)).toEqual(["doctor"]);
    expect(suggest("frobnicate", names)).toEqual([]);
    expect(distance("kitten", "sitting")).toBe(3);
  });
});
