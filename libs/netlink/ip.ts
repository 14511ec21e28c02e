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

// ipaddr.js tries IPv6 (regex-heavy) before IPv4 and costs ~10 µs an address: too much at thousands of
// routes a pass. Plain dotted quads, nearly every address Trellis sees, take this path; anything else,
// including the looser IPv4 forms ipaddr.js accepts ("10.1", octal), still goes through ipaddr.js.
const DOTTED_QUAD = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

/** The four bytes of a plain dotted-quad IPv4 address, or undefined for any other text. */
export function dottedQuadBytes(address: string): number[] | undefined {
  const match = DOTTED_QUAD.exec(address);
  if (!match) return undefined;
  const bytes = [Number(match[1]), Number(match[2]), Number(match[3]), Number(match[4])];
  return bytes.every((byte) => byte <= 255) ? bytes : undefined;
}

/** Parses "10.0.0.2/24" or "2001:db8::1/64"; returns undefined for anything else (callers word the error). */
export function parsePrefix(cidr: string): ParsedPrefix | undefined {
  const slash = cidr.indexOf("/");
  const quad = slash > 0 ? dottedQuadBytes(cidr.slice(0, slash)) : undefined;
  const length = quad ? parsePrefixLength(cidr.slice(slash + 1), 32) : undefined;
  if (quad && length !== undefined) return { family: 4, bytes: Buffer.from(quad), prefixLength: length };
  if (!ipaddr.isValidCIDR(cidr)) return undefined;
  const [address, prefixLength] = ipaddr.parseCIDR(cidr);
  // "::ffff:10.0.0.1/120" is an IPv6 prefix to the kernel; keep it so rather than silently converting.
  return { family: address.kind() === "ipv4" ? 4 : 6, bytes: Buffer.from(address.toByteArray()), prefixLength };
}

/** Parses a bare address such as a gateway. */
export function parseIp(address: string): { family: IpFamily; bytes: Buffer } | undefined {
  const quad = dottedQuadBytes(address);
  if (quad) return { family: 4, bytes: Buffer.from(quad) };
  if (!ipaddr.isValid(address)) return undefined;
  const parsed = ipaddr.parse(address);
  return { family: parsed.kind() === "ipv4" ? 4 : 6, bytes: Buffer.from(parsed.toByteArray()) };
}

/** The kernel's 4- or 16-byte address in canonical text (RFC 5952 for IPv6). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}

/** "24" → 24 when within 0..max; undefined otherwise (no sign, no leading zeros, as ipaddr.js). */
function parsePrefixLength(text: string, max: number): number | undefined {
  if (!/^(0|[1-9]\d?\d?)$/.test(text)) return undefined;
  const length = Number(text);
  return length <= max ? length : undefined;
}
