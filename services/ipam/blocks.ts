// Per-host blocks of L3 / L3S networks: which blocks a subnet is cut into and which block an address
// lies in. Pure; the manager claims blocks in the bucket.
import { ADDRESS_BITS, contains, lastAddress, networkMask, parsePrefix, subnetAt, subnetCount, type Address, type Family, type Prefix } from "../../libs/ipmath/index.js";
import type { AllocatedSubnet, HostBlocks, IpamNetwork } from "../../libs/proto/gen/trellis/v1/ipam.js";
import type { Bounds } from "./allocator.js";
import { invalidArgument } from "../../libs/grpc/status-error.js";

/** 64 addresses per block in both families: one route per 64 containers of a host. */
export const DEFAULT_BLOCK_LENGTH: Record<Family, number> = { 4: 26, 6: 122 };

/** The block lengths a network keeps: the asked ones, 0 or absent meaning the default. */
export function resolveHostBlocks(asked: HostBlocks): HostBlocks {
  return { ipv4PrefixLength: resolveLength(4, asked.ipv4PrefixLength), ipv6PrefixLength: resolveLength(6, asked.ipv6PrefixLength) };
}

function resolveLength(family: Family, asked: number | undefined): number {
  if (!asked) return DEFAULT_BLOCK_LENGTH[family];
  if (asked > ADDRESS_BITS[family]) {
    throw invalidArgument(`block prefix length for IPv${family} must be between 1 and ${ADDRESS_BITS[family]}, received: ${asked}`);
  }
  return asked;
}

/** Where blocks are cut from: the ip range when there is one (automatic addresses come from it), else the subnet. */
export function blockArea(subnet: AllocatedSubnet, prefix: Prefix): Prefix {
  return subnet.pool?.ipRange ? parsePrefix(subnet.pool.ipRange) : prefix;
}

/** A block is never larger than its area: a subnet smaller than a block is one block. */
export function blockLengthIn(network: IpamNetwork, area: Prefix): number {
  const asked = area.family === 4 ? network.hostBlocks?.ipv4PrefixLength : network.hostBlocks?.ipv6PrefixLength;
  return Math.max(area.length, asked ?? DEFAULT_BLOCK_LENGTH[area.family]);
}

export function* blocksIn(network: IpamNetwork, area: Prefix): Generator<Prefix> {
  const length = blockLengthIn(network, area);
  for (let index = 0n; index < subnetCount(area, length); index++) yield subnetAt(area, length, index);
}

/** The block an address lies in, or undefined outside the area blocks are cut from. */
export function blockOf(network: IpamNetwork, subnet: AllocatedSubnet, prefix: Prefix, address: Address): Prefix | undefined {
  const area = blockArea(subnet, prefix);
  if (!contains(area, address)) return undefined;
  const length = blockLengthIn(network, area);
  return { family: address.family, network: address.value & networkMask(address.family, length), length };
}

/** The part of a pool's bounds inside one block, or undefined when they do not meet. */
export function boundsInBlock(pool: Bounds, block: Prefix): Bounds | undefined {
  const first = block.network > pool.first ? block.network : pool.first;
  const last = lastAddress(block) < pool.last ? lastAddress(block) : pool.last;
  return first <= last ? { first, last } : undefined;
}
