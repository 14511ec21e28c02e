import { JetStreamApiError } from "@nats-io/jetstream";
import { Bucket, type KV } from "@nats-io/kv";
import { Empty, headers } from "@nats-io/transport-node";
import { codecOf } from "../../libs/bus/codec.js";
import { getValue, isExistsError, isConflict, updateValue, type Versioned } from "../../libs/bus/kv.js";
import type { MessageCodec } from "../../libs/bus/codec.js";
import { AddressRecord, BlockRecord, IpamRegistry } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { REGISTRY_KEY } from "./keys.js";

const registryCodec = codecOf(IpamRegistry);
export const addressCodec = codecOf(AddressRecord);
export const blockCodec = codecOf(BlockRecord);

/** The headers `kv.delete` sends: a KV delete marker, conditional on the key's revision. */
const KV_OPERATION_HEADER = "KV-Operation";
const EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER = "Nats-Expected-Last-Subject-Sequence";

/** JetStream's "wrong last sequence" and its variant for a subject it cannot look up. */
const WRONG_LAST_SEQUENCE_UNKNOWN = 10164;

function isWrongRevision(error: unknown): boolean {
  return isExistsError(error) || (error instanceof JetStreamApiError && error.code === WRONG_LAST_SEQUENCE_UNKNOWN);
}

/** A conditional write's outcome: the new revision, or the live holder that made it fail. */
export type ClaimResult<T> = { won: true; revision: number } | { won: false; holder: Versioned<T> | undefined };

/**
 * IPAM's persistence in its KV bucket. Every write is conditional: `create` on absence (the server
 * refuses a second holder of an address), `update`/`delete` on the revision that was read.
 */
export class IpamStore {
  private readonly bucket: Bucket;

  constructor(readonly kv: KV) {
    if (!(kv instanceof Bucket)) throw new Error("failed to open the ipam store: its KV is not a JetStream bucket");
    this.bucket = kv;
  }

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

  async getBlock(key: string): Promise<Versioned<BlockRecord> | undefined> {
    return getValue(this.kv, blockCodec, key);
  }

  claimRecord(key: string, record: AddressRecord, freedRevision = 0): Promise<ClaimResult<AddressRecord>> {
    return this.claim(key, addressCodec, record, freedRevision);
  }

  claimBlock(key: string, record: BlockRecord, freedRevision = 0): Promise<ClaimResult<BlockRecord>> {
    return this.claim(key, blockCodec, record, freedRevision);
  }

  /**
   * Creates a key that is absent or deleted, in one round trip when `freedRevision` is right:
   * 0 for a key never written, else the revision of its delete marker. (`kv.create` alone takes
   * three round trips for a deleted key: a failed write, a read, a write.) Never overwrites a live value.
   */
  private async claim<T>(key: string, codec: MessageCodec<T>, value: T, freedRevision: number): Promise<ClaimResult<T>> {
    const data = codec.encode(value);
    let expected = freedRevision;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        return { won: true, revision: await this.kv.put(key, data, { previousSeq: expected }) };
      } catch (error) {
        if (!isWrongRevision(error)) throw new Error(`failed to create ${key}: ${(error as Error).message}`);
      }
      const entry = await this.kv.get(key);
      if (entry?.operation === "PUT") return { won: false, holder: { value: codec.decode(entry.value), revision: entry.revision } };
      // Absent, or a delete marker: the key is free, and writing it expects the marker's revision.
      expected = entry?.revision ?? 0;
    }
    return { won: false, holder: undefined };
  }

  /** True when this call created the key; false when someone holds it. */
  async createRecord(key: string, record: AddressRecord): Promise<number | undefined> {
    try {
      return await this.kv.create(key, addressCodec.encode(record));
    } catch (error) {
      if (isExistsError(error)) return undefined;
      throw new Error(`failed to create ${key}: ${(error as Error).message}`);
    }
  }

  /** The new revision, or undefined when the key changed since `revision` was read. */
  async replaceRecord(key: string, record: AddressRecord, revision: number): Promise<number | undefined> {
    try {
      return await this.kv.update(key, addressCodec.encode(record), revision);
    } catch (error) {
      if (isConflict(error)) return undefined;
      throw new Error(`failed to update ${key}: ${(error as Error).message}`);
    }
  }

  /**
   * The delete marker's revision, or undefined when the key changed since `revision` was read.
   * `kv.delete` drops the marker's revision; without it the next claim of the key (lowest-free
   * reuses a released address at once) would expect a stale revision and cost a failed write and a read.
   */
  async deleteRecord(key: string, revision: number): Promise<number | undefined> {
    const marker = headers();
    marker.set(KV_OPERATION_HEADER, "DEL");
    marker.set(EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER, String(revision));
    try {
      return (await this.bucket.js.publish(this.bucket.subjectForKey(key, true), Empty, { headers: marker })).seq;
    } catch (error) {
      if (isConflict(error)) return undefined;
      throw new Error(`failed to delete ${key}: ${(error as Error).message}`);
    }
  }

  async listKeys(filter: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys(filter)) keys.push(key);
    return keys;
  }
}
