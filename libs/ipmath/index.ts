import ipaddr from "ipaddr.js";

// Addresses as bigints: one arithmetic for both families, and IPv6 offsets do not fit in a number.
// Parsing and formatting go through ipaddr.js (RFC 5952 text for IPv6).

export type Family = 4 | 6;

export const ADDRESS_BITS: Record<Family, number> = { 4: 32, 6: 128 };

export interface Address {
  family: Family;
  value: bigint;
}

/** A network address with its prefix length, e.g. 10.1.0.0/24. */
export interface Prefix {
  family: Family;
  network: bigint;
  length: number;
}

/** Why a text is not an address or prefix; the message names the cause, not the text. */
export class IpParseError extends Error {}

/** Strict: dotted four-part decimal for IPv4 (ipaddr.js alone accepts "10.1" or hex parts), no zone for IPv6. */
/** Dotted-quad IPv4 without leading zeros: the common spelling, parsed without ipaddr.js (IPAM's hot path). */
const PLAIN_IPV4 = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

export function parseAddress(text: string): Address {
  const trimmed = text.trim();
  const plain = PLAIN_IPV4.exec(trimmed);
  if (plain) {
    const octets = plain.slice(1).map(Number);
    if (octets.every((octet) => octet <= 255)) return { family: 4, value: BigInt(((octets[0]! << 24) >>> 0) + (octets[1]! << 16) + (octets[2]! << 8) + octets[3]!) };
  }
  if (ipaddr.IPv4.isValidFourPartDecimal(trimmed)) return fromIpaddr(ipaddr.IPv4.parse(trimmed));
  if (!trimmed.includes("%") && ipaddr.IPv6.isValid(trimmed)) {
    const parsed = ipaddr.IPv6.parse(trimmed);
    // ::ffff:a.b.c.d would be a second spelling of an IPv4 address in another family.
    if (parsed.isIPv4MappedAddress()) throw new IpParseError("an IPv4-mapped IPv6 address; write it as IPv4");
    return fromIpaddr(parsed);
  }
  throw new IpParseError("not an IP address");
}

export interface ParsedCidr {
  address: Address;
  length: number;
}

/** An address with a prefix length, host bits allowed (e.g. 192.168.1.2/24 as an interface address). */
export function parseCidr(text: string): ParsedCidr {
  const slash = text.indexOf("/");
  if (slash < 0) throw new IpParseError("no prefix length (like /24)");
  const address = parseAddress(text.slice(0, slash));
  const lengthText = text.slice(slash + 1).trim();
  const length = Number(lengthText);
  const maxLength = ADDRESS_BITS[address.family];
  if (!/^\d+$/.test(lengthText) || length > maxLength) {
    throw new IpParseError(`prefix length must be between 0 and ${maxLength}, received: ${lengthText}`);
  }
  return { address, length };
}

export class HostBitsError extends IpParseError {
  constructor(readonly suggestion: Prefix) {
    super(`host bits set, did you mean ${formatPrefix(suggestion)}?`);
  }
}

/** A subnet: the address must be the network address of its prefix. */
export function parsePrefix(text: string): Prefix {
  const { address, length } = parseCidr(text);
  const prefix = { family: address.family, network: address.value & networkMask(address.family, length), length };
  if (prefix.network !== address.value) throw new HostBitsError(prefix);
  return prefix;
}

export function formatAddress(address: Address): string {
  if (address.family === 4) {
    const value = Number(address.value);
    return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
  }
  const bytes: number[] = [];
  let rest = address.value;
  for (let i = 0; i < ADDRESS_BITS[address.family] / 8; i++) {
    bytes.unshift(Number(rest & 0xffn));
    rest >>= 8n;
  }
  return ipaddr.fromByteArray(bytes).toString();
}

export function formatPrefix(prefix: Prefix): string {
  return `${formatAddress({ family: prefix.family, value: prefix.network })}/${prefix.length}`;
}

/** The address with the prefix's length, as an interface is configured: 192.168.1.2/24. */
export function formatInterfaceAddress(address: Address, prefix: Prefix): string {
  return `${formatAddress(address)}/${prefix.length}`;
}

export function networkMask(family: Family, length: number): bigint {
  const bits = BigInt(ADDRESS_BITS[family]);
  const hostBits = bits - BigInt(length);
  return ((1n << bits) - 1n) ^ ((1n << hostBits) - 1n);
}

export function prefixSize(prefix: Prefix): bigint {
  return 1n << BigInt(ADDRESS_BITS[prefix.family] - prefix.length);
}

export function lastAddress(prefix: Prefix): bigint {
  return prefix.network + prefixSize(prefix) - 1n;
}

export function contains(prefix: Prefix, address: Address): boolean {
  return prefix.family === address.family && address.value >= prefix.network && address.value <= lastAddress(prefix);
}

export function overlaps(a: Prefix, b: Prefix): boolean {
  return a.family === b.family && a.network <= lastAddress(b) && b.network <= lastAddress(a);
}

/** Point-to-point prefixes (/31, /32, /127, /128) have no network or broadcast address to skip (RFC 3021). */
function isPointToPoint(prefix: Prefix): boolean {
  return ADDRESS_BITS[prefix.family] - prefix.length <= 1;
}

/** The lowest address an endpoint or gateway can take: the network address is skipped. */
export function firstUsable(prefix: Prefix): bigint {
  return isPointToPoint(prefix) ? prefix.network : prefix.network + 1n;
}

/** The highest usable address: IPv4's broadcast address is skipped (IPv6 has no broadcast). */
export function lastUsable(prefix: Prefix): bigint {
  const last = lastAddress(prefix);
  return prefix.family === 4 && !isPointToPoint(prefix) ? last - 1n : last;
}

export function isUsable(prefix: Prefix, address: Address): boolean {
  return contains(prefix, address) && address.value >= firstUsable(prefix) && address.value <= lastUsable(prefix);
}

/** The `index`-th subnet of length `length` inside `parent`. */
export function subnetAt(parent: Prefix, length: number, index: bigint): Prefix {
  const step = 1n << BigInt(ADDRESS_BITS[parent.family] - length);
  return { family: parent.family, network: parent.network + step * index, length };
}

export function subnetCount(parent: Prefix, length: number): bigint {
  return 1n << BigInt(length - parent.length);
}

function fromIpaddr(parsed: ipaddr.IPv4 | ipaddr.IPv6): Address {
  let value = 0n;
  for (const byte of parsed.toByteArray()) value = (value << 8n) | BigInt(byte);
  return { family: parsed.kind() === "ipv4" ? 4 : 6, value };
}
