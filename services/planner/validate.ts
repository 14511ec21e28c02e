import {
  ADDRESS_BITS,
  contains,
  firstUsable,
  formatAddress,
  formatPrefix,
  HostBitsError,
  isUsable,
  lastAddress,
  lastUsable,
  parseAddress,
  parsePrefix,
  type Address,
  type Family,
  type Prefix,
} from "../../libs/ipmath/index.js";
import { ParentKind, type NetworkSpec, type Parent } from "../../libs/proto/gen/trellis/v1/network.js";
import type { HostBlocks, PoolOptions } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { invalidArgument } from "../../libs/grpc/status-error.js";
import { DEFAULT_BLOCK_LENGTH } from "../ipam/blocks.js";

// Validation of a `network create` before anything is written anywhere. Every message says what was
// wrong and what would be right, in the style of the reference driver.

export const IPVLAN_MODES = ["l2", "l3", "l3s"] as const;
export const IPVLAN_FLAGS = ["bridge", "private", "vepa"] as const;
export const NETWORK_OPTIONS = ["parent", "ipvlan_mode", "ipvlan_flag", "ipv4_block_prefix", "ipv6_block_prefix", "host_shim"] as const;
export type IpvlanMode = (typeof IPVLAN_MODES)[number];
export type IpvlanFlag = (typeof IPVLAN_FLAGS)[number];

/** Linux's IFNAMSIZ less the terminating NUL. */
const MAX_INTERFACE_NAME = 15;
const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/**
 * The per-host block sizes an l3 / l3s network may ask for, as prefix lengths. A host takes a whole
 * block at once (one route covers it), so a shorter prefix would hand one host more than 4,096
 * addresses; the same bounds as Calico's block size.
 */
const BLOCK_PREFIX_OPTIONS = [
  { option: "ipv4_block_prefix", family: 4, shortest: 20 },
  { option: "ipv6_block_prefix", family: 6, shortest: 116 },
] as const;

export interface RequestedSubnet {
  cidr: string;
  gateway: string;
  ipv6: boolean;
  /** --ip-range and --aux-address of this subnet; absent when neither was given. */
  pool?: PoolOptions;
}

export interface ValidatedNetwork {
  name: string;
  mode: IpvlanMode;
  flag: IpvlanFlag;
  parent: Parent;
  internal: boolean;
  ipv6: boolean;
  /** As given; default subnets (empty cidr) are added for IPv4 always and for IPv6 when asked. */
  subnets: RequestedSubnet[];
  notes: string[];
  /** l3 / l3s: the block lengths each host takes, defaults resolved; undefined in l2. */
  hostBlocks: HostBlocks | undefined;
  /** -o host_shim=true: hosts get an interface of their own on the network (services/planner/host-shim.ts). */
  hostShim: boolean;
}

export function validateName(what: string, name: string): void {
  if (!NAME_PATTERN.test(name) || name.length > 64) {
    throw invalidArgument(
      `invalid ${what} name "${name}": use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit`,
    );
  }
}

export function validateNetworkSpec(spec: NetworkSpec): ValidatedNetwork {
  validateName("network", spec.name);
  if (spec.driver !== "" && spec.driver !== "ipvlan") {
    throw invalidArgument(`driver "${spec.driver}" is not supported: Trellis networks use the ipvlan driver`);
  }
  for (const key of Object.keys(spec.options)) {
    if (!(NETWORK_OPTIONS as readonly string[]).includes(key)) {
      throw invalidArgument(`unknown option "${key}": valid options are ${NETWORK_OPTIONS.join(", ")}`);
    }
  }
  const mode = oneOf("ipvlan_mode", spec.options.ipvlan_mode || "l2", IPVLAN_MODES);
  const flag = oneOf("ipvlan_flag", spec.options.ipvlan_flag || "bridge", IPVLAN_FLAGS);
  const parentName = spec.options.parent ?? "";
  // Without a parent the network sits on a dummy and is isolated like --internal, but (as in the
  // reference's l3 example) its containers still get their default routes.
  const internal = spec.internal;
  const parent = internal || parentName === "" ? { name: "", kind: ParentKind.PARENT_KIND_DUMMY, base: "", vlanId: 0 } : parseParent(parentName);
  const notes: string[] = [];
  const subnets = requestedSubnets(spec, mode, notes);
  const ipv6 = spec.ipv6 || subnets.some((s) => s.ipv6);
  if (!subnets.some((s) => !s.ipv6)) subnets.unshift({ cidr: "", gateway: "", ipv6: false });
  if (ipv6 && !subnets.some((s) => s.ipv6)) subnets.push({ cidr: "", gateway: "", ipv6: true });
  const hostBlocks = hostBlocksOf(spec.options, mode, ipv6);
  const hostShim = hostShimOf(spec.options.host_shim);
  return { name: spec.name, mode, flag, parent, internal, ipv6, subnets, notes, hostBlocks, hostShim };
}

