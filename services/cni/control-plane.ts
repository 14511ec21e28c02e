import { status as grpcStatus } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, hostStaleAfterMs, statusKey } from "../../libs/bus/subjects.js";
import { ControlApi, ControlRefusedError, ControlTimeoutError, PlannerUnreachableError } from "../../libs/control-client/index.js";
import type { Endpoint, EndpointSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { HostRecord, type EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import { watchUntil } from "../cli/endpoint-status.js";
import { CniCode, CniError } from "./errors.js";
import type { Invocation } from "./invocation.js";

/**
 * The plugin's only ways out: the Control API (attach, detach, look at a network) and NATS (the agent's
 * report that the interface is there, the host's heartbeat). A runtime calls the plugin once per container and
 * interface, so each call opens what it needs and closes it before it exits.
 */
export class TrellisConnection {
  private readonly control: ControlApi;
  private nc: NatsConnection | undefined;

  constructor(private readonly invocation: Invocation, timeoutMs = 30_000) {
    this.control = new ControlApi({ addresses: invocation.planner, timeoutMs, attemptTimeoutMs: Math.min(timeoutMs, 10_000) });
  }

  attach(spec: EndpointSpec): Promise<Endpoint> {
    return this.call(() => this.control.attachEndpoint(spec));
  }

  /** Detaching what is already gone is fine: DEL and GC are idempotent. */
  async detach(container: string): Promise<void> {
    try {
      await this.call(() => this.control.detachEndpoint(container));
    } catch (error) {
      if (!(error instanceof CniError && error.details === String(grpcStatus.NOT_FOUND))) throw error;
    }
  }

  /** Whether the planner answers, for STATUS: looking the network up costs one key, whatever the cluster's size. */
  async checkPlanner(): Promise<void> {
    await this.call(() => this.control.inspectNetwork(this.invocation.network));
  }

  /** Waits for the host's agent to report the endpoint ready or failed; gone: until it reports it removed. */
  async waitForAgent(endpoint: Endpoint, gone: boolean): Promise<EndpointStatus | undefined> {
    const bucket = await openBucket(await this.bus(), Buckets.status);
    return watchUntil(bucket, statusKey(endpoint.host, endpoint.id), gone, endpoint);
  }

  /** Waits at most `timeoutMs` for the agent to report the endpoint removed; false when it did not in that time. */
  async waitForRemoval(endpointId: string, host: string, timeoutMs: number): Promise<boolean> {
    const bucket = await openBucket(await this.bus(), Buckets.status);
    const entry = await bucket.get(statusKey(host, endpointId));
    if (!entry || entry.operation !== "PUT") return true;
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

  /** Why the host's agent counts as not running (no heartbeat, or a stale one), or undefined when it runs. */
  async agentProblem(): Promise<string | undefined> {
    const host = this.invocation.host;
    const entry = await (await openBucket(await this.bus(), Buckets.hosts)).get(host);
    if (!entry || entry.operation !== "PUT") return `the agent of host ${host} has never reported: start it (trellis agent --host=${host})`;
    const record = codecOf(HostRecord).decode(entry.value);
    const age = Date.now() - Date.parse(record.heartbeatAt);
    if (age <= hostStaleAfterMs(record.heartbeatIntervalMs)) return undefined;
    return `the agent of host ${host} last reported ${Math.round(age / 1000)}s ago: is it running (trellis agent --host=${host})?`;
  }

  async close(): Promise<void> {
    this.control.close();
    await this.nc?.close();
  }

  private async bus(): Promise<NatsConnection> {
    try {
      this.nc ??= await connectBus({ servers: this.invocation.nats, name: "trellis-cni", waitForServer: false });
    } catch (error) {
      throw new CniError(CniCode.tryAgainLater, `failed to reach the control plane: ${(error as Error).message}`);
    }
    return this.nc;
  }

  /** The Control API's failures in CNI's terms: no planner, or one that keeps failing, means "try again later". */
  private async call<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw cniErrorOf(error as Error);
    }
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
