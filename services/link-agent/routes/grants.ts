import type { KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../../../libs/bus/codec.js";
import { BlockRecord } from "../../../libs/proto/gen/trellis/v1/ipam.js";
import type { Network } from "../../../libs/proto/gen/trellis/v1/network.js";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { canonicalPrefix, isRoutedMode } from "./prefixes.js";

const blockCodec = codecOf(BlockRecord);

/** `<network id> <prefix>`: one thing a host may announce. */
export type GrantKey = string;

export function grantKey(networkId: string, prefix: string): GrantKey {
  return `${networkId} ${prefix}`;
}

export interface GrantedPrefix {
  networkId: string;
  prefix: string;
}

/**
 * What IPAM has given each host in the L3/L3S networks: its blocks and the addresses it borrowed, from IPAM's
 * own block records (created only, so one block never has two owners). Announcements are believed only within
 * these (principle 3), so a host can never pull another host's traffic to itself by announcing its prefixes.
 * With a verifier (TLS), only records IPAM signed are grants: no host can grant itself another's block.
 */
export class Grants {
  private readonly byKey = new Map<string, { host: string; granted: GrantedPrefix }>();
  private readonly byHost = new Map<string, Map<string, GrantedPrefix>>();
  /** Per host, its grant keys, kept as records come and go: `believe` reads it on every pass. */
  readonly keysByHost = new Map<string, Set<GrantKey>>();

  constructor(private readonly verifier?: RecordVerifier) {}

  /** Applies one entry of IPAM's block keys; throws on a value that is no block record IPAM wrote, keeping what it had. */
  apply(entry: KvWatchEntry): void {
    if (entry.operation !== "PUT") return this.forget(entry.key);
    const record = blockCodec.decode(entry.value);
    const prefix = canonicalPrefix(record.cidr);
    if (!prefix || !record.host || !record.networkId) throw new Error(`not a block record: ${JSON.stringify(BlockRecord.toJSON({ ...record, signature: undefined }))}`);
    const problem = this.verifier?.serviceProblem(blockCodec, record, "ipam");
    if (problem) throw new Error(`not a block record IPAM wrote for host ${record.host} (${record.cidr}): ${problem}`);
    this.forget(entry.key);
    const granted = { networkId: record.networkId, prefix };
    this.byKey.set(entry.key, { host: record.host, granted });
    let prefixes = this.byHost.get(record.host);
    if (!prefixes) this.byHost.set(record.host, (prefixes = new Map()));
    prefixes.set(entry.key, granted);
    let keys = this.keysByHost.get(record.host);
    if (!keys) this.keysByHost.set(record.host, (keys = new Set()));
    keys.add(grantKey(granted.networkId, granted.prefix));
  }

  of(host: string): GrantedPrefix[] {
    return [...(this.byHost.get(host)?.values() ?? [])];
  }

  private forget(key: string): void {
    const known = this.byKey.get(key);
    if (!known) return;
    this.byKey.delete(key);
    const prefixes = this.byHost.get(known.host);
    prefixes?.delete(key);
    this.keysByHost.get(known.host)?.delete(grantKey(known.granted.networkId, known.granted.prefix));
    if (prefixes?.size === 0) {
      this.byHost.delete(known.host);
      this.keysByHost.delete(known.host);
    }
  }
}

/** The L3/L3S networks among these: where an agent installs other hosts' routes (every host has every network). */
export function routedNetworkIds(networks: Iterable<Network>): Set<string> {
  return new Set([...networks].filter((network) => isRoutedMode(network.mode)).map((network) => network.id));
}
