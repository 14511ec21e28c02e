import type { KV, KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { Buckets, hostKeysFilter, networkNamesFilter } from "../../libs/bus/subjects.js";
import { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";

const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);

/** Told of every change to the names followed (the DNS server's table, dns/name-table.ts). */
export interface NamesListener {
  put(networkId: string, key: string, entry: NameEntry): void;
  delete(networkId: string, key: string): void;
  dropNetwork(networkId: string): void;
}

export interface DesiredBuckets {
  networks: KV;
  desired: KV;
  names: KV;
}

/**
 * What one host must have, as the planner wrote it: every network (each host has every network's parent), the
 * host's own endpoints (its keys of the desired bucket, nothing of other hosts'), and the names of the
 * containers of the networks it has endpoints on (followed per network, while it has one there, into
 * `namesListener`). Every change of networks or endpoints calls `onChange`; that state is read whole by each
 * pass. Names change no kernel state: they go to the listener (the DNS server's table) alone.
 */
export class DesiredState {
  private readonly networksByName = new Map<string, Network>();
  private readonly endpointsByKey = new Map<string, Endpoint>();
  /** Network id → the follower of its containers' names, for the networks this host has endpoints on. */
  private readonly names = new Map<string, { follower?: FollowedBucket }>();
  private followers: FollowedBucket[] = [];
  private stopped = false;

  private constructor(
    private readonly buckets: DesiredBuckets,
    private readonly onChange: () => void,
    private readonly log: (line: string) => void,
    private readonly namesListener: NamesListener,
  ) {}

  /** Resolves once the stored networks and endpoints are in: no pass may act on half of them. */
  static async start(
    buckets: DesiredBuckets,
    host: string,
    onChange: () => void,
    log: (line: string) => void,
    namesListener: NamesListener,
  ): Promise<DesiredState> {
    const state = new DesiredState(buckets, onChange, log, namesListener);
    state.followers = await Promise.all([
      FollowedBucket.start(buckets.networks, { bucketName: Buckets.networks, log, onEntry: (entry) => state.applyNetwork(entry) }),
      FollowedBucket.start(buckets.desired, { bucketName: Buckets.desired, filter: hostKeysFilter(host), log, onEntry: (entry) => state.applyEndpoint(entry) }),
    ]);
    state.followNames();
    return state;
  }

  stop(): void {
    this.stopped = true;
    this.followers.forEach((follower) => follower.stop());
    for (const { follower } of this.names.values()) follower?.stop();
  }

  networks(): Network[] {
    return [...this.networksByName.values()];
  }

  endpoints(): Endpoint[] {
    return [...this.endpointsByKey.values()];
  }

  private applyNetwork(entry: KvWatchEntry): void {
    if (entry.operation === "PUT") this.networksByName.set(entry.key, networkCodec.decode(entry.value));
    else this.networksByName.delete(entry.key);
    this.onChange();
  }

  private applyEndpoint(entry: KvWatchEntry): void {
    if (entry.operation === "PUT") this.endpointsByKey.set(entry.key, endpointCodec.decode(entry.value));
    else this.endpointsByKey.delete(entry.key);
    this.followNames();
    this.onChange();
  }

  /** Follows the names of exactly the networks this host has endpoints on, into the names listener. */
  private followNames(): void {
    const wanted = new Set(this.endpoints().map((endpoint) => endpoint.networkId));
    for (const [networkId, names] of this.names) {
      if (wanted.has(networkId)) continue;
      names.follower?.stop();
      this.names.delete(networkId);
      this.namesListener.dropNetwork(networkId);
    }
    for (const networkId of wanted) {
      if (this.names.has(networkId)) continue;
      const names: { follower?: FollowedBucket } = {};
      this.names.set(networkId, names);
      void FollowedBucket.start(this.buckets.names, {
        bucketName: Buckets.names,
        filter: networkNamesFilter(networkId),
        log: this.log,
        onEntry: (entry) => {
          // A follower being replaced or stopped may still deliver: only the current one is heard.
          if (this.names.get(networkId) !== names) return;
          if (entry.operation === "PUT") this.namesListener.put(networkId, entry.key, nameCodec.decode(entry.value));
          else this.namesListener.delete(networkId, entry.key);
        },
      })
        .then((follower) => {
          if (this.stopped || this.names.get(networkId) !== names) return follower.stop();
          names.follower = follower;
        })
        .catch((error: Error) => {
          this.names.delete(networkId);
          this.namesListener.dropNetwork(networkId);
          this.log(`failed to follow the names of network ${networkId}: ${error.message}`);
        });
    }
  }
}
