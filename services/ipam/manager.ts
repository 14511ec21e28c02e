import { randomBytes, randomUUID } from "node:crypto";
import { formatAddress, formatInterfaceAddress, formatPrefix, parseCidr, parsePrefix, type Family, type Prefix } from "../../libs/ipmath/index.js";
import {
  AddressKind,
  type AddressRecord,
  type AllocateAddressRequest,
  type AllocateAddressResponse,
  type AllocatedSubnet,
  type AllocateSubnetsRequest,
  type Allocation,
  type IpamNetwork,
  type IpamRegistry,
} from "../../libs/proto/gen/trellis/v1/ipam.js";
import {
  assignSubnets,
  familyName,
  familyOf,
  lowestFree,
  planSubnets,
  poolBounds,
  poolFullMessage,
  refuseDifferentRequest,
  requireId,
  reservedValues,
  resolveStaticAddress,
  subnetsOfFamily,
  ulaPrefixFromRandom,
  type ResolvedAddress,
  type SubnetPlan,
} from "./allocator.js";
import { aborted, alreadyExists, invalidArgument, notFound, resourceExhausted } from "./errors.js";
import { addressKey, endpointKey, networkAddressesFilter, networkEndpointsFilter } from "./keys.js";
import type { IpamStore } from "./store.js";
import type { AllocationView } from "./view.js";

/** How often one step gives way to a concurrent writer before it reports ABORTED. */
const MAX_ATTEMPTS = 20;
const FAMILIES: Family[] = [4, 6];

/**
 * The IPAM operations. Validation runs before any write; every write is create-only or a
 * compare-and-set, so replicas sharing one bucket never hand out one address twice.
 */
export class AddressManager {
  /** Candidates this replica is trying right now, so that its concurrent calls try different ones. */
  private readonly pending = new Set<string>();

  constructor(
    private readonly store: IpamStore,
    private readonly view: AllocationView,
  ) {}

  async allocateSubnets(request: AllocateSubnetsRequest): Promise<AllocatedSubnet[]> {
    const plans = planSubnets(request);
    const incarnation = randomUUID();
    const proposedUla = ulaPrefixFromRandom(randomBytes(5));
    const registry = await this.store.updateRegistry((current) =>
      registerNetwork(current, request, plans, incarnation, proposedUla),
    );
    this.view.setRegistry(registry);
    const network = findNetwork(registry, request.networkId);
    if (!network) throw new Error(`failed to register network ${request.networkId}: it is missing after the write`);
    await this.reserveKeptAddresses(network);
    return network.subnets;
  }

  async releaseSubnets(networkId: string): Promise<void> {
    requireId("network_id", networkId);
    const registry = await this.store.updateRegistry((current) =>
      findNetwork(current, networkId) ? { ...current, networks: current.networks.filter((n) => n.networkId !== networkId) } : undefined,
    );
    this.view.setRegistry(registry);
    await this.purgeStaleRecords(networkId, findNetwork(registry, networkId)?.incarnation);
  }

