import ipaddr from "ipaddr.js";
import { type Endpoint, type Network, type Route } from "../../libs/proto/gen/trellis/v1/network.js";
import type { ListBlocksResponse } from "../../libs/proto/gen/trellis/v1/ipam.js";
import type { GrantedPrefix, HostDesiredState, NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";

// Pure decisions about what hosts and containers must have; no I/O.

/** The interface name every container sees, as with Docker. */
export const CONTAINER_IFNAME = "eth0";

/** Dummy parents are named from the network id, like Docker's `di-<id>`, within the 15-character limit. */
export function dummyParentName(networkId: string): string {
  return `dm-${networkId.slice(0, 12)}`;
}

/**
 * The named network namespace (/run/netns) of a container. The host is part of the name so that agents
 * sharing one /run/netns (the lab's hosts) never mistake each other's containers for their own.
 */
export function containerNetns(container: string, host: string): string {
  return `${container}@${host}`;
}

/**
 * Routes inside a container: in l2 a default route via the gateway of the subnet each address is in (the
 * only gateway on its link: another subnet's is unreachable), in l3/l3s a default route through eth0
 * itself (the parent routes, and broadcasts are filtered so a next hop cannot be resolved), and none on
 * an internal network.
 */
export function containerRoutes(network: Network, addresses: string[]): Route[] {
  if (network.internal) return [];
  const parsed = addresses.map((address) => ipaddr.parseCIDR(address)[0]);
  if (network.mode !== "l2") return parsed.map((address) => ({ dst: "default", via: "", ipv6: address.kind() === "ipv6" }));
  return parsed.flatMap((address) => {
    const home = network.subnets.find((subnet) => {
      const range = ipaddr.parseCIDR(subnet.cidr);
      return range[0].kind() === address.kind() && address.match(range);
    });
    return home && home.gateway !== "" ? [{ dst: "default", via: home.gateway, ipv6: home.ipv6 }] : [];
  });
}

/**
 * Every host has every network's parent (so a VLAN exists cluster-wide), its own endpoints, and the
 * names of every container, wherever it runs, on the networks its endpoints are on.
 */
export function desiredStateFor(host: string, networks: Network[], endpoints: Endpoint[], granted: GrantedPrefix[] = []): HostDesiredState {
  const local = endpoints.filter((endpoint) => endpoint.host === host).sort(byContainer);
  return {
    host,
    networks: [...networks].sort((a, b) => a.name.localeCompare(b.name)),
    endpoints: local,
    names: namesOn(new Set(local.map((endpoint) => endpoint.networkId)), endpoints),
    grantedPrefixes: granted,
  };
}

/** What IPAM's ListBlocks answers for L3/L3S networks give `host`: its blocks, and host routes for its borrowed addresses. */
export function grantedPrefixesOf(host: string, answers: { networkId: string; blocks: ListBlocksResponse }[]): GrantedPrefix[] {
  return answers.flatMap(({ networkId, blocks }) => [
    ...blocks.blocks.filter((block) => block.host === host).map((block) => ({ networkId, prefix: block.cidr })),
    ...blocks.borrowed.filter((address) => address.host === host).map((address) => ({ networkId, prefix: `${address.address}/${address.ipv6 ? 128 : 32}` })),
  ]);
}

function namesOn(networkIds: Set<string>, endpoints: Endpoint[]): NameEntry[] {
  return endpoints
    .filter((endpoint) => networkIds.has(endpoint.networkId))
    .sort(byContainer)
    .map((endpoint) => ({
      networkId: endpoint.networkId,
      name: endpoint.container,
      addresses: endpoint.addresses.map((cidr) => cidr.slice(0, cidr.indexOf("/"))),
    }));
}

/** Hosts whose desired state names the containers of a network: those with an endpoint on it. */
export function hostsOnNetwork(networkId: string, endpoints: Endpoint[]): string[] {
  return [...new Set(endpoints.filter((endpoint) => endpoint.networkId === networkId).map((endpoint) => endpoint.host))];
}

function byContainer(a: Endpoint, b: Endpoint): number {
  return a.container.localeCompare(b.container);
}
