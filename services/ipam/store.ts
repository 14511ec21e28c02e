import type { KV } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { getValue, isExistsError, isConflict, updateValue, type Versioned } from "../../libs/bus/kv.js";
import { AddressRecord, IpamRegistry } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { REGISTRY_KEY } from "./keys.js";

const registryCodec = codecOf(IpamRegistry);
export const addressCodec = codecOf(AddressRecord);

/**
 * IPAM's persistence in its KV bucket. Every write is conditional: `create` on absence (the server
 * refuses a second holder of an address), `update`/`delete` on the revision that was read.
 */
export class IpamStore {
  constructor(readonly kv: KV) {}

  async readRegistry(): Promise<IpamRegistry> {
    return (await getValue(this.kv, registryCodec, REGISTRY_KEY))?.value ?? IpamRegistry.fromPartial({});
  }

  /** Compare-and-set of the registry, retried on conflict; `change` may throw to refuse. */
  async updateRegistry(change: (current: IpamRegistry) => IpamRegistry | undefined): Promise<IpamRegistry> {
    const written = await updateValue(this.kv, registryCodec, REGISTRY_KEY, (current) =>
      change(current ?? IpamRegistry.fromPartial({})),
    );
    return written ?? IpamRegistry.fromPartial({});
  }

  async getRecord(key: string): Promise<Versioned<AddressRecord> | undefined> {
    return getValue(this.kv, addressCodec, key);
  }

  /** True when this call created the key; false when someone holds it. */
  async createRecord(key: string, record: AddressRecord): Promise<boolean> {
    try {
      await this.kv.create(key, addressCodec.encode(record));
      return true;
    } catch (error) {
      if (isExistsError(error)) return false;
      throw new Error(`failed to create ${key}: ${(error as Error).message}`);
    }
  }

  /** False when the key changed since `revision` was read. */
  async replaceRecord(key: string, record: AddressRecord, revision: number): Promise<boolean> {
    try {
      await this.kv.update(key, addressCodec.encode(record), revision);
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw new Error(`failed to update ${key}: ${(error as Error).message}`);
    }
  }

  /** False when the key changed since `revision` was read. */
  async deleteRecord(key: string, revision: number): Promise<boolean> {
    try {
      await this.kv.delete(key, { previousSeq: revision });
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw new Error(`failed to delete ${key}: ${(error as Error).message}`);
    }
  }

  async listKeys(filter: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys(filter)) keys.push(key);
    return keys;
  }
}
