import { status as grpcStatus, type ChannelCredentials } from "@grpc/grpc-js";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { openBucket } from "../../../libs/bus/connection.js";
import { Buckets, statusKey } from "../../../libs/bus/subjects.js";
import { ControlApi, ControlRefusedError, ControlTimeoutError, PlannerUnreachableError } from "../../../libs/control-client/index.js";
import type { Endpoint, EndpointSpec } from "../../../libs/proto/gen/trellis/v1/network.js";
import type { EndpointStatus } from "../../../libs/proto/gen/trellis/v1/state.js";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { STATUS_TIMEOUT_MS as READY_TIMEOUT_MS } from "../../cli/endpoint-status.js";
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
 * detach, look at a network) and the agent's NATS connection (the agent's report that the interface is there).
 */
export class ControlPlane {
  private readonly control: ControlApi;
  /** STATUS's: the same planners, a short deadline. */
  private readonly quick: ControlApi;
  private statuses: Promise<KV> | undefined;
  private readonly hostStatuses: HostStatuses;

  constructor(
    private readonly nc: NatsConnection,
    options: ControlPlaneOptions,
  ) {
    this.control = new ControlApi({ addresses: options.planner, credentials: options.credentials });
    this.quick = new ControlApi({ addresses: options.planner, credentials: options.credentials, timeoutMs: STATUS_TIMEOUT_MS, attemptTimeoutMs: STATUS_TIMEOUT_MS });
    this.hostStatuses = new HostStatuses(() => this.statusBucket(), options.host, options.verifier);
    // Open now, so that the first ADD finds it open; one that fails is opened again by the next ADD.
    void this.hostStatuses.start().catch(() => undefined);
  }

  attach(spec: EndpointSpec): Promise<Endpoint> {
    return call(() => this.control.attachEndpoint(spec));
  }

  /** Detaching what is already gone is fine: DEL and GC are idempotent. */
  async detach(container: string): Promise<void> {
    try {
      await call(() => this.control.detachEndpoint(container));
    } catch (error) {
      if (!(error instanceof CniError && error.details === String(grpcStatus.NOT_FOUND))) throw error;
    }
  }

  /** Whether the planner answers, quickly: looking the network up costs one key, whatever the cluster's size. */
  async checkPlanner(network: string): Promise<void> {
    await call(() => this.quick.inspectNetwork(network));
  }

  /** Whether NATS answers the agent, or why not. */
  async natsProblem(): Promise<string | undefined> {
    if (this.nc.isClosed()) return "the agent's connection to NATS is closed: restart the agent";
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve(`NATS did not answer the agent within ${STATUS_TIMEOUT_MS / 1000}s`), STATUS_TIMEOUT_MS).unref());
    return Promise.race([this.nc.rtt().then(() => undefined, (error: Error) => `NATS does not answer the agent: ${error.message}`), timeout]);
  }

  /** Waits for this host's agent to report the endpoint ready or failed (TRELLIS_WAIT_SECONDS, 120 by default). */
  waitForAgent(endpoint: Endpoint): Promise<EndpointStatus> {
    return this.hostStatuses.settledStatus(endpoint, READY_TIMEOUT_MS);
  }

  /** Waits at most `timeoutMs` for the agent to report the endpoint removed; false when it did not in that time. */
  async waitForRemoval(endpointId: string, host: string, timeoutMs: number): Promise<boolean> {
    const bucket = await this.statusBucket();
    // From the last value on: a removal between the get and the watch is its first entry.
    const watch = await bucket.watch({ key: statusKey(host, endpointId) });
    const timer = setTimeout(() => watch.stop(), timeoutMs);
    try {
      for await (const change of watch) if (change.operation !== "PUT") return true;
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.control.close();
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

/** The Control API's failures in CNI's terms: no planner, or one that keeps failing, means "try again later". */
async function call<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw cniErrorOf(error as Error);
  }
}

/** In `details` of an error that proves the call never got to a planner (every address refused it at once). */
export const NEVER_REACHED = "no planner was reached";

/** The gRPC code goes in `details` so that callers can tell a refusal's kind (NOT_FOUND for an idempotent DEL). */
export function cniErrorOf(error: Error): CniError {
  if (error instanceof CniError) return error;
  if (error instanceof PlannerUnreachableError) return new CniError(CniCode.tryAgainLater, `failed to reach the control plane: ${error.message}`, NEVER_REACHED);
  if (error instanceof ControlTimeoutError) return new CniError(CniCode.tryAgainLater, `failed to reach the control plane: ${error.message}`);
  if (error instanceof ControlRefusedError) return new CniError(CniCode.refused, `Trellis refused: ${error.details}`, String(error.code));
  return new CniError(CniCode.tryAgainLater, `failed to reach the control plane: ${error.message}`);
}
