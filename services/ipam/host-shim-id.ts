import { createHash } from "node:crypto";

// A host's shim (services/planner/host-shim.ts) holds its addresses in IPAM like a container, under an endpoint
// id of its own. No container key names that id, so the leak collector must know it for what it is.

const PREFIX = "shim";

/**
 * One id per network and host: two attaches that both find the host without a shim ask IPAM for the same
 * endpoint and get the same addresses, so neither has anything to give back.
 */
export function hostShimEndpointId(networkId: string, host: string): string {
  return PREFIX + createHash("sha256").update(`host-shim:${networkId}:${host}`).digest("hex").slice(0, 32 - PREFIX.length);
}

/** Container endpoint ids are 32 hex digits, which never begin with "shim". */
export function isHostShimEndpointId(endpointId: string): boolean {
  return endpointId.startsWith(PREFIX);
}
