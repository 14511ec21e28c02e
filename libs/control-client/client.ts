import { randomUUID } from "node:crypto";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { ControlClient, type ClusterStatus, type ListEndpointsResponse, type ListNetworksResponse } from "../proto/gen/trellis/v1/control.js";
import type { Endpoint, EndpointSpec, Network, NetworkSpec } from "../proto/gen/trellis/v1/network.js";
import { callUnary, clientOptions, insecure, type UnaryMethod } from "../grpc/unary.js";
import { addressList, DEFAULT_PLANNER_ADDRESS } from "./addresses.js";
import { AddressRotation, withRetries, type RetryEvent, type RetryPolicy } from "./retry.js";

export const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_ATTEMPT_TIMEOUT_MS = 10_000;

export interface ControlApiOptions {
  /**
   * The planner replicas, any of which answers any call: a list, or one string with the addresses separated
   * by commas. By default TRELLIS_PLANNER_ADDR, else 127.0.0.1:7710.
   */
  addresses?: string | readonly string[];
  /** The channel's credentials: mutual TLS (libs/grpc/credentials.ts clientCredentials); plaintext by default. */
  credentials?: ChannelCredentials;
  /** How long one call may keep retrying, in ms; 30 s by default. */
  timeoutMs?: number;
  /** The most one attempt on one address may take, in ms (never more than what is left of timeoutMs); 10 s by default. */
  attemptTimeoutMs?: number;
  /**
   * Retry until the deadline even when no planner can be reached at all (every address refuses the
   * connection, or names no host, on the first round). Off by default: that is then reported at once.
   */
  waitForPlanner?: boolean;
  /** Called before each retry, e.g. to tell a person why the call is pausing. */
  onRetry?: (retry: RetryEvent) => void;
}

/** Per call: the intent id of a mutating call; by default one new id per call, kept across its retries. */
export interface IntentOptions {
  intentId?: string;
}

/**
 * The Control API with failover: each call goes to one planner replica after another until one answers, with
 * the same intent id every time, until its deadline. A refusal throws ControlRefusedError, no planner at all
 * PlannerUnreachableError, a deadline passed ControlTimeoutError.
 */
export class ControlApi {
  readonly addresses: readonly string[];
  private readonly policy: RetryPolicy;
  private readonly rotation: AddressRotation;
  private readonly clients: (ControlClient | undefined)[];
  private readonly credentials: ChannelCredentials;

  constructor(options: ControlApiOptions = {}) {
    this.addresses = addressList(options.addresses ?? (process.env.TRELLIS_PLANNER_ADDR || DEFAULT_PLANNER_ADDRESS));
    this.policy = {
      addresses: this.addresses,
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      attemptTimeoutMs: options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS,
      waitForPlanner: options.waitForPlanner ?? false,
      onRetry: options.onRetry,
    };
    this.credentials = options.credentials ?? insecure();
    this.rotation = new AddressRotation(this.addresses);
    this.clients = this.addresses.map(() => undefined);
  }

  createNetwork(spec: NetworkSpec, options: IntentOptions = {}): Promise<Network> {
    const request = { intentId: intentIdOf(options), spec };
    return this.call((client) => client.createNetwork.bind(client), request);
  }

  async deleteNetwork(name: string, options: IntentOptions = {}): Promise<void> {
    const request = { intentId: intentIdOf(options), name };
    await this.call((client) => client.deleteNetwork.bind(client), request);
  }

  inspectNetwork(name: string): Promise<Network> {
    return this.call((client) => client.inspectNetwork.bind(client), { name });
  }

  /** One answer of the cluster's status: every network's counts and the page of hosts after `hostPageToken`. */
  clusterStatus(hostPageToken = "", hostPageSize = 0): Promise<ClusterStatus> {
    return this.call((client) => client.getClusterStatus.bind(client), { hostPageToken, hostPageSize });
  }

  async listNetworks(): Promise<Network[]> {
    const response: ListNetworksResponse = await this.call((client) => client.listNetworks.bind(client), {});
    return response.networks;
  }

  attachEndpoint(spec: EndpointSpec, options: IntentOptions = {}): Promise<Endpoint> {
    const request = { intentId: intentIdOf(options), spec };
    return this.call((client) => client.attachEndpoint.bind(client), request);
  }

  async detachEndpoint(container: string, options: IntentOptions = {}): Promise<void> {
    const request = { intentId: intentIdOf(options), container };
    await this.call((client) => client.detachEndpoint.bind(client), request);
  }

  /** `network` empty or absent: the endpoints of every network, in container-name order, fetched a page at a time. */
  async listEndpoints(network = ""): Promise<Endpoint[]> {
    const endpoints: Endpoint[] = [];
    let pageToken = "";
    do {
      const page: ListEndpointsResponse = await this.call((client) => client.listEndpoints.bind(client), { network, pageToken, pageSize: 0 });
      endpoints.push(...page.endpoints);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return endpoints;
  }

  inspectEndpoint(container: string): Promise<Endpoint> {
    return this.call((client) => client.inspectEndpoint.bind(client), { container });
  }

  close(): void {
    for (const client of this.clients) client?.close();
    this.clients.fill(undefined);
  }

  private call<Req, Res>(method: (client: ControlClient) => UnaryMethod<Req, Res>, request: Req): Promise<Res> {
    return withRetries(this.policy, this.rotation, (index, deadline) => callUnary(method(this.clientAt(index)), request, deadline - Date.now()));
  }

  private clientAt(index: number): ControlClient {
    this.clients[index] ??= new ControlClient(this.addresses[index]!, this.credentials, channelOptions);
    return this.clients[index]!;
  }
}

/**
 * grpc-js waits up to two minutes between reconnects to an address that refused (its backoff grows 1.6-fold
 * from a second): a planner back after a restart would go unnoticed for that long. A second at most keeps
 * the pause close to the planner's own downtime. Each ControlApi has its own connections.
 */
const channelOptions = {
  ...clientOptions,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1_000,
  "grpc.use_local_subchannel_pool": 1,
};

function intentIdOf(options: IntentOptions): string {
  return options.intentId || randomUUID();
}
