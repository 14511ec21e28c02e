import type { KvWatchEntry } from "@nats-io/kv";
import { parseAddress, parseCidr } from "../ipmath/index.js";
import { Endpoint, HostShim, Network } from "../proto/gen/trellis/v1/network.js";
import { RouteAnnouncement } from "../proto/gen/trellis/v1/routes.js";
import { HostRecord, NameEntry } from "../proto/gen/trellis/v1/state.js";
import { codecOf } from "./codec.js";
import { desiredKey, hostShimKey, nameKey } from "./subjects.js";

// Every record a service reads from a bucket, decoded and checked where it arrives: a value some peer wrote that
// is garbage, or decodes but could not be meant (an address that is none, a key that is not its own), throws here,
// naming what is wrong, and the follower (libs/bus/follow.ts) logs it once and ignores it. What passes these
// checks can be used without further doubt: as a route, a link name, a line of a hosts file.

const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);
const hostCodec = codecOf(HostRecord);
const announcementCodec = codecOf(RouteAnnouncement);
const hostShimCodec = codecOf(HostShim);

/** No record Trellis writes comes near this; a bigger one is refused before it is decoded. */
export const MAX_RECORD_BYTES = 256 * 1024;

const MODES = new Set(["", "l2", "l3", "l3s"]);
/** What Trellis puts in a key token or a namespace name: an id, a container or network name. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const ID = /^[A-Za-z0-9_-]{1,64}$/;

export class BadRecordError extends Error {}

function check(condition: boolean, problem: () => string): void {
  if (!condition) throw new BadRecordError(problem());
}

function decoded<T>(what: string, entry: KvWatchEntry, decode: (bytes: Uint8Array) => T): T {
  check(entry.value.length <= MAX_RECORD_BYTES, () => `it is ${entry.value.length} bytes, more than any ${what} (${MAX_RECORD_BYTES})`);
  try {
    return decode(entry.value);
  } catch (error) {
    throw new BadRecordError(`it is not ${/^[aeiou]/.test(what) ? "an" : "a"} ${what} (${(error as Error).message})`);
  }
}

function checkAddress(what: string, text: string): void {
  try {
    parseAddress(text);
  } catch (error) {
    throw new BadRecordError(`${what} ${JSON.stringify(text)} is not an address: ${(error as Error).message}`);
  }
}

function checkCidr(what: string, text: string): number {
  try {
    return parseCidr(text).address.family;
  } catch (error) {
    throw new BadRecordError(`${what} ${JSON.stringify(text)} is not an address with a prefix length: ${(error as Error).message}`);
  }
}

/** As the kernel takes them: 1-15 bytes without whitespace, "/" or ":". */
function checkInterfaceName(what: string, name: string): void {
  check(Buffer.byteLength(name) <= 15 && name.length > 0 && !/[\s/:]/.test(name) && name !== "." && name !== "..", () => `${what} ${JSON.stringify(name)} is no interface name`);
}

/** A network under its name's key, as the planner writes it. */
export function checkedNetwork(entry: KvWatchEntry): Network {
  const network = decoded("network", entry, networkCodec.decode);
  check(network.name === entry.key, () => `it names network ${JSON.stringify(network.name)}, not ${entry.key}`);
  checkNetwork(network);
  return network;
}

/** What in a network an agent puts in the kernel: throws BadRecordError naming what is wrong. */
export function checkNetwork(network: Network): void {
  check(ID.test(network.id), () => `network id ${JSON.stringify(network.id)} is not an id`);
  check(MODES.has(network.mode), () => `mode ${JSON.stringify(network.mode)} is none of l2, l3, l3s`);
  if (network.parent?.name) checkInterfaceName("parent", network.parent.name);
  for (const subnet of network.subnets) {
    const family = checkCidr("subnet", subnet.cidr);
    if (subnet.gateway) checkAddress("gateway", subnet.gateway);
    check(!subnet.gateway || parseAddress(subnet.gateway).family === family, () => `gateway ${subnet.gateway} is not of subnet ${subnet.cidr}'s family`);
  }
}

/**
 * An endpoint of the planner's endpoints bucket ("planned", keyed by container: what the planner's view needs, its
 * addresses) or of the desired bucket ("desired", keyed by host and id: everything an agent puts in the kernel).
 */
export function checkedEndpoint(entry: KvWatchEntry, bucket: "planned" | "desired"): Endpoint {
  const endpoint = decoded("endpoint", entry, endpointCodec.decode);
  check(ID.test(endpoint.id), () => `endpoint id ${JSON.stringify(endpoint.id)} is not an id`);
  const key = bucket === "planned" ? endpoint.container : desiredKey(endpoint.host, endpoint.id);
  check(key === entry.key, () => `it is the endpoint of key ${key}, not ${entry.key}`);
  if (bucket === "desired") checkDesiredEndpoint(endpoint);
  else for (const address of endpoint.addresses) checkCidr("address", address);
  return endpoint;
}

