import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { INTENT_STREAM, INTENT_SUBJECT } from "./subjects.js";

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

export interface BusOptions {
  servers: string | string[];
  /** Shown by the server in connection listings: which service this is. */
  name: string;
}

/** Connects with unlimited reconnects: a restarted server must not take the services down with it. */
export async function connectBus(options: BusOptions): Promise<NatsConnection> {
  try {
    return await connect({
      servers: options.servers,
      name: options.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      waitOnFirstConnect: true,
      timeout: 5000,
      // Capturing a stack for every request costs IPAM about 7% of its CPU under load.
      noAsyncTraces: true,
    });
  } catch (error) {
    throw new Error(`failed to connect to NATS at ${String(options.servers)}: ${(error as Error).message}`);
  }
}

/** Opens a KV bucket, creating it on first use; every service calls this with the same settings. */
export async function openBucket(nc: NatsConnection, bucket: string): Promise<KV> {
  return new Kvm(nc).create(bucket, { history: 1, storage: StorageType.File });
}

export async function ensureIntentStream(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(INTENT_STREAM);
  } catch {
    await jsm.streams.add({
      name: INTENT_STREAM,
      subjects: [INTENT_SUBJECT],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      duplicate_window: 2 * 60 * 1_000_000_000,
    });
  }
}
