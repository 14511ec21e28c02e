import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";

/** Where the plugin keeps what Docker's calls refer to by id (as Docker keeps its own under /var/lib/docker). */
export const DEFAULT_DATA_DIR = "/var/lib/trellis/docker-plugin";

/** A pool Docker asked for (RequestPool): Docker names no network there, and CreateNetwork sees no pool id. */
export interface PoolRecord {
  cidr: string;
  v6: boolean;
  /** --ip-range (RequestPool's SubPool); empty: the whole subnet. */
  ipRange: string;
  /** The Trellis network, once CreateNetwork (or --ipam-opt trellis.network) named it. */
  network?: string;
  /** The Docker network of this host that uses it (its record holds the Trellis spec). */
  dockerNetwork?: string;
}

/** A Docker network of this host and the Trellis network it is. */
export interface NetworkRecord {
  dockerId: string;
  network: string;
  /** What CreateNetwork asked Trellis for: made again if another host's `docker network rm` deleted it. */
  spec: NetworkSpec;
  pools: string[];
}

/** A Docker endpoint (CreateEndpoint) and, once joined, the Trellis container that is its link. */
export interface EndpointRecord {
  dockerId: string;
  networkDockerId: string;
  network: string;
  /** The Trellis container name it has when joined (its name in Trellis's DNS). */
  container: string;
  addresses: string[];
  /** What Join named: the sandbox the link goes in, so that a join still waiting for it goes on after a restart. */
  sandbox?: string;
  /** Which Join this is (random): the intent of its attach, the same when a restarted plugin tries it again. */
  joinId?: string;
  /** Once joined: the endpoint whose removal by the agent Leave waits for. */
  endpointId?: string;
  host?: string;
}

/** Who holds an address Docker's IPAM half handed out: an IPAM-only container until Join, then the joined one. */
export interface HoldingRecord {
  holder: string;
  /** Every address of that holder (an IPv4 and an IPv6 one on a dual-stack network). */
  addresses: string[];
}

/**
 * One small JSON file per record, named by what Docker's calls give: no call reads more than its own
 * records, whatever the number of networks and containers (in this host or in the cluster).
 */
export class PluginState {
  constructor(readonly dir: string) {}

  pool(cidr: string): Promise<PoolRecord | undefined> {
    return this.read(["pools", cidr]);
  }
  savePool(record: PoolRecord): Promise<void> {
    return this.write(["pools", record.cidr], record);
  }
  removePool(cidr: string): Promise<void> {
    return this.remove(["pools", cidr]);
  }

  network(dockerId: string): Promise<NetworkRecord | undefined> {
    return this.read(["networks", dockerId]);
  }
  saveNetwork(record: NetworkRecord): Promise<void> {
    return this.write(["networks", record.dockerId], record);
  }
  removeNetwork(dockerId: string): Promise<void> {
    return this.remove(["networks", dockerId]);
  }

  endpoint(dockerId: string): Promise<EndpointRecord | undefined> {
    return this.read(["endpoints", dockerId]);
  }
  saveEndpoint(record: EndpointRecord): Promise<void> {
    return this.write(["endpoints", record.dockerId], record);
  }
  removeEndpoint(dockerId: string): Promise<void> {
    return this.remove(["endpoints", dockerId]);
  }
  /** This host's Docker endpoints on Trellis networks (a restarted plugin looks for joins left waiting). */
  async endpoints(): Promise<EndpointRecord[]> {
    const names = await readdir(join(this.dir, "endpoints")).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return [];
      throw new Error(`failed to list the plugin's records in ${join(this.dir, "endpoints")}: ${error.message}`);
    });
    const records = await Promise.all(names.filter((name) => !name.endsWith(".tmp")).map((name) => this.endpoint(decodeURIComponent(name))));
    return records.filter((record): record is EndpointRecord => record !== undefined);
  }

  /** Which Docker endpoint's link a sandbox has (Join records it): a container has one Trellis network. */
  sandboxEndpoint(sandbox: string): Promise<string | undefined> {
    return this.read<{ dockerId: string }>(["sandboxes", sandbox]).then((record) => record?.dockerId);
  }
  saveSandboxEndpoint(sandbox: string, dockerId: string): Promise<void> {
    return this.write(["sandboxes", sandbox], { dockerId });
  }
  async removeSandboxEndpoint(sandbox: string, dockerId: string): Promise<void> {
    if ((await this.sandboxEndpoint(sandbox)) === dockerId) await this.remove(["sandboxes", sandbox]);
  }

  /** `address` without prefix length. */
  holding(network: string, address: string): Promise<HoldingRecord | undefined> {
    return this.read(["addresses", network, address]);
  }
  async saveHolding(network: string, record: HoldingRecord): Promise<void> {
    for (const address of record.addresses) await this.write(["addresses", network, bare(address)], record);
  }
  async removeHolding(network: string, record: HoldingRecord): Promise<void> {
    for (const address of record.addresses) await this.remove(["addresses", network, bare(address)]);
  }

  private file(parts: string[]): string {
    return join(this.dir, ...parts.map((part) => encodeURIComponent(part)));
  }

  private async read<T>(parts: string[]): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(this.file(parts), "utf8")) as T;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new Error(`failed to read the plugin's record ${this.file(parts)}: ${(error as Error).message}`);
    }
  }

  /** Written to a temporary name and renamed: a plugin stopped mid-write leaves the old record whole. */
  private async write(parts: string[], value: unknown): Promise<void> {
    const path = this.file(parts);
    try {
      await mkdir(join(path, ".."), { recursive: true });
      await writeFile(`${path}.tmp`, JSON.stringify(value));
      await rename(`${path}.tmp`, path);
    } catch (error) {
      throw new Error(`failed to write the plugin's record ${path}: ${(error as Error).message} (is --data-dir=${this.dir} writable?)`);
    }
  }

  private async remove(parts: string[]): Promise<void> {
    await rm(this.file(parts), { force: true });
  }
}

/** An address without its prefix length. */
export function bare(address: string): string {
  return address.split("/")[0]!;
}
