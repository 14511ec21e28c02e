import type { KV } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import type { RecordVerifier } from "../../libs/tls/record-signature.js";
import { SignedRecordFilter } from "../../libs/tls/signed-records.js";
import { isHostShimEndpointId } from "./host-shim-id.js";
import type { AddressManager } from "./manager.js";
import type { AllocationView } from "./view.js";
import type { IpamMetrics } from "../../libs/metrics/ipam.js";

export interface LeakCollectionOptions {
  /** How long an allocation must stay gone between the two sightings that release it. */
  graceMs: number;
  /** A host whose heartbeat is older than this (or that has none) is gone. */
  hostTimeoutMs: number;
  /** Time between sweeps. */
  intervalMs: number;
}

const endpointCodec = codecOf(Endpoint);

/**
 * What the collector knows of owners: the planner's endpoints and the hosts' heartbeats, followed into memory
 * by watches, so that a sweep reads no bucket (a listing per sweep cost a get per container, every 15 s). With
 * a verifier (TLS), a heartbeat its host's agent did not sign is dropped: no host can keep another's addresses.
 */
export class Liveness {
  private readonly endpointIds = new Map<string, string>();
  private readonly heartbeats = new Map<string, number>();
  private followers: FollowedBucket[] = [];

  static async follow(buckets: { endpoints: KV; hosts: KV }, verifier: RecordVerifier | undefined, log: (line: string) => void): Promise<Liveness> {
    const liveness = new Liveness();
    const believed = new SignedRecordFilter(verifier, log);
    liveness.followers = await Promise.all([
      FollowedBucket.start(buckets.endpoints, {
        bucketName: Buckets.endpoints,
        onEntry: (entry) => {
          if (entry.operation === "PUT") liveness.endpointIds.set(entry.key, endpointCodec.decode(entry.value).id);
          else liveness.endpointIds.delete(entry.key);
        },
      }),
      FollowedBucket.start(buckets.hosts, {
        bucketName: Buckets.hosts,
        onEntry: (entry) => {
          if (entry.operation !== "PUT") liveness.heartbeats.delete(entry.key);
          else {
            const heartbeat = believed.heartbeat(entry);
            if (heartbeat) liveness.heartbeats.set(entry.key, Date.parse(heartbeat.heartbeatAt));
          }
        },
      }),
    ]);
    return liveness;
  }

  stop(): void {
    this.followers.forEach((follower) => follower.stop());
  }

  liveEndpointIds(): Set<string> {
    return new Set(this.endpointIds.values());
  }

  heartbeatOf(host: string): number | undefined {
    return this.heartbeats.get(host);
  }
}

/** One sighting of something gone: by revision, so that a rewritten key starts over. */
interface Sighting {
  revision: number;
  at: number;
}

/**
 * Releases allocations whose endpoint (in the planner's endpoints bucket) or host (in the hosts'
 * heartbeats) is gone, and per-host blocks left empty, once seen so twice a grace period apart.
 * The release itself is a compare-and-set like any other, so replicas may all run a collector.
 */
export class LeakCollector {
  private readonly sightings = new Map<string, Sighting>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  constructor(
    private readonly manager: AddressManager,
    private readonly view: AllocationView,
    private readonly liveness: Liveness,
    private readonly options: LeakCollectionOptions,
    private readonly metrics?: IpamMetrics,
  ) {}

  start(onError: (error: Error) => void): void {
    this.timer = setInterval(() => {
      this.sweeping ??= this.sweep().catch(onError).finally(() => (this.sweeping = undefined));
    }, this.options.intervalMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.sweeping;
    this.liveness.stop();
  }

  /** One pass over the view's allocations, in memory; what it releases goes through the usual conditional writes. */
  async sweep(now = Date.now()): Promise<void> {
    const liveEndpoints = this.liveness.liveEndpointIds();
    const hostLives = (host: string) => now - (this.liveness.heartbeatOf(host) ?? Number.NEGATIVE_INFINITY) <= this.options.hostTimeoutMs;
    const seen = new Set<string>();
    for (const { key, record, revision } of this.view.endpointAddresses()) {
      if (liveEndpoints.has(record.endpointId) && hostLives(record.host)) continue;
      // A host's shim has no container key; it is released with its network (services/planner/host-shim.ts).
      if (isHostShimEndpointId(record.endpointId)) continue;
      seen.add(key);
      if (!this.isSecondSighting(key, revision, now)) continue;
      await this.manager.releaseAddresses(record.networkId, record.endpointId);
      this.metrics?.leakCollected("address");
    }
    for (const block of this.view.emptyBlocks()) {
      seen.add(block.key);
      if (!this.isSecondSighting(block.key, block.revision, now)) continue;
      if (await this.manager.returnBlockIfStillEmpty(block)) this.metrics?.leakCollected("block");
    }
    for (const key of this.sightings.keys()) if (!seen.has(key)) this.sightings.delete(key);
  }

  private isSecondSighting(key: string, revision: number, now: number): boolean {
    const first = this.sightings.get(key);
    if (first && first.revision === revision) return now - first.at >= this.options.graceMs;
    this.sightings.set(key, { revision, at: now });
    return false;
  }
}
