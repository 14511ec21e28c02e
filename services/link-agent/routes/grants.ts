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
  /** Per host, its grant keys, kept as records come and go: what the belief checks announcements against. */
  readonly keysByHost = new Map<string, Set<GrantKey>>();

  constructor(private readonly verifier?: RecordVerifier) {}

  /**
   * Applies one entry of IPAM's block keys and returns the hosts whose grants it changed (the block's owner, and
   * an owner before it); throws on a value that is no block record IPAM wrote, keeping what it had.
   */
  apply(entry: KvWatchEntry): string[] {
    if (entry.operation !== "PUT") return this.forget(entry.key);
    const record = blockCodec.decode(entry.value);
    const prefix = canonicalPrefix(record.cidr);
    if (!prefix || !record.host || !record.networkId) throw new Error(`not a block record: ${JSON.stringify(BlockRecord.toJSON({ ...record, signature: undefined }))}`);
    const problem = this.verifier?.serviceProblem(blockCodec, record, "ipam");
    if (problem) throw new Error(`not a block record IPAM wrote for host ${record.host} (${record.cidr}): ${problem}`);
    const before = this.forget(entry.key);
    const granted = { networkId: record.networkId, prefix };
    this.byKey.set(entry.key, { host: record.host, granted });
    let prefixes = this.byHost.get(record.host);
    if (!prefixes) this.byHost.set(record.host, (prefixes = new Map()));
    prefixes.set(entry.key, granted);
    let keys = this.keysByHost.get(record.host);
    if (!keys) this.keysByHost.set(record.host, (keys = new Set()));
    keys.add(grantKey(granted.networkId, granted.prefix));
    return before.includes(record.host) ? before : [...before, record.host];
  }

  of(host: string): GrantedPrefix[] {
    return [...(this.byHost.get(host)?.values() ?? [])];
  }

  /** Forgets the grant under `key`; returns its host, if it had one. */
  private forget(key: string): string[] {
    const known = this.byKey.get(key);
    if (!known) return [];
    this.byKey.delete(key);
    const prefixes = this.byHost.get(known.host);
    prefixes?.delete(key);
    this.keysByHost.get(known.host)?.delete(grantKey(known.granted.networkId, known.granted.prefix));
    if (prefixes?.size === 0) {
      this.byHost.delete(known.host);
      this.keysByHost.delete(known.host);
    }
    return [known.host];
  }
}

/** The L3/L3S networks among these: where an agent installs other hosts' routes (every host has every network). */
export function routedNetworkIds(networks: Iterable<Network>): Set<string> {
  return new Set([...networks].filter((network) => isRoutedMode(network.mode)).map((network) => network.id));
}
