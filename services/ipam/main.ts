import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { JetStreamPublisher } from "../../libs/bus/jetstream-publisher.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { IpamService } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { serveGrpc } from "../../libs/grpc/serve.js";
import type { LoadedTls } from "../../libs/tls/settings.js";
import { RecordSigner, RecordVerifier } from "../../libs/tls/record-signature.js";
import { IPAM_ACCESS } from "./access.js";
import { LeakCollector, Liveness, type LeakCollectionOptions } from "./collector.js";
import { AddressManager } from "./manager.js";
import { ipamHandlers } from "./server.js";
import { IpamStore } from "./store.js";
import { AllocationView } from "./view.js";
import { observeBus } from "../../libs/metrics/bus.js";
import { serveMetrics, serviceRegistry } from "../../libs/metrics/endpoint.js";
import { IpamMetrics } from "../../libs/metrics/ipam.js";

export interface IpamServiceOptions {
  natsUrl: string;
  /** HOST:PORT; port 0 takes a free one. */
  listen: string;
  /** Where the `ready` line goes; stdout by default (the lab waits for it there). */
  log?: (line: string) => void;
  /**
   * Releases allocations whose endpoint or host is gone. Off when absent: it trusts the planner's
   * endpoints bucket and the agents' heartbeats, which a bare IPAM (tests, the bench) does not have.
   */
  collectLeaks?: LeakCollectionOptions;
  /** How long a released address is not handed out automatically; 0 or absent: free again at once. */
  releaseCooldownMs?: number;
  /** Mutual TLS, with only the planner's identity admitted; plaintext without. */
  tls?: LoadedTls | undefined;
  /** HOST:PORT of a plaintext listener for health probes alone; none when absent. */
  healthListen?: string | undefined;
  /** HOST:PORT to serve Prometheus metrics on; none when absent. */
  metricsListen?: string | undefined;
}

export interface RunningIpamService {
  /** HOST:PORT actually bound. */
  address: string;
  /** HOST:PORT of the metrics endpoint, when serving one. */
  metricsAddress: string | undefined;
  stop(): Promise<void>;
}

export async function startIpamService(options: IpamServiceOptions): Promise<RunningIpamService> {
  const log = options.log ?? ((line: string) => console.log(line));
  const registry = serviceRegistry();
  // First: a port already taken is said before anything else starts.
  const metricsEndpoint = options.metricsListen === undefined ? undefined : await serveMetrics([registry], options.metricsListen);
  const nc = await connectBus({ servers: options.natsUrl, name: "trellis-ipam" });
  observeBus(nc, registry);
  try {
    const kv = await openBucket(nc, Buckets.ipam);
    const view = new AllocationView();
    const metrics = new IpamMetrics(registry, view);
    // Serving before the view is loaded would only make the first calls collide on taken addresses.
    await view.start(kv);
    const publisher = new JetStreamPublisher(nc);
    const manager = new AddressManager(new IpamStore(kv, publisher, options.tls && new RecordSigner(options.tls, "ipam")), view, { releaseCooldownMs: options.releaseCooldownMs ?? 0 });
    const collector = options.collectLeaks
      ? new LeakCollector(manager, view, await Liveness.follow({ endpoints: await openBucket(nc, Buckets.endpoints), hosts: await openBucket(nc, Buckets.hosts) }, options.tls && new RecordVerifier(options.tls.ca), log), options.collectLeaks, metrics)
      : undefined;
    collector?.start((error) => log(`failed to collect leaked allocations: ${error.message}`));
    const server = await serveGrpc(IpamService, ipamHandlers(manager, metrics), options.listen, { tls: options.tls, access: IPAM_ACCESS, healthListen: options.healthListen });
    log(`ipam ready on ${server.address} (nats ${options.natsUrl})`);
    return {
      address: server.address,
      metricsAddress: metricsEndpoint?.address,
      async stop() {
        await metricsEndpoint?.stop();
        await collector?.stop();
        view.stop();
        await server.stop();
        publisher.close();
        await nc.drain();
      },
    };
  } catch (error) {
    await metricsEndpoint?.stop();
    await nc.close();
    throw new Error(`failed to start ipam: ${(error as Error).message}`);
  }
}
