import { isIP } from "node:net";
import type { BgpOptions, BgpPeer } from "./options.js";

export interface BirdConfigInput {
  host: string;
  bgp: BgpOptions;
  /** The host's underlay addresses, at most one per family: each session's local address and next hop. */
  addresses: string[];
  /** What the host serves now (servedPrefixes), in canonical form. */
  prefixes: string[];
  /** Where BIRD logs: without a log of its own it would log to syslog, and to the console where there is none. */
  logFile: string;
}

/** The static protocol of each family that holds the host's exports, and the only one BGP exports from. */
export const EXPORT_PROTOCOLS = { 4: "trellis_v4", 6: "trellis_v6" } as const;

/**
 * The host's whole BIRD configuration. The exports are blackhole routes of static protocols: BIRD only
 * advertises them (no kernel protocol here, so BIRD never touches the host's routing tables), and each
 * session exports only its family's static protocol with the session's local address, the host's
 * underlay address, as next hop, and imports nothing. Everything but the static routes is the same
 * from one change to the next, so a reload changes the static protocols only and keeps the sessions up.
 */
export function birdConfig(input: BirdConfigInput): string {
  const routerId = input.addresses.find((address) => isIP(address) === 4);
  return [
    `# Written by trellis agent --host=${input.host}; rewritten whenever what the host serves changes. Do not edit.`,
    // BIRD takes the lowest IPv4 address of an interface otherwise; a host with none needs this.
    ...(routerId ? [`router id ${routerId};`] : []),
    // Sessions' errors and what peers said; not the info lines, two of which each reload writes.
    `log "${input.logFile}" { remote, warning, error, auth, fatal, bug };`,
    "",
    "protocol device {}",
    "",
    staticProtocol(4, input.prefixes),
    staticProtocol(6, input.prefixes),
    ...input.bgp.peers.flatMap((peer) => ["", bgpProtocol(peer, input)]),
    "",
  ].join("\n");
}

function staticProtocol(family: 4 | 6, prefixes: string[]): string {
  const routes = prefixes.filter((prefix) => isIP(prefix.slice(0, prefix.lastIndexOf("/"))) === family);
  return [
    `protocol static ${EXPORT_PROTOCOLS[family]} {`,
    `  ipv${family};`,
    ...[...new Set(routes)].sort().map((prefix) => `  route ${prefix} blackhole;`),
    "}",
  ].join("\n");
}

function bgpProtocol(peer: BgpPeer, input: BirdConfigInput): string {
  const local = input.addresses.find((address) => isIP(address) === peer.family);
  if (!local) throw new Error(`failed to configure BGP peer ${peer.address}: host ${input.host} has no IPv${peer.family} underlay address`);
  return [
    `protocol bgp ${peerProtocolName(peer)} {`,
    `  local ${local} as ${input.bgp.localAs};`,
    `  neighbor ${peer.address} as ${peer.as};`,
    // Should BIRD die without a clean shutdown (a container's processes are killed with it), the peer keeps
    // the routes, as stale, until the next BIRD's session says what is current (RFC 4724), or for 120 s.
    // A hold timer that runs out (a dead host) still withdraws them at once.
    "  graceful restart on;",
    `  ipv${peer.family} {`,
    "    import none;",
    `    export where proto = "${EXPORT_PROTOCOLS[peer.family]}";`,
    "    next hop self;",
    "  };",
    "}",
  ].join("\n");
}

/** "peer_192_168_1_1", "peer_fd00_1__1": what `birdc show protocols` lists. */
export function peerProtocolName(peer: Pick<BgpPeer, "address">): string {
  return `peer_${peer.address.replace(/[.:]/g, "_")}`;
}
