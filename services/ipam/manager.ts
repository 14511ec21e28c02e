import { randomBytes, randomUUID } from "node:crypto";
import type { Versioned } from "../../libs/bus/kv.js";
import { contains, formatAddress, formatInterfaceAddress, formatPrefix, parseCidr, parsePrefix, type Address, type Family, type Prefix } from "../../libs/ipmath/index.js";
import {
  AddressKind,
  type AddressRecord,
  type BlockRecord,
  type ListBlocksResponse,
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
import { aborted, alreadyExists, invalidArgument, notFound, resourceExhausted } from "../../libs/grpc/status-error.js";
import { blockArea, blockOf, blocksIn, boundsInBlock, resolveHostBlocks } from "./blocks.js";
import { addressKey, allocationMessageId, blockKey, networkAddressesFilter, networkAddressesPrefix, networkBlocksFilter } from "./keys.js";
import type { IpamStore } from "./store.js";
import type { AllocationView, Held, OwnedBlock } from "./view.js";

/** How often one step gives way to a concurrent writer before it reports ABORTED. */
const MAX_ATTEMPTS = 20;

export interface AddressManagerOptions {
  /**
   * How long a released address is not handed out automatically (0: free again at once). Neighbours'
   * ARP and conntrack entries for it age out meanwhile; a static request may still take it.
   */
  releaseCooldownMs: number;
}

/**
 * The IPAM operations. Validation runs before any write; every write is create-only or a
 * compare-and-set, so replicas sharing one bucket never hand out one address (or block) twice.
 */
export class AddressManager {
  /** Candidates this replica is trying right now, so that its concurrent calls try different ones. */
  private readonly pending = new Set<string>();
  /** Block claims under way per network, family and host: a host's concurrent calls claim one block, not one each. */
  private readonly blockClaims = new Map<string, Promise<boolean>>();

  constructor(
    private readonly store: IpamStore,
    private readonly view: AllocationView,
    private readonly options: AddressManagerOptions,
  ) {}

  async allocateSubnets(request: AllocateSubnetsRequest): Promise<AllocatedSubnet[]> {
    const plans = planSubnets(request);
    const hostBlocks = request.hostBlocks ? resolveHostBlocks(request.hostBlocks) : undefined;
    const incarnation = randomUUID();
    const proposedUla = ulaPrefixFromRandom(randomBytes(5));
    const registry = await this.store.updateRegistry((current) =>
      registerNetwork(current, request, plans, { networkId: request.networkId, incarnation, subnets: [], hostBlocks }, proposedUla),
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
    const held = await this.heldByEndpoint(network, request.endpointId, family);
    if (held) return answerFor(refuseOtherStatic(held, wanted, request.endpointId));
    const claimed = wanted ? await this.claimStatic(network, request, wanted) : await this.claimAutomatic(network, request, family);
    if (network.hostBlocks) await this.recordIfBorrowed(network, claimed);
    return answerFor(claimed);
  }

  /**
   * Releases every address the endpoint holds in the network. When the view knows none, it may only lag
   * behind an allocation made through another replica: it catches up with the bucket and looks again.
   */
  async releaseAddresses(networkId: string, endpointId: string): Promise<void> {
    requireId("network_id", networkId);
    requireId("endpoint_id", endpointId);
    let held = this.endpointRecordsOf(networkId, endpointId);
    if (held.length === 0) {
      await this.view.catchUp();
      held = this.endpointRecordsOf(networkId, endpointId);
    }
    await Promise.all(held.map(({ key }) => this.releaseIfHeldBy(key, endpointId)));
  }

  private endpointRecordsOf(networkId: string, endpointId: string): Held<AddressRecord>[] {
    return this.view.recordsOfEndpoint(networkId, endpointId).filter(({ record }) => record.kind === AddressKind.ADDRESS_KIND_ENDPOINT);
  }

  async listAllocations(networkId: string): Promise<Allocation[]> {
    requireId("network_id", networkId);
    const network = await this.requireNetwork(networkId);
    const records = await this.readNetworkRecords(networkId);
    return records
      .filter(({ record }) => record.incarnation === network.incarnation)
      .map(({ record }) => ({
        networkId: record.networkId,
        endpointId: record.endpointId,
        host: record.host,
        address: record.address,
        subnet: record.subnet,
        kind: record.kind,
      }));
  }

  /** Read from the bucket, not the view: route distribution trusts it to decide what a host may announce. */
  async listBlocks(networkId: string, host: string): Promise<ListBlocksResponse> {
    requireId("network_id", networkId);
    const network = await this.requireNetwork(networkId);
    const blockKeys = await this.store.listKeys(networkBlocksFilter(networkId));
    const blocks = (await Promise.all(blockKeys.map((key) => this.store.getBlock(key))))
      .flatMap((entry) => (entry && entry.value.incarnation === network.incarnation ? [entry.value] : []));
    const endpoints = (await this.readNetworkRecords(networkId))
      .map(({ record }) => record)
      .filter((record) => record.incarnation === network.incarnation && record.kind === AddressKind.ADDRESS_KIND_ENDPOINT);
    return listBlocksAnswer(blocks, endpoints, host);
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

  /** The address the endpoint holds in this family, as the view believes and a read confirms. */
  private async heldByEndpoint(network: IpamNetwork, endpointId: string, family: Family): Promise<AddressRecord | undefined> {
    for (const { key, record } of this.endpointRecordsOf(network.networkId, endpointId)) {
      if (familyOf(record.ipv6) !== family || record.incarnation !== network.incarnation) continue;
      // The view may lag behind a release made through another replica.
      const current = await this.store.getRecord(key);
      if (current && isSameHolder(current.value, record)) return current.value;
    }
    return undefined;
  }

  private async claimStatic(network: IpamNetwork, request: AllocateAddressRequest, wanted: ResolvedAddress): Promise<AddressRecord> {
    // In an L3 network a static address takes its block for the host if nobody owns it; else it is borrowed.
    const block = network.hostBlocks ? blockOf(network, wanted.subnet, wanted.prefix, wanted.address) : undefined;
    if (block && !this.view.blockHolder(blockKey(network.networkId, block))) await this.claimBlock(network, block, request.host);
    const claim = await this.claimAddress(endpointRecord(network, request, wanted));
    if ("held" in claim) {
      const name = claim.held ? describeHolder(claim.held) : "another endpoint";
      throw alreadyExists(`address ${formatAddress(wanted.address)} is already in use by ${name} in network ${network.networkId}`);
    }
    return refuseOtherStatic(claim.record, wanted, request.endpointId);
  }

  private claimAutomatic(network: IpamNetwork, request: AllocateAddressRequest, family: Family): Promise<AddressRecord> {
    const pick = network.hostBlocks
      ? () => this.hostBlockCandidate(network, family, request)
      : async () => this.nextCandidate(network, family);
    return this.claimFirstFree(network, request, family, pick);
  }

  /** Claims candidates until one sticks; a pool that looks full is re-read once before it is called full. */
  private async claimFirstFree(
    network: IpamNetwork,
    request: AllocateAddressRequest,
    family: Family,
    pick: () => Promise<ResolvedAddress | undefined>,
  ): Promise<AddressRecord> {
    let resynced = false;
    for (;;) {
      const candidate = await pick();
      if (!candidate) {
        if (resynced) throw resourceExhausted(this.poolFullMessage(network, family));
        await this.resyncAddresses(network);
        resynced = true;
        continue;
      }
      const record = await this.tryCandidate(network, request, candidate);
      if (record) return record;
    }
  }

  /**
   * The lowest free address of the host's blocks; when they are full, of a newly claimed block; when
   * no block is free, a single address borrowed from another host's block.
   */
  private async hostBlockCandidate(network: IpamNetwork, family: Family, request: AllocateAddressRequest): Promise<ResolvedAddress | undefined> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS * 10; attempt++) {
      const own = this.view.blocksOf(network, family).filter((block) => block.record.host === request.host && !block.record.borrowed);
      const candidate = this.candidateIn(network, family, own.map((block) => block.prefix));
      if (candidate) return candidate;
      if (!(await this.claimFreeBlock(network, family, request.host))) return this.nextCandidate(network, family);
    }
    throw aborted(`failed to allocate an address for endpoint ${request.endpointId}: too many concurrent changes, try again`);
  }

  private poolFullMessage(network: IpamNetwork, family: Family): string {
    const full = poolFullMessage(subnetsOfFamily(network, family).map(({ subnet }) => subnet));
    if (this.options.releaseCooldownMs === 0) return full;
    const cooling = this.view.countFreedSince(networkAddressesPrefix(network.networkId), Date.now() - this.options.releaseCooldownMs);
    if (cooling === 0) return full;
    const seconds = this.options.releaseCooldownMs / 1000;
    return `${full} (${cooling} released ${cooling === 1 ? "address is in its" : "addresses are in their"} ${seconds} s release cooldown)`;
  }

  /** The view may lag behind releases made through another replica: look at the bucket itself. */
  private async resyncAddresses(network: IpamNetwork): Promise<void> {
    this.view.resetAddresses(network.networkId, await this.readNetworkRecords(network.networkId));
  }

  private async tryCandidate(network: IpamNetwork, request: AllocateAddressRequest, candidate: ResolvedAddress): Promise<AddressRecord | undefined> {
    const pendingKey = pendingKeyOf(network.networkId, candidate.address.family, candidate.address.value);
    this.pending.add(pendingKey);
    try {
      const claim = await this.claimAddress(endpointRecord(network, request, candidate), true);
      return "record" in claim ? claim.record : undefined;
    } finally {
      this.pending.delete(pendingKey);
    }
  }

  /** Lowest usable address not believed taken, first subnet first. */
  private nextCandidate(network: IpamNetwork, family: Family): ResolvedAddress | undefined {
    const { networkId } = network;
    for (const { subnet, prefix } of subnetsOfFamily(network, family)) {
      const bounds = poolBounds(subnet, prefix);
      const firstFree = lowestFree(bounds, this.view.scanStart(networkId, family, subnet.cidr), this.freeInView(network, family, subnet));
      if (firstFree === undefined) continue;
      this.view.setScanStart(networkId, family, subnet.cidr, firstFree);
      const value = lowestFree(bounds, firstFree, this.availableInView(network, family, subnet));
      if (value !== undefined) return { address: { family, value }, subnet, prefix };
    }
    return undefined;
  }

  /** Lowest usable address of the given blocks not believed taken nor being tried. */
  private candidateIn(network: IpamNetwork, family: Family, blocks: Prefix[]): ResolvedAddress | undefined {
    for (const { subnet, prefix } of subnetsOfFamily(network, family)) {
      const isAvailable = this.availableInView(network, family, subnet);
      const pool = poolBounds(subnet, prefix);
      for (const block of blocks) {
        const bounds = boundsInBlock(pool, block);
        if (!bounds || !contains(prefix, { family, value: block.network })) continue;
        const value = lowestFree(bounds, bounds.first, isAvailable);
        if (value !== undefined) return { address: { family, value }, subnet, prefix };
      }
    }
    return undefined;
  }

  /** Not reserved and not believed taken. */
  private freeInView(network: IpamNetwork, family: Family, subnet: AllocatedSubnet): (value: bigint) => boolean {
    const reserved = reservedValues(subnet);
    return (value) => !reserved.has(value) && !this.view.isTaken(network.networkId, family, value);
  }

  /** Free, not being tried by a concurrent call, and not released within the cooldown. */
  private availableInView(network: IpamNetwork, family: Family, subnet: AllocatedSubnet): (value: bigint) => boolean {
    const isFree = this.freeInView(network, family, subnet);
    const isTried = (value: bigint) => this.pending.has(pendingKeyOf(network.networkId, family, value));
    if (this.options.releaseCooldownMs === 0) return (value) => isFree(value) && !isTried(value);
    const now = Date.now();
    return (value) => isFree(value) && !isTried(value) && !this.isCoolingDown(addressKey(network.networkId, { family, value }), now);
  }

  /**
   * Claims the lowest block nobody owns that has a free address, for `host`. False when there is none.
   * Concurrent calls for one host wait for the claim under way and then look at their blocks again.
   */
  private claimFreeBlock(network: IpamNetwork, family: Family, host: string): Promise<boolean> {
    const claimKey = `${network.networkId}|${family}|${host}`;
    const underWay = this.blockClaims.get(claimKey);
    if (underWay) return underWay;
    const claiming = (async () => {
      for (const { subnet, prefix } of subnetsOfFamily(network, family)) {
        for (const block of blocksIn(network, blockArea(subnet, prefix))) {
          if (this.view.blockHolder(blockKey(network.networkId, block)) || !this.candidateIn(network, family, [block])) continue;
          if (await this.claimBlock(network, block, host)) return true;
        }
      }
      return false;
    })().finally(() => this.blockClaims.delete(claimKey));
    this.blockClaims.set(claimKey, claiming);
    return claiming;
  }

  /**
   * An address outside every block of its endpoint's host (borrowed from another host's block, as a static one
   * may be) gets a block record of its own, a /32 or /128 marked borrowed: block records are what agents believe
   * a host may announce. A retry finds the record already there.
   */
  private async recordIfBorrowed(network: IpamNetwork, record: AddressRecord): Promise<void> {
    const { address } = parseCidr(record.address);
    const home = subnetsOfFamily(network, address.family).find(({ prefix }) => contains(prefix, address));
    const block = home && blockOf(network, home.subnet, home.prefix, address);
    if (!block || this.view.blockHolder(blockKey(network.networkId, block))?.record.host === record.host) return;
    const single: Prefix = { family: address.family, network: address.value, length: address.family === 4 ? 32 : 128 };
    if (this.view.blockHolder(blockKey(network.networkId, single))?.record.host === record.host) return;
    await this.claimBlock(network, single, record.host, true);
  }

  /** A released borrowed address's own block record goes with it. */
  private async forgetBorrowed(network: IpamNetwork, address: Address): Promise<void> {
    const key = blockKey(network.networkId, { family: address.family, network: address.value, length: address.family === 4 ? 32 : 128 });
    const owned = this.view.blockHolder(key);
    if (!owned?.record.borrowed) return;
    const marker = await this.store.deleteRecord(key, owned.revision);
    if (marker !== undefined) this.view.noteBlockFreed(key, marker);
  }

  /** Create-only on the block's key: two replicas never give one block to two hosts. */
  private async claimBlock(network: IpamNetwork, block: Prefix, host: string, borrowed = false): Promise<boolean> {
    const key = blockKey(network.networkId, block);
    const record: BlockRecord = {
      networkId: network.networkId,
      incarnation: network.incarnation,
      host,
      cidr: formatPrefix(block),
      ipv6: block.family === 6,
      borrowed,
    };
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const result = await this.store.claimBlock(key, record, this.view.freedRevision(key));
      if (result.outcome === "freed") {
        this.view.noteBlockFreed(key, result.revision, result.at);
        continue;
      }
      if (result.outcome === "won") this.view.noteBlockHeld(key, record, result.revision);
      else if (result.outcome === "held" && result.holder) this.view.noteBlockHeld(key, result.holder.value, result.holder.revision);
      return result.outcome === "won";
    }
    throw aborted(`failed to claim block ${record.cidr} for host ${host}: too many concurrent changes, try again`);
  }

  /** After a release: a block none of whose addresses is held goes back to the pool. */
  private async returnBlockIfEmpty(network: IpamNetwork, address: Address): Promise<void> {
    const home = subnetsOfFamily(network, address.family).find(({ prefix }) => contains(prefix, address));
    const block = home && blockOf(network, home.subnet, home.prefix, address);
    if (!block) return;
    const key = blockKey(network.networkId, block);
    const owned = this.view.blockHolder(key);
    if (!owned || this.view.hasEndpointIn(network, block) || this.isPendingIn(network.networkId, block)) return;
    const marker = await this.store.deleteRecord(key, owned.revision);
    if (marker !== undefined) this.view.noteBlockFreed(key, marker);
  }

  /** The leak collector's way to return a block it saw empty twice. */
  /** True when it returned the block. */
  async returnBlockIfStillEmpty(block: OwnedBlock): Promise<boolean> {
    const network = this.view.network(block.record.networkId);
    if (!network || network.incarnation !== block.record.incarnation) return false;
    if (this.view.hasEndpointIn(network, block.prefix) || this.isPendingIn(network.networkId, block.prefix)) return false;
    const marker = await this.store.deleteRecord(block.key, block.revision);
    if (marker !== undefined) this.view.noteBlockFreed(block.key, marker);
    return marker !== undefined;
  }

  private isPendingIn(networkId: string, block: Prefix): boolean {
    for (const key of this.pending) {
      const [net, family, value] = key.split("|");
      if (net === networkId && Number(family) === block.family && contains(block, { family: block.family, value: BigInt(value!) })) return true;
    }
    return false;
  }

  /**
   * Creates the address's key. An endpoint's allocation is this one write, and its message id names the
   * allocation: JetStream refuses a second write with that id, so a concurrent call for the same endpoint
   * (a retry through another replica, say) finds the first one's address instead of taking a second.
   * A holder from an earlier network of the same id is stale and is replaced. An automatic candidate
   * released within the cooldown counts as held.
   * The answer is the record now held (this one, or the endpoint's written first), or the live holder.
   */
  private async claimAddress(record: AddressRecord, automatic = false): Promise<{ record: AddressRecord } | { held: AddressRecord | undefined }> {
    const key = addressKey(record.networkId, parseCidr(record.address).address);
    const firstId = record.kind === AddressKind.ADDRESS_KIND_ENDPOINT ? allocationMessageId(record) : undefined;
    let messageId = firstId;
    let stale: Versioned<AddressRecord> | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const result = stale
        ? await this.store.replaceRecord(key, record, stale.revision, messageId)
        : await this.store.claimRecord(key, record, this.view.freedRevision(key), messageId);
      stale = undefined;
      switch (result.outcome) {
        case "won":
          this.view.noteHeld(key, record, result.revision);
          return { record };
        case "duplicate": {
          const first = await this.store.recordAt(result.revision);
          if (first) {
            this.view.noteHeld(first.key, first.value, first.revision);
            return { record: first.value };
          }
          // That allocation of the endpoint was released since: the next one has an id of its own.
          messageId = `${firstId}.after.${result.revision}`;
          break;
        }
        case "freed":
          // Released through another replica, which this one's view has not seen yet.
          this.view.noteFreed(key, result.revision, result.at);
          if (automatic && this.isCoolingDown(key, Date.now())) return { held: undefined };
          break;
        case "held":
          if (!result.holder) break;
          this.view.noteHeld(key, result.holder.value, result.holder.revision);
          // Ours already: a retry whose first write the view had not seen, once its message id has expired.
          if (isSameHolder(result.holder.value, record)) return { record: result.holder.value };
          if (result.holder.value.incarnation === record.incarnation) return { held: result.holder.value };
          stale = result.holder;
      }
    }
    throw aborted(`failed to claim ${record.address}: too many concurrent changes, try again`);
  }

  private isCoolingDown(key: string, now: number): boolean {
    const freedAt = this.options.releaseCooldownMs > 0 ? this.view.freedAt(key) : undefined;
    return freedAt !== undefined && now - freedAt < this.options.releaseCooldownMs;
  }

  /** Deletes the address's key if `endpointId` holds it; the view's revision first, a read only if that is outdated. */
  private async releaseIfHeldBy(key: string, endpointId: string): Promise<void> {
    const seen = this.view.addressHolder(key);
    // The view may lag: only its belief that the endpoint holds the key spares a read.
    let holder = seen?.record.endpointId === endpointId ? toVersioned(seen) : undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0 || !holder) holder = await this.store.getRecord(key);
      if (!holder || holder.value.endpointId !== endpointId || holder.value.kind !== AddressKind.ADDRESS_KIND_ENDPOINT) return;
      const marker = await this.store.deleteRecord(key, holder.revision);
      if (marker !== undefined) {
        this.view.noteFreed(key, marker);
        const network = this.view.network(holder.value.networkId);
        if (network?.hostBlocks && network.incarnation === holder.value.incarnation) {
          await this.forgetBorrowed(network, parseCidr(holder.value.address).address);
          await this.returnBlockIfEmpty(network, parseCidr(holder.value.address).address);
        }
        return;
      }
    }
    throw aborted(`failed to release ${key}: too many concurrent changes, try again`);
  }

  /** Gateways and aux addresses are held like endpoints' ones; ensured on every call, so a retry repairs a crash. */
  private async reserveKeptAddresses(network: IpamNetwork): Promise<void> {
    for (const kept of network.subnets.flatMap((subnet) => keptRecords(network, subnet))) {
      const claim = await this.claimAddress(kept);
      if ("record" in claim) continue;
      throw new Error(`failed to reserve ${kept.address} of network ${network.networkId}: held by ${claim.held ? describeHolder(claim.held) : "nobody"}`);
    }
  }

  /** Deletes the network's records that belong to no current incarnation of it. */
  private async purgeStaleRecords(networkId: string, currentIncarnation: string | undefined): Promise<void> {
    for (const key of await this.store.listKeys(networkAddressesFilter(networkId))) {
      const entry = await this.store.getRecord(key);
      if (!entry || entry.value.incarnation === currentIncarnation) continue;
      const marker = await this.store.deleteRecord(key, entry.revision);
      if (marker !== undefined) this.view.noteFreed(key, marker);
    }
    for (const key of await this.store.listKeys(networkBlocksFilter(networkId))) {
      const entry = await this.store.getBlock(key);
      if (!entry || entry.value.incarnation === currentIncarnation) continue;
      const marker = await this.store.deleteRecord(key, entry.revision);
      if (marker !== undefined) this.view.noteBlockFreed(key, marker);
    }
  }

  private async readNetworkRecords(networkId: string): Promise<Held<AddressRecord>[]> {
    const keys = await this.store.listKeys(networkAddressesFilter(networkId));
    const entries = await Promise.all(keys.map(async (key) => ({ key, entry: await this.store.getRecord(key) })));
    return entries.flatMap(({ key, entry }) => (entry ? [{ key, record: entry.value, revision: entry.revision }] : []));
  }
}

