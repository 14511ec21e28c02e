import ipaddr from "ipaddr.js";

// Prefix text as the kernel prints it back, so that announced, granted and installed prefixes compare equal.

/** "10.1.0.7/16" → "10.1.0.7/32"; "fd00::7/64" → "fd00::7/128". */
export function hostPrefix(addressCidr: string): string {
  const [address] = ipaddr.parseCIDR(addressCidr);
  return `${address.toString()}/${address.kind() === "ipv4" ? 32 : 128}`;
}

/** The canonical network form ("10.1.0.64/26"), or undefined when `cidr` is no prefix at all. */
export function canonicalPrefix(cidr: string): string | undefined {
  if (!ipaddr.isValidCIDR(cidr)) return undefined;
  const [address, length] = ipaddr.parseCIDR(cidr);
  const network = address.kind() === "ipv4" ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr);
  return `${network.toString()}/${length}`;
}

export function familyOfPrefix(cidr: string): 4 | 6 {
  return ipaddr.parseCIDR(cidr)[0].kind() === "ipv4" ? 4 : 6;
}

/** undefined for anything that is not a bare IPv4/IPv6 address. */
export function familyOfAddress(address: string): 4 | 6 | undefined {
  if (!ipaddr.isValid(address)) return undefined;
  return ipaddr.parse(address).kind() === "ipv4" ? 4 : 6;
}

/** Networks whose endpoints are reached through their host (the parent routes), so routes must be distributed. */
export function isRoutedMode(mode: string): boolean {
  return mode === "l3" || mode === "l3s";
}
