import ipaddr from "ipaddr.js";
import type { Endpoint, HostShim, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import type { IpvlanFlag, IpvlanMode, Link, NetlinkHandle, Route } from "../../libs/netlink/index.js";

// The host's own ipvlan interface on a network with -o host_shim=true (services/planner/host-shim.ts): the
// kernel delivers nothing between an ipvlan parent and its slaves, so the host reaches its containers through
// a slave of its own, in its own namespace, in the network's mode. Its address has the subnet's prefix length,
// so the kernel routes the subnet through it; each of the host's containers on the network also gets a host
// route through it, as L3 mode needs (the host's routes to other hosts' blocks are more specific than the
// subnet, and an address borrowed from another host's block lies in one of them).

/** Marks shims, as OWNED_LINK_ALIAS marks parents: only links with it are ever deleted as shims. */
export const SHIM_LINK_ALIAS = "trellis:shim";
/** The route protocol of the shim's host routes: not the route distribution's 210, which is announced and reconciled. */
export const SHIM_ROUTE_PROTOCOL = 211;

/** `tsh` and the network id's first 12 hex digits: unique per network, and within IFNAMSIZ. */
export function shimLinkName(networkId: string): string {
  return `tsh${networkId.slice(0, 12)}`;
}

/**
 * Converges the host's shim on one network, right after its parent: absent unless the network asks for
 * shims and the planner gave this host one; otherwise an ipvlan on the parent with the shim's addresses and a
 * route to each of `containers` (this host's endpoints; others are ignored). What is right is left alone, so
 * a restarted agent keeps the interface (same ifindex).
 */
export async function ensureHostShim(
  root: NetlinkHandle,
  links: Link[],
  network: Network,
  parentIndex: number | undefined,
  shim: HostShim | undefined,
  containers: Endpoint[],
): Promise<void> {
  const name = shimLinkName(network.id);
  const current = links.find((link) => link.name === name && link.alias === SHIM_LINK_ALIAS);
  if (!network.hostShim || !shim || parentIndex === undefined) {
    if (current) await root.deleteLink(current.index);
    return;
  }
  try {
    const link = await ensureLink(root, current, name, network, parentIndex);
    await ensureAddresses(root, link.index, shim.addresses);
    await ensureRoutes(root, link.index, containers.filter((e) => e.networkId === network.id).flatMap((e) => e.addresses));
  } catch (error) {
    throw new Error(`failed to set up host shim ${name} of network ${network.name}: ${(error as Error).message}`);
  }
}

/** Deletes the shims of networks that are gone from this host (their parents may outlive them). */
export async function removeStaleShims(root: NetlinkHandle, links: Link[], networks: Network[]): Promise<void> {
  const wanted = new Set(networks.filter((network) => network.hostShim).map((network) => shimLinkName(network.id)));
  for (const link of links) {
    if (link.alias === SHIM_LINK_ALIAS && !wanted.has(link.name)) await root.deleteLink(link.index);
  }
}

async function ensureLink(root: NetlinkHandle, current: Link | undefined, name: string, network: Network, parentIndex: number): Promise<Link> {
  const right =
    current?.kind === "ipvlan" &&
    current.parentIndex === parentIndex &&
    current.ipvlan?.mode === network.mode &&
    current.ipvlan?.flag === network.flag;
  if (current && right) {
    if (!current.up) await root.setUp(current.index);
    return current;
  }
  if (current) await root.deleteLink(current.index);
  await root.createIpvlan(name, parentIndex, network.mode as IpvlanMode, network.flag as IpvlanFlag);
  const created = await root.getLink(name);
  if (!created) throw new Error(`${name} vanished right after it was created`);
  await root.setAlias(created.index, SHIM_LINK_ALIAS);
  await root.setUp(created.index);
  return created;
}

async function ensureAddresses(root: NetlinkHandle, index: number, wanted: string[]): Promise<void> {
  const present = (await root.listAddresses(index)).map((address) => address.cidr);
  for (const cidr of wanted.filter((cidr) => !present.includes(cidr))) await root.addAddress(index, cidr, { nodad: true });
  for (const cidr of present.filter((cidr) => !wanted.includes(cidr) && !isLinkLocal(cidr))) await root.deleteAddress(index, cidr);
}

/** One host route per container address (with prefix length, as endpoints hold them), through the shim. */
async function ensureRoutes(root: NetlinkHandle, index: number, containerAddresses: string[]): Promise<void> {
  const wanted = new Set(containerAddresses.map(hostRoute));
  const present = [...(await root.listRoutes(4)), ...(await root.listRoutes(6))].filter(
    (route) => route.linkIndex === index && route.protocol === SHIM_ROUTE_PROTOCOL,
  );
  const presentDsts = new Set(present.map((route) => route.dst));
  for (const route of present.filter((route) => !wanted.has(route.dst))) await root.deleteRoute(specOf(route));
  for (const dst of [...wanted].filter((dst) => !presentDsts.has(dst))) {
    await root.replaceRoute({ dst, linkIndex: index, protocol: SHIM_ROUTE_PROTOCOL, scope: "link" });
  }
}

function hostRoute(cidr: string): string {
  const address = ipaddr.parse(cidr.slice(0, cidr.indexOf("/")));
  return `${address.toString()}/${address.kind() === "ipv4" ? 32 : 128}`;
}

function specOf(route: Route) {
  return { dst: route.dst, linkIndex: route.linkIndex, family: route.family, protocol: route.protocol };
}

function isLinkLocal(cidr: string): boolean {
  return ipaddr.parseCIDR(cidr)[0].range() === "linkLocal";
}
