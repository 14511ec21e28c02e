import type { KV, KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { Buckets, hostStaleAfterMs } from "../../libs/bus/subjects.js";
import { firstUsable, lastUsable, parseCidr, parsePrefix, contains } from "../../libs/ipmath/index.js";
import type { ClusterStatus, ContainerStates, GetClusterStatusRequest, HostStatus, NetworkStatus } from "../../libs/proto/gen/trellis/v1/control.js";
import type { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState, EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import type { PlannerView } from "./view.js";

const statusCodec = codecOf(EndpointStatus);
const DEFAULT_HOST_PAGE = 1_000;
const MAX_HOST_PAGE = 5_000;

type StateName = "ready" | "pending" | "failed";
const STATE_NAMES: Partial<Record<EndpointState, StateName>> = {
  [EndpointState.ENDPOINT_STATE_READY]: "ready",
  [EndpointState.ENDPOINT_STATE_PENDING]: "pending",
  [EndpointState.ENDPOINT_STATE_FAILED]: "failed",
};

interface NetworkCounts {
  states: Record<StateName, number>;
  /** Addresses its containers hold, per address family: a subnet's use without walking its containers. */
  addresses: Record<4 | 6, number>;
}

/**
 * What `trellis status` and the planner's metrics need beyond the view, kept up to date as things change: per
 * network its containers by the state their agents report (a follow of the status bucket) and the addresses its
 * containers hold (from the view's changes). An answer is then counts per network and a page of hosts: nothing
 * in it is a walk of every container or host.
 */
export class ClusterCounts {
  private readonly networks = new Map<string, NetworkCounts>();
  /** Status key → what it was counted as. */
  private readonly statuses = new Map<string, { networkId: string; state: StateName }>();
  private follower: FollowedBucket | undefined;

  private constructor(private readonly view: PlannerView) {}

  static async start(view: PlannerView, status: KV): Promise<ClusterCounts> {
    const counts = new ClusterCounts(view);
    view.onEndpointChange((before, after) => counts.onEndpoint(before, after));
    for (const endpoint of view.allEndpoints()) counts.onEndpoint(undefined, endpoint);
    counts.follower = await FollowedBucket.start(status, { bucketName: Buckets.status, onEntry: (entry) => counts.onStatus(entry) });
    return counts;
  }

  stop(): void {
    this.follower?.stop();
  }

  /** Containers of a network by reported state. */
  states(networkId: string): Record<StateName, number> {
    return this.countsOf(networkId).states;
  }

  /** Addresses of a subnet held: the network's containers', its gateway and its aux addresses. */
  subnetUse(network: Network, cidr: string): { used: number; usable: number } {
    const prefix = parsePrefix(cidr);
    const subnet = network.subnets.find((candidate) => candidate.cidr === cidr);
    const reserved = (subnet?.gateway ? 1 : 0) + Object.keys(subnet?.auxAddresses ?? {}).length;
    const sameFamily = network.subnets.filter((candidate) => parsePrefix(candidate.cidr).family === prefix.family).length;
    // Several subnets of one family (rare): which one an address is in takes a walk of the network's containers.
    const held = sameFamily <= 1 ? this.countsOf(network.id).addresses[prefix.family] : this.heldIn(network, prefix);
    return { used: held + reserved, usable: Number(lastUsable(prefix) - firstUsable(prefix) + 1n) };
  }

  private heldIn(network: Network, prefix: ReturnType<typeof parsePrefix>): number {
    let held = 0;
    for (const container of this.view.containersOn(network.id)) {
      for (const address of this.view.endpoint(container)?.value.addresses ?? []) if (contains(prefix, parseCidr(address).address)) held++;
    }
    return held;
  }

  private onEndpoint(before: Endpoint | undefined, after: Endpoint | undefined): void {
    for (const [endpoint, step] of [[before, -1], [after, 1]] as const) {
      if (!endpoint) continue;
      const counts = this.countsOf(endpoint.networkId);
      for (const address of endpoint.addresses) counts.addresses[address.includes(":") ? 6 : 4] += step;
    }
  }

  private onStatus(entry: KvWatchEntry): void {
    const counted = this.statuses.get(entry.key);
    if (counted) this.countsOf(counted.networkId).states[counted.state]--;
    this.statuses.delete(entry.key);
    if (entry.operation !== "PUT") return;
    const status = statusCodec.decode(entry.value);
    const state = STATE_NAMES[status.state];
    const networkId = this.view.endpoint(status.container)?.value.networkId;
    if (!state || networkId === undefined) return;
    this.countsOf(networkId).states[state]++;
    this.statuses.set(entry.key, { networkId, state });
  }

  private countsOf(networkId: string): NetworkCounts {
    let counts = this.networks.get(networkId);
    if (!counts) this.networks.set(networkId, (counts = { states: { ready: 0, pending: 0, failed: 0 }, addresses: { 4: 0, 6: 0 } }));
    return counts;
  }
}

/** The answer of GetClusterStatus: every network's counts, and one page of hosts. */
export function clusterStatus(view: PlannerView, counts: ClusterCounts, request: GetClusterStatusRequest, now = Date.now()): ClusterStatus {
  const networks = view.allNetworks().sort((a, b) => a.name.localeCompare(b.name)).map((network) => networkStatus(view, counts, network));
  const size = Math.min(request.hostPageSize || DEFAULT_HOST_PAGE, MAX_HOST_PAGE);
  const names = view.hostsAfter(request.hostPageToken, size + 1);
  const hosts = names.slice(0, size).flatMap((name) => {
    const record = view.host(name);
    return record ? [hostStatus(record, now)] : [];
  });
  const containers = networks.reduce<ContainerStates>(
    (total, { containers: one }) => ({ placed: total.placed + one!.placed, ready: total.ready + one!.ready, pending: total.pending + one!.pending, failed: total.failed + one!.failed }),
    { placed: 0, ready: 0, pending: 0, failed: 0 },
  );
  return { networks, hosts, nextHostPageToken: names.length > size ? names[size - 1]! : "", containers };
}

function networkStatus(view: PlannerView, counts: ClusterCounts, network: Network): NetworkStatus {
  return {
    name: network.name,
    mode: network.mode,
    parent: network.parent?.name ?? "",
    subnets: network.subnets.map((subnet) => ({ cidr: subnet.cidr, ...counts.subnetUse(network, subnet.cidr) })),
    containers: { placed: view.containerCount(network.id), ...counts.states(network.id) },
  };
}

function hostStatus(record: { host: string; role: string; heartbeatAt: string; heartbeatIntervalMs: number; missingLinkKinds: string[] }, now: number): HostStatus {
  const age = Math.max(0, now - Date.parse(record.heartbeatAt));
  return { host: record.host, role: record.role, live: age <= hostStaleAfterMs(record.heartbeatIntervalMs), heartbeatAgeMs: age, missingLinkKinds: record.missingLinkKinds };
}
