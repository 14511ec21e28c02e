import type { KV, KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { Buckets, hostKeysFilter, isHostShimKey, networkNamesFilter } from "../../libs/bus/subjects.js";
import { Endpoint, HostShim, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";

const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);
const hostShimCodec = codecOf(HostShim);

export interface DesiredBuckets {
  networks: KV;
  desired: KV;
  names: KV;
}

/**
 * What one host must have, as the planner wrote it: every network (each host has every network's parent), the
 * host's own endpoints (its keys of the desired bucket, nothing of other hosts'), and the names of the
 * containers of the networks it has endpoints on (followed per network, while it has one there). Every
 * change calls `onChange`; the state is read whole by each pass.
 */
export class DesiredState {
  private readonly networksByName = new Map<string, Network>();
  private readonly endpointsByKey = new Map<string, Endpoint>();
  /** Network id → the host's own shim on it (`<host>.shim.<network id>`, services/link-agent/host-shim.ts). */
  private readonly shimsByNetwork = new Map<string, HostShim>();
  /** Network id → its containers' names, for the networks this host has endpoints on. */
  private readonly names = new Map<string, { entries: Map<string, NameEntry>; follower?: FollowedBucket; loaded: boolean }>();
  private followers: FollowedBucket[] = [];
  private stopped = false;

  private constructor(
    private readonly buckets: DesiredBuckets,
    private readonly onChange: () => void,
    private readonly log: (line: string) => void,
  ) {}

  /** Resolves once the stored networks and endpoints are in: no pass may act on half of them. */
  static async start(buckets: DesiredBuckets, host: string, onChange: () => void, log: (line: string) => void): Promise<DesiredState> {
    const state = new DesiredState(buckets, onChange, log);
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

  /** The host's shim on a network, if the planner gave it one. */
  shimOf(networkId: string): HostShim | undefined {
    return this.shimsByNetwork.get(networkId);
  }

  /** The names of a network's containers; undefined until they are loaded (a hosts file is then left as it is). */
  namesOf(networkId: string): NameEntry[] | undefined {
    const names = this.names.get(networkId);
    return names?.loaded ? [...names.entries.values()] : undefined;
  }

  private applyNetwork(entry: KvWatchEntry): void {
    if (entry.operation === "PUT") this.networksByName.set(entry.key, networkCodec.decode(entry.value));
    else this.networksByName.delete(entry.key);
    this.onChange();
  }

  private applyEndpoint(entry: KvWatchEntry): void {
    if (isHostShimKey(entry.key)) return this.applyHostShim(entry);
    if (entry.operation === "PUT") this.endpointsByKey.set(entry.key, endpointCodec.decode(entry.value));
    else this.endpointsByKey.delete(entry.key);
    this.followNames();
    this.onChange();
  }

  private applyHostShim(entry: KvWatchEntry): void {
    const networkId = entry.key.slice(entry.key.lastIndexOf(".") + 1);
    if (entry.operation === "PUT") this.shimsByNetwork.set(networkId, hostShimCodec.decode(entry.value));
    else this.shimsByNetwork.delete(networkId);
    this.onChange();
  }

  /** Follows the names of exactly the networks this host has endpoints on. */
  private followNames(): void {
    const wanted = new Set(this.endpoints().map((endpoint) => endpoint.networkId));
    for (const [networkId, names] of this.names) {
      if (wanted.has(networkId)) continue;
      names.follower?.stop();
      this.names.delete(networkId);
    }
    for (const networkId of wanted) {
      if (this.names.has(networkId)) continue;
      const names = { entries: new Map<string, NameEntry>(), follower: undefined as FollowedBucket | undefined, loaded: false };
      this.names.set(networkId, names);
      void FollowedBucket.start(this.buckets.names, {
        bucketName: Buckets.names,
        filter: networkNamesFilter(networkId),
        log: this.log,
        onEntry: (entry) => {
          if (entry.operation === "PUT") names.entries.set(entry.key, nameCodec.decode(entry.value));
          else names.entries.delete(entry.key);
          if (names.loaded) this.onChange();
        },
      })
        .then((follower) => {
          if (this.stopped || this.names.get(networkId) !== names) return follower.stop();
          names.follower = follower;
          names.loaded = true;
          this.onChange();
        })
        .catch((error: Error) => {
          this.names.delete(networkId);
          this.log(`failed to follow the names of network ${networkId}: ${error.message}`);
        });
    }
  }
}