/** The given subnets with their gateways, ip ranges and aux addresses, as IPAM is to be asked for them. */
function requestedSubnets(spec: NetworkSpec, mode: IpvlanMode, notes: string[]): RequestedSubnet[] {
  const subnets = pairGateways(spec.subnets.map(parseSubnet), spec.gateways);
  pairIpRanges(subnets, spec.ipRanges);
  pairAuxAddresses(subnets, spec.auxAddresses);
  if (mode === "l2") {
    refuseAuxOnGateways(subnets);
    return subnets;
  }
  for (const subnet of subnets.filter((s) => s.gateway !== "")) {
    notes.push(`gateway ${subnet.gateway} ignored: ${mode} mode routes by device (default dev eth0)`);
    subnet.gateway = "";
  }
  return subnets;
}

/** Only l3 / l3s networks hand out addresses from per-host blocks, so only they take block sizes. */
function hostBlocksOf(options: Record<string, string>, mode: IpvlanMode, ipv6: boolean): HostBlocks | undefined {
  const [ipv4Option, ipv6Option] = BLOCK_PREFIX_OPTIONS;
  if (mode === "l2") {
    const given = BLOCK_PREFIX_OPTIONS.find(({ option }) => options[option]);
    if (given) {
      throw invalidArgument(
        `option ${given.option} is for l3 and l3s networks, whose hosts take blocks of the subnet; an l2 network has none: remove it, or add -o ipvlan_mode=l3`,
      );
    }
    return undefined;
  }
  if (!ipv6 && options[ipv6Option.option]) {
    throw invalidArgument(`option ${ipv6Option.option} needs IPv6 on the network: add --ipv6 or an IPv6 --subnet, or remove it`);
  }
  return { ipv4PrefixLength: blockPrefix(options, ipv4Option), ipv6PrefixLength: ipv6 ? blockPrefix(options, ipv6Option) : undefined };
}

function blockPrefix(options: Record<string, string>, { option, family, shortest }: { option: string; family: Family; shortest: number }): number {
  const text = options[option];
  if (!text) return DEFAULT_BLOCK_LENGTH[family];
  const length = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(length >= shortest && length <= ADDRESS_BITS[family])) {
    throw invalidArgument(`${option} must be between ${shortest}-${ADDRESS_BITS[family]}, received: ${text}`);
  }
  return length;
}

/** Off by default: the kernel keeping a host from its ipvlan containers is a feature, so the way round it is asked for. */
function hostShimOf(text: string | undefined): boolean {
  if (text === undefined || text === "" || text === "false") return false;
  if (text === "true") return true;
  throw invalidArgument(`invalid host_shim "${text}": must be true or false (true gives each host an interface of its own on the network, to reach its containers)`);
}

function oneOf<T extends string>(option: string, value: string, valid: readonly T[]): T {
  if (!(valid as readonly string[]).includes(value)) {
    throw invalidArgument(`invalid ${option} "${value}": must be one of ${valid.join(", ")}`);
  }
  return value as T;
}

