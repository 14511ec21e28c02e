import { readdirSync } from "node:fs";
import ipaddr from "ipaddr.js";
import type { Endpoint, Network, Route as ContainerRoute } from "../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState, type EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import {
  createNamespace,
  deleteNamespace,
  enableIpv6,
  namespaceExists,
  NETNS_RUN_DIR,
  openNetlink,
  type IpvlanFlag,
  type IpvlanMode,
  type Link,
  type NetlinkHandle,
  type Route,
} from "../../libs/netlink/index.js";
import { isRuntimeNamespace, requireRuntimeNamespace } from "./runtime-namespace.js";

/** A new network namespace's loopback: the first link the kernel registers in it. */
const FRESH_LOOPBACK_INDEX = 1;

/**
 * Converges one container: its namespace, `eth0` (an ipvlan on the network's parent, created directly
 * inside the namespace), its addresses and its routes. Whatever is already right is left alone, so a
 * restarted agent keeps every link (same ifindex) and address. `fresh`: the agent made the namespace just
 * now, so it holds nothing but a loopback that is down, and nothing is read before it is made (what the
 * status reports is still read back from the kernel afterwards).
 */
export async function ensureEndpoint(
  root: NetlinkHandle,
  inside: NetlinkHandle,
  endpoint: Endpoint,
  network: Network,
  parentIndex: number,
  fresh = false,
): Promise<EndpointStatus> {
  const eth0 = fresh ? await createInside(root, inside, endpoint, network, parentIndex, fresh) : await ensureIpvlan(root, inside, endpoint, network, parentIndex);
  if (!eth0.up) await inside.setUp(eth0.index);
  const loopback = fresh ? undefined : await inside.getLink("lo");
  if (fresh) await inside.setUp(FRESH_LOOPBACK_INDEX);
  else if (loopback && !loopback.up) await inside.setUp(loopback.index);
  if (isRuntimeNamespace(endpoint.netns) && endpoint.addresses.some((cidr) => cidr.includes(":"))) enableIpv6(endpoint.netns, [endpoint.ifname, "lo"]);
  const addresses = await ensureAddresses(inside, eth0.index, endpoint.addresses, fresh);
  const routes = await ensureRoutes(inside, eth0.index, endpoint.routes, fresh);
  return { ...observedStatus(endpoint, eth0.index, addresses, routes), ...(eth0.mac ? { mac: eth0.mac } : {}) };
}

/**
 * The container's namespace, made when missing, and a socket bound to it (the caller keeps and closes it);
 * `fresh` when it was made just now.
 */
export async function openContainerNamespace(netns: string): Promise<{ handle: NetlinkHandle; fresh: boolean }> {
  let fresh = false;
  if (isRuntimeNamespace(netns)) requireRuntimeNamespace(netns);
  else if (!namespaceExists(netns)) {
    await createNamespace(netns);
    fresh = true;
  }
  return { handle: await openNetlink(netns), fresh };
}

async function ensureIpvlan(
  root: NetlinkHandle,
  inside: NetlinkHandle,
  endpoint: Endpoint,
  network: Network,
  parentIndex: number,
): Promise<Link> {
  const current = await inside.getLink(endpoint.ifname);
  if (current && current.kind !== "ipvlan" && isRuntimeNamespace(endpoint.netns)) {
    throw new Error(`interface ${endpoint.ifname} already exists in ${endpoint.netns} and is not Trellis's (a ${current.kind || "device"}): choose another CNI_IFNAME`);
  }
  const right =
    current?.kind === "ipvlan" && current.ipvlan?.mode === network.mode && current.ipvlan?.flag === network.flag;
  if (current && !right) await inside.deleteLink(current.index);
  return current && right ? current : createInside(root, inside, endpoint, network, parentIndex);
}

/**
 * The kernel looks a new link's name up in the creating namespace first, where the host's own eth0
 * lives; so the link is born inside the container under a name unique to the endpoint, then renamed.
 */
async function createInside(root: NetlinkHandle, inside: NetlinkHandle, endpoint: Endpoint, network: Network, parentIndex: number, fresh = false): Promise<Link> {
  const temporary = `tr${endpoint.id.slice(0, 12)}`;
  const leftover = fresh ? undefined : await inside.getLink(temporary);
  if (leftover) await inside.deleteLink(leftover.index);
  await root.createIpvlan(temporary, parentIndex, network.mode as IpvlanMode, network.flag as IpvlanFlag, endpoint.netns);
  const created = await inside.getLink(temporary);
  if (!created) throw new Error(`failed to find ${temporary} in ${endpoint.netns} after creating it`);
  await inside.renameLink(created.index, endpoint.ifname);
  // A rename keeps the link's index, address and state: no need to read it again.
  return { ...created, name: endpoint.ifname };
}

