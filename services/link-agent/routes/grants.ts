import type { KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../../../libs/bus/codec.js";
import { BlockRecord } from "../../../libs/proto/gen/trellis/v1/ipam.js";
import type { Network } from "../../../libs/proto/gen/trellis/v1/network.js";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { canonicalPrefix, isRoutedMode } from "./prefixes.js";

const blockCodec = codecOf(BlockRecord);

export interface GrantedPrefix {
  networkId: string;
  prefix: string;
}

/** What IPAM gave one host: network id → its prefixes there, in canonical form. */
export type HostGrants = ReadonlyMap<string, ReadonlySet<string>>;

/** One block record as kept: its host and what it gives, in strings shared with every other grant of theirs. */
interface Grant {
  host: string;
  networkId: string;
  prefix: string;
}

/**
 * What IPAM has given each host in the L3/L3S networks: its blocks and the addresses it borrowed, from IPAM's
 * own block records (created only, so one block never has two owners). Announcements are believed only within
 * these (principle 3), so a host can never pull another host's traffic to itself by announcing its prefixes.
 * With a verifier (TLS), only records IPAM signed are grants: no host can grant itself another's block.
 * Every agent holds every host's grants: each is kept once, and its host and network id are the strings its
 * host's other grants already hold, not a copy per record.
 */
export class Grants {
  private readonly byKey = new Map<string, Grant>();
  /** Per host, its grants by network: what the belief checks announcements against. */
  readonly byHost = new Map<string, Map<string, Set<string>>>();
  /** Every host and network id a grant names, each one string however many blocks it has. */
  private readonly hostNames = new Map<string, string>();
  private readonly networkIds = new Map<string, string>();

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
    let host = this.hostNames.get(record.host);
    if (host === undefined) this.hostNames.set(record.host, (host = record.host));
    let networks = this.byHost.get(host);
    if (!networks) this.byHost.set(host, (networks = new Map()));
    let networkId = this.networkIds.get(record.networkId);
    if (networkId === undefined) this.networkIds.set(record.networkId, (networkId = record.networkId));
    let prefixes = networks.get(networkId);
    if (!prefixes) networks.set(networkId, (prefixes = new Set()));
    prefixes.add(prefix);
    this.byKey.set(ownString(entry.key), { host, networkId, prefix });
    return before.includes(host) ? before : [...before, host];
  }

  of(host: string): GrantedPrefix[] {
    return [...(this.byHost.get(host) ?? [])].flatMap(([networkId, prefixes]) => [...prefixes].map((prefix) => ({ networkId, prefix })));
  }

  /** Forgets the grant under `key`; returns its host, if it had one. */
  private forget(key: string): string[] {
    const known = this.byKey.get(key);
    if (!known) return [];
    this.byKey.delete(key);
    const networks = this.byHost.get(known.host);
    const prefixes = networks?.get(known.networkId);
    prefixes?.delete(known.prefix);
    if (prefixes?.size === 0) networks!.delete(known.networkId);
    if (networks?.size === 0) {
      this.byHost.delete(known.host);
      this.hostNames.delete(known.host);
    }
    return [known.host];
  }
}

/**
 * A copy of a KV key that holds only itself. nats.js cuts each key out of its message's subject, and V8 keeps such
 * a cut as a view of the whole subject (`$KV.<bucket>.<key>`): kept for an agent's life, every grant would keep its
 * subject too.
 */
function ownString(key: string): string {
  return Buffer.from(key, "utf8").toString("utf8");
}

/** The L3/L3S networks among these: where an agent installs other hosts' routes (every host has every network). */
export function routedNetworkIds(networks: Iterable<Network>): Set<string> {
  return new Set([...networks].filter((network) => isRoutedMode(network.mode)).map((network) => network.id));
}
