import { status as grpcStatus } from "@grpc/grpc-js";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, statusKey } from "../../libs/bus/subjects.js";
import { ControlApi, ControlRefusedError } from "../../libs/control-client/index.js";
import type { Endpoint, EndpointSpec, Network, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState } from "../../libs/proto/gen/trellis/v1/state.js";
import { watchUntil } from "../cli/endpoint-status.js";

export interface ControlPlaneSettings {
  planner: string;
  nats: string;
}

/** A refusal by the planner, said as Trellis said it; `code` tells the kinds apart (NOT_FOUND for idempotent removals). */
export class TrellisRefusal extends Error {
  constructor(
    readonly code: grpcStatus,
    message: string,
  ) {
    super(message);
    this.name = "TrellisRefusal";
  }
}

/**
 * The plugin's ways to the cluster: the Control API (the planner's one validating path, so Docker's users
 * get `trellis network create`'s very errors) and NATS for the agent's report on an endpoint. A daemon, unlike
 * the CNI plugin: it opens both once and keeps them.
 */
export class TrellisControlPlane {
  private readonly control: ControlApi;
  private statusBucket: Promise<KV> | undefined;
  private nc: Promise<NatsConnection> | undefined;

  constructor(private readonly settings: ControlPlaneSettings) {
    this.control = new ControlApi({ addresses: settings.planner });
  }

  createNetwork(spec: NetworkSpec): Promise<Network> {
    return this.call(() => this.control.createNetwork(spec));
  }

  inspectNetwork(name: string): Promise<Network> {
    return this.call(() => this.control.inspectNetwork(name));
  }

  deleteNetwork(name: string): Promise<void> {
    return this.call(() => this.control.deleteNetwork(name));
  }

  attach(spec: EndpointSpec): Promise<Endpoint> {
    return this.call(() => this.control.attachEndpoint(spec));
  }

  /** What is already gone is fine: Docker repeats its removals after a restart. */
  async detach(container: string): Promise<void> {
    try {
      await this.call(() => this.control.detachEndpoint(container));
    } catch (error) {
      if (!(error instanceof TrellisRefusal && error.code === grpcStatus.NOT_FOUND)) throw error;
    }
  }

  /** Waits for the host's agent to make the endpoint's link; refuses with the agent's own words if it failed. */
  async waitUntilReady(endpoint: Endpoint): Promise<void> {
    const reported = await watchUntil(await this.status(), statusKey(endpoint.host, endpoint.id), false, endpoint);
    if (reported?.state === EndpointState.ENDPOINT_STATE_FAILED) {
      throw new Error(`failed to make the link of ${endpoint.container} in ${endpoint.netns} on host ${endpoint.host}: ${reported.message}`);
    }
  }

  /** Waits until the agent reports the endpoint's link removed (its status gone). */
  async waitUntilRemoved(endpoint: { endpointId: string; host: string; container: string }): Promise<void> {
    const shape = { id: endpoint.endpointId, host: endpoint.host, container: endpoint.container } as Endpoint;
    await watchUntil(await this.status(), statusKey(endpoint.host, endpoint.endpointId), true, shape);
  }

  async close(): Promise<void> {
    this.control.close();
    if (this.nc) await (await this.nc.catch(() => undefined))?.close();
  }

  private status(): Promise<KV> {
    this.nc ??= connectBus({ servers: this.settings.nats, name: "trellis-docker-plugin" });
    this.statusBucket ??= this.nc.then((nc) => openBucket(nc, Buckets.status));
    return this.statusBucket.catch((error: Error) => {
      this.nc = undefined;
      this.statusBucket = undefined;
      throw new Error(`failed to reach NATS at ${this.settings.nats}: ${error.message}`);
    });
  }

  private async call<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (error instanceof ControlRefusedError) throw new TrellisRefusal(error.code, `Trellis refused: ${error.details}`);
      throw new Error(`failed to reach the Trellis control plane at ${this.settings.planner}: ${(error as Error).message}`);
    }
  }
}