function isLinkLocal(cidr: string): boolean {
  return ipaddr.parseCIDR(cidr)[0].range() === "linkLocal";
}

/** Returns the addresses the kernel has afterwards: read again only if something was changed. `fresh`: none yet. */
async function ensureAddresses(inside: NetlinkHandle, index: number, wanted: string[], fresh: boolean): Promise<string[]> {
  const present = fresh ? [] : (await inside.listAddresses(index)).map((address) => address.cidr);
  const missing = wanted.filter((cidr) => !present.includes(cidr));
  const extra = present.filter((cidr) => !wanted.includes(cidr) && !isLinkLocal(cidr));
  for (const cidr of missing) await inside.addAddress(index, cidr, { nodad: true });
  for (const cidr of extra) await inside.deleteAddress(index, cidr);
  if (missing.length === 0 && extra.length === 0) return present;
  return (await inside.listAddresses(index)).map((address) => address.cidr);
}

function sameRoute(route: Route, wanted: ContainerRoute): boolean {
  return route.dst === wanted.dst && route.family === (wanted.ipv6 ? 6 : 4) && (route.gateway ?? "") === wanted.via;
}

/** Of both families, in one dump. */
async function defaultRoutes(inside: NetlinkHandle): Promise<Route[]> {
  return (await inside.listRoutes()).filter((route) => route.dst === "default");
}

/**
 * Only default routes are managed inside the container; the kernel owns the subnet routes. Returns the default
 * routes the kernel has afterwards: read again only if something was changed.
 */
async function ensureRoutes(inside: NetlinkHandle, index: number, wanted: ContainerRoute[], fresh: boolean): Promise<Route[]> {
  const present = fresh ? [] : await defaultRoutes(inside);
  const extra = present.filter((route) => !wanted.some((w) => sameRoute(route, w)));
  const missing = wanted.filter((w) => !present.some((route) => sameRoute(route, w)));
  for (const route of extra) {
    await inside.deleteRoute({ dst: route.dst, gateway: route.gateway, linkIndex: route.linkIndex, family: route.family, protocol: route.protocol });
  }
  for (const route of missing) {
    await inside.replaceRoute({ dst: route.dst, gateway: route.via || undefined, linkIndex: index, family: route.ipv6 ? 6 : 4 });
  }
  return extra.length === 0 && missing.length === 0 ? present : defaultRoutes(inside);
}

/** Announce only what is real: the status is what was read back from the kernel, not copied from the plan. */
function observedStatus(endpoint: Endpoint, index: number, present: string[], defaults: Route[]): EndpointStatus {
  const addresses = present.filter((cidr) => !isLinkLocal(cidr));
  const routes = defaults.map((route) => ({ dst: route.dst, via: route.gateway ?? "", ipv6: route.family === 6 }));
  return {
    endpointId: endpoint.id,
    host: endpoint.host,
    container: endpoint.container,
    state: EndpointState.ENDPOINT_STATE_READY,
    message: "",
    ifindex: index,
    addresses,
    routes,
    updatedAt: "",
  };
}

export function failedStatus(endpoint: Endpoint, message: string): EndpointStatus {
  return {
    endpointId: endpoint.id,
    host: endpoint.host,
    container: endpoint.container,
    state: EndpointState.ENDPOINT_STATE_FAILED,
    message,
    ifindex: 0,
    addresses: [],
    routes: [],
    updatedAt: "",
  };
}

/** The namespaces of this host's containers (`NAME@HOST`) that exist now. */
export function hostNamespaces(host: string): string[] {
  return listNamespaces().filter((name) => name.endsWith(`@${host}`));
}

/** Removes a container's namespace, and with it its eth0; one already gone is fine. */
export async function removeNamespace(netns: string): Promise<void> {
  if (namespaceExists(netns)) await deleteNamespace(netns);
}

function listNamespaces(): string[] {
  try {
    return readdirSync(NETNS_RUN_DIR);
  } catch {
    return [];
  }
}
