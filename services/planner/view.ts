import type { KV, KvWatchEntry } from "@nats-io/kv";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { checkedEndpoint, checkedNetwork } from "../../libs/bus/records.js";
import type { Versioned } from "../../libs/bus/kv.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { formatAddress, parseCidr } from "../../libs/ipmath/index.js";
import type { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import type { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import type { RecordVerifier } from "../../libs/tls/record-signature.js";
import { SignedRecordFilter } from "../../libs/tls/signed-records.js";

/**
 * The planner's memory of the cluster: every network, container and host, fed by watches of their buckets,
 * with the indexes an intent needs (names, addresses held, a network's containers, who has which interface),
 * so that no intent lists a bucket. A view may lag behind another replica's writes; the conditional writes
 * decide, and a decision that trusts the view's silence catches up first.
 */
export class PlannerView {
  private readonly networks = new Map<string, Versioned<Network>>();
  private readonly endpoints = new Map<string, Versioned<Endpoint>>();
  private readonly hosts = new Map<string, HostRecord>();
  /** Network id → its containers' names. */
  private readonly containersOf = new Map<string, Set<string>>();
  /** `<network id> <address>` → the container that holds it. */
  private readonly addressHolders = new Map<string, string>();
  /** Sorted container names, of all networks ("") or of one, made when a listing needs them and dropped when the set changes. */
  private readonly sorted = new Map<string, string[]>();
  /** Interface name → hosts that reported it. */
  private readonly hostsWithInterface = new Map<string, Set<string>>();
  /** Host names sorted, made when a page of hosts needs them and dropped when a host comes or goes. */
  private sortedHosts: string[] | undefined;
  private readonly endpointListeners: ((before: Endpoint | undefined, after: Endpoint | undefined) => void)[] = [];
  private followers: FollowedBucket[] = [];

  private constructor(private readonly heartbeats: SignedRecordFilter) {}

  /** `verifier`: believe only heartbeats their host's agent signed (with TLS). */
  static async start(buckets: { networks: KV; endpoints: KV; hosts: KV }, verifier?: RecordVerifier): Promise<PlannerView> {
    const view = new PlannerView(new SignedRecordFilter(verifier, (line) => console.error(line)));
    view.followers = await Promise.all([
      FollowedBucket.start(buckets.networks, { bucketName: Buckets.networks, onEntry: (entry) => view.applyNetwork(entry) }),
      FollowedBucket.start(buckets.endpoints, { bucketName: Buckets.endpoints, onEntry: (entry) => view.applyEndpoint(entry) }),
      FollowedBucket.start(buckets.hosts, { bucketName: Buckets.hosts, onEntry: (entry) => view.applyHost(entry) }),
    ]);
    return view;
  }

  stop(): void {
    this.followers.forEach((follower) => follower.stop());
  }

  /** Waits until the view holds every write made to its buckets before this call. */
  async catchUp(): Promise<void> {
    await Promise.all(this.followers.map((follower) => follower.catchUp()));
  }

  network(name: string): Versioned<Network> | undefined {
    return this.networks.get(name);
  }

  networkCount(): number {
    return this.networks.size;
  }

  /** How many containers a network has, without listing them. */
  containerCount(networkId: string): number {
    return this.containersOf.get(networkId)?.size ?? 0;
  }

  allNetworks(): Network[] {
    return [...this.networks.values()].map((entry) => entry.value);
  }

  endpoint(container: string): Versioned<Endpoint> | undefined {
    return this.endpoints.get(container);
  }

  allEndpoints(): Endpoint[] {
    return [...this.endpoints.values()].map((entry) => entry.value);
  }

  /** The names of a network's containers, sorted. */
  containersOn(networkId: string): string[] {
    return [...(this.containersOf.get(networkId) ?? [])].sort();
  }

  /**
   * Up to `limit` endpoints in container-name order after the name `after` (empty: from the first), of one
   * network or of all: a page of a listing. The order is sorted once per change of the set, not per page.
   */
  endpointsAfter(after: string, limit: number, networkId?: string): Endpoint[] {
    return pageAfter(this.sortedNames(networkId), after, limit).flatMap((name) => this.endpoints.get(name)?.value ?? []);
  }

  private sortedNames(networkId: string | undefined): string[] {
    const cacheKey = networkId ?? "";
    let names = this.sorted.get(cacheKey);
    if (!names) {
      names = [...(networkId === undefined ? this.endpoints.keys() : (this.containersOf.get(networkId) ?? []))].sort();
      this.sorted.set(cacheKey, names);
    }
    return names;
  }

  /** The container that holds `address` (without prefix length) in a network. */
  holderOf(networkId: string, address: string): string | undefined {
    return this.addressHolders.get(`${networkId} ${address}`);
  }

  host(name: string): HostRecord | undefined {
    return this.hosts.get(name);
  }

  hostNames(): string[] {
    return [...this.hosts.keys()];
  }

  /** Up to `limit` host names in name order after `after` (empty: from the first): a page of hosts. */
  hostsAfter(after: string, limit: number): string[] {
    this.sortedHosts ??= [...this.hosts.keys()].sort();
    return pageAfter(this.sortedHosts, after, limit);
  }

  /** Calls `listener` with each change of a container's endpoint (before, after; undefined when none). */
  onEndpointChange(listener: (before: Endpoint | undefined, after: Endpoint | undefined) => void): void {
    this.endpointListeners.push(listener);
  }

  /** Hosts that reported an interface of this name. */
  hostsWith(interfaceName: string): string[] {
    return [...(this.hostsWithInterface.get(interfaceName) ?? [])];
  }

  /** The planner's own writes are known at once, before their watch delivers them. */
  noteNetwork(network: Network, revision: number): void {
    this.setNetwork(network.name, { value: network, revision });
  }

  noteEndpoint(endpoint: Endpoint, revision: number): void {
    this.setEndpoint(endpoint.container, { value: endpoint, revision });
  }

  noteEndpointGone(container: string, revision: number): void {
    this.setEndpoint(container, undefined, revision);
  }

  noteNetworkGone(name: string, revision: number): void {
    this.setNetwork(name, undefined, revision);
  }

  private applyNetwork(entry: KvWatchEntry): void {
    if (entry.operation === "PUT") this.setNetwork(entry.key, { value: checkedNetwork(entry), revision: entry.revision });
    else this.setNetwork(entry.key, undefined, entry.revision);
  }

  private applyEndpoint(entry: KvWatchEntry): void {
    if (entry.operation === "PUT") this.setEndpoint(entry.key, { value: checkedEndpoint(entry, "planned"), revision: entry.revision });
    else this.setEndpoint(entry.key, undefined, entry.revision);
  }

  private applyHost(entry: KvWatchEntry): void {
    const previous = this.hosts.get(entry.key);
    for (const name of previous?.interfaces ?? []) this.hostsWithInterface.get(name)?.delete(entry.key);
    const record = entry.operation === "PUT" ? this.heartbeats.heartbeat(entry) : undefined;
    if (!record !== !previous) this.sortedHosts = undefined;
    if (!record) {
      this.hosts.delete(entry.key);
      return;
    }
    this.hosts.set(entry.key, record);
    for (const name of record.interfaces) {
      let hosts = this.hostsWithInterface.get(name);
      if (!hosts) this.hostsWithInterface.set(name, (hosts = new Set()));
      hosts.add(entry.key);
    }
  }

  /** A write older than what the view holds (the watch delivering the planner's own write late) is ignored. */
  private setNetwork(name: string, next: Versioned<Network> | undefined, revision = next?.revision ?? 0): void {
    const current = this.networks.get(name);
    if (current && current.revision > revision) return;
    if (next) this.networks.set(name, next);
    else this.networks.delete(name);
  }

  private setEndpoint(container: string, next: Versioned<Endpoint> | undefined, revision = next?.revision ?? 0): void {
    const current = this.endpoints.get(container);
    if (current && current.revision > revision) return;
    for (const listener of this.endpointListeners) listener(current?.value, next?.value);
    if (!current || !next || current.value.networkId !== next.value.networkId) {
      this.sorted.delete("");
      if (current) this.sorted.delete(current.value.networkId);
      if (next) this.sorted.delete(next.value.networkId);
    }
    if (current) {
      this.containersOf.get(current.value.networkId)?.delete(container);
      // Only its own: a take-over's endpoint holds the addresses already when its holder goes (take-over.ts).
      for (const address of current.value.addresses) {
        const key = addressKeyOf(current.value.networkId, address);
        if (this.addressHolders.get(key) === container) this.addressHolders.delete(key);
      }
    }
    if (!next) {
      this.endpoints.delete(container);
      return;
    }
    this.endpoints.set(container, next);
    let containers = this.containersOf.get(next.value.networkId);
    if (!containers) this.containersOf.set(next.value.networkId, (containers = new Set()));
    containers.add(container);
    for (const address of next.value.addresses) this.addressHolders.set(addressKeyOf(next.value.networkId, address), container);
  }
}

/** Up to `limit` of sorted `names` that come after `after`, found by bisection. */
function pageAfter(names: string[], after: string, limit: number): string[] {
  let low = 0;
  let high = names.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (names[middle]! <= after) low = middle + 1;
    else high = middle;
  }
  return names.slice(low, low + limit);
}

function addressKeyOf(networkId: string, cidr: string): string {
  return `${networkId} ${formatAddress(parseCidr(cidr).address)}`;
}
