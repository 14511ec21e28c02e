import type { KV } from "@nats-io/kv";
import { codecOf } from "../../../libs/bus/codec.js";
import { getValue } from "../../../libs/bus/kv.js";
import { AnnouncedPrefix, RouteAnnouncement } from "../../../libs/proto/gen/trellis/v1/routes.js";
import { EndpointState, type EndpointStatus } from "../../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint, Network } from "../../../libs/proto/gen/trellis/v1/network.js";
import type { GrantedPrefix } from "./grants.js";
import { contains, parseCidr, parsePrefix } from "../../../libs/ipmath/index.js";
import type { RecordTrust } from "../../../libs/tls/record-signature.js";
import { canonicalPrefix, familyOfAddress, familyOfPrefix, hostPrefix, isRoutedMode } from "./prefixes.js";

const announcementCodec = codecOf(RouteAnnouncement);

/**
 * The prefixes this host serves, from what the kernel really has (principle 3): for each address read
 * back from a READY endpoint of its L3/L3S networks, the most specific IPAM grant that covers it (its
 * block, or the host route of an address it borrowed) — so a block is announced only while at least one
 * READY endpoint sits in it — or the address's own host route when no grant covers it. Only prefixes of
 * a family the host has a next hop of: an IPv6 prefix needs an IPv6 next hop.
 */
export interface HostServing {
  networks: Network[];
  /** The host's own endpoints. */
  endpoints: Endpoint[];
  /** What IPAM gave the host. */
  grants: GrantedPrefix[];
}

export function servedPrefixes(desired: HostServing, statuses: EndpointStatus[], nextHops: string[]): AnnouncedPrefix[] {
  const routed = new Set(desired.networks.filter((network) => isRoutedMode(network.mode)).map((network) => network.id));
  const networkOf = new Map(desired.endpoints.map((endpoint) => [endpoint.id, endpoint.networkId]));
  const families = new Set(nextHops.map(familyOfAddress));
  const served = new Map<string, AnnouncedPrefix>();
  for (const status of statuses) {
    const networkId = networkOf.get(status.endpointId);
    if (status.state !== EndpointState.ENDPOINT_STATE_READY || !networkId || !routed.has(networkId)) continue;
    for (const address of status.addresses) {
      const prefix = coveringGrant(desired, networkId, address) ?? hostPrefix(address);
      if (families.has(familyOfPrefix(prefix))) served.set(`${networkId} ${prefix}`, { networkId, prefix });
    }
  }
  // By code units, as the belief orders hosts: no locale, and no ICU collation data in the agent's memory.
  return [...served.values()].sort((a, b) => byCodeUnits(a.networkId, b.networkId) || byCodeUnits(a.prefix, b.prefix));
}

/** The longest granted prefix of `networkId` that contains the address of `addressCidr`. */
function coveringGrant(desired: HostServing, networkId: string, addressCidr: string): string | undefined {
  const { address } = parseCidr(addressCidr);
  let best: { text: string; length: number } | undefined;
  for (const granted of desired.grants) {
    const text = granted.networkId === networkId ? canonicalPrefix(granted.prefix) : undefined;
    if (!text) continue;
    const prefix = parsePrefix(text);
    if (contains(prefix, address) && (!best || prefix.length > best.length)) best = { text, length: prefix.length };
  }
  return best?.text;
}

function samePrefixes(a: AnnouncedPrefix[], b: AnnouncedPrefix[]): boolean {
  return a.length === b.length && a.every((prefix, i) => prefix.networkId === b[i].networkId && prefix.prefix === b[i].prefix);
}

function sameNextHops(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((nextHop, i) => nextHop === b[i]);
}

/**
 * Keeps this host's key in the routes bucket equal to the set it serves. It compares with the stored
 * value, not with what it last wrote: a restarted agent that serves the same set writes nothing (no
 * reader sees a change), and a value someone else wrote over its key is put right on the next pass.
 */
export class Announcer {
  constructor(
    private readonly bucket: KV,
    private readonly host: string,
    private readonly nextHops: string[],
    /** Signs what it writes; a stored value that is not validly its own is written again, even if it says the same. */
    private readonly trust: RecordTrust = {},
  ) {}

  async announce(prefixes: AnnouncedPrefix[]): Promise<void> {
    try {
      const stored = (await getValue(this.bucket, announcementCodec, this.host))?.value;
      if (stored && sameNextHops(stored.nextHops, this.nextHops) && samePrefixes(stored.prefixes, prefixes) && this.isOwn(stored)) return;
      if (prefixes.length === 0) {
        if (stored) await this.bucket.delete(this.host);
        return;
      }
      const next: RouteAnnouncement = {
        host: this.host,
        nextHops: this.nextHops,
        prefixes,
        generation: (stored?.generation ?? 0) + 1,
        announcedAt: new Date().toISOString(),
      };
      const { signer } = this.trust;
      await this.bucket.put(this.host, announcementCodec.encode(signer ? signer.sign(announcementCodec, next) : next));
    } catch (error) {
      throw new Error(`failed to announce ${prefixes.length} prefixes of host ${this.host}: ${(error as Error).message}`);
    }
  }

  private isOwn(stored: RouteAnnouncement): boolean {
    const { verifier } = this.trust;
    return !verifier || verifier.problem(announcementCodec, stored, this.host) === undefined;
  }
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
