import type { KV, KvWatchEntry } from "@nats-io/kv";
import { contains, parseCidr, parsePrefix, type Family, type Prefix } from "../../libs/ipmath/index.js";
import { AddressKind, AddressRecord, BlockRecord, IpamRegistry, type IpamNetwork } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { familyOf } from "./allocator.js";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { isAddressKey, isBlockKey, REGISTRY_KEY, VIEWED_KEYS } from "./keys.js";
import { addressCodec, blockCodec } from "./store.js";

/** A record as the view last saw it, with the revision a compare-and-set needs. */
export interface Held<T> {
  key: string;
  record: T;
  revision: number;
}

export interface OwnedBlock extends Held<BlockRecord> {
  prefix: Prefix;
}

/** The addresses and blocks of one network that the view believes held. */
interface NetworkHoldings {
  taken: Record<Family, Set<bigint>>;
  /** Per `${family}|${cidr}`: every usable address below this one is believed taken. */
  scanStart: Map<string, bigint>;
  /** Address keys by the endpoint that holds them. */
  keysByEndpoint: Map<string, Set<string>>;
  /** Block keys of the network. */
  blockKeys: Set<string>;
}

/** A release seen: the delete marker's revision (writing the key again expects it) and when it was made. */
interface Freed {
  revision: number;
  at: number;
}


/**
 * An in-memory copy of the bucket's registry, address and block keys, fed by a KV watch and by this
 * replica's own writes. It is only a hint to pick candidates fast and to know the revision a write
 * expects: it may lag, and the KV server's conditional write is the arbiter.
 */
export class AllocationView {
  private registry = IpamRegistry.fromPartial({});
  private readonly addresses = new Map<string, Held<AddressRecord>>();
  private readonly blocks = new Map<string, OwnedBlock>();
  private readonly freed = new Map<string, Freed>();
  private readonly holdings = new Map<string, NetworkHoldings>();
  private follower: FollowedBucket | undefined;

  network(networkId: string): IpamNetwork | undefined {
    return this.registry.networks.find((network) => network.networkId === networkId);
  }

  registeredNetworks(): readonly IpamNetwork[] {
    return this.registry.networks;
  }

  /**
   * How many addresses of `subnet` the network holds: the network's count of its family when it has one subnet
   * of that family (the usual case, no walk), else a walk of the network's held addresses.
   */
  takenIn(networkId: string, subnet: Prefix): number {
    const taken = this.holdingsOf(networkId).taken[subnet.family];
    const network = this.network(networkId);
    const sameFamily = network?.subnets.filter((candidate) => familyOf(candidate.ipv6) === subnet.family).length ?? 0;
    if (sameFamily <= 1) return taken.size;
    let count = 0;
    for (const value of taken) if (contains(subnet, { family: subnet.family, value })) count++;
    return count;
  }

