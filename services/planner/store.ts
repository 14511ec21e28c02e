import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { openBucket } from "../../libs/bus/connection.js";
import { codecOf } from "../../libs/bus/codec.js";
import { getValue, isExistsError, listValues } from "../../libs/bus/kv.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { HostDesiredState, HostRecord, IntentResult } from "../../libs/proto/gen/trellis/v1/state.js";
import { DroppedRecords, RecordVerifier } from "../../libs/tls/record-signature.js";

const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const desiredCodec = codecOf(HostDesiredState);
const hostCodec = codecOf(HostRecord);
const intentCodec = codecOf(IntentResult);

/** The planner's view of its KV buckets. Networks and endpoints are the truth; desired state derives from them. */
export class PlannerStore {
  private constructor(
    private readonly networks: KV,
    private readonly endpoints: KV,
    private readonly desired: KV,
    readonly hosts: KV,
    private readonly intents: KV,
    /** With it, a heartbeat its host's agent did not sign is as none (libs/tls/record-signature.ts). */
    private readonly heartbeats?: { verifier: RecordVerifier; dropped: DroppedRecords },
  ) {}

  /** `verifier`: believe only heartbeats their host's agent signed (with TLS). */
  static async open(nc: NatsConnection, verifier?: RecordVerifier): Promise<PlannerStore> {
    const [networks, endpoints, desired, hosts, intents] = await Promise.all(
      [Buckets.networks, Buckets.endpoints, Buckets.desired, Buckets.hosts, Buckets.intents].map((b) => openBucket(nc, b)),
    );
    const heartbeats = verifier && { verifier, dropped: new DroppedRecords((line) => console.error(line)) };
    return new PlannerStore(networks, endpoints, desired, hosts, intents, heartbeats);
  }

  async getNetwork(name: string): Promise<Network | undefined> {
    return (await getValue(this.networks, networkCodec, name))?.value;
  }

  listNetworks(): Promise<Network[]> {
    return listValues(this.networks, networkCodec);
  }

  /** False when a network of that name exists already. */
  async createNetwork(network: Network): Promise<boolean> {
    return createOnly(this.networks, network.name, networkCodec.encode(network));
  }

  async deleteNetwork(name: string): Promise<void> {
    await this.networks.delete(name);
  }

  async getEndpoint(container: string): Promise<Endpoint | undefined> {
    return (await getValue(this.endpoints, endpointCodec, container))?.value;
  }

  listEndpoints(): Promise<Endpoint[]> {
    return listValues(this.endpoints, endpointCodec);
  }

  /** False when a container of that name exists already. */
  async createEndpoint(endpoint: Endpoint): Promise<boolean> {
    return createOnly(this.endpoints, endpoint.container, endpointCodec.encode(endpoint));
  }

  async deleteEndpoint(container: string): Promise<void> {
    await this.endpoints.delete(container);
  }

  async listHosts(): Promise<HostRecord[]> {
    return (await listValues(this.hosts, hostCodec)).filter((record) => this.believed(record, record.host));
  }

  async getHost(host: string): Promise<HostRecord | undefined> {
    const record = (await getValue(this.hosts, hostCodec, host))?.value;
    return record && this.believed(record, host) ? record : undefined;
  }

  private believed(record: HostRecord, host: string): boolean {
    const problem = this.heartbeats?.verifier.problem(hostCodec, record, host);
    if (problem) this.heartbeats!.dropped.drop("heartbeat", host, problem);
    return !problem;
  }

  async putDesiredState(state: HostDesiredState): Promise<void> {
    await this.desired.put(state.host, desiredCodec.encode(state));
  }

  async getIntentResult(intentId: string): Promise<IntentResult | undefined> {
    return (await getValue(this.intents, intentCodec, intentId))?.value;
  }

  /** Keeps an intent's first outcome: the result already kept, if another attempt of the intent was first. */
  async recordIntentResult(result: IntentResult): Promise<IntentResult> {
    if (await createOnly(this.intents, result.intentId, intentCodec.encode(result))) return result;
    const kept = await this.getIntentResult(result.intentId);
    if (!kept) throw new Error(`failed to record the outcome of intent ${result.intentId}: its key exists but holds no result`);
    return kept;
  }
}

async function createOnly(kv: KV, key: string, value: Uint8Array): Promise<boolean> {
  try {
    await kv.create(key, value);
    return true;
  } catch (error) {
    if (isExistsError(error)) return false;
    throw error;
  }
}
