import { changeReplicas, connectBus, parseReplicas } from "../../../libs/bus/connection.js";
import { parseCommand, UsageError } from "../parse.js";
import { settings } from "../settings.js";

const USAGE = "Usage: trellis nats replicas N [--nats=URL]   (as the planner's NATS user: TRELLIS_NATS_USER=planner)";

/** A new copy of a large bucket is sent over the network before it counts as current. */
const CATCH_UP_TIMEOUT_MS = 120_000;

/** `trellis nats replicas N`: gives every existing Trellis stream N copies, e.g. when one NATS server becomes a cluster. */
export async function natsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(argv, { nats: { type: "string" } }, USAGE);
  const [action, count, ...extra] = positionals;
  if (action !== "replicas" || count === undefined || extra.length > 0) throw new UsageError("expected: nats replicas N", USAGE);
  let replicas: number;
  try {
    replicas = parseReplicas(count, "replica count");
  } catch (error) {
    throw new UsageError((error as Error).message, USAGE);
  }
  const nc = await connectBus({ servers: values.nats ?? settings.natsUrl(), name: "trellis-cli", waitForServer: false });
  try {
    const changes = await changeReplicas(nc, replicas, CATCH_UP_TIMEOUT_MS);
    for (const { stream, from, to } of changes) console.log(`${stream}: ${from} -> ${to} replicas`);
    console.log(changes.length === 0 ? `every stream already has ${replicas} replica(s)` : `set TRELLIS_NATS_REPLICAS=${replicas} for every service`);
    return 0;
  } finally {
    await nc.close();
  }
}
