import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

/** One BGP neighbour of the host: a top-of-rack switch or router, reached over the underlay. */
export interface BgpPeer {
  address: string;
  family: 4 | 6;
  /** The peer's AS; the host's own when the flag gave none (an iBGP session). */
  as: number;
}

export interface BgpOptions {
  /** The host's own AS. */
  localAs: number;
  peers: BgpPeer[];
}

/** 0 and 4294967295 are reserved (RFC 7607, RFC 7300); 4-octet AS numbers are fine, BIRD speaks them. */
const MAX_AS = 4_294_967_294;

/** `--bgp-as`: a plain AS number ("64512"), not asdot. */
export function parseAsNumber(text: string, what: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1 || value > MAX_AS) {
    throw new Error(`invalid ${what} "${text}": expected an AS number between 1-${MAX_AS}, e.g. 64512`);
  }
  return value;
}

/**
 * `--bgp-peer`: ADDRESS, ADDRESS:AS for IPv4, and [ADDRESS]:AS for IPv6 (in "fd00:1::1:64500" the AS
 * cannot be told from the address, so a bare IPv6 text is always all address).
 */
export function parseBgpPeer(text: string, localAs: number): BgpPeer {
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  const v4WithAs = /^([\d.]+):(.*)$/.exec(text);
  const [address, asText] = bracketed ? [bracketed[1], bracketed[2]] : isIP(text) ? [text, undefined] : v4WithAs ? [v4WithAs[1], v4WithAs[2]] : [text, undefined];
  const family = isIP(address);
  if (family === 0 || (bracketed && family !== 6)) {
    throw new Error(`invalid --bgp-peer "${text}": expected ADDRESS or ADDRESS:AS, e.g. 192.168.1.1:64500 or [fd00:1::1]:64500`);
  }
  // One spelling per address, so that a peer given twice in two spellings is still caught.
  return { address: ipaddr.parse(address).toString(), family: family as 4 | 6, as: asText === undefined ? localAs : parseAsNumber(asText, `AS in --bgp-peer "${text}"`) };
}

/**
 * Both flags or neither; every peer's family needs an underlay address of the host in that family, which
 * is the session's local address and the next hop of what it advertises.
 */
export function parseBgpOptions(asText: string | undefined, peerTexts: string[] | undefined, addresses: string[]): BgpOptions | undefined {
  if (asText === undefined && !peerTexts?.length) return undefined;
  if (asText === undefined) throw new Error("--bgp-peer needs --bgp-as: give this host's AS, e.g. --bgp-as=64512");
  if (!peerTexts?.length) throw new Error("--bgp-as needs at least one --bgp-peer, e.g. --bgp-peer=192.168.1.1:64500");
  const localAs = parseAsNumber(asText, "--bgp-as");
  const peers = peerTexts.map((text) => parseBgpPeer(text, localAs));
  for (const peer of peers) {
    if (!addresses.some((address) => isIP(address) === peer.family)) {
      throw new Error(
        `--bgp-peer ${peer.address} is IPv${peer.family} but the agent has no IPv${peer.family} --address: give --address=<this host's underlay IPv${peer.family} address>`,
      );
    }
  }
  const seen = new Set<string>();
  for (const peer of peers) {
    if (seen.has(peer.address)) throw new Error(`--bgp-peer ${peer.address} is given twice: give each peer once`);
    seen.add(peer.address);
  }
  return { localAs, peers };
}
