import type { NatsConnection } from "@nats-io/transport-node";
import { connectBus } from "../../libs/bus/connection.js";
import { connectIpam } from "../ipam/client.js";
import { serveGrpc } from "../../libs/grpc/serve.js";
import type { LoadedTls } from "../../libs/tls/settings.js";
import { RecordVerifier } from "../../libs/tls/record-signature.js";
import { CONTROL_ACCESS } from "./access.js";
import { consumeIntents } from "./intent-consumer.js";
import { Planner } from "./planner.js";
import { ControlService, controlImplementation } from "./server.js";
import { PlannerStore } from "./store.js";

export interface PlannerOptions {
  natsUrl: string;
  /** host:port for the Control API. */
  listen: string;
  /** host:port of the IPAM service. */
  ipamAddress: string;
  /** Mutual TLS for the Control API and the calls to IPAM; plaintext without. */
  tls?: LoadedTls | undefined;
  /** HOST:PORT of a plaintext listener for health probes alone; none when absent. */
  healthListen?: string | undefined;
}

export interface RunningPlanner {
  address: string;
  stop(): Promise<void>;
}

export async function startPlanner(options: PlannerOptions): Promise<RunningPlanner> {
  const nc = await connectBus({ servers: options.natsUrl, name: "trellis-planner" });
  const store = await PlannerStore.open(nc, options.tls && new RecordVerifier(options.tls.ca));
  const ipam = connectIpam(options.ipamAddress, options.tls);
  const planner = new Planner(store, ipam);
  const intents = await consumeIntents(nc, planner, store);
  const stopWatchingHosts = await publishToNewHosts(store, planner);
  const server = await serveGrpc(ControlService, controlImplementation(planner, store), options.listen, { tls: options.tls, access: CONTROL_ACCESS, healthListen: options.healthListen });
  return {
    address: server.address,
    async stop() {
      await server.stop();
      stopWatchingHosts();
      intents.stop();
      ipam.close();
      await drain(nc);
    },
  };
}

/** A host that registers (or re-registers after a planner restart) gets its desired state written. */
async function publishToNewHosts(store: PlannerStore, planner: Planner): Promise<() => void> {
  const seen = new Set<string>();
  const watch = await store.hosts.watch();
  void (async () => {
    for await (const entry of watch) {
      if (entry.operation !== "PUT" || seen.has(entry.key)) continue;
      seen.add(entry.key);
      await planner.publishHost(entry.key).catch((error: Error) => {
        seen.delete(entry.key);
        console.error(`failed to publish desired state to host ${entry.key}: ${error.message}`);
      });
    }
  })();
  return () => watch.stop();
}

async function drain(nc: NatsConnection): Promise<void> {
  await nc.drain().catch(() => nc.close());
}