  async allocateAddress(request: AllocateAddressRequest): Promise<AllocateAddressResponse> {
    requireId("network_id", request.networkId);
    requireId("endpoint_id", request.endpointId);
    const network = await this.requireNetwork(request.networkId);
    const family = familyOf(request.ipv6);
    if (subnetsOfFamily(network, family).length === 0) {
      throw invalidArgument(`network ${network.networkId} has no ${familyName(family)} subnet`);
    }
    const wanted = request.address.trim() ? resolveStaticAddress(network, family, request.address) : undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const held = await this.heldByEndpoint(network, request.endpointId, family);
      if (held) return answerFor(refuseOtherStatic(held, wanted, request.endpointId));
      const claimed =
        (await this.unboundClaimOf(network, request.endpointId, family, wanted)) ??
        (wanted ? await this.claimStatic(network, request, wanted) : await this.claimLowestFree(network, request, family));
      const bound = await this.bindEndpoint(network, request.endpointId, family, claimed);
      if (bound) return answerFor(bound);
    }
    throw aborted(`failed to allocate an address for endpoint ${request.endpointId}: too many concurrent changes, try again`);
  }

  async releaseAddresses(networkId: string, endpointId: string): Promise<void> {
    requireId("network_id", networkId);
    requireId("endpoint_id", endpointId);
    await Promise.all(FAMILIES.map((family) => this.releaseFamily(networkId, endpointId, family)));
    // An allocation interrupted between claiming an address and recording it for the endpoint.
    for (const [key, record] of this.view.recordsOfEndpoint(networkId, endpointId)) {
      if (record.kind === AddressKind.ADDRESS_KIND_ENDPOINT) await this.releaseIfHeldBy(key, endpointId);
    }
  }

  /** The address before the endpoint's record of it: an interrupted release leaves only a dangling record. */
  private async releaseFamily(networkId: string, endpointId: string, family: Family): Promise<void> {
    const key = endpointKey(networkId, endpointId, family);
    const pointer = await this.store.getRecord(key);
    if (!pointer) return;
    await this.releaseIfHeldBy(addressKey(networkId, parseCidr(pointer.value.address).address), endpointId);
    await this.store.deleteRecord(key, pointer.revision);
  }

  async listAllocations(networkId: string): Promise<Allocation[]> {
    requireId("network_id", networkId);
    const network = await this.requireNetwork(networkId);
    const records = await this.readNetworkRecords(networkId);
    return records
      .filter(([, record]) => record.incarnation === network.incarnation)
      .map(([, record]) => ({
        networkId: record.networkId,
        endpointId: record.endpointId,
        host: record.host,
        address: record.address,
        subnet: record.subnet,
        kind: record.kind,
      }));
  }

  /** The network from the view, or from the bucket when the view has not seen it yet. */
  private async requireNetwork(networkId: string): Promise<IpamNetwork> {
    const cached = this.view.network(networkId);
    if (cached) return cached;
    const registry = await this.store.readRegistry();
    this.view.setRegistry(registry);
    const network = findNetwork(registry, networkId);
    if (!network) throw notFound(`network ${networkId} has no subnets allocated (unknown network)`);
    return network;
  }

  /** The address the endpoint already holds in this family, when its record and the address agree. */
  private async heldByEndpoint(network: IpamNetwork, endpointId: string, family: Family): Promise<AddressRecord | undefined> {
    const key = endpointKey(network.networkId, endpointId, family);
    const pointer = await this.store.getRecord(key);
    if (!pointer) return undefined;
    if (pointer.value.incarnation === network.incarnation) {
      const holder = await this.store.getRecord(addressKey(network.networkId, parseCidr(pointer.value.address).address));
      if (holder && isSameHolder(holder.value, pointer.value)) return holder.value;
    }
    // Left from an earlier network of this id, or from a release cut short: not the endpoint's any more.
    await this.store.deleteRecord(key, pointer.revision);
    return undefined;
  }

  /** An address claimed for the endpoint by an attempt that died before recording it (a crash, a timeout). */
  private async unboundClaimOf(
    network: IpamNetwork,
    endpointId: string,
    family: Family,
    wanted: ResolvedAddress | undefined,
  ): Promise<AddressRecord | undefined> {
    for (const [key, record] of this.view.recordsOfEndpoint(network.networkId, endpointId)) {
      if (familyOf(record.ipv6) !== family || record.incarnation !== network.incarnation) continue;
      if (wanted && parseCidr(record.address).address.value !== wanted.address.value) continue;
      const holder = await this.store.getRecord(key);
      if (holder && isSameHolder(holder.value, record) && record.kind === AddressKind.ADDRESS_KIND_ENDPOINT) return holder.value;
    }
    return undefined;
  }

  private async claimStatic(network: IpamNetwork, request: AllocateAddressRequest, wanted: ResolvedAddress): Promise<AddressRecord> {
    const record = endpointRecord(network, request, wanted);
    if (await this.claim(record)) return record;
    const holder = await this.store.getRecord(addressKey(network.networkId, wanted.address));
    if (holder && isSameHolder(holder.value, record)) return holder.value;
    const name = holder ? describeHolder(holder.value) : "another endpoint";
    throw alreadyExists(`address ${formatAddress(wanted.address)} is already in use by ${name} in network ${network.networkId}`);
  }

  private async claimLowestFree(network: IpamNetwork, request: AllocateAddressRequest, family: Family): Promise<AddressRecord> {
    let resynced = false;
    for (;;) {
      const candidate = this.nextCandidate(network, family);
      if (!candidate) {
        if (resynced) throw resourceExhausted(poolFullMessage(subnetsOfFamily(network, family).map(({ subnet }) => subnet)));
        // The view may lag behind releases made through another replica: look at the bucket itself.
        this.view.resetNetwork(network.networkId, await this.readNetworkRecords(network.networkId));
        resynced = true;
        continue;
      }
      const pendingKey = `${network.networkId}|${family}|${candidate.address.value}`;
      this.pending.add(pendingKey);
      try {
        const record = endpointRecord(network, request, candidate);
        if (await this.claim(record)) return record;
      } finally {
        this.pending.delete(pendingKey);
      }
    }
  }

  /** Lowest usable address not believed taken, first subnet first. */
  private nextCandidate(network: IpamNetwork, family: Family): ResolvedAddress | undefined {
    const { networkId } = network;
    for (const { subnet, prefix } of subnetsOfFamily(network, family)) {
      const reserved = reservedValues(subnet);
      const isFreeInView = (value: bigint) => !reserved.has(value) && !this.view.isTaken(networkId, family, value);
      const bounds = poolBounds(subnet, prefix);
      const firstFree = lowestFree(bounds, this.view.scanStart(networkId, family, subnet.cidr), isFreeInView);
      if (firstFree === undefined) continue;
      this.view.setScanStart(networkId, family, subnet.cidr, firstFree);
      const value = lowestFree(bounds, firstFree, (v) => isFreeInView(v) && !this.pending.has(`${networkId}|${family}|${v}`));
      if (value !== undefined) return { address: { family, value }, subnet, prefix };
    }
    return undefined;
  }

  /**
   * Creates the address's key. A holder from an earlier network of the same id is stale and is
   * replaced (compare-and-set on its revision). False when a live holder has it.
   */
  private async claim(record: AddressRecord): Promise<boolean> {
    const key = addressKey(record.networkId, parseCidr(record.address).address);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (await this.store.createRecord(key, record)) {
        this.view.noteHeld(key, record);
        return true;
      }
      const holder = await this.store.getRecord(key);
      if (holder && holder.value.incarnation === record.incarnation) {
        this.view.noteHeld(key, holder.value);
        return false;
      }
      if (holder && (await this.store.replaceRecord(key, record, holder.revision))) {
        this.view.noteHeld(key, record);
        return true;
      }
    }
    throw aborted(`failed to claim ${record.address}: too many concurrent changes, try again`);
  }

  /**
   * Records which address the endpoint holds. If a concurrent call for the same endpoint recorded
   * another one first, ours is given back and theirs is the answer (undefined: look again).
   */
  private async bindEndpoint(network: IpamNetwork, endpointId: string, family: Family, claimed: AddressRecord): Promise<AddressRecord | undefined> {
    const key = endpointKey(network.networkId, endpointId, family);
    if (await this.store.createRecord(key, claimed)) return claimed;
    const pointer = await this.store.getRecord(key);
    if (pointer && pointer.value.address === claimed.address) return claimed;
    await this.releaseIfHeldBy(addressKey(network.networkId, parseCidr(claimed.address).address), endpointId);
    return undefined;
  }

  private async releaseIfHeldBy(key: string, endpointId: string): Promise<void> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const holder = await this.store.getRecord(key);
      if (!holder || holder.value.endpointId !== endpointId || holder.value.kind !== AddressKind.ADDRESS_KIND_ENDPOINT) return;
      if (await this.store.deleteRecord(key, holder.revision)) {
        this.view.noteFreed(key);
        return;
      }
    }
    throw aborted(`failed to release ${key}: too many concurrent changes, try again`);
  }

  /** Gateways and aux addresses are held like endpoints' ones; ensured on every call, so a retry repairs a crash. */
  private async reserveKeptAddresses(network: IpamNetwork): Promise<void> {
    for (const kept of network.subnets.flatMap((subnet) => keptRecords(network, subnet))) {
      if (await this.claim(kept)) continue;
      const holder = await this.store.getRecord(addressKey(network.networkId, parseCidr(kept.address).address));
      if (!holder || !isSameHolder(holder.value, kept)) {
        throw new Error(`failed to reserve ${kept.address} of network ${network.networkId}: held by ${holder ? describeHolder(holder.value) : "nobody"}`);
      }
    }
  }

  /** Deletes the network's records that belong to no current incarnation of it. */
  private async purgeStaleRecords(networkId: string, currentIncarnation: string | undefined): Promise<void> {
    const keys = [
      ...(await this.store.listKeys(networkAddressesFilter(networkId))),
      ...(await this.store.listKeys(networkEndpointsFilter(networkId))),
    ];
    for (const key of keys) {
      const entry = await this.store.getRecord(key);
      if (entry && entry.value.incarnation !== currentIncarnation && (await this.store.deleteRecord(key, entry.revision))) {
        this.view.noteFreed(key);
      }
    }
  }

  private async readNetworkRecords(networkId: string): Promise<[string, AddressRecord][]> {
    const keys = await this.store.listKeys(networkAddressesFilter(networkId));
    const entries = await Promise.all(keys.map(async (key) => [key, await this.store.getRecord(key)] as const));
    return entries.flatMap(([key, entry]) => (entry ? [[key, entry.value] as [string, AddressRecord]] : []));
  }
}

