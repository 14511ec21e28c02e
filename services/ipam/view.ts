import type { KV, KvWatchEntry } from "@nats-io/kv";
import { parseCidr, type Family } from "../../libs/ipmath/index.js";
import { AddressRecord, IpamRegistry, type IpamNetwork } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { familyOf } from "./allocator.js";
import { isAddressKey, REGISTRY_KEY } from "./keys.js";
import { addressCodec } from "./store.js";

/** The addresses of one network that the view believes held, by family. */
interface NetworkHoldings {
  taken: Record<Family, Set<bigint>>;
  /** Per `${family}|${cidr}`: every usable address below this one is believed taken. */
  scanStart: Map<string, bigint>;
  /** Address keys by the endpoint that holds them. */
  keysByEndpoint: Map<string, Set<string>>;
}

/**
 * An in-memory copy of the bucket, fed by a KV watch and by this replica's own writes. It is only a
 * hint to pick candidates fast: it may lag, and the KV server's create-only write is the arbiter.
 */
export class AllocationView {
  private registry = IpamRegistry.fromPartial({});
  private readonly records = new Map<string, AddressRecord>();
  private readonly holdings = new Map<string, NetworkHoldings>();
  private stopped = false;
  private stopWatch: (() => void) | undefined;

  network(networkId: string): IpamNetwork | undefined {
    return this.registry.networks.find((network) => network.networkId === networkId);
  }

  setRegistry(registry: IpamRegistry): void {
    this.registry = registry;
  }

  noteHeld(key: string, record: AddressRecord): void {
    const previous = this.records.get(key);
    if (previous && isSameHolder(previous, record)) return;
    this.noteFreed(key);
    this.records.set(key, record);
    const { family, value } = valueOf(record);
    const holdings = this.holdingsOf(record.networkId);
    holdings.taken[family].add(value);
    const keys = holdings.keysByEndpoint.get(record.endpointId) ?? new Set<string>();
    holdings.keysByEndpoint.set(record.endpointId, keys.add(key));
  }

  noteFreed(key: string): void {
    const record = this.records.get(key);
    if (!record) return;
    this.records.delete(key);
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

  isTaken(networkId: string, family: Family, value: bigint): boolean {
    return this.holdingsOf(networkId).taken[family].has(value);
  }

  scanStart(networkId: string, family: Family, cidr: string): bigint {
    return this.holdingsOf(networkId).scanStart.get(`${family}|${cidr}`) ?? 0n;
  }

  setScanStart(networkId: string, family: Family, cidr: string, start: bigint): void {
    this.holdingsOf(networkId).scanStart.set(`${family}|${cidr}`, start);
  }

  recordsOfEndpoint(networkId: string, endpointId: string): [string, AddressRecord][] {
    const keys = this.holdingsOf(networkId).keysByEndpoint.get(endpointId) ?? new Set<string>();
    return [...keys].flatMap((key) => {
      const record = this.records.get(key);
      return record ? [[key, record] as [string, AddressRecord]] : [];
    });
  }

  /** Replaces what the view holds for one network with what the bucket holds (after a full scan). */
  resetNetwork(networkId: string, held: [string, AddressRecord][]): void {
    for (const keys of this.holdingsOf(networkId).keysByEndpoint.values()) for (const key of keys) this.records.delete(key);
    this.holdings.delete(networkId);
    for (const [key, record] of held) this.noteHeld(key, record);
  }

  /** Follows the bucket until `stop`; a watch that ends (server restart) is opened again. */
  start(kv: KV): void {
    void this.followBucket(kv);
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch?.();
  }

  private async followBucket(kv: KV): Promise<void> {
    while (!this.stopped) {
      try {
        const watcher = await kv.watch({ key: ">" });
        this.stopWatch = () => watcher.stop();
        if (this.stopped) watcher.stop();
        for await (const entry of watcher) this.apply(entry);
      } catch {
        // The bucket is unreachable for now (server restarting): the view only lags, try again.
      }
      if (!this.stopped) await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  private apply(entry: KvWatchEntry): void {
    const removed = entry.operation !== "PUT";
    if (entry.key === REGISTRY_KEY) {
      this.registry = removed ? IpamRegistry.fromPartial({}) : IpamRegistry.decode(entry.value);
    } else if (isAddressKey(entry.key)) {
      if (removed) this.noteFreed(entry.key);
      else this.noteHeld(entry.key, addressCodec.decode(entry.value));
    }
  }

  private holdingsOf(networkId: string): NetworkHoldings {
    let holdings = this.holdings.get(networkId);
    if (!holdings) {
      holdings = { taken: { 4: new Set(), 6: new Set() }, scanStart: new Map(), keysByEndpoint: new Map() };
      this.holdings.set(networkId, holdings);
    }
    return holdings;
  }
}

function isSameHolder(a: AddressRecord, b: AddressRecord): boolean {
  return a.incarnation === b.incarnation && a.endpointId === b.endpointId && a.kind === b.kind;
}

function valueOf(record: AddressRecord): { family: Family; value: bigint } {
  const { address } = parseCidr(record.address);
  return { family: familyOf(record.ipv6), value: address.value };
}
