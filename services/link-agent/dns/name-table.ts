import ipaddr from "ipaddr.js";
import type { NameEntry } from "../../../libs/proto/gen/trellis/v1/state.js";

export interface NameAddresses {
  ipv4: string[];
  ipv6: string[];
}

interface NetworkNames {
  /** Names bucket key → its entry: a deletion carries only the key. */
  byKey: Map<string, NameEntry>;
  /** Lower-cased name → the key that holds it: DNS names are case-insensitive. */
  byName: Map<string, string>;
}

/**
 * The names of the containers of the networks this host serves, one table for the whole host, kept by
 * the names bucket's watch (desired.ts). A lookup costs one map read per network of the asking
 * container, however large the cluster.
 */
export class NameTable {
  private readonly networks = new Map<string, NetworkNames>();

  put(networkId: string, key: string, entry: NameEntry): void {
    let names = this.networks.get(networkId);
    if (!names) this.networks.set(networkId, (names = { byKey: new Map(), byName: new Map() }));
    this.delete(networkId, key);
    names.byKey.set(key, entry);
    names.byName.set(entry.name.toLowerCase(), key);
  }

  delete(networkId: string, key: string): void {
    const names = this.networks.get(networkId);
    const entry = names?.byKey.get(key);
    if (!names || !entry) return;
    names.byKey.delete(key);
    if (names.byName.get(entry.name.toLowerCase()) === key) names.byName.delete(entry.name.toLowerCase());
  }

  /** The host no longer serves the network: its names go with it. */
  dropNetwork(networkId: string): void {
    this.networks.delete(networkId);
  }

  /** A container's addresses by its name on any network of this host: for a host-wide listener, which has no asker's networks. */
  lookupAnywhere(name: string): NameAddresses | undefined {
    return this.lookup(this.networks.keys(), name);
  }

  /** A container's addresses by its name (any case, with or without the final dot), on these networks only. */
  lookup(networkIds: Iterable<string>, name: string): NameAddresses | undefined {
    const wanted = name.replace(/\.$/, "").toLowerCase();
    let found: NameAddresses | undefined;
    for (const networkId of networkIds) {
      const names = this.networks.get(networkId);
      const entry = names?.byKey.get(names.byName.get(wanted) ?? "");
      if (!entry) continue;
      found ??= { ipv4: [], ipv6: [] };
      for (const address of entry.addresses) {
        const family = ipaddr.isValid(address) ? ipaddr.parse(address).kind() : undefined;
        const list = family === "ipv4" ? found.ipv4 : family === "ipv6" ? found.ipv6 : undefined;
        if (list && !list.includes(address)) list.push(address);
      }
    }
    return found;
  }
}
