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
// routes a pass. Plain dotted quads, nearly every address Trellis sees, take the scanner below; anything
// else, including the looser IPv4 forms ipaddr.js accepts ("10.1", octal), still goes through ipaddr.js.
/** A plain dotted-quad IPv4 address ("10.1.0.7": four decimals 0-255, no leading zeros) as a 32-bit number. */
export function dottedQuadValue(address: string): number | undefined {
  let value = 0;
  let octet = -1;
  let dots = 0;
  for (let i = 0; i < address.length; i++) {
    const code = address.charCodeAt(i);
    if (code === 46 /* . */) {
      if (octet < 0 || ++dots > 3) return undefined;
      value = value * 256 + octet;
      octet = -1;
    } else if (code >= 48 && code <= 57) {
      if (octet === 0) return undefined;
      octet = octet < 0 ? code - 48 : octet * 10 + code - 48;
      if (octet > 255) return undefined;
    } else {
      return undefined;
    }
  }
  return dots === 3 && octet >= 0 ? value * 256 + octet : undefined;
}

/** The four bytes of a plain dotted-quad IPv4 address, or undefined for any other text. */
export function dottedQuadBytes(address: string): Buffer | undefined {
  const value = dottedQuadValue(address);
  if (value === undefined) return undefined;
  const bytes = Buffer.allocUnsafe(4);
  bytes.writeUInt32BE(value);
  return bytes;
}

/** Parses "10.0.0.2/24" or "2001:db8::1/64"; returns undefined for anything else (callers word the error). */
export function parsePrefix(cidr: string): ParsedPrefix | undefined {
  const slash = cidr.indexOf("/");
  const quad = slash > 0 ? dottedQuadBytes(cidr.slice(0, slash)) : undefined;
  const length = quad ? parsePrefixLength(cidr.slice(slash + 1), 32) : undefined;
  if (quad && length !== undefined) return { family: 4, bytes: quad, prefixLength: length };
  if (!ipaddr.isValidCIDR(cidr)) return undefined;
  const [address, prefixLength] = ipaddr.parseCIDR(cidr);
  // "::ffff:10.0.0.1/120" is an IPv6 prefix to the kernel; keep it so rather than silently converting.
  return { family: address.kind() === "ipv4" ? 4 : 6, bytes: Buffer.from(address.toByteArray()), prefixLength };
}

/** Parses a bare address such as a gateway. */
export function parseIp(address: string): { family: IpFamily; bytes: Buffer } | undefined {
  const quad = dottedQuadBytes(address);
  if (quad) return { family: 4, bytes: quad };
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
