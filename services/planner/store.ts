import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { openBucket } from "../../libs/bus/connection.js";
import { codecOf, type MessageCodec } from "../../libs/bus/codec.js";
import { JetStreamPublisher } from "../../libs/bus/jetstream-publisher.js";
import { getValue, type Versioned } from "../../libs/bus/kv.js";
import { KvWriter } from "../../libs/bus/kv-writer.js";
import { Buckets, desiredKey, nameKey } from "../../libs/bus/subjects.js";
import { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { IntentResult, NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import type { RecordSigner, RecordVerifier, Signed } from "../../libs/tls/record-signature.js";
import { PlannerView } from "./view.js";

export const networkCodec = codecOf(Network);
export const endpointCodec = codecOf(Endpoint);
export const nameCodec = codecOf(NameEntry);
const intentCodec = codecOf(IntentResult);

export interface StoreOptions {
  /** How long an intent's result is kept for its replays; the intent stream keeps intents as long. */
  intentRetentionMs: number;
  /**
   * With TLS: networks, desired endpoints and names are signed with the planner's key, for the agents to check;
   * a heartbeat its host's agent did not sign is as none, and a stored value no planner signed is repaired.
   */
  trust?: { signer: RecordSigner; verifier: RecordVerifier } | undefined;
}

/**
 * The planner's buckets. Networks and endpoints are the truth, written by create-only and compare-and-set
 * writes so that replicas never both win; desired state and names derive from them, one small key per
 * endpoint. Every write is one publish (answering its revision), and the view follows the buckets.
 */
export class PlannerStore {
  private constructor(
    readonly view: PlannerView,
    readonly buckets: { networks: KV; endpoints: KV; desired: KV; names: KV; hosts: KV; intents: KV },
    private readonly writers: { networks: KvWriter; endpoints: KvWriter; desired: KvWriter; names: KvWriter; intents: KvWriter },
    private readonly publisher: JetStreamPublisher,
    readonly trust: StoreOptions["trust"],
  ) {}

  static async open(nc: NatsConnection, options: StoreOptions): Promise<PlannerStore> {
    const [networks, endpoints, desired, names, hosts, intents] = await Promise.all([
      openBucket(nc, Buckets.networks),
      openBucket(nc, Buckets.endpoints),
      openBucket(nc, Buckets.desired),
      openBucket(nc, Buckets.names),
      openBucket(nc, Buckets.hosts),
      openBucket(nc, Buckets.intents, { ttlMs: options.intentRetentionMs }),
    ]);
    const publisher = new JetStreamPublisher(nc);
    const writer = (kv: KV) => new KvWriter(kv, publisher);
    const view = await PlannerView.start({ networks, endpoints, hosts }, options.trust?.verifier);
    return new PlannerStore(
      view,
      { networks, endpoints, desired, names, hosts, intents },
      { networks: writer(networks), endpoints: writer(endpoints), desired: writer(desired), names: writer(names), intents: writer(intents) },
      publisher,
      options.trust,
    );
  }

  close(): void {
    this.view.stop();
    this.publisher.close();
  }

  /** The stored network, read from the bucket rather than the view: what an attach checks after its own write. */
  readNetwork(name: string): Promise<Versioned<Network> | undefined> {
    return getValue(this.buckets.networks, networkCodec, name);
  }

  /** The new revision, or undefined when a network of that name exists already. */
  async createNetwork(network: Network): Promise<number | undefined> {
    const revision = await this.writers.networks.create(network.name, this.sealed(networkCodec, network));
    if (revision !== undefined) this.view.noteNetwork(network, revision);
    return revision;
  }

  /** The new revision, or undefined when the network changed since `revision`. */
  async updateNetwork(network: Network, revision: number): Promise<number | undefined> {
    const written = await this.writers.networks.write(network.name, this.sealed(networkCodec, network), { expected: revision });
    if (written.outcome === "conflict") return undefined;
    this.view.noteNetwork(network, written.revision);
    return written.revision;
  }

  async deleteNetwork(name: string, revision: number): Promise<boolean> {
    const marker = await this.writers.networks.delete(name, revision);
    if (marker !== undefined) this.view.noteNetworkGone(name, marker);
    return marker !== undefined;
  }

  /** The new revision, or undefined when a container of that name exists already. */
  async createEndpoint(endpoint: Endpoint): Promise<number | undefined> {
    const revision = await this.writers.endpoints.create(endpoint.container, endpointCodec.encode(endpoint));
    if (revision !== undefined) this.view.noteEndpoint(endpoint, revision);
    return revision;
  }

  /** False when the endpoint changed since `revision` (another replica removed it first). */
  async deleteEndpoint(container: string, revision: number): Promise<boolean> {
    const marker = await this.writers.endpoints.delete(container, revision);
    if (marker !== undefined) this.view.noteEndpointGone(container, marker);
    return marker !== undefined;
  }

  /** What the endpoint's host and the containers of its network need: its desired key and its name. */
  async publishEndpoint(endpoint: Endpoint): Promise<void> {
    await Promise.all([
      this.writers.desired.write(desiredKey(endpoint.host, endpoint.id), this.sealed(endpointCodec, endpoint)),
      this.writers.names.write(nameKey(endpoint.networkId, endpoint.container), this.sealed(nameCodec, nameEntryOf(endpoint))),
    ]);
  }

  async unpublishEndpoint(endpoint: Endpoint): Promise<void> {
    await Promise.all([
      this.writers.desired.delete(desiredKey(endpoint.host, endpoint.id)),
      this.writers.names.delete(nameKey(endpoint.networkId, endpoint.container)),
    ]);
  }

  /** Repair: one key of the desired or names bucket put right, to `value` or (undefined) removed. */
  async repairKey(bucket: "desired" | "names", key: string, value: Endpoint | NameEntry | undefined): Promise<void> {
    if (!value) await this.writers[bucket].delete(key);
    else if (bucket === "desired") await this.writers.desired.write(key, this.sealed(endpointCodec, value as Endpoint));
    else await this.writers.names.write(key, this.sealed(nameCodec, value as NameEntry));
  }

  /** The record's bytes as the agents will believe them: signed by this planner, with TLS. */
  sealed<T extends Signed>(codec: MessageCodec<T>, record: T): Uint8Array {
    return codec.encode(this.trust ? this.trust.signer.sign(codec, record) : record);
  }

  async getIntentResult(intentId: string): Promise<IntentResult | undefined> {
    return (await getValue(this.buckets.intents, intentCodec, intentId))?.value;
  }

  /** Keeps an intent's first outcome: the result already kept, if another attempt of the intent was first. */
  async recordIntentResult(result: IntentResult): Promise<IntentResult> {
    if ((await this.writers.intents.create(result.intentId, intentCodec.encode(result))) !== undefined) return result;
    const kept = await this.getIntentResult(result.intentId);
    if (!kept) throw new Error(`failed to record the outcome of intent ${result.intentId}: its key exists but holds no result`);
    return kept;
  }
}

/** A container's entry in the names bucket: its name and addresses without prefix length. */
export function nameEntryOf(endpoint: Endpoint): NameEntry {
  return {
    networkId: endpoint.networkId,
    name: endpoint.container,
    addresses: endpoint.addresses.map((cidr) => cidr.slice(0, cidr.indexOf("/"))),
  };
}
