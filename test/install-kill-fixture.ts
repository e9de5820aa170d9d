/**
 * install() in this process with the options in argv[2] (JSON), SIGKILLed by itself at the
 * argv[3]-th point the step engine passes (0: never): a kill at a chosen place between and inside
 * steps. Each point passed is printed on stdout (`step at`) before the kill, so a test learns how
 * many points a whole run has and where this one died. Progress goes to stderr.
 */
import { writeSync } from "node:fs";
import { type InstallOptions, install } from "../lib/host/install.ts";

const opts = JSON.parse(process.argv[2] as string) as InstallOptions;
const killAt = Number(process.argv[3] ?? 0);
let n = 0;
await install({
  ...opts,
  progress: (line) => writeSync(2, `${line}\n`),
  observe: (e) => {
    writeSync(1, `${e.step} ${e.at}\n`);
    if (++n === killAt) process.kill(process.pid, "SIGKILL");
  },
});
