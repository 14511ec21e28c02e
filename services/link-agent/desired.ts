import type { KV, KvWatchEntry } from "@nats-io/kv";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { Buckets, hostKeysFilter, isHostShimKey, networkNamesFilter } from "../../libs/bus/subjects.js";
import type { Endpoint, HostShim, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import type { NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import { SignedRecordFilter } from "../../libs/tls/signed-records.js";
import type { RecordVerifier } from "../../libs/tls/record-signature.js";

/** What one stored entry changed; a removed network or endpoint comes with its last value. */
export type DesiredChange =
  | { kind: "network"; network: Network }
  | { kind: "endpoint"; endpoint: Endpoint }
  | { kind: "shim"; networkId: string }
  /** An endpoint in a namespace another endpoint of the host already has (`holder`), or (`holder` absent) one gone. */
  | { kind: "crowded"; endpoint: Endpoint; holder?: Endpoint };

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
 * `namesListener`). Every change of networks or endpoints calls `onChange` with what changed, so that the agent
 * converges only that. Names change no kernel state: they go to the listener (the DNS server's table) alone. A value that may not be
 * believed (garbage, or with TLS one no planner signed) is dropped and the key keeps what it held: a forged write
 * changes nothing.
 */
export class DesiredState {
  private readonly networksByName = new Map<string, Network>();
  private readonly networksById = new Map<string, Network>();
  private readonly endpointsByKey = new Map<string, Endpoint>();
  /** The agent's key of an endpoint: its namespace, unique on the host and known even once it is gone. */
  private readonly endpointsByNetns = new Map<string, Endpoint>();
  /**
   * Endpoints in a namespace that another endpoint holds, by key: a second Trellis network of one runtime container
   * (the agent keys its work by namespace). Kept out of every other index, so that they touch nothing of the holder.
   */
  private readonly crowded = new Map<string, Endpoint>();
  /** Network id → this host's endpoints on it, by key: so that one change looks at its own network only. */
  private readonly endpointsByNetwork = new Map<string, Map<string, Endpoint>>();
  /** Network id → the host's own shim on it (`<host>.shim.<network id>`, services/link-agent/host-shim.ts). */
  private readonly shimsByNetwork = new Map<string, HostShim>();
  /** Network id → the follower of its containers' names, for the networks this host has endpoints on. */
  private readonly names = new Map<string, { follower?: FollowedBucket }>();
  private followers: FollowedBucket[] = [];
  private stopped = false;
  private readonly believed: SignedRecordFilter;

  private constructor(
    private readonly buckets: DesiredBuckets,
    private readonly onChange: (change: DesiredChange) => void,
    private readonly log: (line: string) => void,
    private readonly namesListener: NamesListener,
    verifier: RecordVerifier | undefined,
  ) {
    this.believed = new SignedRecordFilter(verifier, log);
  }

  /** Resolves once the stored networks and endpoints are in: no pass may act on half of them. */
  static async start(
    buckets: DesiredBuckets,
    host: string,
    onChange: (change: DesiredChange) => void,
    log: (line: string) => void,
    namesListener: NamesListener,
    verifier?: RecordVerifier,
  ): Promise<DesiredState> {
    const state = new DesiredState(buckets, onChange, log, namesListener, verifier);
    state.followers = await Promise.all([
      FollowedBucket.start(buckets.networks, { bucketName: Buckets.networks, log, onEntry: (entry) => state.applyNetwork(entry) }),
      FollowedBucket.start(buckets.desired, { bucketName: Buckets.desired, filter: hostKeysFilter(host), log, onEntry: (entry) => state.applyEndpoint(entry) }),
    ]);
    state.followNames(state.endpointsByNetwork.keys());
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

  /** The endpoints refused for a namespace another endpoint holds (see `crowded`). */
  crowdedEndpoints(): Endpoint[] {
    return [...this.crowded.values()];
  }

  network(id: string): Network | undefined {
    return this.networksById.get(id);
  }

  /** The networks whose parent is the link `name`. */
  networksOnParent(name: string): Network[] {
    return this.networks().filter((network) => network.parent?.name === name);
  }

  endpointIn(netns: string): Endpoint | undefined {
    return this.endpointsByNetns.get(netns);
  }

  /** This host's endpoints on one network. */
  endpointsOf(networkId: string): Endpoint[] {
    return [...(this.endpointsByNetwork.get(networkId)?.values() ?? [])];
  }

  /** The host's shim on a network, if the planner gave it one. */
  shimOf(networkId: string): HostShim | undefined {
    return this.shimsByNetwork.get(networkId);
  }

  private applyNetwork(entry: KvWatchEntry): void {
    const network = entry.operation === "PUT" ? this.believed.network(entry) : undefined;
    if (entry.operation === "PUT" && !network) return;
    const previous = this.networksByName.get(entry.key);
    if (previous) this.networksById.delete(previous.id);
    if (network) {
      this.networksByName.set(entry.key, network);
      this.networksById.set(network.id, network);
      this.onChange({ kind: "network", network });
    } else {
      this.networksByName.delete(entry.key);
      if (previous) this.onChange({ kind: "network", network: previous });
    }
  }

  private applyEndpoint(entry: KvWatchEntry): void {
    if (isHostShimKey(entry.key)) return this.applyHostShim(entry);
    const endpoint = entry.operation === "PUT" ? this.believed.endpoint(entry) : undefined;
    if (entry.operation === "PUT" && !endpoint) return;
    if (this.applyCrowded(entry.key, endpoint)) return;
    const previous = this.endpointsByKey.get(entry.key);
    if (previous) {
      this.endpointsByNetns.delete(previous.netns);
      this.unindex(entry.key, previous);
    }
    if (endpoint) {
      this.endpointsByKey.set(entry.key, endpoint);
      this.endpointsByNetns.set(endpoint.netns, endpoint);
      this.index(entry.key, endpoint);
    } else {
      this.endpointsByKey.delete(entry.key);
    }
    const current = this.endpointsByKey.get(entry.key);
    this.followNames([previous?.networkId, current?.networkId].filter((id): id is string => id !== undefined));
    // A namespace no endpoint wants any more is a change too: its step removes it.
    if (previous && previous.netns !== current?.netns) this.onChange({ kind: "endpoint", endpoint: previous });
    if (current) this.onChange({ kind: "endpoint", endpoint: current });
  }

  /** Whether the entry is (or was) an endpoint in a namespace another key holds: then it is told as crowded alone. */
  private applyCrowded(key: string, endpoint: Endpoint | undefined): boolean {
    const crowded = this.crowded.get(key);
    if (crowded && !endpoint) {
      this.crowded.delete(key);
      this.onChange({ kind: "crowded", endpoint: crowded });
      return true;
    }
    const holder = endpoint && this.endpointsByNetns.get(endpoint.netns);
    if (!endpoint || !holder || this.endpointsByKey.get(key) === holder) {
      if (crowded) this.crowded.delete(key);
      return false;
    }
    this.crowded.set(key, endpoint);
    this.onChange({ kind: "crowded", endpoint, holder });
    return true;
  }

  private applyHostShim(entry: KvWatchEntry): void {
    const networkId = entry.key.slice(entry.key.lastIndexOf(".") + 1);
    if (entry.operation !== "PUT") this.shimsByNetwork.delete(networkId);
    else {
      const shim = this.believed.hostShim(entry);
      if (!shim) return;
      this.shimsByNetwork.set(networkId, shim);
    }
    this.onChange({ kind: "shim", networkId });
  }

  private index(key: string, endpoint: Endpoint): void {
    let ofNetwork = this.endpointsByNetwork.get(endpoint.networkId);
    if (!ofNetwork) this.endpointsByNetwork.set(endpoint.networkId, (ofNetwork = new Map()));
    ofNetwork.set(key, endpoint);
  }

  private unindex(key: string, endpoint: Endpoint): void {
    const ofNetwork = this.endpointsByNetwork.get(endpoint.networkId);
    ofNetwork?.delete(key);
    if (ofNetwork?.size === 0) this.endpointsByNetwork.delete(endpoint.networkId);
  }

  /**
   * Of these networks, follows the names of those this host has endpoints on, into the names listener, and stops
   * following the others: so that the host follows exactly the names of its networks.
   */
  private followNames(networkIds: Iterable<string>): void {
    for (const networkId of networkIds) {
      const followed = this.names.get(networkId);
      const wanted = this.endpointsByNetwork.has(networkId);
      if (followed && !wanted) {
        followed.follower?.stop();
        this.names.delete(networkId);
        this.namesListener.dropNetwork(networkId);
      }
      if (followed || !wanted) continue;
      const names: { follower?: FollowedBucket } = {};
      this.names.set(networkId, names);
      void FollowedBucket.start(this.buckets.names, {
        bucketName: Buckets.names,
        filter: networkNamesFilter(networkId),
        log: this.log,
        onEntry: (entry) => {
          // A follower being replaced or stopped may still deliver: only the current one is heard.
          if (this.names.get(networkId) !== names) return;
          if (entry.operation !== "PUT") return this.namesListener.delete(networkId, entry.key);
          const name = this.believed.name(entry);
          if (name) this.namesListener.put(networkId, entry.key, name);
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
