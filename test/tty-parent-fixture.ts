/** Starts a terminal holder with the orders in argv[2] (JSON), prints its Ready line, then waits to be killed. */
import { startHolder } from "../lib/tty/start.ts";

const orders = JSON.parse(process.argv[2] as string);
const h = await startHolder(orders);
const { proc: _, ...ready } = h;
process.stdout.write(`${JSON.stringify(ready)}\n`);
setInterval(() => {}, 1 << 30);
