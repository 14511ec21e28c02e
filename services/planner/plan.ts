import { contains, parseCidr, parsePrefix } from "../../libs/ipmath/index.js";
import { type Network, type Route } from "../../libs/proto/gen/trellis/v1/network.js";

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
  const parsed = addresses.map((address) => parseCidr(address).address);
  if (network.mode !== "l2") return parsed.map((address) => ({ dst: "default", via: "", ipv6: address.family === 6 }));
  return parsed.flatMap((address) => {
    const home = network.subnets.find((subnet) => contains(parsePrefix(subnet.cidr), address));
    return home && home.gateway !== "" ? [{ dst: "default", via: home.gateway, ipv6: home.ipv6 }] : [];
  });
}
