/** doctor's output: a table for people (hints and fixes under what is not ok), JSON for scripts. */
import { dim, green, printable, red, yellow } from "../cli/output.ts";
import type { Check, Outcome, Report, Status } from "./check.ts";
import { LIMA_UNUSED } from "./checks/lima.ts";

/** The `--json` document: exactly `{ok, version, checks: [{id, status, message, hint, fix}]}`. */
export function reportJson(r: Report, version: string): { ok: boolean; version: string; checks: Outcome[] } {
  return { ok: r.ok, version, checks: r.checks };
}

const LABEL: Record<Status, string> = { ok: "ok", warn: "WARN", fail: "FAIL", skip: "skip" };
const PAINT: Record<Status, (s: string) => string> = { ok: green, warn: yellow, fail: red, skip: dim };

/**
 * The table: id, status, message; hint and fix under each warning and failure; a summary footer.
 * Messages may quote planterd's answers (/v1/ready): printed escaped.
 */
export function reportText(r: Report, header: string): string {
  const shown = unusedLima(r.checks);
  const idWidth = Math.max(...shown.map((c) => c.id.length), 2);
  const indent = " ".repeat(idWidth + 2 + 4 + 2);
  const lines = [header, ""];
  for (const c of shown) {
    lines.push(`${c.id.padEnd(idWidth)}  ${PAINT[c.status](LABEL[c.status].padEnd(4))}  ${printable(c.message)}`);
    if (c.status === "warn" || c.status === "fail") {
      if (c.hint) lines.push(`${indent}${dim("hint:")} ${printable(c.hint)}`);
      if (c.fix) lines.push(`${indent}${dim("fix:")}  ${printable(c.fix)}`);
    }
  }
  const count = (s: Status) => r.checks.filter((c) => c.status === s).length;
  const verdict = r.broken ? red("doctor broke (see above)") : r.ok ? green("no failures") : red("failures found");
  lines.push(
    "",
    `${r.checks.length} check${r.checks.length === 1 ? "" : "s"}: ${count("ok")} ok, ${count("warn")} warn, ${count("fail")} fail, ${count("skip")} skip · ${verdict} · ${(r.elapsedMs / 1000).toFixed(2)} s`,
  );
  return `${lines.join("\n")}\n`;
}

/**
 * Where Lima is not used at all (lima.limactl says so and every lima check skipped), its checks
 * are one row: they only matter on hosts with a VM. `--json` keeps every check.
 */
function unusedLima(checks: Outcome[]): Outcome[] {
  const lima = checks.filter((c) => c.id.startsWith("lima."));
  const limactl = lima.find((c) => c.id === "lima.limactl");
  if (!limactl || limactl.message !== LIMA_UNUSED || lima.some((c) => c.status !== "skip")) return checks;
  const row: Outcome = {
    id: "lima.*",
    status: "skip",
    message: `${LIMA_UNUSED}: ${lima.length} checks`,
    hint: null,
    fix: null,
  };
  const at = checks.indexOf(limactl);
  return [
    ...checks.slice(0, at).filter((c) => !c.id.startsWith("lima.")),
    row,
    ...checks.slice(at).filter((c) => !c.id.startsWith("lima.")),
  ];
}

/** `--list-checks`: one id and one line of description per check. */
export function listText(checks: Pick<Check, "id" | "description">[]): string {
  const w = Math.max(...checks.map((c) => c.id.length));
  return `${checks.map((c) => `${c.id.padEnd(w)}  ${c.description}`).join("\n")}\n`;
}
