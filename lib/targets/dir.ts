/** The user's target directory (ssh masters and forwards, https skip times): the user's own, 0700. */
import { existsSync, lstatSync, mkdirSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";

/** Make (or check) the user's target directory: owned by the user, 0700, a real directory. */
export function privateDir(dir: string): void {
  const me = process.getuid?.() ?? 0;
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== me || (st.mode & 0o077) !== 0)
    throw new PlanterError(
      "E_UNTRUSTED_DAEMON",
      `refusing to keep target state (ssh sockets) in ${dir}: it must be a directory of yours (uid ${me}) with mode 0700, not ${st.isDirectory() ? `uid ${st.uid} mode ${(st.mode & 0o7777).toString(8)}` : "something else"}`,
      { hint: `remove it (rm -r ${dir}) and let planter make it again, or fix it: chmod 700 ${dir}` },
    );
}