  /** How many blocks each host holds. */
  blockCountsByHost(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const block of this.blocks.values()) counts.set(block.record.host, (counts.get(block.record.host) ?? 0) + 1);
    return counts;
  }

  setRegistry(registry: IpamRegistry): void {
    this.registry = registry;
  }

  /**
   * What creating `key` again must expect: its delete marker's revision, or 0 when the view saw none.
   * Never a live value's revision, which would let the write replace a holder.
   */
  freedRevision(key: string): number {
    return this.freed.get(key)?.revision ?? 0;
  }

  /** When the key was last seen released (ms since the epoch); undefined when never. */
  freedAt(key: string): number | undefined {
    return this.freed.get(key)?.at;
  }

  /** How many keys starting with `prefix` were released at `since` or later. */
  countFreedSince(prefix: string, since: number): number {
    let count = 0;
    for (const [key, { at }] of this.freed) if (at >= since && key.startsWith(prefix)) count++;
    return count;
  }

  blockHolder(key: string): OwnedBlock | undefined {
    return this.blocks.get(key);
  }

  addressHolder(key: string): Held<AddressRecord> | undefined {
    return this.addresses.get(key);
  }

  noteHeld(key: string, record: AddressRecord, revision: number): void {
    const previous = this.addresses.get(key);
    if ((previous && previous.revision >= revision) || this.freedRevision(key) > revision) return;
    if (previous) this.forgetAddress(key, previous.record);
    this.freed.delete(key);
    this.addresses.set(key, { key, record, revision });
    const { family, value } = valueOf(record);
    const holdings = this.holdingsOf(record.networkId);
    holdings.taken[family].add(value);
    const keys = holdings.keysByEndpoint.get(record.endpointId) ?? new Set<string>();
    holdings.keysByEndpoint.set(record.endpointId, keys.add(key));
  }

  noteFreed(key: string, revision: number, at = Date.now()): void {
    const previous = this.addresses.get(key);
    if (previous && previous.revision > revision) return;
    if (previous) this.forgetAddress(key, previous.record);
    this.noteMarker(key, revision, at);
  }

  noteBlockHeld(key: string, record: BlockRecord, revision: number): void {
    const previous = this.blocks.get(key);
    if ((previous && previous.revision >= revision) || this.freedRevision(key) > revision) return;
    this.freed.delete(key);
    this.blocks.set(key, { key, record, revision, prefix: parsePrefix(record.cidr) });
    this.holdingsOf(record.networkId).blockKeys.add(key);
  }

  noteBlockFreed(key: string, revision: number, at = Date.now()): void {
    const previous = this.blocks.get(key);
    if (previous && previous.revision > revision) return;
    if (previous) {
      this.blocks.delete(key);
      this.holdingsOf(previous.record.networkId).blockKeys.delete(key);
    }
    this.noteMarker(key, revision, at);
  }

  private noteMarker(key: string, revision: number, at: number): void {
    if (this.freedRevision(key) < revision) this.freed.set(key, { revision, at });
  }

  isTaken(networkId: string, family: Family, value: bigint): boolean {
    return this.holdingsOf(networkId).taken[family].has(value);
  }

  scanStart(networkId: string, family: Family, cidr: string): bigint {
    return this.holdingsOf(networkId).scanStart.get(`${family}|${cidr}`) ?? 0n;
  }

  setScanStart(networkId: string, family: Family, cidr: string, start: bigint): void {
    this.holdingsOf(networkId).scanStart.set(`${family}|${cidr}`, start);
  }

  recordsOfEndpoint(networkId: string, endpointId: string): Held<AddressRecord>[] {
    const keys = this.holdingsOf(networkId).keysByEndpoint.get(endpointId) ?? new Set<string>();
    return [...keys].flatMap((key) => this.addresses.get(key) ?? []);
  }

  /** The network's blocks of one family, current incarnation only, lowest first. */
  blocksOf(network: IpamNetwork, family: Family): OwnedBlock[] {
    return [...this.holdingsOf(network.networkId).blockKeys]
      .flatMap((key) => this.blocks.get(key) ?? [])
      .filter((block) => block.record.incarnation === network.incarnation && familyOf(block.record.ipv6) === family)
      .sort((a, b) => (a.prefix.network < b.prefix.network ? -1 : 1));
  }

  /** Whether some endpoint of the network's current incarnation holds an address inside `block`. */
  hasEndpointIn(network: IpamNetwork, block: Prefix): boolean {
    for (const keys of this.holdingsOf(network.networkId).keysByEndpoint.values()) {
      for (const key of keys) {
        const held = this.addresses.get(key)?.record;
        if (!held || held.kind !== AddressKind.ADDRESS_KIND_ENDPOINT || held.incarnation !== network.incarnation) continue;
        if (contains(block, parseCidr(held.address).address)) return true;
      }
    }
    return false;
  }

  /** Every endpoint's address of a registered network's current incarnation. */
  *endpointAddresses(): Generator<Held<AddressRecord>> {
    for (const held of this.addresses.values()) {
      if (held.record.kind === AddressKind.ADDRESS_KIND_ENDPOINT && this.network(held.record.networkId)?.incarnation === held.record.incarnation) yield held;
    }
  }

  /** Blocks of registered networks in which no endpoint holds an address. */
  emptyBlocks(): OwnedBlock[] {
    return [...this.blocks.values()].filter((block) => {
      const network = this.network(block.record.networkId);
      return network?.incarnation === block.record.incarnation && !this.hasEndpointIn(network, block.prefix);
    });
  }

  /** Replaces what the view holds for one network's addresses with what the bucket holds (after a full scan). */
  resetAddresses(networkId: string, held: Held<AddressRecord>[]): void {
    const holdings = this.holdingsOf(networkId);
    for (const keys of holdings.keysByEndpoint.values()) for (const key of keys) this.addresses.delete(key);
    holdings.keysByEndpoint.clear();
    holdings.taken = { 4: new Set(), 6: new Set() };
    holdings.scanStart.clear();
    for (const entry of held) this.noteHeld(entry.key, entry.record, entry.revision);
  }

  /** Follows the bucket until `stop`; resolves once the bucket's current content is loaded. */
  async start(kv: KV): Promise<void> {
    this.follower = await FollowedBucket.start(kv, { bucketName: Buckets.ipam, filter: VIEWED_KEYS, onEntry: (entry) => this.apply(entry) });
  }

  stop(): void {
    this.follower?.stop();
  }

  /**
   * Waits until the view holds every write the bucket had when called: what a replica needs before it
   * trusts the view's silence (no address known for an endpoint) over a lagging watch.
   */
  async catchUp(): Promise<void> {
    if (!this.follower) throw new Error("failed to catch up with the ipam bucket: the view was never started");
    await this.follower.catchUp();
  }

  private apply(entry: KvWatchEntry): void {
    const removed = entry.operation !== "PUT";
    if (entry.key === REGISTRY_KEY) {
      this.registry = removed ? IpamRegistry.fromPartial({}) : IpamRegistry.decode(entry.value);
    } else if (isAddressKey(entry.key)) {
      if (removed) this.noteFreed(entry.key, entry.revision, entry.created.getTime());
      // This replica's own writes come back through the watch: known already, not decoded again.
      else if ((this.addresses.get(entry.key)?.revision ?? 0) < entry.revision) this.noteHeld(entry.key, addressCodec.decode(entry.value), entry.revision);
    } else if (isBlockKey(entry.key)) {
      if (removed) this.noteBlockFreed(entry.key, entry.revision, entry.created.getTime());
      else this.noteBlockHeld(entry.key, blockCodec.decode(entry.value), entry.revision);
    }
  }

  private forgetAddress(key: string, record: AddressRecord): void {
    this.addresses.delete(key);
    const { family, value } = valueOf(record);
    const holdings = this.holdingsOf(record.networkId);
    holdings.taken[family].delete(value);
    const keys = holdings.keysByEndpoint.get(record.endpointId);
    keys?.delete(key);
    if (keys?.size === 0) holdings.keysByEndpoint.delete(record.endpointId);
    for (const [scanKey, start] of holdings.scanStart) {
      if (scanKey.startsWith(`${family}|`) && value < start) holdings.scanStart.set(scanKey, value);
    }
  }

  private holdingsOf(networkId: string): NetworkHoldings {
    let holdings = this.holdings.get(networkId);
    if (!holdings) {
      holdings = { taken: { 4: new Set(), 6: new Set() }, scanStart: new Map(), keysByEndpoint: new Map(), blockKeys: new Set() };
      this.holdings.set(networkId, holdings);
    }
    return holdings;
  }
}

function valueOf(record: AddressRecord): { family: Family; value: bigint } {
  const { address } = parseCidr(record.address);
  return { family: familyOf(record.ipv6), value: address.value };
}
