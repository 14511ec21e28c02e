import ipaddr from "ipaddr.js";
import type { IpFamily } from "./types.js";

export const AF_INET = 2;
export const AF_INET6 = 10;

export interface ParsedPrefix {
  family: IpFamily;
  bytes: Buffer;
  prefixLength: number;
}

export function afOf(family: IpFamily): number {
  return family === 4 ? AF_INET : AF_INET6;
}

export function familyOf(af: number): IpFamily | undefined {
  return af === AF_INET ? 4 : af === AF_INET6 ? 6 : undefined;
}

/** Parses "10.0.0.2/24" or "2001:db8::1/64"; returns undefined for anything else (callers word the error). */
export function parsePrefix(cidr: string): ParsedPrefix | undefined {
  if (!ipaddr.isValidCIDR(cidr)) return undefined;
  const [address, prefixLength] = ipaddr.parseCIDR(cidr);
  // "::ffff:10.0.0.1/120" is an IPv6 prefix to the kernel; keep it so rather than silently converting.
  return { family: address.kind() === "ipv4" ? 4 : 6, bytes: Buffer.from(address.toByteArray()), prefixLength };
}

/** Parses a bare address such as a gateway. */
export function parseIp(address: string): { family: IpFamily; bytes: Buffer } | undefined {
  if (!ipaddr.isValid(address)) return undefined;
  const parsed = ipaddr.parse(address);
  return { family: parsed.kind() === "ipv4" ? 4 : 6, bytes: Buffer.from(parsed.toByteArray()) };
}

/** The kernel's 4- or 16-byte address in canonical text (RFC 5952 for IPv6). */
export function formatIp(bytes: Uint8Array): string {
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}
