/** JSON columns are a boundary too: parse them back through their schema. */
import * as v from "valibot";
import { PlanterError } from "../api/errors.ts";

/** Parse a JSON column with `schema`; a corrupt value is a state error naming the column. */
export function jsonColumn<S extends v.GenericSchema>(schema: S, text: string, where: string): v.InferOutput<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new PlanterError("E_STATE", `corrupt JSON in ${where}`);
  }
  const r = v.safeParse(schema, raw);
  if (!r.success) throw new PlanterError("E_STATE", `unexpected value in ${where}: ${r.issues[0]?.message}`);
  return r.output;
}

export const StringArray = v.array(v.string());
export const StringRecord = v.record(v.string(), v.string());
export const AnyRecord = v.record(v.string(), v.unknown());
