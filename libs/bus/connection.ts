import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { connect, errors, type NatsConnection, type TlsOptions } from "@nats-io/transport-node";
import {
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamInfo,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { describeIdentity, identityFromSubjectAltName } from "../tls/identity.js";
import { loadTls, tlsFilesFrom, type LoadedTls } from "../tls/settings.js";
import { Buckets, INTENT_STREAM, INTENT_SUBJECT } from "./subjects.js";

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/** JetStream keeps at most five copies of a stream. */
const MAX_REPLICAS = 5;

/** Creating a consumer takes milliseconds; one that takes longer was placed on a server that is down (below). */
const CONSUMER_CREATE_TIMEOUT_MS = 1_000;
const CONSUMER_CREATE_ATTEMPTS = 8;

export interface BusOptions {
  /** One server or several: a list, or one string with the URLs separated by commas (TRELLIS_NATS_URL). */
  servers: string | string[];
  /** Shown by the server in connection listings: which service this is. */
  name: string;
  /** Who to authenticate as; by default TRELLIS_NATS_USER and TRELLIS_NATS_PASSWORD, or no one when unset. */
  credentials?: BusCredentials;
  /**
   * When no server can be reached: true (the default, for services, which may start before NATS does) waits
   * for one, saying so once on stderr; false (for a command a person runs) fails at once, saying where it
   * looked and what to do.
   */
  waitForServer?: boolean;
  /**
   * TLS to the server: by default, when TRELLIS_NATS_TLS_CA is set, the server checked against that CA and, for
   * a server that asks for one, the client certificate of TRELLIS_TLS_CERT and TRELLIS_TLS_KEY; null for none.
   */
  tls?: LoadedTls | null;
}

export interface BusCredentials {
  user: string;
  password: string;
}

/**
 * Connects with unlimited reconnects: a restarted server must not take the services down with it. A service
 * started before its server waits for it; any other failure of the first attempt (a certificate that is not
 * trusted, a refused login) fails at once, saying why, as no retry would change it.
 * An authenticated connection takes its replies under `_INBOX.<user>.`, so that a server can let each
 * user subscribe to its own replies only (deploy/nats/trellis.conf does) instead of to everyone's.
 */
export async function connectBus(options: BusOptions): Promise<NatsConnection> {
  const credentials = options.credentials ?? credentialsFromEnvironment();
  const servers = serverList(options.servers);
  const tls = options.tls === undefined ? tlsFromEnvironment() : options.tls;
  const settings = {
    servers,
    name: options.name,
    ...(credentials && { user: credentials.user, pass: credentials.password, inboxPrefix: `_INBOX.${credentials.user}` }),
    ...(tls && { tls: natsTlsOptions(tls) }),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    timeout: 5000,
    // Capturing a stack for every request costs IPAM about 7% of its CPU under load.
    noAsyncTraces: true,
  };
  let unreachable: string;
  try {
    // One pass over the servers first: a server that is not there is said at once, not waited for in silence.
    return await connect({ ...settings, waitOnFirstConnect: false });
  } catch (error) {
    const failure = natsConnectFailure(error);
    if (failure === undefined) throw connectFailed(options.servers, error, tls);
    unreachable = `failed to reach NATS at ${servers.join(", ")}: ${failure}; start nats-server, or set TRELLIS_NATS_URL (or --nats) to where it runs`;
  }
  if (options.waitForServer === false) throw new Error(unreachable);
  // A library that prints: but the services (whose start-up this is) have no other way to say why they hang.
  console.error(`${unreachable}; waiting for it`);
  try {
    return await connect({ ...settings, waitOnFirstConnect: true });
  } catch (error) {
    throw connectFailed(options.servers, error, tls);
  }
}

/** A server reached that would not have us: a login or certificate refused, said with what to do. */
function connectFailed(servers: string | string[], error: unknown, tls: LoadedTls | null | undefined): Error {
  const message = (error as Error).message;
  const hint = !tls && /certificate/i.test(message) ? " (set TRELLIS_NATS_TLS_CA to the CA that issued the server's certificate)" : "";
  return new Error(`failed to connect to NATS at ${String(servers)}: ${message}${hint}`);
}

/**
 * Why no NATS server could be reached, in a person's words, or undefined when one was (and refused us, say). A
 * server that cuts a TLS handshake it found too slow resets the connection: that counts as not reached yet too.
 */
function natsConnectFailure(error: unknown): string | undefined {
  const { message, code, cause } = error as { message?: string; code?: string; cause?: { code?: unknown } };
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || /ENOTFOUND|EAI_AGAIN/.test(message ?? "")) return "no such host";
  if (/connection refused|ECONNREFUSED/i.test(message ?? "")) return "connection refused";
  if (code === "EHOSTUNREACH" || code === "ENETUNREACH") return "host unreachable";
  if (error instanceof errors.TimeoutError || code === "ETIMEDOUT") return "connection timed out";
  if (code === "ECONNRESET" || cause?.code === "ECONNRESET") return "connection reset";
  return undefined;
}

