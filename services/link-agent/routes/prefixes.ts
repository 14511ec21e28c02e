import ipaddr from "ipaddr.js";
import { dottedQuadValue, parsePrefix } from "../../../libs/netlink/ip.js";

// Prefix text as the kernel prints it back, so that announced, granted and installed prefixes compare equal.
// Beliefs are recomputed over every announced prefix on each pass: plain IPv4 text takes the fast
// parser of libs/netlink/ip.ts, everything else ipaddr.js.

/** "10.1.0.7/16" → "10.1.0.7/32"; "fd00::7/64" → "fd00::7/128". */
export function hostPrefix(addressCidr: string): string {
  const parsed = parsePrefix(addressCidr);
  if (parsed?.family === 4) return `${parsed.bytes[0]}.${parsed.bytes[1]}.${parsed.bytes[2]}.${parsed.bytes[3]}/32`;
  const [address] = ipaddr.parseCIDR(addressCidr);
  return `${address.toString()}/${address.kind() === "ipv4" ? 32 : 128}`;
}

/** The canonical network form ("10.1.0.64/26"), or undefined when `cidr` is no prefix at all. */
export function canonicalPrefix(cidr: string): string | undefined {
  // A plain dotted quad with a /32 is already canonical: the common case, every prefix of every announcement an
  // installer receives; told without parsing it into bytes.
  if (cidr.endsWith("/32") && dottedQuadValue(cidr.slice(0, -3)) !== undefined) return cidr;
  const parsed = parsePrefix(cidr);
  if (parsed?.family === 4) {
    const mask = parsed.prefixLength === 0 ? 0 : (~0 << (32 - parsed.prefixLength)) >>> 0;
    const network = (parsed.bytes.readUInt32BE(0) & mask) >>> 0;
    return `${network >>> 24}.${(network >>> 16) & 255}.${(network >>> 8) & 255}.${network & 255}/${parsed.prefixLength}`;
  }
  if (!ipaddr.isValidCIDR(cidr)) return undefined;
  const [address, length] = ipaddr.parseCIDR(cidr);
  const network = address.kind() === "ipv4" ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr);
  return `${network.toString()}/${length}`;
}

export function familyOfPrefix(cidr: string): 4 | 6 {
  const parsed = parsePrefix(cidr);
  if (parsed) return parsed.family;
  return ipaddr.parseCIDR(cidr)[0].kind() === "ipv4" ? 4 : 6;
}

/** undefined for anything that is not a bare IPv4/IPv6 address. */
export function familyOfAddress(address: string): 4 | 6 | undefined {
  if (dottedQuadValue(address) !== undefined) return 4;
  if (!ipaddr.isValid(address)) return undefined;
  return ipaddr.parse(address).kind() === "ipv4" ? 4 : 6;
}

/** Networks whose endpoints are reached through their host (the parent routes), so routes must be distributed. */
export function isRoutedMode(mode: string): boolean {
  return mode === "l3" || mode === "l3s";
}
