import type { KV, KvEntry } from "@nats-io/kv";
import { JetStreamApiError } from "@nats-io/jetstream";
import type { MessageCodec } from "./codec.js";

/** JetStream's "wrong last sequence": someone else wrote the key since we read it. */
const WRONG_LAST_SEQUENCE = 10071;

export function isConflict(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === WRONG_LAST_SEQUENCE;
}

export interface Versioned<T> {
  value: T;
  revision: number;
}

export async function getValue<T>(kv: KV, codec: MessageCodec<T>, key: string): Promise<Versioned<T> | undefined> {
  const entry = await kv.get(key);
  if (!isLive(entry)) return undefined;
  return { value: codec.decode(entry.value), revision: entry.revision };
}

export function isLive(entry: KvEntry | null): entry is KvEntry {
  return entry !== null && entry.operation === "PUT";
}

/**
 * Read-modify-write of one key as a compare-and-set on its revision, retried on conflict.
 * `change` gets the current value (undefined when absent) and returns the new one, or
 * `null` to delete the key, or `undefined` to leave it as it is.
 */
export async function updateValue<T>(
  kv: KV,
  codec: MessageCodec<T>,
  key: string,
  change: (current: T | undefined) => T | null | undefined,
  attempts = 50,
): Promise<T | null | undefined> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const current = await getValue(kv, codec, key);
    const next = change(current?.value);
    if (next === undefined) return current?.value;
    try {
      if (next === null) {
        if (current) await kv.delete(key, { previousSeq: current.revision });
      } else if (current) {
        await kv.update(key, codec.encode(next), current.revision);
      } else {
        await kv.create(key, codec.encode(next));
      }
      return next;
    } catch (error) {
      if (!isConflict(error) && !isExistsError(error)) throw error;
    }
  }
  throw new Error(`failed to update ${key}: too many concurrent writers`);
}

/** `kv.create` on a key that exists. */
export function isExistsError(error: unknown): boolean {
  return isConflict(error) || (error instanceof Error && /key exists/i.test(error.message));
}

export async function listValues<T>(kv: KV, codec: MessageCodec<T>, filter = ">"): Promise<T[]> {
  const keys: string[] = [];
  for await (const key of await kv.keys(filter)) keys.push(key);
  const values = await Promise.all(keys.map((key) => getValue(kv, codec, key)));
  return values.flatMap((entry) => (entry ? [entry.value] : []));
}
