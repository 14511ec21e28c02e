import { status as grpcStatus } from "@grpc/grpc-js";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { settledStatus, statusRemoved, type StatusOf } from "../../libs/bus/endpoint-status.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { clientCredentials } from "../../libs/grpc/credentials.js";
import { ControlRefusedError, TranslatedControlApi } from "../../libs/control-client/index.js";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState } from "../../libs/proto/gen/trellis/v1/state.js";
import { RecordVerifier } from "../../libs/tls/record-signature.js";
import type { LoadedTls } from "../../libs/tls/settings.js";

export interface ControlPlaneSettings {
  planner: string;
  nats: string;
  /** With TLS: the plugin's certificate for the Control API, and the CA that the agents' statuses are signed under. */
  tls?: LoadedTls | undefined;
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
export class TrellisControlPlane extends TranslatedControlApi {
  private statusBucket: Promise<KV> | undefined;
  private nc: Promise<NatsConnection> | undefined;
  private readonly verifier: RecordVerifier | undefined;

  constructor(private readonly settings: ControlPlaneSettings) {
    super({ addresses: settings.planner, credentials: clientCredentials(settings.tls) }, (error) => dockerErrorOf(error, settings.planner));
    this.verifier = settings.tls && new RecordVerifier(settings.tls.ca);
  }

  /** Waits for the host's agent to make the endpoint's link; refuses with the agent's own words if it failed. */
  async waitUntilReady(endpoint: Endpoint): Promise<void> {
    const reported = await settledStatus(await this.status(), endpoint, { verifier: this.verifier });
    if (reported.state === EndpointState.ENDPOINT_STATE_FAILED) {
      throw new Error(`failed to make the link of ${endpoint.container} in ${endpoint.netns} on host ${endpoint.host}: ${reported.message}`);
    }
  }

  /** Waits until the agent reports the endpoint's link removed (its status gone). */
  async waitUntilRemoved(endpoint: StatusOf): Promise<void> {
    await statusRemoved(await this.status(), endpoint);
  }

  override async close(): Promise<void> {
    super.close();
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
}

function dockerErrorOf(error: Error, planner: string): Error {
  if (error instanceof ControlRefusedError) return new TrellisRefusal(error.code, `Trellis refused: ${error.details}`);
  return new Error(`failed to reach the Trellis control plane at ${planner}: ${error.message}`);
}