/** The registry change of AllocateSubnets: unchanged (undefined) when the network is registered already. */
function registerNetwork(
  current: IpamRegistry,
  request: AllocateSubnetsRequest,
  plans: SubnetPlan[],
  incarnation: string,
  proposedUla: Prefix,
): IpamRegistry | undefined {
  const existing = findNetwork(current, request.networkId);
  if (existing) {
    refuseDifferentRequest(existing, plans);
    return undefined;
  }
  const needsUla = plans.some((plan) => plan.family === 6 && !plan.prefix);
  const ula = current.ipv6UlaPrefix ? parsePrefix(current.ipv6UlaPrefix) : needsUla ? proposedUla : undefined;
  const subnets = assignSubnets(request.networkId, plans, request.withGateway, current, ula);
  return {
    networks: [...current.networks, { networkId: request.networkId, incarnation, subnets }],
    ipv6UlaPrefix: ula ? formatPrefix(ula) : "",
  };
}

function findNetwork(registry: IpamRegistry, networkId: string): IpamNetwork | undefined {
  return registry.networks.find((network) => network.networkId === networkId);
}

function endpointRecord(network: IpamNetwork, request: AllocateAddressRequest, at: ResolvedAddress): AddressRecord {
  return {
    networkId: network.networkId,
    incarnation: network.incarnation,
    endpointId: request.endpointId,
    host: request.host,
    address: formatInterfaceAddress(at.address, at.prefix),
    subnet: at.subnet.cidr,
    ipv6: at.address.family === 6,
    kind: AddressKind.ADDRESS_KIND_ENDPOINT,
  };
}

