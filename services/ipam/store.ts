import { Bucket, type KV } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { getValue, updateValue, type Versioned } from "../../libs/bus/kv.js";
import { KV_OPERATION_HEADER, KvWriter } from "../../libs/bus/kv-writer.js";
import type { MessageCodec } from "../../libs/bus/codec.js";
import type { JetStreamPublisher } from "../../libs/bus/jetstream-publisher.js";
import { AddressRecord, BlockRecord, IpamRegistry } from "../../libs/proto/gen/trellis/v1/ipam.js";
import type { RecordSigner } from "../../libs/tls/record-signature.js";
import { REGISTRY_KEY } from "./keys.js";

const registryCodec = codecOf(IpamRegistry);
export const addressCodec = codecOf(AddressRecord);
export const blockCodec = codecOf(BlockRecord);

/**
 * A create-only write's outcome: the new revision; or the live holder that made it fail; or, for a
 * write with a message id, the revision of the earlier write that already carried that id; or the
 * key's delete marker that the write did not expect (its revision, and when the key was released).
 */
export type ClaimResult<T> =
  | { outcome: "won"; revision: number }
  | { outcome: "held"; holder: Versioned<T> | undefined }
  | { outcome: "duplicate"; revision: number }
  | { outcome: "freed"; revision: number; at: number };

/** A live record and the key it is at. */
export interface KeyedRecord extends Versioned<AddressRecord> {
  key: string;
}

/**
 * IPAM's persistence in its KV bucket. Every write is conditional: create on absence (the server
 * refuses a second holder of an address), update and delete on the revision that was read.
 */
export class IpamStore {
  private readonly bucket: Bucket;
  private readonly writer: KvWriter;

  /** `signer` (with TLS): block records are signed, since agents believe only grants IPAM signed. */
  constructor(
    readonly kv: KV,
    publisher: JetStreamPublisher,
    private readonly signer?: RecordSigner,
  ) {
    if (!(kv instanceof Bucket)) throw new Error("failed to open the ipam store: its KV is not a JetStream bucket");
    this.bucket = kv;
    this.writer = new KvWriter(kv, publisher);
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

  /**
   * The address record written at `revision`, if it is still its key's value. The bucket keeps one
   * value per key, so a record that was released or replaced since is gone.
   */
  async recordAt(revision: number): Promise<KeyedRecord | undefined> {
    const stored = this.bucket.direct
      ? await this.bucket.jsm.direct.getMessage(this.bucket.stream, { seq: revision })
      : await this.bucket.jsm.streams.getMessage(this.bucket.stream, { seq: revision });
    if (!stored || stored.header?.get(KV_OPERATION_HEADER)) return undefined;
    const key = stored.subject.slice(this.bucket.subjectForKey("").length);
    return { key, value: addressCodec.decode(stored.data), revision };
  }

  /**
   * Creates an address key that is absent or deleted. `messageId` makes the write unique per
   * allocation: a second write with that id is refused as a duplicate, whatever key it is for.
   */
  claimRecord(key: string, record: AddressRecord, freedRevision: number, messageId?: string): Promise<ClaimResult<AddressRecord>> {
    return this.claim(key, addressCodec, record, freedRevision, messageId);
  }

  claimBlock(key: string, record: BlockRecord, freedRevision: number): Promise<ClaimResult<BlockRecord>> {
    return this.claim(key, blockCodec, this.signer ? this.signer.sign(blockCodec, record) : record, freedRevision);
  }

  /**
   * One round trip when `freedRevision` is right: 0 for a key never written, else the revision of its
   * delete marker. Never overwrites a live value. When the key was released other than expected, the
   * answer is its marker, so that the caller can tell how long ago and write again expecting it.
   */
  private async claim<T>(key: string, codec: MessageCodec<T>, value: T, freedRevision: number, messageId?: string): Promise<ClaimResult<T>> {
    const written = await this.write(key, codec.encode(value), freedRevision, messageId);
    if (written.outcome !== "conflict") return written;
    const entry = await this.kv.get(key);
    if (entry?.operation === "PUT") return { outcome: "held", holder: { value: codec.decode(entry.value), revision: entry.revision } };
    return { outcome: "freed", revision: entry?.revision ?? 0, at: entry?.created.getTime() ?? 0 };
  }

  /** Replaces a stale holder (from an earlier network of the same id), with the allocation's message id if any. */
  async replaceRecord(key: string, record: AddressRecord, revision: number, messageId: string | undefined): Promise<ClaimResult<AddressRecord>> {
    const written = await this.write(key, addressCodec.encode(record), revision, messageId);
    return written.outcome === "conflict" ? { outcome: "held", holder: undefined } : written;
  }

  private write(key: string, data: Uint8Array, expected: number, messageId: string | undefined) {
    return this.writer.write(key, data, { expected, messageId });
  }

  /**
   * The delete marker's revision, or undefined when the key changed since `revision` was read.
   * `kv.delete` drops the marker's revision; without it the next claim of the key (lowest-free
   * reuses a released address at once) would expect a stale revision and cost a failed write and a read.
   */
  deleteRecord(key: string, revision: number): Promise<number | undefined> {
    return this.writer.delete(key, revision);
  }

  async listKeys(filter: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys(filter)) keys.push(key);
    return keys;
  }
}
