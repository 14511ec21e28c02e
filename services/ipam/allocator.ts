// Pure allocation logic: validation, choice of subnets, choice of addresses. No I/O; the store and
// the KV server decide who wins a race, this module only decides what to try.
import {
  contains,
  firstUsable,
  formatAddress,
  formatPrefix,
  IpParseError,
  isUsable,
  lastAddress,
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
import { alreadyExists, invalidArgument, resourceExhausted } from "../../libs/grpc/status-error.js";

/** One requested subnet after validation: an explicit prefix, or a family to take a default pool from. */
export interface SubnetPlan {
  family: Family;
  prefix?: Prefix;
  gateway?: Address;
  /** `--ip-range`: where automatic addresses come from. */
  range?: Prefix;
  aux: AuxAddress[];
}

export interface AuxAddress {
  name: string;
  address: Address;
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
  const rangeText = request.pool?.ipRange.trim() ?? "";
  const auxEntries = Object.entries(request.pool?.auxAddresses ?? {});
  if (request.cidr.trim() === "") {
    if (withGateway && request.gateway.trim() !== "") {
      throw invalidArgument(`invalid gateway ${request.gateway}: a gateway needs an explicit subnet`);
    }
    if (rangeText !== "" || auxEntries.length > 0) throw invalidArgument("an ip range or aux address needs an explicit subnet");
    return { family: familyOf(request.ipv6), aux: [] };
  }
  const prefix = parseSubnet(request.cidr);
  // The reference ignores a gateway given to a network without one (l3 / l3s).
  const gateway = withGateway && request.gateway.trim() !== "" ? parseGateway(request.gateway, prefix) : undefined;
  const range = rangeText === "" ? undefined : parseRange(rangeText, prefix);
  const aux = auxEntries.map(([name, text]) => parseAux(name, text, prefix));
  refuseDuplicateAux(aux);
  return { family: prefix.family, prefix, gateway, range, aux };
}

function parseRange(text: string, subnet: Prefix): Prefix {
  let range: Prefix;
  try {
    range = parsePrefix(text);
  } catch (error) {
    if (error instanceof IpParseError) throw invalidArgument(`invalid ip range ${text}: ${error.message}`);
    throw error;
  }
  if (range.family !== subnet.family || range.length < subnet.length || !contains(subnet, { family: range.family, value: range.network })) {
    throw invalidArgument(`invalid ip range ${text}: it must be inside subnet ${formatPrefix(subnet)}`);
  }
  return range;
}

function parseAux(name: string, text: string, subnet: Prefix): AuxAddress {
  if (name.trim() === "") throw invalidArgument(`invalid aux address =${text}: it needs a name (name=address)`);
  const address = parseIp(`aux address ${name}=`, text);
  if (!isUsable(subnet, address)) {
    throw invalidArgument(`invalid aux address ${name}=${text}: it must be a usable address of subnet ${formatPrefix(subnet)} (${usableRange(subnet)})`);
  }
  return { name, address };
}

function refuseDuplicateAux(aux: AuxAddress[]): void {
  aux.forEach((a, i) => {
    const twin = aux.slice(i + 1).find((b) => b.address.value === a.address.value);
    if (twin) throw invalidArgument(`aux addresses ${a.name} and ${twin.name} are both ${formatAddress(a.address)}`);
  });
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
    const gateway = withGateway ? (plan.gateway ?? defaultGateway(prefix)) : undefined;
    refuseAuxOnGateway(plan.aux, gateway, prefix);
    return toAllocatedSubnet(prefix, gateway, plan);
  });
}

function refuseAuxOnGateway(aux: AuxAddress[], gateway: Address | undefined, prefix: Prefix): void {
  const clash = aux.find((entry) => gateway && entry.address.value === gateway.value);
  if (clash) {
    throw invalidArgument(`invalid aux address ${clash.name}=${formatAddress(clash.address)}: it is the gateway of subnet ${formatPrefix(prefix)}`);
  }
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

function toAllocatedSubnet(prefix: Prefix, gateway: Address | undefined, plan: SubnetPlan): AllocatedSubnet {
  const subnet: AllocatedSubnet = { cidr: formatPrefix(prefix), gateway: gateway ? formatAddress(gateway) : "", ipv6: prefix.family === 6 };
  if (plan.range || plan.aux.length > 0) {
    const auxAddresses = Object.fromEntries(plan.aux.map((entry) => [entry.name, formatAddress(entry.address)]));
    subnet.pool = { ipRange: plan.range ? formatPrefix(plan.range) : "", auxAddresses };
  }
  return subnet;
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

/** Addresses that a subnet keeps from endpoints: its gateway and aux addresses. */
export function reservedValues(subnet: AllocatedSubnet): Set<bigint> {
  const reserved = new Set<bigint>();
  if (subnet.gateway) reserved.add(parseAddress(subnet.gateway).value);
  for (const address of Object.values(subnet.pool?.auxAddresses ?? {})) reserved.add(parseAddress(address).value);
  return reserved;
}

export function auxNameOf(subnet: AllocatedSubnet, address: Address): string | undefined {
  const entry = Object.entries(subnet.pool?.auxAddresses ?? {}).find(([, text]) => parseAddress(text).value === address.value);
  return entry?.[0];
}

/** The addresses automatic allocation may take: the subnet's usable ones, within its ip range if any. */
export interface Bounds {
  first: bigint;
  last: bigint;
}

export function poolBounds(subnet: AllocatedSubnet, prefix: Prefix): Bounds {
  const range = subnet.pool?.ipRange ? parsePrefix(subnet.pool.ipRange) : prefix;
  const first = range.network > firstUsable(prefix) ? range.network : firstUsable(prefix);
  const last = lastAddress(range) < lastUsable(prefix) ? lastAddress(range) : lastUsable(prefix);
  return { first, last };
}

/** What "pool X is full" names: the ip range when there is one. */
export function poolName(subnet: AllocatedSubnet): string {
  return subnet.pool?.ipRange || subnet.cidr;
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
  const auxName = auxNameOf(home.subnet, address);
  if (auxName !== undefined) throw alreadyExists(`address ${formatAddress(address)} is aux address ${auxName} of subnet ${home.subnet.cidr}`);
  if (reservedValues(home.subnet).has(address.value)) {
    throw alreadyExists(`address ${formatAddress(address)} is the gateway of subnet ${home.subnet.cidr}`);
  }
  return { address, ...home };
}

/**
 * The lowest address within `bounds` from `start` on for which `isFree` holds, or undefined.
 * `start` lets a caller skip a run of addresses it knows to be taken.
 */
export function lowestFree(bounds: Bounds, start: bigint, isFree: (value: bigint) => boolean): bigint | undefined {
  for (let value = start > bounds.first ? start : bounds.first; value <= bounds.last; value++) {
    if (isFree(value)) return value;
  }
  return undefined;
}

export function poolFullMessage(subnets: AllocatedSubnet[]): string {
  const cidrs = subnets.map(poolName);
  return cidrs.length === 1 ? `pool ${cidrs[0]} is full` : `pools ${cidrs.join(", ")} are full`;
}
