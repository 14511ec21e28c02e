import { formatAddress, type Address, type Prefix } from "../../libs/ipmath/index.js";
import { IPAM_BLOCK_KEY_PREFIX, keyToken } from "../../libs/bus/subjects.js";
import type { AddressRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";

// Key layout of the IPAM bucket. KV keys allow only [-/_=.a-zA-Z0-9] and "." separates tokens,
// so ids are escaped and addresses spelled with "-" instead of "." or ":".

export const REGISTRY_KEY = "registry";

export function addressToken(address: Address): string {
  return formatAddress(address).replace(/[.:]/g, "-");
}

/** The one key per allocated address: created only, so the server arbitrates between replicas. */
export function addressKey(networkId: string, address: Address): string {
  return `addr.${keyToken(networkId)}.${addressToken(address)}`;
}

/**
 * The JetStream message id of an endpoint's allocation in one family of one incarnation of a network:
 * the server refuses a second write with it, which is what keeps an endpoint to one address per family.
 */
export function allocationMessageId(record: AddressRecord): string {
  return `alloc.${keyToken(record.networkId)}.${record.incarnation}.${record.ipv6 ? 6 : 4}.${keyToken(record.endpointId)}`;
}

/** The one key per block of an L3 network: created only, so that one block never has two owners. */
export function blockKey(networkId: string, block: Prefix): string {
  return `${IPAM_BLOCK_KEY_PREFIX}${keyToken(networkId)}.${addressToken({ family: block.family, value: block.network })}-${block.length}`;
}

export function networkBlocksFilter(networkId: string): string {
  return `${IPAM_BLOCK_KEY_PREFIX}${keyToken(networkId)}.>`;
}

export function isBlockKey(key: string): boolean {
  return key.startsWith(IPAM_BLOCK_KEY_PREFIX);
}

/**
 * What the view follows: every key, the endpoint records too (it ignores them). Following only the
 * registry, address and block keys takes a consumer with several filter subjects, which needs
 * nats-server 2.10; on 2.9 (Debian's) that watch fails, and each replica's view saw only its own writes.
 */
export const VIEWED_KEYS = ">";

export function networkAddressesPrefix(networkId: string): string {
  return `addr.${keyToken(networkId)}.`;
}

export function networkAddressesFilter(networkId: string): string {
  return `${networkAddressesPrefix(networkId)}>`;
}

export function isAddressKey(key: string): boolean {
  return key.startsWith("addr.");
}
