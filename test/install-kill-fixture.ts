/**
 * install() or uninstall() (argv[2]) in this process with the options in argv[3] (JSON), SIGKILLed
 * by itself at the argv[4]-th point the step engine passes (0: never): a kill at a chosen place
 * between and inside steps. Each point passed is printed on stdout (`step at`) before the kill, so
 * a test learns how many points a whole run has and where this one died. Progress goes to stderr.
 */
import { writeSync } from "node:fs";
import { type InstallOptions, install } from "../lib/host/install.ts";
import type { StepEvent } from "../lib/host/transaction.ts";
import { type UninstallOptions, uninstall } from "../lib/host/uninstall.ts";

const [command, json, at] = process.argv.slice(2);
const killAt = Number(at ?? 0);
let n = 0;
const hooks = {
  progress: (line: string) => writeSync(2, `${line}\n`),
  observe: (e: StepEvent) => {
    writeSync(1, `${e.step} ${e.at}\n`);
    if (++n === killAt) process.kill(process.pid, "SIGKILL");
  },
};
if (command === "install") await install({ ...(JSON.parse(json as string) as InstallOptions), ...hooks });
else if (command === "uninstall") await uninstall({ ...(JSON.parse(json as string) as UninstallOptions), ...hooks });
else throw new Error(`install-kill-fixture: install or uninstall, not ${command}`);
