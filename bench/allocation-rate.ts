// IPAM's allocation rate as bench:ipam measures it, shared with bench:scale (which takes the rate at 16
// clients as the ceiling an attach can approach): clients that allocate an address for a new container and
// release an old one, and the figures of one level of concurrency.
import type { IpamCalls } from "../services/ipam/client.js";

const HELD_PER_CLIENT = 8;
/** Unmeasured allocations before the first level: connections, JIT and page cache warm for every system. */
export const WARM_UP_CYCLES = 200;
/** Every container of the run has its own id: a reused one would measure re-creating a deleted key. */
let containerSerial = 0;

/** One system under test: allocate an address for a container, and release it. */
export interface Allocator {
  name: string;
  allocate(container: string): Promise<string>;
  release(container: string): Promise<void>;
}

export interface LevelResult {
  clients: number;
  allocations: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  duplicates: number;
}

/**
 * `clients` loops share `cycles` allocations; each client keeps its last HELD_PER_CLIENT containers
 * and releases the oldest one after each allocation. An address counts as held from the moment its
 * allocation returns until its release is sent; handing it to anyone else meanwhile is a duplicate.
 * Latency is the allocation's; the rate counts the releases' time too.
 */
export async function runLevel(allocator: Allocator, clients: number, cycles: number): Promise<LevelResult> {
  const held = new Map<string, string>();
  const latencies: number[] = [];
  let duplicates = 0;
  let unstarted = cycles;
  const release = async (container: string, address: string) => {
    held.delete(address);
    await allocator.release(container);
  };
  const runClient = async () => {
    const mine: [string, string][] = [];
    while (unstarted > 0) {
      unstarted--;
      const container = `c${containerSerial++}`;
      const started = performance.now();
      const address = await allocator.allocate(container);
      latencies.push(performance.now() - started);
      if (held.has(address)) duplicates++;
      held.set(address, container);
      mine.push([container, address]);
      if (mine.length > HELD_PER_CLIENT) await release(...mine.shift()!);
    }
    for (const [container, address] of mine) await release(container, address);
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: clients }, runClient));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    clients,
    allocations: latencies.length,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    duplicates,
  };
}

/** The q-quantile of ascending `sorted`, 0 when it is empty. */
export function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

/** Trellis IPAM over gRPC, allocating in `networkId` (made by the caller with allocateSubnets) for host `host`. */
export function trellisAllocator(client: IpamCalls, networkId: string, host: string): Allocator {
  return {
    name: "trellis",
    allocate: async (container) => (await client.allocateAddress({ networkId, endpointId: container, host, ipv6: false, address: "" })).address,
    release: (container) => client.releaseAddresses(networkId, container),
  };
}

export function printLevel(name: string, result: LevelResult): void {
  console.log(
    `${name.padEnd(10)} clients ${String(result.clients).padStart(2)}: ${result.perSecond.toFixed(0).padStart(6)} allocations/s, ` +
      `p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, duplicates ${result.duplicates} (${result.allocations} allocations)`,
  );
}
