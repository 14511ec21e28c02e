// Pure allocation logic: validation, choice of subnets, choice of addresses. No I/O; the store and
// the KV server decide who wins a race, this module only decides what to try.
import {
  contains,
  firstUsable,
  formatAddress,
  formatPrefix,
  IpParseError,
  isUsable,
  lastUsable,
  overlaps,
  parseAddress,
  parsePrefix,
  subnetAt,
  subnetCount,
  type Address,
  type Family,
  type Prefix,
} from "../../libs/ipmath/index.js";
import type {
  AllocatedSubnet,
  AllocateSubnetsRequest,
  IpamNetwork,
  IpamRegistry,
  SubnetRequest,
} from "../../libs/proto/gen/trellis/v1/ipam.js";
import { alreadyExists, invalidArgument, resourceExhausted } from "./errors.js";

/** One requested subnet after validation: an explicit prefix, or a family to take a default pool from. */
export interface SubnetPlan {
  family: Family;
  prefix?: Prefix;
  gateway?: Address;
}

export function familyName(family: Family): string {
  return family === 6 ? "IPv6" : "IPv4";
}

export function familyOf(ipv6: boolean): Family {
  return ipv6 ? 6 : 4;
}

export function requireId(what: string, id: string): void {
  if (id.trim() === "") throw invalidArgument(`${what} must not be empty`);
}

/** Checks everything that does not depend on stored state; throws INVALID_ARGUMENT. */
export function planSubnets(request: AllocateSubnetsRequest): SubnetPlan[] {
  requireId("network_id", request.networkId);
  const plans = request.subnets.map((subnet) => planSubnet(subnet, request.withGateway));
  refuseOverlapWithinRequest(plans);
  return plans;
}

function planSubnet(request: SubnetRequest, withGateway: boolean): SubnetPlan {
  if (request.cidr.trim() === "") {
    if (withGateway && request.gateway.trim() !== "") {
      throw invalidArgument(`invalid gateway ${request.gateway}: a gateway needs an explicit subnet`);
    }
    return { family: familyOf(request.ipv6) };
  }
  const prefix = parseSubnet(request.cidr);
  // The reference ignores a gateway given to a network without one (l3 / l3s).
  const gateway = withGateway && request.gateway.trim() !== "" ? parseGateway(request.gateway, prefix) : undefined;
  return { family: prefix.family, prefix, gateway };
}

function parseSubnet(cidr: string): Prefix {
  try {
    return parsePrefix(cidr);
  } catch (error) {
    if (error instanceof IpParseError) throw invalidArgument(`invalid subnet ${cidr.trim()}: ${error.message}`);
    throw error;
  }
}

function parseGateway(text: string, subnet: Prefix): Address {
  const gateway = parseIp("gateway", text);
  if (!isUsable(subnet, gateway)) {
    throw invalidArgument(`invalid gateway ${text}: it must be a usable address of subnet ${formatPrefix(subnet)} (${usableRange(subnet)})`);
  }
  return gateway;
}

export function usableRange(subnet: Prefix): string {
  const first = formatAddress({ family: subnet.family, value: firstUsable(subnet) });
  const last = formatAddress({ family: subnet.family, value: lastUsable(subnet) });
  return `${first} to ${last}`;
}

function parseIp(what: string, text: string): Address {
  try {
    return parseAddress(text);
  } catch (error) {
    if (error instanceof IpParseError) throw invalidArgument(`invalid ${what} ${text}: ${error.message}`);
    throw error;
  }
}

function refuseOverlapWithinRequest(plans: SubnetPlan[]): void {
  const explicit = plans.flatMap((plan) => (plan.prefix ? [plan.prefix] : []));
  explicit.forEach((a, i) => {
    const other = explicit.slice(i + 1).find((b) => overlaps(a, b));
    if (other) throw invalidArgument(`subnet ${formatPrefix(a)} overlaps subnet ${formatPrefix(other)} of the same request`);
  });
}