/** `eth0.20` is a VLAN sub-interface of eth0 to create on demand; any other name must exist on the host. */
export function parseParent(name: string): Parent {
  if (name.length > MAX_INTERFACE_NAME) {
    throw invalidArgument(
      `invalid parent "${name}": interface names are at most ${MAX_INTERFACE_NAME} characters, this one has ${name.length}`,
    );
  }
  if (name === "lo") {
    throw invalidArgument(`invalid parent "lo": the loopback interface cannot be an ipvlan parent; use an Ethernet interface such as eth0`);
  }
  const dot = name.lastIndexOf(".");
  if (dot <= 0) return { name, kind: ParentKind.PARENT_KIND_EXISTING, base: "", vlanId: 0 };
  const base = name.slice(0, dot);
  const tag = name.slice(dot + 1);
  const vlanId = /^\d+$/.test(tag) ? Number(tag) : NaN;
  if (!(vlanId >= 1 && vlanId <= 4094)) {
    throw invalidArgument(`vlan id must be between 1-4094, received: ${tag}`);
  }
  if (base === "lo") {
    throw invalidArgument(`invalid parent "${name}": the loopback interface cannot carry VLAN sub-interfaces`);
  }
  return { name, kind: ParentKind.PARENT_KIND_VLAN, base, vlanId };
}

function parseSubnet(cidr: string): RequestedSubnet {
  const prefix = parsePrefixArgument("subnet", cidr);
  return { cidr: formatPrefix(prefix), gateway: "", ipv6: prefix.family === 6 };
}

function parsePrefixArgument(what: string, text: string): Prefix {
  try {
    return parsePrefix(text);
  } catch (error) {
    if (error instanceof HostBitsError) {
      throw invalidArgument(`invalid ${what} "${text}": host bits are set; did you mean ${formatPrefix(error.suggestion)}?`);
    }
    throw invalidArgument(`invalid ${what} "${text}": expected a CIDR such as 192.168.1.0/24 or 2001:db8::/64`);
  }
}

function parseAddressArgument(what: string, text: string): Address {
  try {
    return parseAddress(text);
  } catch {
    throw invalidArgument(`invalid ${what} "${text}": expected an IP address such as 192.168.1.1`);
  }
}

/** Each gateway belongs to the subnet that contains it, as `docker network create` pairs them. */
function pairGateways(subnets: RequestedSubnet[], gateways: string[]): RequestedSubnet[] {
  for (const gateway of gateways) {
    const address = parseAddressArgument("gateway", gateway);
    const subnet = subnetWhere(subnets, `gateway ${gateway}`, (prefix) => contains(prefix, address));
    if (subnet.gateway !== "") {
      throw invalidArgument(`subnet ${subnet.cidr} has two gateways, ${subnet.gateway} and ${gateway}: give at most one per subnet`);
    }
    subnet.gateway = formatAddress(address);
  }
  return subnets;
}

/** The given subnet that `fits`; `what` names the flag's value in the error when none does. */
function subnetWhere(subnets: RequestedSubnet[], what: string, fits: (prefix: Prefix) => boolean): RequestedSubnet {
  const subnet = subnets.find((s) => fits(parsePrefix(s.cidr)));
  if (!subnet) {
    const listed = subnets.length > 0 ? subnets.map((s) => s.cidr).join(", ") : "none given";
    throw invalidArgument(`${what} is not in any subnet of the network (subnets: ${listed})`);
  }
  return subnet;
}

/** Each ip range belongs to the subnet that contains it, at most one per subnet, as docker pairs them. */
function pairIpRanges(subnets: RequestedSubnet[], ranges: string[]): void {
  for (const text of ranges) {
    const range = parsePrefixArgument("ip range", text);
    const start = { family: range.family, value: range.network };
    const subnet = subnetWhere(subnets, `ip range ${text}`, (prefix) => prefix.length <= range.length && contains(prefix, start));
    const prefix = parsePrefix(subnet.cidr);
    if (lastAddress(range) < firstUsable(prefix) || range.network > lastUsable(prefix)) {
      throw invalidArgument(`ip range ${text} holds no usable address of subnet ${subnet.cidr}: choose a range with addresses from ${usableRange(prefix)}`);
    }
    const pool = poolOf(subnet);
    if (pool.ipRange !== "") {
      throw invalidArgument(`subnet ${subnet.cidr} has two ip ranges, ${pool.ipRange} and ${text}: give at most one per subnet`);
    }
    pool.ipRange = formatPrefix(range);
  }
}

