import type { NatsConnection } from "@nats-io/transport-node";
import { openBucket } from "../../../libs/bus/connection.js";
import { BusContact } from "../../../libs/bus/contact.js";
import { Buckets, HOST_STALE_AFTER_MS } from "../../../libs/bus/subjects.js";
import type { Endpoint, Network } from "../../../libs/proto/gen/trellis/v1/network.js";
import type { EndpointStatus } from "../../../libs/proto/gen/trellis/v1/state.js";
import type { RecordTrust } from "../../../libs/tls/record-signature.js";
import { BirdSpeaker, stopLeftoverSpeaker } from "../bgp/speaker.js";
import type { BgpOptions } from "../bgp/options.js";
import { Announcer, servedPrefixes } from "./announce.js";
import { RouteInstaller } from "./install.js";
import { setAnnouncedPrefixes } from "../../../libs/metrics/agent.js";

export interface DistributionOptions extends RecordTrust {
  host: string;
  /** The host's underlay addresses, at most one per family: the next hops of what it announces. */
  addresses: string[];
  role: "host" | "upstream";
  resyncMs: number;
  /** With these, the host also advertises what it announces to its routers over BGP. */
  bgp?: BgpOptions;
}

/** A link-agent's part in L3 route distribution: it announces what its host serves and installs what others do. */
export class RouteDistribution {
  private constructor(
    private readonly announcer: Announcer,
    private readonly installer: RouteInstaller,
    private readonly addresses: string[],
    private readonly speaker: BirdSpeaker | undefined,
    private readonly contact: BusContact,
  ) {}

  static async start(nc: NatsConnection, options: DistributionOptions): Promise<RouteDistribution> {
    const [routes, hosts, ipam, networks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((b) => openBucket(nc, b)));
    const announcer = new Announcer(routes, options.host, options.addresses, options);
    const contact = new BusContact(nc);
    const log = (line: string) => console.error(line);
    const installer = await RouteInstaller.start(
      { routes, hosts, ipam, networks },
      { host: options.host, role: options.role, staleAfterMs: HOST_STALE_AFTER_MS, resyncMs: options.resyncMs, log, verifier: options.verifier, contact },
    ).catch((error: Error) => {
      contact.stop();
      throw error;
    });
    const speaker = options.bgp && new BirdSpeaker({ host: options.host, bgp: options.bgp, addresses: options.addresses });
    if (!speaker) await stopLeftoverSpeaker(options.host).catch((error: Error) => console.error(error.message));
    return new RouteDistribution(announcer, installer, options.addresses, speaker, contact);
  }

  /** Called after every converge pass with the host's networks and endpoints and the statuses read back from the kernel. */
  async announce(networks: Network[], endpoints: Endpoint[], statuses: EndpointStatus[]): Promise<void> {
    const served = servedPrefixes({ networks, endpoints, grants: this.installer.grantsOfSelf() }, statuses, this.addresses);
    setAnnouncedPrefixes(served.length);
    // Neither waits for the other: a bus that is down must not keep routers from learning, nor BIRD the bus.
    const outcomes = await Promise.allSettled([this.announcer.announce(served), this.speaker?.advertise(served.map(({ prefix }) => prefix))]);
    const failures = outcomes.flatMap((outcome) => (outcome.status === "rejected" ? [(outcome.reason as Error).message] : []));
    if (failures.length > 0) throw new Error(failures.join("; "));
  }

  async stop(): Promise<void> {
    this.contact.stop();
    await this.installer.stop();
  }
}