/** A subnet some network holds. */
interface TakenSubnet {
  networkId: string;
  prefix: Prefix;
}

function takenSubnets(registry: IpamRegistry, exceptNetworkId: string): TakenSubnet[] {
  return registry.networks
    .filter((network) => network.networkId !== exceptNetworkId)
    .flatMap((network) => network.subnets.map((subnet) => ({ networkId: network.networkId, prefix: parsePrefix(subnet.cidr) })));
}

/**
 * Turns plans into subnets against the current registry: explicit ones must not overlap another
 * network's, default ones are the first free of their pool. `ula` is the cluster's IPv6 default /48.
 */
export function assignSubnets(
  networkId: string,
  plans: SubnetPlan[],
  withGateway: boolean,
  registry: IpamRegistry,
  ula: Prefix | undefined,
): AllocatedSubnet[] {
  const taken = takenSubnets(registry, networkId);
  for (const plan of plans) if (plan.prefix) refuseOverlapWithNetworks(plan.prefix, taken);
  const chosen = plans.flatMap((plan) => (plan.prefix ? [plan.prefix] : []));
  return plans.map((plan) => {
    const prefix = plan.prefix ?? nextDefaultSubnet(plan.family, taken, chosen, ula);
    if (!plan.prefix) chosen.push(prefix);
    return toAllocatedSubnet(prefix, withGateway ? (plan.gateway ?? defaultGateway(prefix)) : undefined);
  });
}

function refuseOverlapWithNetworks(prefix: Prefix, taken: TakenSubnet[]): void {
  const clash = taken.find((subnet) => overlaps(prefix, subnet.prefix));
  if (clash) {
    throw alreadyExists(`subnet ${formatPrefix(prefix)} overlaps subnet ${formatPrefix(clash.prefix)} of network ${clash.networkId}`);
  }
}

function nextDefaultSubnet(family: Family, taken: TakenSubnet[], chosen: Prefix[], ula: Prefix | undefined): Prefix {
  const candidates = family === 4 ? defaultIpv4Subnets() : defaultIpv6Subnets(requireUla(ula));
  for (const candidate of candidates) {
    const busy = taken.some((subnet) => overlaps(candidate, subnet.prefix)) || chosen.some((prefix) => overlaps(candidate, prefix));
    if (!busy) return candidate;
  }
  throw resourceExhausted(`no default ${familyName(family)} subnet is free: ${defaultPoolsText(family, ula)} are all in use`);
}

function requireUla(ula: Prefix | undefined): Prefix {
  if (!ula) throw new Error("failed to pick a default IPv6 subnet: the cluster's ULA prefix is not chosen yet");
  return ula;
}

function defaultPoolsText(family: Family, ula: Prefix | undefined): string {
  return family === 4 ? "172.18.0.0/16 to 172.31.0.0/16 and the /20s of 192.168.0.0/16" : `the /64s of ${ula ? formatPrefix(ula) : "the ULA /48"}`;
}

/** Docker's default address pools for user networks: 172.18-31.0.0/16, then 192.168.0.0/16 in /20s. */
export function* defaultIpv4Subnets(): Generator<Prefix> {
  const base172 = parsePrefix("172.16.0.0/12");
  for (let index = 2n; index < subnetCount(base172, 16); index++) yield subnetAt(base172, 16, index);
  const base192 = parsePrefix("192.168.0.0/16");
  for (let index = 0n; index < subnetCount(base192, 20); index++) yield subnetAt(base192, 20, index);
}

export function* defaultIpv6Subnets(ula: Prefix): Generator<Prefix> {
  for (let index = 0n; index < subnetCount(ula, 64); index++) yield subnetAt(ula, 64, index);
}

/** fd00::/8 plus a 40-bit random global id (RFC 4193), as a /48. */
export function ulaPrefixFromRandom(random: Uint8Array): Prefix {
  if (random.length < 5) throw new Error("failed to make a ULA prefix: 5 random bytes are needed");
  let globalId = 0n;
  for (const byte of random.subarray(0, 5)) globalId = (globalId << 8n) | BigInt(byte);
  return { family: 6, network: (0xfdn << 120n) | (globalId << 80n), length: 48 };
}

