import type { KV } from "@nats-io/kv";
import { codecOf } from "../../../libs/bus/codec.js";
import { getValue } from "../../../libs/bus/kv.js";
import { AnnouncedPrefix, RouteAnnouncement } from "../../../libs/proto/gen/trellis/v1/routes.js";
import { EndpointState, type EndpointStatus, type HostDesiredState } from "../../../libs/proto/gen/trellis/v1/state.js";
import { familyOfAddress, familyOfPrefix, hostPrefix, isRoutedMode } from "./prefixes.js";

const announcementCodec = codecOf(RouteAnnouncement);

/**
 * The prefixes this host serves, from what the kernel really has (principle 3): the addresses read back
 * from READY endpoints of its L3/L3S networks, as host routes. Only prefixes of the next hop's family:
 * an IPv6 prefix needs an IPv6 next hop.
 */
export function servedPrefixes(desired: HostDesiredState, statuses: EndpointStatus[], nextHop: string): AnnouncedPrefix[] {
  const routed = new Set(desired.networks.filter((network) => isRoutedMode(network.mode)).map((network) => network.id));
  const networkOf = new Map(desired.endpoints.map((endpoint) => [endpoint.id, endpoint.networkId]));
  const family = familyOfAddress(nextHop);
  const served = new Map<string, AnnouncedPrefix>();
  for (const status of statuses) {
    const networkId = networkOf.get(status.endpointId);
    if (status.state !== EndpointState.ENDPOINT_STATE_READY || !networkId || !routed.has(networkId)) continue;
    for (const address of status.addresses) {
      const prefix = hostPrefix(address);
      if (familyOfPrefix(prefix) === family) served.set(`${networkId} ${prefix}`, { networkId, prefix });
    }
  }
  return [...served.values()].sort((a, b) => a.networkId.localeCompare(b.networkId) || a.prefix.localeCompare(b.prefix));
}

function samePrefixes(a: AnnouncedPrefix[], b: AnnouncedPrefix[]): boolean {
  return a.length === b.length && a.every((prefix, i) => prefix.networkId === b[i].networkId && prefix.prefix === b[i].prefix);
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
    private readonly nextHop: string,
  ) {}

  async announce(prefixes: AnnouncedPrefix[]): Promise<void> {
    try {
      const stored = (await getValue(this.bucket, announcementCodec, this.host))?.value;
      if (stored && stored.nextHop === this.nextHop && samePrefixes(stored.prefixes, prefixes)) return;
      if (prefixes.length === 0) {
        if (stored) await this.bucket.delete(this.host);
        return;
      }
      const next: RouteAnnouncement = {
        host: this.host,
        nextHop: this.nextHop,
        prefixes,
        generation: (stored?.generation ?? 0) + 1,
        announcedAt: new Date().toISOString(),
      };
      await this.bucket.put(this.host, announcementCodec.encode(next));
    } catch (error) {
      throw new Error(`failed to announce ${prefixes.length} prefixes of host ${this.host}: ${(error as Error).message}`);
    }
  }
}
