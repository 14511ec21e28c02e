import type { ChannelCredentials } from "@grpc/grpc-js";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { openBucket } from "../../../libs/bus/connection.js";
import { STATUS_WAIT_MS } from "../../../libs/bus/endpoint-status.js";
import { Buckets } from "../../../libs/bus/subjects.js";
import { ControlApi, ControlRefusedError, ControlTimeoutError, PlannerUnreachableError, TranslatedControlApi } from "../../../libs/control-client/index.js";
import type { Endpoint } from "../../../libs/proto/gen/trellis/v1/network.js";
import type { EndpointStatus } from "../../../libs/proto/gen/trellis/v1/state.js";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { CniCode, CniError } from "../../cni/errors.js";
import { HostStatuses } from "./host-statuses.js";

/** STATUS must answer quickly: a runtime asks it before it schedules work. */
const STATUS_TIMEOUT_MS = 3_000;

export interface ControlPlaneOptions {
  /** This agent's host, whose statuses an ADD waits for. */
  host: string;
  /** The planner replicas (TRELLIS_PLANNER_ADDR). */
  planner: string;
  /** The agent's own: mutual TLS with its certificate when the agent has one. */
  credentials?: ChannelCredentials;
  /** With TLS: a status its host's agent did not sign is passed over. */
  verifier?: RecordVerifier;
}

/**
 * What the local API reaches the cluster through, opened once for the agent's life: the Control API (attach,
 * detach, look at a network; failures as CNI errors) and the agent's NATS connection (the agent's report that
 * the interface is there).
 */
export class ControlPlane extends TranslatedControlApi {
  /** STATUS's: the same planners, a short deadline. */
  private readonly quick: ControlApi;
  private statuses: Promise<KV> | undefined;
  private readonly hostStatuses: HostStatuses;

  constructor(
    private readonly nc: NatsConnection,
    options: ControlPlaneOptions,
  ) {
    super({ addresses: options.planner, credentials: options.credentials }, cniErrorOf);
    this.quick = new ControlApi({ addresses: options.planner, credentials: options.credentials, timeoutMs: STATUS_TIMEOUT_MS, attemptTimeoutMs: STATUS_TIMEOUT_MS });
    this.hostStatuses = new HostStatuses(() => this.statusBucket(), options.host, options.verifier);
    // Open now, so that the first ADD finds it open; one that fails is opened again by the next ADD.
    void this.hostStatuses.start().catch(() => undefined);
  }

  /** Whether the planner answers, quickly: looking the network up costs one key, whatever the cluster's size. */
  async checkPlanner(network: string): Promise<void> {
    await this.call(() => this.quick.inspectNetwork(network));
  }

  /** Whether NATS answers the agent, or why not. */
  async natsProblem(): Promise<string | undefined> {
    if (this.nc.isClosed()) return "the agent's connection to NATS is closed: restart the agent";
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve(`NATS did not answer the agent within ${STATUS_TIMEOUT_MS / 1000}s`), STATUS_TIMEOUT_MS).unref());
    return Promise.race([this.nc.rtt().then(() => undefined, (error: Error) => `NATS does not answer the agent: ${error.message}`), timeout]);
  }

  /** Waits for this host's agent to report the endpoint ready or failed (TRELLIS_WAIT_SECONDS, 120 by default). */
  waitForAgent(endpoint: Endpoint): Promise<EndpointStatus> {
    return this.hostStatuses.settledStatus(endpoint, STATUS_WAIT_MS);
  }

  /** Waits at most `timeoutMs` for this host's agent to take the container away; false when it did not in that time. */
  waitForRemoval(container: string, timeoutMs: number): Promise<boolean> {
    return this.hostStatuses.statusGone(container, timeoutMs);
  }

  override async close(): Promise<void> {
    super.close();
    this.quick.close();
    await this.hostStatuses.stop();
  }

  private statusBucket(): Promise<KV> {
    this.statuses ??= openBucket(this.nc, Buckets.status).catch((error: Error) => {
      this.statuses = undefined;
      throw new CniError(CniCode.tryAgainLater, `failed to open the status bucket: ${error.message}`);
    });
    return this.statuses;
  }
}

/** In `details` of an error that proves the call never got to a planner (every address refused it at once). */
export const NEVER_REACHED = "no planner was reached";

/** A refusal's gRPC code goes in `details`, for whoever reads the runtime's log. */
export function cniErrorOf(error: Error): CniError {
  if (error instanceof CniError) return error;
  if (error instanceof PlannerUnreachableError) return new CniError(CniCode.tryAgainLater, `failed to reach the control plane: ${error.message}`, NEVER_REACHED);
  if (error instanceof ControlTimeoutError) return new CniError(CniCode.tryAgainLater, `failed to reach the control plane: ${error.message}`);
  if (error instanceof ControlRefusedError) return new CniError(CniCode.refused, `Trellis refused: ${error.details}`, String(error.code));
  return new CniError(CniCode.tryAgainLater, `failed to reach the control plane: ${error.message}`);
}