export function defaultGateway(prefix: Prefix): Address {
  return { family: prefix.family, value: firstUsable(prefix) };
}

function toAllocatedSubnet(prefix: Prefix, gateway: Address | undefined): AllocatedSubnet {
  return { cidr: formatPrefix(prefix), gateway: gateway ? formatAddress(gateway) : "", ipv6: prefix.family === 6 };
}

/** A retry of AllocateSubnets must ask for what the network already has. */
export function refuseDifferentRequest(existing: IpamNetwork, plans: SubnetPlan[]): void {
  const asked = plans.flatMap((plan) => (plan.prefix ? [formatPrefix(plan.prefix)] : []));
  const held = existing.subnets.map((subnet) => subnet.cidr);
  const missing = asked.filter((cidr) => !held.includes(cidr));
  if (missing.length > 0 || plans.length !== held.length) {
    throw alreadyExists(`network ${existing.networkId} already has subnets ${held.join(", ")}; release them before asking for others`);
  }
}

/** A network's subnets of one family, parsed, in the order they were requested. */
export function subnetsOfFamily(network: IpamNetwork, family: Family): { subnet: AllocatedSubnet; prefix: Prefix }[] {
  return network.subnets
    .filter((subnet) => familyOf(subnet.ipv6) === family)
    .map((subnet) => ({ subnet, prefix: parsePrefix(subnet.cidr) }));
}

/** Addresses that a subnet keeps for itself: its gateway. */
export function reservedValues(subnet: AllocatedSubnet): Set<bigint> {
  const reserved = new Set<bigint>();
  if (subnet.gateway) reserved.add(parseAddress(subnet.gateway).value);
  return reserved;
}

export interface ResolvedAddress {
  address: Address;
  subnet: AllocatedSubnet;
  prefix: Prefix;
}

/** Where a static address lives, or why it cannot be given to an endpoint. */
export function resolveStaticAddress(network: IpamNetwork, family: Family, text: string): ResolvedAddress {
  const address = parseIp("address", text.includes("/") ? text.slice(0, text.indexOf("/")) : text);
  if (address.family !== family) {
    throw invalidArgument(`invalid address ${text}: it is ${familyName(address.family)} but ${familyName(family)} was asked for`);
  }
  const subnets = subnetsOfFamily(network, family);
  const home = subnets.find(({ prefix }) => contains(prefix, address));
  if (!home) {
    const names = subnets.map(({ subnet }) => subnet.cidr).join(", ") || "none";
    throw invalidArgument(`invalid address ${text}: it is outside every ${familyName(family)} subnet of network ${network.networkId} (${names})`);
  }
  if (!isUsable(home.prefix, address)) {
    throw invalidArgument(`invalid address ${text}: it is not a usable address of subnet ${home.subnet.cidr} (${usableRange(home.prefix)})`);
  }
  if (reservedValues(home.subnet).has(address.value)) {
    throw alreadyExists(`address ${formatAddress(address)} is the gateway of subnet ${home.subnet.cidr}`);
  }
  return { address, ...home };
}

/**
 * The lowest usable address of `prefix` from `start` on for which `isFree` holds, or undefined.
 * `start` lets a caller skip a prefix of addresses it knows to be taken.
 */
export function lowestFree(prefix: Prefix, start: bigint, isFree: (value: bigint) => boolean): bigint | undefined {
  const last = lastUsable(prefix);
  for (let value = start > firstUsable(prefix) ? start : firstUsable(prefix); value <= last; value++) {
    if (isFree(value)) return value;
  }
  return undefined;
}

export function poolFullMessage(subnets: AllocatedSubnet[]): string {
  const cidrs = subnets.map((subnet) => subnet.cidr);
  return cidrs.length === 1 ? `pool ${cidrs[0]} is full` : `pools ${cidrs.join(", ")} are full`;
}
