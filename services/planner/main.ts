import type { NatsConnection } from "@nats-io/transport-node";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { ClusterCounts } from "./cluster-status.js";
import { connectIpam } from "../ipam/client.js";
import { serveGrpc } from "../../libs/grpc/serve.js";
import type { LoadedTls } from "../../libs/tls/settings.js";
import { RecordSigner, RecordVerifier } from "../../libs/tls/record-signature.js";
import { CONTROL_ACCESS } from "./access.js";
import { consumeIntents } from "./intent-consumer.js";
import { Planner } from "./planner.js";
import { scheduleRepair } from "./repair.js";
import { ControlService, controlImplementation } from "./server.js";
import { PlannerStore } from "./store.js";
import { observeBus } from "../../libs/metrics/bus.js";
import { serveMetrics, serviceRegistry } from "../../libs/metrics/endpoint.js";
import { PlannerMetrics } from "../../libs/metrics/planner.js";

/** How long an intent's result is kept for its replays (and the intent stream keeps intents), by default. */
export const DEFAULT_INTENT_RETENTION_MS = 24 * 60 * 60 * 1000;
/** How often desired state is compared with what it should be, by default: a pass reads the desired and names buckets whole. */
export const DEFAULT_REPAIR_INTERVAL_MS = 5 * 60 * 1000;

export interface PlannerOptions {
  natsUrl: string;
  /** host:port for the Control API. */
  listen: string;
  /** host:port of the IPAM service. */
  ipamAddress: string;
  intentRetentionMs?: number;
  repairIntervalMs?: number;
  /** Mutual TLS for the Control API and the calls to IPAM; plaintext without. */
  tls?: LoadedTls | undefined;
  /** HOST:PORT of a plaintext listener for health probes alone; none when absent. */
  healthListen?: string | undefined;
  /** HOST:PORT to serve Prometheus metrics on; none when absent. */
  metricsListen?: string | undefined;
}

export interface RunningPlanner {
  address: string;
  /** HOST:PORT of the metrics endpoint, when serving one. */
  metricsAddress: string | undefined;
  stop(): Promise<void>;
}

/**
 * One planner replica. Any number may run against the same NATS: each answers any intent from its own view,
 * they share the intent stream's consumer, and the stores' conditional writes keep them from both winning.
 */
export async function startPlanner(options: PlannerOptions): Promise<RunningPlanner> {
  const retentionMs = options.intentRetentionMs ?? DEFAULT_INTENT_RETENTION_MS;
  const registry = serviceRegistry();
  // First: a port already taken is said before anything else starts.
  const metricsEndpoint = options.metricsListen === undefined ? undefined : await serveMetrics([registry], options.metricsListen);
  const nc = await connectBus({ servers: options.natsUrl, name: "trellis-planner" });
  const store = await PlannerStore.open(nc, { intentRetentionMs: retentionMs, trust: options.tls && { signer: new RecordSigner(options.tls, "planner"), verifier: new RecordVerifier(options.tls.ca) } });
  const ipam = connectIpam(options.ipamAddress, options.tls);
  const planner = new Planner(store, ipam);
  observeBus(nc, registry);
  const counts = await ClusterCounts.start(store.view, await openBucket(nc, Buckets.status));
  const metrics = new PlannerMetrics(registry, store.view, counts);
  const intents = await consumeIntents(nc, planner, store, retentionMs, metrics);
  const stopRepair = scheduleRepair(store, options.repairIntervalMs ?? DEFAULT_REPAIR_INTERVAL_MS, (line) => console.error(line));
  const server = await serveGrpc(ControlService, controlImplementation(planner, store, metrics, counts), options.listen, { tls: options.tls, access: CONTROL_ACCESS, healthListen: options.healthListen });
  return {
    address: server.address,
    metricsAddress: metricsEndpoint?.address,
    async stop() {
      await metricsEndpoint?.stop();
      await server.stop();
      stopRepair();
      intents.stop();
      ipam.close();
      counts.stop();
      store.close();
      await drain(nc);
    },
  };
}

async function drain(nc: NatsConnection): Promise<void> {
  await nc.drain().catch(() => nc.close());
}
