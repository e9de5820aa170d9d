/** The escape suite (test/escape-suite.ts) against planterd as root. */
import { escapeSuite } from "../escape-suite.ts";

escapeSuite(["root"]);
