import { formatAddress, type Address, type Family, type Prefix } from "../../libs/ipmath/index.js";

// Key layout of the IPAM bucket. KV keys allow only [-/_=.a-zA-Z0-9] and "." separates tokens,
// so ids are escaped and addresses spelled with "-" instead of "." or ":".

export const REGISTRY_KEY = "registry";

/** Ids become one key token: [A-Za-z0-9_-] stay, every other byte becomes =XX. */
export function encodeToken(id: string): string {
  let token = "";
  for (const byte of new TextEncoder().encode(id)) {
    const char = String.fromCharCode(byte);
    token += /[A-Za-z0-9_-]/.test(char) ? char : `=${byte.toString(16).padStart(2, "0")}`;
  }
  return token;
}

export function addressToken(address: Address): string {
  return formatAddress(address).replace(/[.:]/g, "-");
}

/** The one key per allocated address: created only, so the server arbitrates between replicas. */
export function addressKey(networkId: string, address: Address): string {
  return `addr.${encodeToken(networkId)}.${addressToken(address)}`;
}

/** Which address an endpoint holds in one family: makes AllocateAddress idempotent across replicas. */
export function endpointKey(networkId: string, endpointId: string, family: Family): string {
  return `ep.${encodeToken(networkId)}.${encodeToken(endpointId)}.${family}`;
}

/** The one key per block of an L3 network: created only, so that one block never has two owners. */
export function blockKey(networkId: string, block: Prefix): string {
  return `block.${encodeToken(networkId)}.${addressToken({ family: block.family, value: block.network })}-${block.length}`;
}

export function networkBlocksFilter(networkId: string): string {
  return `block.${encodeToken(networkId)}.>`;
}

export function isBlockKey(key: string): boolean {
  return key.startsWith("block.");
}

/** What the view follows; the endpoint records are read only when needed. */
export function viewedKeys(): string[] {
  return [REGISTRY_KEY, "addr.>", "block.>"];
}

export function networkAddressesFilter(networkId: string): string {
  return `addr.${encodeToken(networkId)}.>`;
}

export function networkEndpointsFilter(networkId: string): string {
  return `ep.${encodeToken(networkId)}.>`;
}

export function isAddressKey(key: string): boolean {
  return key.startsWith("addr.");
}
