/** The escape suite (test/escape-suite.ts) against planterd as user. */
import { escapeSuite } from "../escape-suite.ts";

escapeSuite(["user"]);