/** Each aux address belongs to the subnet that contains it; names are the network's, as in docker. */
function pairAuxAddresses(subnets: RequestedSubnet[], auxAddresses: Record<string, string>): void {
  for (const [name, text] of Object.entries(auxAddresses)) {
    if (name.trim() === "") throw invalidArgument(`invalid aux address "=${text}": it needs a name, such as router=${text}`);
    const address = parseAddressArgument(`aux address ${name}`, text);
    const subnet = subnetWhere(subnets, `aux address ${name}=${text}`, (prefix) => contains(prefix, address));
    const prefix = parsePrefix(subnet.cidr);
    if (!isUsable(prefix, address)) {
      throw invalidArgument(`aux address ${name}=${text} is not a usable address of subnet ${subnet.cidr}: choose one from ${usableRange(prefix)}`);
    }
    const pool = poolOf(subnet);
    const formatted = formatAddress(address);
    const twin = Object.entries(pool.auxAddresses).find(([, held]) => held === formatted);
    if (twin) throw invalidArgument(`aux addresses ${twin[0]} and ${name} are both ${formatted}: give each its own address`);
    pool.auxAddresses[name] = formatted;
  }
}

function poolOf(subnet: RequestedSubnet): PoolOptions {
  subnet.pool ??= { ipRange: "", auxAddresses: {} };
  return subnet.pool;
}

/**
 * The gateway is kept from containers already, so one address cannot be both; IPAM would refuse it
 * too, but without saying which flag to change. Without --gateway, IPAM takes the first usable address.
 */
function refuseAuxOnGateways(subnets: RequestedSubnet[]): void {
  for (const subnet of subnets) {
    const prefix = parsePrefix(subnet.cidr);
    const gateway = subnet.gateway || formatAddress({ family: prefix.family, value: firstUsable(prefix) });
    const clash = Object.entries(subnet.pool?.auxAddresses ?? {}).find(([, address]) => address === gateway);
    if (!clash) continue;
    const [name, address] = clash;
    throw invalidArgument(
      subnet.gateway
        ? `aux address ${name}=${address} is the gateway of subnet ${subnet.cidr}: give one of them another address`
        : `aux address ${name}=${address} is the default gateway of subnet ${subnet.cidr} (its first usable address): choose another address, or set --gateway`,
    );
  }
}

function usableRange(prefix: Prefix): string {
  const address = (value: bigint) => formatAddress({ family: prefix.family, value });
  return `${address(firstUsable(prefix))} to ${address(lastUsable(prefix))}`;
}

/**
 * An attach into a container runtime's namespace (CNI_NETNS and CNI_IFNAME): the path must be absolute, as the
 * agent opens it as it is, and the name one the kernel takes for a link.
 */
export function validateRuntimeAttach(spec: { netnsPath?: string; ifname?: string }): void {
  const path = spec.netnsPath ?? "";
  if (path === "") {
    if (spec.ifname) throw invalidArgument(`invalid attach: ifname "${spec.ifname}" needs netns_path, the container runtime's network namespace it goes in`);
    return;
  }
  if (!path.startsWith("/") || path.split("/").some((part) => part === "." || part === "..") || /[\s\0]/.test(path)) {
    throw invalidArgument(
      `invalid netns_path "${path}": give the absolute path of the container runtime's network namespace (CNI_NETNS), e.g. /var/run/netns/cni-1234 or /proc/1234/ns/net`,
    );
  }
  const ifname = spec.ifname ?? "";
  if (ifname !== "" && (ifname.length > MAX_INTERFACE_NAME || ifname === "." || ifname === ".." || /[/:\s\0]/.test(ifname))) {
    throw invalidArgument(
      `invalid ifname "${ifname}": use 1-${MAX_INTERFACE_NAME} characters, none of them '/', ':' or white space (e.g. eth0, net1)`,
    );
  }
}
