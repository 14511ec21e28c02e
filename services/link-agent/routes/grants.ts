import type { HostDesiredState } from "../../../libs/proto/gen/trellis/v1/state.js";
import { canonicalPrefix, hostPrefix, isRoutedMode } from "./prefixes.js";

/** `<network id> <prefix>`: one thing a host may announce. */
export type GrantKey = string;

export function grantKey(networkId: string, prefix: string): GrantKey {
  return `${networkId} ${prefix}`;
}

/**
 * What IPAM has given a host in its L3/L3S networks, as the planner (the single writer of desired
 * state, who asked IPAM) wrote it into that host's desired state: its blocks and borrowed addresses
 * (granted prefixes), and the host routes of its endpoints' addresses. Announcements are believed only
 * within these (principle 3), so a host can never pull another host's traffic to itself by announcing
 * its prefixes.
 */
export function grantsOf(desired: HostDesiredState): Set<GrantKey> {
  const routed = new Set(desired.networks.filter((network) => isRoutedMode(network.mode)).map((network) => network.id));
  const grants = new Set<GrantKey>();
  for (const endpoint of desired.endpoints) {
    if (endpoint.host !== desired.host || !routed.has(endpoint.networkId)) continue;
    for (const address of endpoint.addresses) grants.add(grantKey(endpoint.networkId, hostPrefix(address)));
  }
  for (const { networkId, prefix } of desired.grantedPrefixes) {
    const canonical = canonicalPrefix(prefix);
    if (canonical && routed.has(networkId)) grants.add(grantKey(networkId, canonical));
  }
  return grants;
}

/** The L3/L3S networks present on a host: where its agent installs other hosts' routes. */
export function routedNetworksOf(desired: HostDesiredState | undefined): Set<string> {
  return new Set((desired?.networks ?? []).filter((network) => isRoutedMode(network.mode)).map((network) => network.id));
}
