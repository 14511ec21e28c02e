import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { INTENT_STREAM, INTENT_SUBJECT } from "./subjects.js";

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

export interface BusOptions {
  /** One server or several: a list, or one string with the URLs separated by commas (TRELLIS_NATS_URL). */
  servers: string | string[];
  /** Shown by the server in connection listings: which service this is. */
  name: string;
  /** Who to authenticate as; by default TRELLIS_NATS_USER and TRELLIS_NATS_PASSWORD, or no one when unset. */
  credentials?: BusCredentials;
}

export interface BusCredentials {
  user: string;
  password: string;
}

/**
 * Connects with unlimited reconnects: a restarted server must not take the services down with it.
 * An authenticated connection takes its replies under `_INBOX.<user>.`, so that a server can let each
 * user subscribe to its own replies only (deploy/nats/trellis.conf does) instead of to everyone's.
 */
export async function connectBus(options: BusOptions): Promise<NatsConnection> {
  const credentials = options.credentials ?? credentialsFromEnvironment();
  try {
    return await connect({
      servers: serverList(options.servers),
      name: options.name,
      ...(credentials && { user: credentials.user, pass: credentials.password, inboxPrefix: `_INBOX.${credentials.user}` }),
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

function serverList(servers: string | string[]): string[] {
  const urls = typeof servers === "string" ? servers.split(",") : servers;
  return urls.map((url) => url.trim()).filter((url) => url !== "");
}

/** The prefix of the connection's reply subjects, which connectBus sets per user. */
export function inboxPrefixOf(nc: NatsConnection): string {
  return (nc as NatsConnection & { options?: { inboxPrefix?: string } }).options?.inboxPrefix || "_INBOX";
}

function credentialsFromEnvironment(): BusCredentials | undefined {
  const user = process.env.TRELLIS_NATS_USER;
  return user ? { user, password: process.env.TRELLIS_NATS_PASSWORD ?? "" } : undefined;
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