/** The gateway's and aux addresses' records of one subnet. */
function keptRecords(network: IpamNetwork, subnet: AllocatedSubnet): AddressRecord[] {
  const prefix = parsePrefix(subnet.cidr);
  const record = (address: string, kind: AddressKind, name?: string): AddressRecord => ({
    networkId: network.networkId,
    incarnation: network.incarnation,
    endpointId: "",
    host: "",
    address: `${address}/${prefix.length}`,
    subnet: subnet.cidr,
    ipv6: subnet.ipv6,
    kind,
    name,
  });
  const aux = Object.entries(subnet.pool?.auxAddresses ?? {}).map(([name, address]) => record(address, AddressKind.ADDRESS_KIND_AUX, name));
  return subnet.gateway ? [record(subnet.gateway, AddressKind.ADDRESS_KIND_GATEWAY), ...aux] : aux;
}

function isSameHolder(a: AddressRecord, b: AddressRecord): boolean {
  return a.incarnation === b.incarnation && a.endpointId === b.endpointId && a.kind === b.kind && a.address === b.address;
}

function describeHolder(record: AddressRecord): string {
  if (record.kind === AddressKind.ADDRESS_KIND_GATEWAY) return `the gateway of subnet ${record.subnet}`;
  if (record.kind === AddressKind.ADDRESS_KIND_AUX) return `aux address ${record.name ?? ""} of subnet ${record.subnet}`;
  return `endpoint ${record.endpointId}`;
}

/** A retry for an endpoint that already has an address must not silently ask for a different one. */
function refuseOtherStatic(held: AddressRecord, wanted: ResolvedAddress | undefined, endpointId: string): AddressRecord {
  if (wanted && parseCidr(held.address).address.value !== wanted.address.value) {
    throw alreadyExists(`endpoint ${endpointId} already holds ${held.address} in network ${held.networkId}; release it first`);
  }
  return held;
}

function answerFor(record: AddressRecord): AllocateAddressResponse {
  return { address: record.address, subnet: record.subnet };
}