/** nats.js's TLS options for these certificates: how every Trellis client reaches a server with TLS. */
export function natsTlsOptions(tls: LoadedTls): TlsOptions {
  const own = tls.own && { cert: tls.own.cert.toString(), key: tls.own.key.toString() };
  // nats.js passes the rest of its tls options on to node:tls.
  return { ca: tls.ca.toString(), ...own, checkServerIdentity: checkNatsServer } as TlsOptions;
}

/**
 * The server must present the certificate of a Trellis NATS server (role nats), and, when reached by name, for that
 * name. nats.js gives a server reached by IP address no name to check (node:tls then checks "localhost"): there the
 * CA's word that it is a NATS server is what is checked.
 */
function checkNatsServer(host: string, certificate: PeerCertificate): Error | undefined {
  const identity = identityFromSubjectAltName(certificate.subjectaltname);
  if (identity?.role !== "nats") {
    return new Error(`the server's certificate (${identity ? describeIdentity(identity) : `CN=${certificate.subject?.CN}`}) is not a NATS server's: issue it with "trellis certs issue NAME --role=nats"`);
  }
  return host === "localhost" ? undefined : checkServerIdentity(host, certificate);
}

/** TRELLIS_NATS_TLS_CA, with the process's own certificate (TRELLIS_TLS_CERT and _KEY) for servers that ask for one. */
function tlsFromEnvironment(): LoadedTls | undefined {
  const ca = process.env.TRELLIS_NATS_TLS_CA;
  const files = ca ? tlsFilesFrom({ ca }) : undefined;
  return files && loadTls(files);
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

/**
 * How many servers keep a copy of each bucket and of the intent stream: TRELLIS_NATS_REPLICAS, 1 by default,
 * 3 on the three-node cluster of deploy/nats/cluster. Whichever service starts first creates a bucket, so
 * every service must have the same; openBucket and ensureIntentStream refuse a stream that has another.
 */
export function replicasFromEnvironment(): number {
  return parseReplicas(process.env.TRELLIS_NATS_REPLICAS || "1", "TRELLIS_NATS_REPLICAS");
}

/** A replica count as written by a person; `what` names where it was written, for the error. */
export function parseReplicas(text: string, what: string): number {
  const replicas = Number(text);
  if (!/^\d+$/.test(text) || replicas < 1 || replicas > MAX_REPLICAS) {
    throw new Error(`invalid ${what} "${text}": must be a whole number from 1 to ${MAX_REPLICAS}, the number of servers that keep each stream`);
  }
  return replicas;
}

export interface BucketOptions {
  /**
   * How long a value is kept (the bucket's stream max_age); forever when absent. Its one writer (the planner
   * for intent results) passes it, and a bucket made with another is changed to it.
   */
  ttlMs?: number;
}

/** Opens a KV bucket, creating it on first use; every service calls this with the same settings. */
export async function openBucket(nc: NatsConnection, bucket: string, options: BucketOptions = {}): Promise<KV> {
  const replicas = replicasFromEnvironment();
  // Kvm.create takes an existing bucket as it is, whatever its replicas: the check is ours.
  const kv = await createBucket(nc, bucket, { history: 1, storage: StorageType.File, replicas, ...(options.ttlMs && { ttl: options.ttlMs }) });
  const info = (await kv.status()).streamInfo;
  checkReplicas(info, replicas);
  if (options.ttlMs !== undefined) await ensureMaxAge(nc, info, options.ttlMs);
  if (replicas === 1) return kv;
  const forConsumers = await new Kvm(jetstream(nc, { timeout: CONSUMER_CREATE_TIMEOUT_MS })).open(bucket);
  return withRetriedConsumers(kv, forConsumers);
}

/** JetStream's answer to a stream made while another with the same subjects was being made. */
const STREAM_SUBJECT_OVERLAP = 10065;

/**
 * Kvm.create, once more when another service made the bucket at the same moment: the server then answers
 * "subjects overlap with an existing stream" (two agents starting together, say), and the second try finds it.
 */
async function createBucket(nc: NatsConnection, bucket: string, options: Parameters<Kvm["create"]>[1]): Promise<KV> {
  try {
    return await new Kvm(nc).create(bucket, options);
  } catch (error) {
    if (!(error instanceof JetStreamApiError) || error.code !== STREAM_SUBJECT_OVERLAP) throw error;
    return new Kvm(nc).create(bucket, options);
  }
}

/** JetStream counts a stream's max_age in nanoseconds. */
const NANOS_PER_MS = 1_000_000;

async function ensureMaxAge(nc: NatsConnection, info: StreamInfo, maxAgeMs: number): Promise<void> {
  if (info.config.max_age === maxAgeMs * NANOS_PER_MS) return;
  try {
    await (await jetstreamManager(nc)).streams.update(info.config.name, { ...info.config, max_age: maxAgeMs * NANOS_PER_MS });
  } catch (error) {
    throw new Error(`failed to keep stream ${info.config.name}'s values for ${maxAgeMs / 1000} s: ${(error as Error).message}`);
  }
}

/**
 * nats-server 2.9.10 may place the ephemeral consumer behind kv.keys() and kv.watch() on any server that keeps a
 * copy of the stream, one that is down included, and the creation then goes unanswered: while one node of three is
 * down, about a third of those calls would fail, each after 5 s (nats-io/nats-server#7165 fixed it, in 2025).
 * So on a cluster they are made through a handle that gives up on a creation after a second, and tried again.
 */
function withRetriedConsumers(kv: KV, forConsumers: KV): KV {
  return new Proxy(kv, {
    get(target, property) {
      if (property === "keys") return (...args: Parameters<KV["keys"]>) => retryTimedOut(() => forConsumers.keys(...args));
      if (property === "watch") return (...args: Parameters<KV["watch"]>) => retryTimedOut(() => forConsumers.watch(...args));
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

async function retryTimedOut<T>(create: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await create();
    } catch (error) {
      if (!(error instanceof errors.TimeoutError) || attempt === CONSUMER_CREATE_ATTEMPTS) throw error;
    }
  }
}

/** The intent stream keeps intents for `retentionMs`, as long as their results are kept for replays. */
export async function ensureIntentStream(nc: NatsConnection, retentionMs: number): Promise<void> {
  const replicas = replicasFromEnvironment();
  const jsm = await jetstreamManager(nc);
  const existing = await streamInfoIfAny(jsm, INTENT_STREAM);
  if (existing) {
    checkReplicas(existing, replicas);
    await ensureMaxAge(nc, existing, retentionMs);
    return;
  }
  await jsm.streams.add({
    name: INTENT_STREAM,
    subjects: [INTENT_SUBJECT],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    // JetStream wants the duplicate window within max_age.
    duplicate_window: Math.min(2 * 60 * 1_000, retentionMs) * NANOS_PER_MS,
    max_age: retentionMs * NANOS_PER_MS,
    num_replicas: replicas,
  });
}

/** The stream's information, or undefined when there is no such stream; any other failure is thrown. */
async function streamInfoIfAny(jsm: JetStreamManager, stream: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(stream);
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw error;
  }
}

/**
 * A service does not change a stream's replicas itself: its NATS user may not (deploy/nats/trellis.conf), and
 * one service started with a wrong setting must not take the copies away from all the others.
 */
function checkReplicas(info: StreamInfo, replicas: number): void {
  const actual = replicasOf(info);
  if (actual === replicas) return;
  throw new Error(
    `failed to open stream ${info.config.name}: it has ${actual} replica(s) and TRELLIS_NATS_REPLICAS asks for ${replicas}; ` +
      `give every service the same TRELLIS_NATS_REPLICAS, or change the streams to it with "trellis nats replicas ${replicas}" ` +
      "(logged in as the planner's NATS user)",
  );
}

function replicasOf(info: StreamInfo): number {
  // The server leaves num_replicas out of a one-replica stream's configuration when it was created without it.
  return info.config.num_replicas || 1;
}

/** Every stream Trellis makes: the intent stream, and one per KV bucket. */
export function trellisStreams(): string[] {
  return [INTENT_STREAM, ...Object.values(Buckets).map((bucket) => `KV_${bucket}`)];
}

export interface ReplicaChange {
  stream: string;
  from: number;
  to: number;
}

/**
 * Gives every existing Trellis stream `replicas` copies and waits until the new copies have caught up: for streams
 * made on a cluster by services started without TRELLIS_NATS_REPLICAS, say. Streams not made yet are left to
 * openBucket and ensureIntentStream.
 */
export async function changeReplicas(nc: NatsConnection, replicas: number, timeoutMs: number): Promise<ReplicaChange[]> {
  const jsm = await jetstreamManager(nc);
  const changes: ReplicaChange[] = [];
  for (const stream of trellisStreams()) {
    const info = await streamInfoIfAny(jsm, stream);
    if (!info || replicasOf(info) === replicas) continue;
    try {
      await jsm.streams.update(stream, { ...info.config, num_replicas: replicas });
      await waitUntilReplicasCurrent(jsm, stream, replicas, timeoutMs);
    } catch (error) {
      throw new Error(`failed to change stream ${stream} from ${replicasOf(info)} to ${replicas} replica(s): ${(error as Error).message}`);
    }
    changes.push({ stream, from: replicasOf(info), to: replicas });
  }
  return changes;
}

async function waitUntilReplicasCurrent(jsm: JetStreamManager, stream: string, replicas: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const followers = (await jsm.streams.info(stream)).cluster?.replicas ?? [];
    if (followers.length === replicas - 1 && followers.every((follower) => follower.current)) return;
    if (Date.now() > deadline) throw new Error(`its copies were not all current after ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
