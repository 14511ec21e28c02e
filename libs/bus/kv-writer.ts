import { JetStreamApiError } from "@nats-io/jetstream";
import { Bucket, type KV } from "@nats-io/kv";
import { Empty, headers } from "@nats-io/transport-node";
import { BusUnavailableError, isBusUnavailable } from "./errors.js";
import { isExistsError } from "./kv.js";
import type { JetStreamPublisher } from "./jetstream-publisher.js";

/** The headers of KV writes: a delete marker's, the revision a write expects, and JetStream's deduplication id. */
export const KV_OPERATION_HEADER = "KV-Operation";
const EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER = "Nats-Expected-Last-Subject-Sequence";
const MESSAGE_ID_HEADER = "Nats-Msg-Id";

/** JetStream's "wrong last sequence" and its variant for a subject it cannot look up. */
const WRONG_LAST_SEQUENCE_UNKNOWN = 10164;

function isWrongRevision(error: unknown): boolean {
  return isExistsError(error) || (error instanceof JetStreamApiError && error.code === WRONG_LAST_SEQUENCE_UNKNOWN);
}

export interface WriteConditions {
  /** The key's revision the write expects: 0 for a key never written (create-only); none for an unconditional write. */
  expected?: number;
  /** JetStream refuses a second write with this id within the stream's duplicate window. */
  messageId?: string;
}

export type WriteOutcome = { outcome: "won" | "duplicate"; revision: number } | { outcome: "conflict" };

/**
 * KV writes through one JetStreamPublisher: each is one publish whose ack is matched on a shared
 * subscription, and each answers the revision it made (which `kv.put` and `kv.delete` drop), so that a
 * writer's next conditional write of the key needs no read.
 */
export class KvWriter {
  private readonly bucket: Bucket;

  constructor(
    readonly kv: KV,
    private readonly publisher: JetStreamPublisher,
  ) {
    if (!(kv instanceof Bucket)) throw new Error("failed to write a KV bucket: it is not a JetStream bucket");
    this.bucket = kv;
  }

  /** A conditional write answers "conflict" when the key is not at the expected revision. */
  async write(key: string, data: Uint8Array, conditions: WriteConditions = {}): Promise<WriteOutcome> {
    const sent = headers();
    if (conditions.expected !== undefined) sent.set(EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER, String(conditions.expected));
    if (conditions.messageId) sent.set(MESSAGE_ID_HEADER, conditions.messageId);
    try {
      const ack = await this.publisher.publish(this.bucket.subjectForKey(key, true), data, sent);
      return { outcome: ack.duplicate ? "duplicate" : "won", revision: ack.seq };
    } catch (error) {
      if (conditions.expected !== undefined && isWrongRevision(error)) return { outcome: "conflict" };
      throw failure(`failed to write ${key}`, error);
    }
  }

  /**
   * Create-only: the new revision, or undefined when the key holds a live value. A key that was deleted
   * keeps its marker, so a first write expecting none is refused; the marker's revision is then read and
   * expected instead (one more round trip, only for a name used before).
   */
  async create(key: string, data: Uint8Array): Promise<number | undefined> {
    let expected = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      const written = await this.write(key, data, { expected });
      if (written.outcome !== "conflict") return written.revision;
      const entry = await this.kv.get(key);
      if (entry?.operation === "PUT") return undefined;
      expected = entry?.revision ?? 0;
    }
    throw new Error(`failed to create ${key}: it was deleted and written again too often while we tried`);
  }

  /** The delete marker's revision, or undefined when the key is not at `expected` (given). */
  async delete(key: string, expected?: number): Promise<number | undefined> {
    const marker = headers();
    marker.set(KV_OPERATION_HEADER, "DEL");
    if (expected !== undefined) marker.set(EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER, String(expected));
    try {
      return (await this.publisher.publish(this.bucket.subjectForKey(key, true), Empty, marker)).seq;
    } catch (error) {
      if (expected !== undefined && isWrongRevision(error)) return undefined;
      throw failure(`failed to delete ${key}`, error);
    }
  }
}

/** Keeps "try again" recognisable through the added context. */
function failure(what: string, error: unknown): Error {
  const message = `${what}: ${(error as Error).message}`;
  return isBusUnavailable(error) ? new BusUnavailableError(message, { cause: error }) : new Error(message, { cause: error });
}