/** The registry change of AllocateSubnets: unchanged (undefined) when the network is registered already. */
function registerNetwork(
  current: IpamRegistry,
  request: AllocateSubnetsRequest,
  plans: SubnetPlan[],
  fresh: IpamNetwork,
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
    networks: [...current.networks, { ...fresh, subnets }],
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

function pendingKeyOf(networkId: string, family: Family, value: bigint): string {
  return `${networkId}|${family}|${value}`;
}

function toVersioned<T>(held: Held<T> | undefined): Versioned<T> | undefined {
  return held && { value: held.record, revision: held.revision };
}

/** Blocks with their owners, and the endpoints' addresses that no block of their own host covers. */
export function listBlocksAnswer(blocks: BlockRecord[], endpoints: AddressRecord[], host: string): ListBlocksResponse {
  // A borrowed address's record is listed as the borrowed address it is, not as a block.
  const owned = blocks.filter((block) => !block.borrowed).map((block) => ({ block, prefix: parsePrefix(block.cidr) }));
  const borrowed = endpoints.flatMap((record) => {
    const { address } = parseCidr(record.address);
    const covered = owned.some(({ block, prefix }) => block.host === record.host && contains(prefix, address));
    return covered ? [] : [{ address: formatAddress(address), host: record.host, endpointId: record.endpointId, ipv6: record.ipv6 }];
  });
  const ofHost = <T extends { host: string }>(items: T[]) => (host ? items.filter((item) => item.host === host) : items);
  return {
    blocks: ofHost(owned.map(({ block }) => ({ cidr: block.cidr, host: block.host, ipv6: block.ipv6 }))).sort((a, b) => a.cidr.localeCompare(b.cidr)),
    borrowed: ofHost(borrowed),
  };
}