/**
 * The agent's own namespaces are names under /run/netns; a container runtime's (CNI_NETNS) is an absolute path. Either
 * must stay where it says: no whitespace, and no "." or ".." that would climb out of its folder.
 */
function isNamespace(netns: string): boolean {
  if (netns.length === 0 || netns.length > 255 || /\s/.test(netns)) return false;
  if (!netns.startsWith("/")) return !netns.includes("/") && !netns.startsWith(".");
  return netns
    .slice(1)
    .split("/")
    .every((part) => part.length > 0 && part !== "." && part !== "..");
}

/** What in a desired endpoint an agent puts in the kernel and the file system: throws BadRecordError naming it. */
export function checkDesiredEndpoint(endpoint: Endpoint): void {
  for (const address of endpoint.addresses) checkCidr("address", address);
  check(NAME.test(endpoint.container), () => `container name ${JSON.stringify(endpoint.container)} is not a name`);
  check(ID.test(endpoint.networkId), () => `network id ${JSON.stringify(endpoint.networkId)} is not an id`);
  check(isNamespace(endpoint.netns), () => `namespace ${JSON.stringify(endpoint.netns)} is neither a namespace name nor a runtime's namespace path`);
  checkInterfaceName("interface", endpoint.ifname);
  for (const route of endpoint.routes) {
    if (route.dst !== "default") checkCidr("route destination", route.dst);
    if (route.via) checkAddress("next hop", route.via);
  }
}

/** A container's name and addresses in one network: lines of hosts files, answers of DNS. */
export function checkedName(entry: KvWatchEntry): NameEntry {
  const name = decoded("name entry", entry, nameCodec.decode);
  checkName(name);
  const key = nameKey(name.networkId, name.name);
  check(key === entry.key, () => `it is the name of key ${key}, not ${entry.key}`);
  return name;
}

/** A container's name as hosts files and DNS answers take it: throws BadRecordError naming what is wrong. */
export function checkName(name: NameEntry): void {
  check(NAME.test(name.name), () => `name ${JSON.stringify(name.name)} is not a container name`);
  check(ID.test(name.networkId), () => `network id ${JSON.stringify(name.networkId)} is not an id`);
  for (const address of name.addresses) checkAddress("address", address);
}

/** A host's shim on a network (services/link-agent/host-shim.ts): under its own key, with addresses that are ones. */
export function checkedHostShim(entry: KvWatchEntry): HostShim {
  const shim = decoded("host shim", entry, hostShimCodec.decode);
  check(ID.test(shim.networkId), () => `network id ${JSON.stringify(shim.networkId)} is not an id`);
  const key = hostShimKey(shim.host, shim.networkId);
  check(key === entry.key, () => `it is the host shim of key ${key}, not ${entry.key}`);
  for (const address of shim.addresses) checkCidr("address", address);
  return shim;
}

/** A heartbeat: under its own host's key, with a time that is one. */
export function checkedHeartbeat(entry: KvWatchEntry): HostRecord {
  const record = decoded("heartbeat", entry, hostCodec.decode);
  check(record.host === entry.key, () => `it names host ${JSON.stringify(record.host)}, not ${entry.key}`);
  checkHeartbeat(record);
  return record;
}

/** A heartbeat's time and address: throws BadRecordError naming what is wrong. */
export function checkHeartbeat(record: HostRecord): void {
  check(!Number.isNaN(Date.parse(record.heartbeatAt)), () => `heartbeat time ${JSON.stringify(record.heartbeatAt)} is not a time`);
  if (record.address) checkAddress("address", record.address);
}

/**
 * A route announcement: under its own host's key (the grants its prefixes are checked against are that host's),
 * with next hops that are addresses, one per family. Its prefixes are checked one by one where they are believed
 * (routes/reconcile.ts), so that one bad prefix costs only itself.
 */
export function checkedAnnouncement(entry: KvWatchEntry): RouteAnnouncement {
  const announcement = decoded("route announcement", entry, announcementCodec.decode);
  check(announcement.host === entry.key, () => `it names host ${JSON.stringify(announcement.host)}, not ${entry.key}`);
  checkAnnouncement(announcement);
  return announcement;
}

/** An announcement's next hops: addresses, one per family; throws BadRecordError naming what is wrong. */
export function checkAnnouncement(announcement: RouteAnnouncement): void {
  const families = new Set<number>();
  for (const nextHop of announcement.nextHops) {
    checkAddress("next hop", nextHop);
    const family = parseAddress(nextHop).family;
    check(!families.has(family), () => `it has two IPv${family} next hops`);
    families.add(family);
  }
}
